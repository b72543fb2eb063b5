#!/usr/bin/env python3
"""What a Realtime session costs through Tollgate: the same session served by the mock directly
and through the gateway, in one interleaved run.

Each response is one client event (`response.create`) and five upstream events
(`response.created`, two text deltas, `response.output_text.done`, `response.done` with usage),
the last priced, recorded (SQLite) and charged to a budget (in memory) by the gateway. Blocks of
`--block` responses alternate between the direct session and the gateway's, so both see the same
machine; the gateway's CPU time is read from /proc around its blocks.

    python3 bench/realtime.py --bin target/release/tollgate [--blocks 20] [--block 100]
    python3 bench/realtime.py --bin target/release/tollgate --callgrind [--few 200 --many 1200]

`--callgrind` runs the gateway under valgrind's callgrind twice (few and many responses on one
session) and reports instructions per response: the difference divided by the difference in
responses, so start-up and shutdown cancel out; `--keep FILE` keeps the larger run's profile.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from websockets.sync.client import connect

from run import CLK_TCK, UPSTREAM_KEY, free_port  # the load harness's own
from callgrind import total_instructions, wait_ready

# Admit everything: the limits are checked, never refused.
LIMITS = ("[[limits.rules]]\nscope = \"ip\"\nroute = \"*\"\nrequests = 1000000000\nper = \"1h\"\n\n"
          "[[limits.rules]]\nscope = \"key\"\nroute = \"realtime\"\ntokens = 1000000000000\nper = \"1h\"\n")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def responses(session, count):
    """Asks for `count` responses one after another; each one's round trip in seconds."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.send('{"type":"response.create"}')
        while True:
            event = session.recv()
            if '"response.done"' in event:
                break
            if '"type":"error"' in event:
                sys.exit(f"error event: {event}")
        times.append(time.perf_counter() - started)
    return times


def start_gateway(binary, mock_port, workdir, wrap=()):
    port = free_port()
    db = os.path.join(workdir, f"rt-{port}.db")
    env = dict(os.environ, DATABASE_URL=f"sqlite://{db}")
    created = subprocess.run([binary, "keys", "create", "--name", "bench", "--budget-usd", "1000000",
                              "--period", "month", "--json"], env=env, check=True, capture_output=True, text=True)
    key = json.loads(created.stdout)["key"]
    config = os.path.join(workdir, f"rt-{port}.toml")
    with open(config, "w") as f:
        f.write(LIMITS)
    env.update(OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{mock_port}/v1",
               PORT=str(port), TOLLGATE_CONFIG=config, TOLLGATE_DATA_DIR=workdir, RUST_LOG="warn")
    gateway = subprocess.Popen([*wrap, binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_ready(port, "/health/ready")
    return gateway, port, key


def session_at(port, key):
    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    session = connect(url, additional_headers={"Authorization": f"Bearer {key}"}, max_size=None)
    session.recv()  # session.created
    return session


def interleaved(args, mock_port, workdir):
    gateway, port, key = start_gateway(args.bin, mock_port, workdir)
    try:
        direct = session_at(mock_port, UPSTREAM_KEY)
        through = session_at(port, key)
        responses(direct, args.block)  # warm both
        responses(through, args.block)
        times = {"direct": [], "gateway": []}
        cpu = 0.0
        for _ in range(args.blocks):
            times["direct"] += responses(direct, args.block)
            before = cpu_seconds(gateway.pid)
            times["gateway"] += responses(through, args.block)
            cpu += cpu_seconds(gateway.pid) - before
        rss = peak_rss_mib(gateway.pid)
        direct.close()
        through.close()
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=60)

    def summary(values):
        ordered = sorted(values)
        return {"p50_us": round(statistics.median(ordered) * 1e6),
                "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6)}

    count = len(times["gateway"])
    direct, through = summary(times["direct"]), summary(times["gateway"])
    return {"responses_each": count, "direct": direct, "gateway": through,
            "added_p50_us": through["p50_us"] - direct["p50_us"],
            "gateway_cpu_us_per_response": round(cpu / count * 1e6),
            "gateway_peak_rss_mib": round(rss, 1)}


def instructions(args, mock_port, workdir, count):
    out = os.path.join(workdir, f"callgrind-{count}.out")
    gateway, port, key = start_gateway(args.bin, mock_port, workdir,
                                       ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"))
    session = session_at(port, key)
    responses(session, count)
    session.close()
    time.sleep(0.5)
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=300)
    if args.keep and count == args.many:
        shutil.copyfile(out, args.keep)
    return total_instructions(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=1200)
    parser.add_argument("--keep", help="copy the larger run's callgrind output here (for callgrind_annotate)")
    args = parser.parse_args()
    mock_port = free_port()
    mock = subprocess.Popen([args.bin, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}",
                             "--api-key", UPSTREAM_KEY, "--record-limit", "0"], stdout=subprocess.DEVNULL)
    try:
        wait_ready(mock_port, "/_mock/streams")
        with tempfile.TemporaryDirectory() as workdir:
            if args.callgrind:
                few = instructions(args, mock_port, workdir, args.few)
                many = instructions(args, mock_port, workdir, args.many)
                result = {"few": args.few, "ir_few": few, "many": args.many, "ir_many": many,
                          "instructions_per_response": round((many - few) / (args.many - args.few))}
            else:
                result = interleaved(args, mock_port, workdir)
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait(timeout=30)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
