#!/usr/bin/env python3
"""A soak: Tollgate at a steady rate for an hour with Redis and PostgreSQL (issue #14, point 7).

What it checks, and reports as JSON:
  - RSS of the gateway sampled every 10 s: start (after the first minute), peak, end, and the
    slope of a least-squares line over the run (KiB per hour): flat means no leak;
  - every request answered 200 (the load generator's `errors` is zero);
  - one audit record per response: PostgreSQL's row count after SIGTERM equals the answers;
  - latency percentiles from the load generator (scheduled start to last byte).

The stack: the mock upstream (+20 ms) and the load generator on CPU 0, Tollgate on CPU 1, limits
in Redis (two roomy rules, so every request runs both Lua checks), records in a fresh PostgreSQL
schema. Not a test: it takes an hour (--seconds for a shorter run).

Usage: python3 bench/soak.py [--seconds 3600] [--rate 500] [--out bench/results/soak.json]
Needs: a release build (target/release/tollgate and the loadgen example), PostgreSQL and Redis
(TOLLGATE_TEST_DATABASE_URL / TOLLGATE_TEST_REDIS_URL or the defaults below).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def rss_samples(pid, every, stop, samples):
    began = time.monotonic()
    while not stop.wait(every):
        try:
            samples.append((time.monotonic() - began, bench.rss_kib(pid)))
        except FileNotFoundError:
            return


def slope_kib_per_hour(samples):
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    num = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return num / den * 3600 if den else 0.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--out", default=os.path.join(bench.ROOT, "bench", "results", "soak.json"))
    args = parser.parse_args()
    database = os.environ.get("TOLLGATE_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    redis = os.environ.get("TOLLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    for path in (bench.BIN, bench.LOADGEN):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release --locked --bin tollgate --example loadgen")

    schema, url = bench.postgres_schema(database)
    workdir = tempfile.mkdtemp(prefix="tollgate-soak-")
    toml = f"[limits]\nredis_prefix = \"tg-soak-{uuid.uuid4().hex}\"\n\n{bench.ROOMY_LIMITS}"
    stack = bench.Stack(20, workdir, toml, {"DATABASE_URL": url, "REDIS_URL": redis})
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=rss_samples, args=(stack.gateway.pid, 10, stop, samples))
    sampler.start()
    chat_url, key = stack.via("/v1/chat/completions")
    cpu_before = bench.cpu_seconds(stack.gateway.pid)
    load = bench.loadgen(chat_url, key, args.rate, args.seconds, bench.CHAT, connections=256,
                         extra=("--warmup-s", "0"))
    cpu = bench.cpu_seconds(stack.gateway.pid) - cpu_before
    peak = bench.peak_rss_kib(stack.gateway.pid)
    stop.set()
    sampler.join()
    stack.gateway.send_signal(signal.SIGTERM)
    stack.gateway.wait(timeout=60)
    stack.mock.send_signal(signal.SIGTERM)
    stack.mock.wait(timeout=30)
    # The answers that reached the load generator, and the records the gateway wrote.
    rows = subprocess.run(["psql", database, "-tAc", f"SELECT count(*) FROM {schema}.requests"],
                          check=True, capture_output=True, text=True).stdout.strip()
    bench.drop_schema(database, schema)
    settled = [s for s in samples if s[0] >= 60] or samples
    answered = load["ok"] + load["errors"]
    report = {
        "seconds": args.seconds,
        "rate": args.rate,
        "requests": answered,
        "ok": load["ok"],
        "errors": load["errors"],
        "throughput": load["throughput"],
        "latency_us": {k: load[k] for k in ("p50_us", "p90_us", "p99_us", "max_us")},
        "records": int(rows),
        "records_equal_responses": int(rows) == answered,
        "gateway_cpu_us_per_request": cpu / max(answered, 1) * 1e6,
        "rss_kib": {
            "start": settled[0][1] if settled else None,
            "peak_sampled": max(r for _, r in samples) if samples else None,
            "peak_vmhwm": peak,
            "end": samples[-1][1] if samples else None,
            "slope_per_hour": round(slope_kib_per_hour(settled)),
        },
        "rss_samples": samples,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    summary = {k: v for k, v in report.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=1))
    ok = load["errors"] == 0 and report["records_equal_responses"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
