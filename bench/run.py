#!/usr/bin/env python3
"""Tollgate's benchmark: the gateway against a direct call to the upstream, in the same run.

Method (docs/BENCHMARKS.md says why):
  - the mock upstream and the load generator share CPU 0, Tollgate has CPU 1 (taskset);
  - each scenario runs direct (load generator -> mock) and through Tollgate (load generator ->
    Tollgate -> mock), alternating, ROUNDS times; medians are reported;
  - Tollgate's CPU time per request comes from /proc/PID/stat (utime + stime) around each run,
    its peak RSS from VmHWM.

Scenarios (--only core | limits | ips | records | usage | cache):
  throughput   non-streaming chat, closed loop, 64 connections, as fast as possible (wrk)
  fixed_rate   non-streaming chat at 2,000 req/s, upstream +50 ms; added p50/p99
  streams      streamed chat at 500 req/s, upstream +50 ms; time to last byte, added p99
  startup      exec to the first 200 from /health/ready
  limits       2,000 req/s with limits off, in memory, in Redis (--redis URL); added p99 vs off
  distinct_ips RSS while 1,000,000 distinct client IPs (X-Forwarded-For) pass the memory limiter
  cache        cache hits via Tollgate vs direct calls to the mock, closed loop; CPU per answer

Usage: python3 bench/run.py [--rounds 3] [--quick] [--out bench/results/latest.json]
Needs: a release build (the script runs cargo build --release), wrk (apt-get install wrk),
taskset (util-linux).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tollgate")
LOADGEN = os.path.join(ROOT, "target", "release", "examples", "loadgen")
UPSTREAM_KEY = "sk-bench-upstream"
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "echo: the quick brown fox jumps over the lazy dog"}]})
STREAM = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "echo: " + " ".join(f"w{i}" for i in range(20))}]})
# temperature 0: the cache keeps it under its default (deterministic) policy.
CACHEABLE = json.dumps({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "echo: the quick brown fox jumps over the lazy dog"}]})
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Limit rules that admit everything, so a scenario measures the cost of checking limits and never
# a refusal: one per-IP and one per-key bucket (two Redis hash tags, so two script calls per
# request). The seeds' default rules (1,000 requests per hour per IP) would refuse a benchmark.
ROOMY_LIMITS = ("[[limits.rules]]\nscope = \"ip\"\nroute = \"*\"\nrequests = 1000000000\nper = \"1h\"\n\n"
                "[[limits.rules]]\nscope = \"key\"\nroute = \"chat\"\nrequests = 1000000000\nper = \"1h\"\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.001)
    raise RuntimeError(f"{url} never became ready")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Stack:
    """A mock upstream on CPU 0 and Tollgate on CPU 1."""

    def __init__(self, latency_ms, workdir, toml="", env_extra=None):
        self.mock_port, self.port = free_port(), free_port()
        self.mock = subprocess.Popen(
            ["taskset", "-c", "0", BIN, "mock-upstream", "--listen", f"127.0.0.1:{self.mock_port}",
             "--latency-ms", str(latency_ms), "--api-key", UPSTREAM_KEY, "--record-limit", "0"],
            stdout=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{self.mock_port}/_mock/faults")
        db = os.path.join(workdir, f"bench-{self.port}.db")
        env = dict(os.environ, DATABASE_URL=f"sqlite://{db}")
        env.update(env_extra or {})  # a DATABASE_URL given holds the key too
        created = subprocess.run([BIN, "keys", "create", "--name", "bench", "--json"], env=env, check=True,
                                 capture_output=True, text=True)
        self.key = json.loads(created.stdout)["key"]
        env.update(OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{self.mock_port}/v1",
                   PORT=str(self.port))
        config = os.path.join(workdir, f"tollgate-{self.port}.toml")
        with open(config, "w") as f:
            f.write(toml)
        env["TOLLGATE_CONFIG"] = config
        env.update(env_extra or {})
        started = time.monotonic()
        self.gateway = subprocess.Popen(["taskset", "-c", "1", BIN, "serve"], env=env, stderr=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{self.port}/health/ready")
        self.startup_ms = (time.monotonic() - started) * 1000

    def direct(self, path):
        return f"http://127.0.0.1:{self.mock_port}{path}", UPSTREAM_KEY

    def via(self, path):
        return f"http://127.0.0.1:{self.port}{path}", self.key

    def stop(self):
        for p in (self.gateway, self.mock):
            p.send_signal(signal.SIGTERM)
        for p in (self.gateway, self.mock):
            p.wait(timeout=30)


def wrk(url, key, seconds, body=CHAT):
    script = os.path.join(ROOT, "bench", "chat.lua")
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", script, url],
                         env=dict(os.environ, KEY=key, BODY=body), check=True, capture_output=True, text=True).stdout
    rps = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))
    errors = sum(int(l.split()[-1]) for l in out.splitlines() if "Non-2xx" in l)
    requests = int(next(l.split()[0] for l in out.splitlines() if "requests in" in l))
    return {"throughput": rps, "requests": requests, "errors": errors}


def loadgen(url, key, rate, seconds, body, connections=256, extra=()):
    out = subprocess.run(["taskset", "-c", "0", LOADGEN, url, "--rate", str(rate), "--duration-s", str(seconds),
                          "--connections", str(connections), "--body", body,
                          "--header", f"Authorization: Bearer {key}", *(extra or ("--warmup-s", "2"))],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measured(stack, run):
    """Runs `run` and adds Tollgate's CPU time used meanwhile."""
    before = cpu_seconds(stack.gateway.pid)
    result = run()
    result["gateway_cpu_s"] = cpu_seconds(stack.gateway.pid) - before
    return result


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs, to try the harness")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "latest.json"))
    parser.add_argument("--only", choices=["core", "limits", "ips", "records", "usage", "cache"], help="run one group of scenarios")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL for the records scenario (a schema is created and dropped)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis for the limits scenario")
    args = parser.parse_args()
    seconds = 3 if args.quick else 10
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install wrk util-linux)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tollgate", "--example", "loadgen",
                    "--example", "records_writer"], cwd=ROOT, check=True)
    workdir = tempfile.mkdtemp(prefix="tollgate-bench-")
    report = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}, "rounds": args.rounds}
    if args.only in (None, "core"):
        core(args, seconds, workdir, report)
    if args.only in (None, "limits"):
        limits(args, seconds, workdir, report)
    if args.only in (None, "limits", "ips"):
        distinct_ips(workdir, report)
    if args.only in (None, "records"):
        records(args, seconds, workdir, report)
    if args.only in (None, "usage"):
        usage(args, workdir, report)
    if args.only in (None, "cache"):
        cache(args, seconds, workdir, report)
    shutil.rmtree(workdir, ignore_errors=True)
    failed = [name for name, errors in errors_by_scenario(report) if errors]
    if failed:
        print(f"non-2xx answers in {', '.join(failed)}: these figures measure refusals, not the gateway", file=sys.stderr)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k not in ("fixed_rate", "streams")}, indent=2))
    print(f"full results: {args.out}")
    if failed:
        sys.exit(1)


