#!/usr/bin/env python3
"""Instructions per request, under valgrind's callgrind: counts that repeat where times on a
shared machine do not.

Tollgate (release build, defaults, SQLite records, one key, roomy limit rules) serves a fixed
number of non-streaming chat requests from one keep-alive connection while callgrind counts
every instruction of the process; the mock upstream runs natively. Two runs with different
request counts are subtracted, so start-up, the tokenizer's tables and shutdown cancel out:

    instructions per request = (Ir(many) - Ir(few)) / (many - few)

    python3 bench/callgrind.py --bin target/release/tollgate [--few 200] [--many 1200]

Compare two builds by running it once per binary (the mock is taken from --mock-bin, default
the same binary). `--routing alias|pool` adds a `[models.gpt-4o-mini]` that routes the
requests through a one-target alias, or through a two-deployment weighted pool (a second
upstream at the same mock): their difference is what the pool's choice costs. `--keep FILE` keeps the larger run's profile: `callgrind_annotate --inclusive=yes
FILE` shows where the instructions go.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from run import CHAT, ROOMY_LIMITS, UPSTREAM_KEY, free_port  # the load harness's own


def wait_ready(port, path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"nothing answered on port {port}")


def routing_toml(routing, mock_port):
    """The extra configuration for `--routing`: none, an alias, or a pool of two deployments."""
    if routing == "none":
        return ""
    twin = (f"\n[[upstreams]]\nname = \"twin\"\nbase_url = \"http://127.0.0.1:{mock_port}/v1\"\n"
            "api_key_env = \"OPENAI_API_KEY\"\n")
    if routing == "alias":
        return twin + "\n[models.gpt-4o-mini]\ntarget = \"gpt-4o-mini\"\n"
    return twin + ("\n[models.gpt-4o-mini]\npool = [{ upstream = \"default\", weight = 1 }, "
                   "{ upstream = \"twin\", weight = 1 }]\n")


def instructions(binary, mock_port, requests, workdir, keep=None, routing="none"):
    port = free_port()
    db = os.path.join(workdir, f"cg-{port}.db")
    env = dict(os.environ, DATABASE_URL=f"sqlite://{db}")
    created = subprocess.run([binary, "keys", "create", "--name", "bench", "--json"], env=env,
                             check=True, capture_output=True, text=True)
    key = json.loads(created.stdout)["key"]
    config = os.path.join(workdir, f"cg-{port}.toml")
    with open(config, "w") as f:
        f.write(ROOMY_LIMITS + routing_toml(routing, mock_port))
    env.update(OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{mock_port}/v1",
               PORT=str(port), TOLLGATE_CONFIG=config, TOLLGATE_DATA_DIR=workdir)
    out = os.path.join(workdir, f"callgrind-{port}.out")
    gateway = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, "/health/ready")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for _ in range(requests):
        connection.request("POST", "/v1/chat/completions", body=CHAT.encode(), headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"status {response.status}")
    connection.close()
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(timeout=300)
    if keep:
        shutil.copyfile(out, keep)
    return total_instructions(out)


def total_instructions(out):
    """The instruction count of a callgrind output file."""
    with open(out) as f:
        for line in f:
            found = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if found:
                return int(found.group(1))
    sys.exit("no totals in the callgrind output")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--mock-bin")
    parser.add_argument("--few", type=int, default=200)
    parser.add_argument("--many", type=int, default=1200)
    parser.add_argument("--keep", help="copy the larger run's callgrind output here (for callgrind_annotate)")
    parser.add_argument("--routing", choices=["none", "alias", "pool"], default="none",
                        help="route gpt-4o-mini through an alias or a two-deployment pool")
    args = parser.parse_args()
    mock_port = free_port()
    mock = subprocess.Popen([args.mock_bin or args.bin, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}",
                             "--api-key", UPSTREAM_KEY, "--record-limit", "0"], stdout=subprocess.DEVNULL)
    try:
        wait_ready(mock_port, "/_mock/streams")
        with tempfile.TemporaryDirectory() as workdir:
            few = instructions(args.bin, mock_port, args.few, workdir, routing=args.routing)
            many = instructions(args.bin, mock_port, args.many, workdir, args.keep, args.routing)
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait(timeout=30)
    per_request = (many - few) / (args.many - args.few)
    print(json.dumps({"binary": args.bin, "routing": args.routing, "few": args.few, "ir_few": few, "many": args.many,
                      "ir_many": many, "instructions_per_request": round(per_request)}))


if __name__ == "__main__":
    main()
