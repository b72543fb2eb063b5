#!/usr/bin/env python3
"""Tollgate beside nginx as a plain reverse proxy and a direct call, in one interleaved run.

nginx (Debian's nginx-light, one worker, upstream keep-alive, no logging, no parsing) is the
limit of one HTTP hop; every figure is reported as a ratio to it. Several Tollgate binaries can
be measured in the same run (`--gateway before=path --gateway after=path`), so a change's effect
is not lost in the machine's drift.

Each target runs as deployed: a key checked on every request, two limit rules (per IP and per
key), pricing, SQLite records, and one JSON log line per request written to a file.

Phases (each repeated --rounds times, targets interleaved within a round: direct, nginx, A, B...):
  chat-max     non-streaming chat, 64 connections, as fast as possible (wrk): req/s, CPU/request
  stream-max   streamed chat (23 events), 64 connections (wrk): req/s, CPU/request
  chat-2000    non-streaming chat at 2,000 req/s, upstream +50 ms (bench/loadgen.rs): p50/p99
Peak RSS is VmHWM over the whole run (nginx: master + worker).

Pinning as in bench/run.py: load generator and mock on CPU 0, the proxy under test on CPU 1.

Usage: python3 bench/peers.py [--rounds 3] [--seconds 10] [--gateway NAME=BIN[@EXTRA.toml] ...]
Needs: nginx-light and wrk (apt-get install nginx-light wrk), a release build of the loadgen
example (cargo build --release --example loadgen).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time

from run import BIN, CHAT, LOADGEN, ROOMY_LIMITS, STREAM, UPSTREAM_KEY, cpu_seconds, free_port, loadgen, wait_ready, wrk

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mock {{ server 127.0.0.1:{mock}; keepalive 512; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def tree(pid):
    """`pid` and its children (nginx's worker)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def tree_cpu(pid):
    return sum(cpu_seconds(p) for p in tree(pid))


def tree_hwm_kib(pid):
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    return total


class Target:
    """One proxy under test (or none, for `direct`), pinned to CPU 1."""

    def __init__(self, name, url, key, process=None):
        self.name, self.url, self.key, self.process = name, url, key, process
        self.peak_kib = 0

    def note_peak(self):
        if self.process:
            self.peak_kib = max(self.peak_kib, tree_hwm_kib(self.process.pid))

    def stop(self):
        if self.process:
            self.note_peak()
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def start_nginx(workdir, mock_port):
    port = free_port()
    conf = os.path.join(workdir, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(dir=workdir, mock=mock_port, port=port))
    process = subprocess.Popen(["taskset", "-c", "1", "nginx", "-p", workdir, "-c", conf, "-e", f"{workdir}/nginx-error.log"],
                               stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return Target("nginx", f"http://127.0.0.1:{port}/v1/chat/completions", UPSTREAM_KEY, process)


def start_tollgate(name, binary, workdir, mock_port, extra=""):
    port = free_port()
    db = os.path.join(workdir, f"{name}-{port}.db")
    env = dict(os.environ, DATABASE_URL=f"sqlite://{db}", TOLLGATE_DATA_DIR=workdir)
    created = subprocess.run([binary, "keys", "create", "--name", "bench", "--json"], env=env, check=True,
                             capture_output=True, text=True)
    config = os.path.join(workdir, f"{name}-{port}.toml")
    with open(config, "w") as f:
        f.write(ROOMY_LIMITS + extra)
    env.update(OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{mock_port}/v1", PORT=str(port),
               TOLLGATE_CONFIG=config)
    log = open(os.path.join(workdir, f"{name}-{port}.log"), "w")
    process = subprocess.Popen(["taskset", "-c", "1", binary, "serve"], env=env, stderr=log)
    wait_ready(f"http://127.0.0.1:{port}/health/ready")
    return Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", json.loads(created.stdout)["key"], process)


class Stack:
    """A mock upstream with `latency_ms`, and every target in front of it."""

    def __init__(self, latency_ms, workdir, gateways):
        self.mock_port = free_port()
        self.mock = subprocess.Popen(
            ["taskset", "-c", "0", BIN, "mock-upstream", "--listen", f"127.0.0.1:{self.mock_port}",
             "--latency-ms", str(latency_ms), "--api-key", UPSTREAM_KEY, "--record-limit", "0"],
            stdout=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{self.mock_port}/_mock/faults")
        self.targets = [Target("direct", f"http://127.0.0.1:{self.mock_port}/v1/chat/completions", UPSTREAM_KEY),
                        start_nginx(workdir, self.mock_port)]
        self.targets += [start_tollgate(name, binary, workdir, self.mock_port, extra) for name, binary, extra in gateways]

    def stop(self):
        for target in self.targets:
            target.stop()
        self.mock.send_signal(signal.SIGTERM)
        self.mock.wait(timeout=30)


def measured(target, run):
    before = tree_cpu(target.process.pid) if target.process else 0
    result = run()
    if target.process:
        result["cpu_s"] = tree_cpu(target.process.pid) - before
        target.note_peak()
    return result


def phase(stack, rounds, run):
    rows = {t.name: [] for t in stack.targets}
    for _ in range(rounds):
        for target in stack.targets:
            time.sleep(0.5)
            rows[target.name].append(measured(target, lambda: run(target)))
    return rows


def summarize(rows, count_key):
    out = {}
    for name, runs in rows.items():
        entry = {"rounds": runs}
        if "throughput" in runs[0]:
            entry["rps"] = statistics.median(r["throughput"] for r in runs)
        if "p99_us" in runs[0]:
            entry["p50_us"] = statistics.median(r["p50_us"] for r in runs)
            entry["p99_us"] = statistics.median(r["p99_us"] for r in runs)
        if "cpu_s" in runs[0]:
            entry["cpu_us"] = statistics.median(r["cpu_s"] / max(r[count_key], 1) * 1e6 for r in runs)
        entry["errors"] = sum(r.get("errors", 0) for r in runs)
        out[name] = entry
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--gateway", action="append", default=[],
                        help="NAME=BINARY[@FILE] (default: tollgate=target/release/tollgate); FILE's TOML is added to its configuration")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    gateways = []
    for spec in args.gateway or [f"tollgate={BIN}"]:
        name, rest = spec.split("=", 1)
        binary, _, extra_file = rest.partition("@")
        gateways.append((name, binary, open(extra_file).read() if extra_file else ""))
    report = {}
    with tempfile.TemporaryDirectory() as workdir:
        stack = Stack(0, workdir, gateways)
        report["chat-max"] = summarize(phase(stack, args.rounds, lambda t: wrk(t.url, t.key, args.seconds)), "requests")
        report["stream-max"] = summarize(phase(stack, args.rounds, lambda t: wrk(t.url, t.key, args.seconds, STREAM)), "requests")
        stack.stop()
        peaks = {t.name: t.peak_kib for t in stack.targets}
        stack = Stack(50, workdir, gateways)
        report["chat-2000"] = summarize(phase(stack, args.rounds, lambda t: loadgen(t.url, t.key, 2000, args.seconds, CHAT)), "ok")
        stack.stop()
        for t in stack.targets:
            peaks[t.name] = max(peaks.get(t.name, 0), t.peak_kib)
        report["peak_rss_kib"] = peaks
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print_table(report, [name for name, _, _ in gateways])


def print_table(report, gateways):
    chat, stream, rate, peaks = report["chat-max"], report["stream-max"], report["chat-2000"], report["peak_rss_kib"]
    names = ["nginx"] + gateways
    print("| measure | direct | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 2) + "|")

    def row(label, cells):
        print(f"| {label} | " + " | ".join(cells) + " |")

    def ratio(value, base):
        return f"{value:,.0f} ({value / base:.2f}×)"

    row("chat req/s, 64 conns (× nginx)", [f"{chat['direct']['rps']:,.0f}"] + [ratio(chat[n]["rps"], chat["nginx"]["rps"]) for n in names])
    row("CPU µs/request at max (× nginx)", ["-"] + [f"{chat[n]['cpu_us']:.1f} ({chat[n]['cpu_us'] / chat['nginx']['cpu_us']:.1f}×)" for n in names])
    row("stream req/s, 64 conns (× nginx)", [f"{stream['direct']['rps']:,.0f}"] + [ratio(stream[n]["rps"], stream["nginx"]["rps"]) for n in names])
    row("CPU µs/stream at max", ["-"] + [f"{stream[n]['cpu_us']:.1f}" for n in names])
    d50, d99 = rate["direct"]["p50_us"], rate["direct"]["p99_us"]
    row("2,000 req/s +50 ms: added p50 / p99 (ms)", [f"{d50 / 1000:.1f} / {d99 / 1000:.1f} (base)"] +
        [f"+{(rate[n]['p50_us'] - d50) / 1000:.2f} / +{(rate[n]['p99_us'] - d99) / 1000:.2f}" for n in names])
    row("CPU µs/request at 2,000 req/s", ["-"] + [f"{rate[n]['cpu_us']:.1f}" for n in names])
    row("peak RSS (MiB)", ["-"] + [f"{peaks[n] / 1024:.1f}" for n in names])
    errors = {phase: {n: report[phase][n]["errors"] for n in report[phase]} for phase in ("chat-max", "stream-max", "chat-2000")}
    print(f"\nnon-2xx answers: {errors}")


if __name__ == "__main__":
    main()