def errors_by_scenario(report):
    """(scenario, non-2xx count) for every scenario that counts errors."""
    for name, value in report.items():
        if isinstance(value, dict) and "errors" in value:
            yield name, value["errors"]
        elif name in ("limits", "records") and isinstance(value, dict):
            for variant, figures in value.items():
                yield f"{name}.{variant}", figures["errors"]


def limits(args, seconds, workdir, report):
    """Limits off vs in memory vs in Redis at 2,000 req/s (upstream +50 ms), and memory while
    1,000,000 distinct client IPs pass through."""
    prefix = f"bench-{os.getpid()}"
    variants = {
        "off": ("[limits]\nenabled = false\n", {}),
        "memory": (ROOMY_LIMITS, {}),
        "redis": (f"[limits]\nredis_prefix = \"{prefix}\"\n\n" + ROOMY_LIMITS, {"REDIS_URL": args.redis}),
    }
    stacks = {name: Stack(50, workdir, toml, env) for name, (toml, env) in variants.items()}
    rows = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, stack in stacks.items():
            rows[name].append(measured(stack, lambda: loadgen(*stack.via("/v1/chat/completions"), 2000, seconds, CHAT)))
    off_p99 = [r["p99_us"] for r in rows["off"]]
    report["limits"] = {
        name: {
            "p50_us": median(r, "p50_us"),
            "p99_us": median(r, "p99_us"),
            "added_p99_us_vs_off": statistics.median(v["p99_us"] - o for v, o in zip(r, off_p99)),
            "gateway_cpu_us_per_request": statistics.median(x["gateway_cpu_s"] / max(x["ok"], 1) * 1e6 for x in r),
            "errors": sum(x["errors"] for x in r),
        }
        for name, r in rows.items()
    }
    for stack in stacks.values():
        stack.stop()


