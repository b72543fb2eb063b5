#!/usr/bin/env python3
"""What a crash costs the audit log: records lost when Tollgate is killed with SIGKILL under load.

Each round: a mock upstream and Tollgate (release build, SQLite, default records settings:
flush every 200 ms), the open-loop load generator at a fixed rate, and SIGKILL to Tollgate a
few seconds in. Afterwards: responses the load generator received vs records in the database.
The difference is what the crash lost (records of roughly the last flush interval).

Usage: python3 bench/crash.py [--rounds 3] [--rate 2000]
"""

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time

import run  # the benchmark harness: Stack, loadgen, paths

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tollgate", "--example", "loadgen"],
                   cwd=run.ROOT, check=True)
    rows = []
    for _ in range(args.rounds):
        workdir = tempfile.mkdtemp(prefix="tollgate-crash-")
        stack = run.Stack(0, workdir, run.ROOMY_LIMITS, {"TOLLGATE_DATA_DIR": workdir})
        url, key = stack.via("/v1/chat/completions")
        load = subprocess.Popen(
            ["taskset", "-c", "0", run.LOADGEN, url, "--rate", str(args.rate), "--duration-s", "4",
             "--connections", "64", "--body", run.CHAT, "--header", f"Authorization: Bearer {key}",
             "--warmup-s", "0"], stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        stack.gateway.send_signal(signal.SIGKILL)
        stack.gateway.wait()
        report = json.loads(load.communicate()[0])
        database = os.path.join(workdir, f"bench-{stack.port}.db")
        records = sqlite3.connect(database).execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        spill = os.path.join(workdir, "tollgate-records.spill")
        spilled = sum(1 for _ in open(spill)) if os.path.exists(spill) else 0
        rows.append({"responses": report["ok"], "records": records, "spilled": spilled,
                     "lost": report["ok"] - records - spilled})
        stack.mock.send_signal(signal.SIGTERM)
        stack.mock.wait()
    for row in rows:
        print(json.dumps(row))
    rate = args.rate
    lost = ", ".join(str(r["lost"]) for r in rows)
    traffic_ms = ", ".join(f"{r['lost'] / rate * 1000:.0f}" for r in rows)
    print(f"lost per crash at {rate} req/s: {lost} records (= {traffic_ms} ms of traffic)")


if __name__ == "__main__":
    main()