def postgres_schema(base):
    """A fresh schema in `base` and the URL that uses it; drop it with drop_schema."""
    schema = f"tg_bench_{os.getpid()}_{int(time.time() * 1000)}"
    subprocess.run(["psql", base, "-qc", f"CREATE SCHEMA {schema}"], check=True)
    return schema, f"{base}?options=-c%20search_path%3D{schema}"


def drop_schema(base, schema):
    subprocess.run(["psql", base, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=True, capture_output=True)


def records(args, seconds, workdir, report):
    """Issue #5: audit records off vs on (SQLite, PostgreSQL) at 2,000 req/s, upstream +50 ms;
    and how many records per second the writer stores into each engine."""
    schema, pg_url = postgres_schema(args.postgres)
    variants = {
        "off": ("[records]\nenabled = false\n\n" + ROOMY_LIMITS, {}),
        "sqlite": (ROOMY_LIMITS, {}),
        "postgres": (ROOMY_LIMITS, {"DATABASE_URL": pg_url}),
    }
    stacks = {name: Stack(50, workdir, toml, dict(env, TOLLGATE_DATA_DIR=workdir)) for name, (toml, env) in variants.items()}
    rows = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, stack in stacks.items():
            rows[name].append(measured(stack, lambda: loadgen(*stack.via("/v1/chat/completions"), 2000, seconds, CHAT)))
    off_p99 = [r["p99_us"] for r in rows["off"]]
    off_p50 = [r["p50_us"] for r in rows["off"]]
    report["records"] = {
        name: {
            "p50_us": median(r, "p50_us"),
            "p99_us": median(r, "p99_us"),
            "added_p50_us_vs_off": statistics.median(v["p50_us"] - o for v, o in zip(r, off_p50)),
            "added_p99_us_vs_off": statistics.median(v["p99_us"] - o for v, o in zip(r, off_p99)),
            "gateway_cpu_us_per_request": statistics.median(x["gateway_cpu_s"] / max(x["ok"], 1) * 1e6 for x in r),
            "errors": sum(x["errors"] for x in r),
            "rounds": [{"p50_us": x["p50_us"], "p99_us": x["p99_us"]} for x in r],
        }
        for name, r in rows.items()
    }
    for stack in stacks.values():
        stack.stop()
    drop_schema(args.postgres, schema)
    writer = os.path.join(ROOT, "target", "release", "examples", "records_writer")
    report["records_writer"] = {}
    for engine in ("sqlite", "postgres"):
        runs = []
        for _ in range(args.rounds):
            if engine == "sqlite":
                url = f"sqlite://{os.path.join(workdir, f'writer-{len(runs)}.db')}"
            else:
                schema, url = postgres_schema(args.postgres)
            out = subprocess.run([writer, "--database", url, "--records", "200000"], check=True,
                                 capture_output=True, text=True, cwd=workdir).stdout
            runs.append(json.loads(out)["records_per_s"])
            if engine == "postgres":
                drop_schema(args.postgres, schema)
        report["records_writer"][engine] = {"records_per_s": statistics.median(runs), "rounds": runs}
    r, w = report["records"], report["records_writer"]
    print(f"""
| measure | off | SQLite | PostgreSQL | target |
| --- | --- | --- | --- | --- |
| p50 / p99 at 2,000 req/s (ms) | {r['off']['p50_us']/1000:.2f} / {r['off']['p99_us']/1000:.2f} | {r['sqlite']['p50_us']/1000:.2f} / {r['sqlite']['p99_us']/1000:.2f} | {r['postgres']['p50_us']/1000:.2f} / {r['postgres']['p99_us']/1000:.2f} | |
| added p50 / p99 vs off (ms) | - | {r['sqlite']['added_p50_us_vs_off']/1000:+.2f} / {r['sqlite']['added_p99_us_vs_off']/1000:+.2f} | {r['postgres']['added_p50_us_vs_off']/1000:+.2f} / {r['postgres']['added_p99_us_vs_off']/1000:+.2f} | p99 <= +0.2 |
| Tollgate CPU per request | {r['off']['gateway_cpu_us_per_request']:.0f} us | {r['sqlite']['gateway_cpu_us_per_request']:.0f} us | {r['postgres']['gateway_cpu_us_per_request']:.0f} us | |
| writer, records/s | - | {w['sqlite']['records_per_s']:.0f} | {w['postgres']['records_per_s']:.0f} | >= 20,000 |
""")


def usage(args, workdir, report):
    """Issue #5: the usage API's 30-day group-by over 10,000,000 records in PostgreSQL."""
    schema, url = postgres_schema(args.postgres)
    env = dict(os.environ, DATABASE_URL=url)
    subprocess.run([BIN, "keys", "list", "--json"], env=env, check=True, capture_output=True)  # migrates
    started = time.monotonic()
    subprocess.run(["psql", f"{args.postgres}?options=-c%20search_path%3D{schema}", "-q", "-f",
                    os.path.join(ROOT, "bench", "usage_data.sql")], check=True)
    load_s = time.monotonic() - started
    rollup_rows = int(subprocess.run(["psql", args.postgres, "-tAc", f"SELECT COUNT(*) FROM {schema}.usage_hourly"],
                                     check=True, capture_output=True, text=True).stdout)
    token = "bench-admin-token-0123456789"
    stack = Stack(0, workdir, ROOMY_LIMITS, {"DATABASE_URL": url, "TOLLGATE_ADMIN_TOKEN": token})
    figures = {}
    for group_by in ("key,model,day", "model", "user"):
        times = []
        for _ in range(5):
            request = urllib.request.Request(f"http://127.0.0.1:{stack.port}/admin/usage?group_by={group_by}",
                                             headers={"Authorization": f"Bearer {token}"})
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=60) as answer:
                body = json.load(answer)
            times.append((time.monotonic() - started) * 1000)
        # The same answer fetched by curl into /dev/null: no JSON parsing on the client's side.
        curl_ms = []
        for _ in range(5):
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-H",
                                  f"Authorization: Bearer {token}",
                                  f"http://127.0.0.1:{stack.port}/admin/usage?group_by={group_by}"],
                                 check=True, capture_output=True, text=True).stdout
            curl_ms.append(float(out) * 1000)
        figures[group_by] = {"median_ms": statistics.median(times), "ms": times, "groups": len(body["data"]),
                             "curl_median_ms": statistics.median(curl_ms),
                             "requests": sum(row["requests"] for row in body["data"])}
    stack.stop()
    # The plan of the biggest piece of the key,model,day answer, as Tollgate runs it (JIT off):
    # the whole days of the range, from the daily rollup.
    now_ms = int(time.time() * 1000)
    day = 86_400_000
    to = now_ms - now_ms % 3_600_000
    first_day, last_day = -(-(to - 30 * day) // day) * day, to - to % day
    plan = subprocess.run(["psql", f"{args.postgres}?options=-c%20search_path%3D{schema}", "-tA", "-c", "SET jit = off", "-c",
                           "EXPLAIN (ANALYZE, BUFFERS) SELECT key_id, model, (day_ms / 86400000), CAST(SUM(requests) AS BIGINT), "
                           "CAST(SUM(cost_nanos) AS BIGINT) FROM usage_daily "
                           f"WHERE day_ms >= {first_day} AND day_ms < {last_day} "
                           "GROUP BY key_id, model, (day_ms / 86400000) ORDER BY key_id, model, (day_ms / 86400000)"],
                          check=True, capture_output=True, text=True).stdout
    drop_schema(args.postgres, schema)
    report["usage"] = {"records": 10_000_000, "rollup_rows": rollup_rows, "load_s": load_s, "queries": figures,
                       "plan": plan}
    print(f"rollup rows: {rollup_rows}; data loaded in {load_s:.0f} s")
    for group_by, f in figures.items():
        print(f"GET /admin/usage?group_by={group_by} (30 days): median {f['median_ms']:.0f} ms (curl: {f['curl_median_ms']:.0f} ms), {f['groups']} groups, {f['requests']} requests")
    print(plan)


def distinct_ips(workdir, report):
    """Memory while 1,000,000 distinct client IPs pass through."""
    # 1,000,000 distinct client IPs through the in-memory limiter (the seeds' per-IP rule, so
    # every IP gets a bucket), against the same traffic with limits off: the difference is what
    # the limiter holds.
    report["distinct_ips"] = {}
    for name, toml in (("limits_on", ""), ("limits_off", "[limits]\nenabled = false\n")):
        stack = Stack(0, workdir, toml, {"TOLLGATE_TRUSTED_PROXIES": "127.0.0.1"})
        samples = [(0, rss_kib(stack.gateway.pid))]
        for chunk in range(4):
            loadgen(*stack.via("/v1/chat/completions"), 0, 600, CHAT, connections=64,
                    extra=("--unique-forwarded-for", "--forwarded-for-offset", str(chunk * 250_000),
                           "--requests", "250000", "--warmup-s", "0"))
            samples.append(((chunk + 1) * 250_000, rss_kib(stack.gateway.pid)))
        report["distinct_ips"][name] = {"rss_kib_after_n_ips": samples, "peak_rss_kib": peak_rss_kib(stack.gateway.pid)}
        stack.stop()


def cache(args, seconds, workdir, report):
    """Cache hits through Tollgate against direct calls to the mock, closed loop (wrk, 64
    connections): throughput, and CPU per answer of Tollgate (hits) and of the mock (direct)."""
    stack = Stack(0, workdir, ROOMY_LIMITS)
    # The same with audit records off: how much of a hit's CPU is its record.
    unrecorded = Stack(0, workdir, ROOMY_LIMITS + "\n[records]\nenabled = false\n")
    for s in (stack, unrecorded):
        url, key = s.via("/v1/chat/completions")
        subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {key}", "-H",
                        "Content-Type: application/json", "-d", CACHEABLE, url], check=True)
    direct, hits, bare = [], [], []
    for _ in range(args.rounds):
        before = cpu_seconds(stack.mock.pid)
        run = wrk(*stack.direct("/v1/chat/completions"), seconds, CACHEABLE)
        run["mock_cpu_s"] = cpu_seconds(stack.mock.pid) - before
        direct.append(run)
        before_mock = cpu_seconds(stack.mock.pid)
        run = measured(stack, lambda: wrk(*stack.via("/v1/chat/completions"), seconds, CACHEABLE))
        run["mock_cpu_s"] = cpu_seconds(stack.mock.pid) - before_mock
        hits.append(run)
        bare.append(measured(unrecorded, lambda: wrk(*unrecorded.via("/v1/chat/completions"), seconds, CACHEABLE)))
    stack.stop()
    unrecorded.stop()
    report["cache"] = {
        "direct_rps": median(direct, "throughput"),
        "hit_rps": median(hits, "throughput"),
        "ratio": median(hits, "throughput") / median(direct, "throughput"),
        "mock_cpu_us_per_direct_answer": statistics.median(r["mock_cpu_s"] / r["requests"] * 1e6 for r in direct),
        "gateway_cpu_us_per_hit": statistics.median(r["gateway_cpu_s"] / r["requests"] * 1e6 for r in hits),
        "mock_cpu_s_during_hits": statistics.median(r["mock_cpu_s"] for r in hits),
        "hit_rps_records_off": median(bare, "throughput"),
        "gateway_cpu_us_per_hit_records_off": statistics.median(r["gateway_cpu_s"] / r["requests"] * 1e6 for r in bare),
        "errors": sum(r["errors"] for r in direct + hits + bare),
        "rounds": {"direct": direct, "hits": hits, "hits_records_off": bare},
    }
    c = report["cache"]
    print(f"""
| measure | figure |
| --- | --- |
| closed loop, 64 connections: direct to the mock / cache hits via Tollgate | {c['direct_rps']:.0f} / {c['hit_rps']:.0f} req/s (ratio {c['ratio']:.2f}) |
| CPU per answer: the mock (direct) / Tollgate (hit) | {c['mock_cpu_us_per_direct_answer']:.0f} / {c['gateway_cpu_us_per_hit']:.0f} us |
| the same with audit records off: hits / CPU per hit | {c['hit_rps_records_off']:.0f} req/s / {c['gateway_cpu_us_per_hit_records_off']:.0f} us |
""")


def core(args, seconds, workdir, report):
    """Issue #3's scenarios: throughput, fixed rate, streams, start-up, memory."""

    # Scenario 1: throughput, upstream without latency.
    stack = Stack(0, workdir, ROOMY_LIMITS)
    report["startup_ms"] = stack.startup_ms
    direct, via = [], []
    for _ in range(args.rounds):
        direct.append(wrk(*stack.direct("/v1/chat/completions"), seconds))
        via.append(measured(stack, lambda: wrk(*stack.via("/v1/chat/completions"), seconds)))
    report["throughput"] = {
        "direct_rps": median(direct, "throughput"),
        "gateway_rps": median(via, "throughput"),
        "ratio": median(via, "throughput") / median(direct, "throughput"),
        "gateway_cpu_us_per_request": statistics.median(r["gateway_cpu_s"] / r["requests"] * 1e6 for r in via),
        "errors": sum(r["errors"] for r in direct + via),
    }
    report["peak_rss_kib_after_throughput"] = peak_rss_kib(stack.gateway.pid)
    stack.stop()

    # Scenarios 2 and 3: fixed rates, upstream +50 ms.
    stack = Stack(50, workdir, ROOMY_LIMITS)
    for name, rate, body in (("fixed_rate", 2000, CHAT), ("streams", 500, STREAM)):
        direct, via = [], []
        for _ in range(args.rounds):
            direct.append(loadgen(*stack.direct("/v1/chat/completions"), rate, seconds, body))
            via.append(measured(stack, lambda: loadgen(*stack.via("/v1/chat/completions"), rate, seconds, body)))
        report[name] = {
            "rate": rate,
            "direct_p50_us": median(direct, "p50_us"),
            "direct_p99_us": median(direct, "p99_us"),
            "gateway_p50_us": median(via, "p50_us"),
            "gateway_p99_us": median(via, "p99_us"),
            "added_p50_us": statistics.median(v["p50_us"] - d["p50_us"] for d, v in zip(direct, via)),
            "added_p99_us": statistics.median(v["p99_us"] - d["p99_us"] for d, v in zip(direct, via)),
            "gateway_cpu_us_per_request": statistics.median(r["gateway_cpu_s"] / max(r["ok"], 1) * 1e6 for r in via),
            "achieved_rps": median(via, "throughput"),
            "errors": sum(r["errors"] for r in direct + via),
            "rounds": {"direct": direct, "gateway": via},
        }
    report["peak_rss_kib"] = max(peak_rss_kib(stack.gateway.pid), report["peak_rss_kib_after_throughput"])
    stack.stop()
    t, fr, st = report["throughput"], report["fixed_rate"], report["streams"]
    print(f"""
| measure | figure | target |
| --- | --- | --- |
| chat throughput, 64 connections: direct / via Tollgate | {t['direct_rps']:.0f} / {t['gateway_rps']:.0f} req/s (ratio {t['ratio']:.2f}) | ratio >= 0.5 |
| Tollgate CPU per request at max throughput | {t['gateway_cpu_us_per_request']:.0f} us | - |
| 2,000 req/s, upstream +50 ms: added p50 / p99 | {fr['added_p50_us']/1000:.3f} / {fr['added_p99_us']/1000:.3f} ms | <= 0.2 / <= 1 ms |
| 2,000 req/s: Tollgate CPU per request | {fr['gateway_cpu_us_per_request']:.0f} us | - |
| streams at 500 req/s, time to last byte: added p99 | {st['added_p99_us']/1000:.3f} ms | <= 1 ms |
| peak RSS | {report['peak_rss_kib']/1024:.1f} MiB | <= 40 MiB |
| start to ready | {report['startup_ms']:.0f} ms | <= 100 ms |
""")


if __name__ == "__main__":
    main()
