#!/usr/bin/env python3
"""Rollout benchmark: N pullthrough nodes cold on one blob at once, links capped.

    python3 benches/rollout.py --binary target/release/pullthrough          # N = 1, 4, 8
    python3 benches/rollout.py --binary ... --nodes 1,4,8,12 --mib 16 --mbit 50 --rounds 2

Python 3.11 standard library only, plus Debian's `docker-registry` as the upstream.

Every node (a pullthrough process on loopback, `[cluster]` with all the others as peers)
advertises a rate-capped relay of this script as its peer-facing address, so whatever a
node sends to other nodes crosses a link of `--mbit` Mbit/s (one bucket per node, shared
by all its connections: the node's uplink). The upstream (docker-registry, the blob pushed
through its API) sits behind a relay with the same cap. One client per node reads
`GET /v2/<name>/blobs/<digest>` straight from its node (the node's own workload, not capped),
all at once, cold. Measured per run:

- time until the last client has all bytes, and that ÷ one node's time (N = 1, same run);
- bytes each node's relay carried, in copies of the blob (the busiest node's is reported);
- upstream GETs of the blob (registry's access log) and the copies its relay carried;
- every client's bytes hashed against the digest.

Each N runs in each design: `today` (max_peer_streams high enough that the owner streams to
every asker itself: the design before referrals) and `chain` (max_peer_streams = 1, the
default), plus `tree2` (max_peer_streams = 2) with --tree2, so all ratios come from one run.
Results go to stdout as a table and to --out as JSON.
"""

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

MIB = 1 << 20
TOKEN = "rollout-bench-token-0123456789"
NAME = "bench/blob"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_port(port, limit=30):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {limit}s")


class Bucket:
    """A token bucket: `rate` bytes/s, bursts of at most `burst` bytes."""

    def __init__(self, rate, burst=64 * 1024):
        self.rate, self.burst = rate, burst
        self.next = time.monotonic()

    async def take(self, n):
        now = time.monotonic()
        start = max(self.next, now - self.burst / self.rate)
        self.next = start + n / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class Relay:
    """A TCP relay to 127.0.0.1:`target`; bytes from the target to the caller (what the
    target sends) are capped by one bucket shared by every connection, and counted."""

    def __init__(self, target, rate):
        self.target, self.bucket, self.down, self.port = target, Bucket(rate), 0, None

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, cr, cw):
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()
            return

        async def pipe(r, w, capped):
            try:
                while True:
                    b = await r.read(64 * 1024)
                    if not b:
                        break
                    if capped:
                        await self.bucket.take(len(b))
                        self.down += len(b)
                    w.write(b)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                try:
                    w.close()
                except OSError:
                    pass

        await asyncio.gather(pipe(cr, tw, False), pipe(tr, cw, True))

    def close(self):
        self.server.close()


def registry(dirname, port):
    os.makedirs(dirname, exist_ok=True)
    cfg = (f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n"
           f"    rootdirectory: {dirname}/data\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n")
    path = os.path.join(dirname, "config.yml")
    open(path, "w").write(cfg)
    logf = os.path.join(dirname, "registry.log")
    p = subprocess.Popen(["docker-registry", "serve", path], stdout=open(logf, "wb"), stderr=subprocess.STDOUT)
    return p, logf


def push_blob(port, data):
    """Monolithic upload through the registry API; the digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/{NAME}/blobs/uploads/", method="POST")
    loc = urllib.request.urlopen(req).headers["Location"]
    if loc.startswith("/"):
        loc = f"http://127.0.0.1:{port}{loc}"
    sep = "&" if "?" in loc else "?"
    req = urllib.request.Request(f"{loc}{sep}digest={digest}", data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    assert urllib.request.urlopen(req).status == 201
    return digest


def upstream_gets(logf, digest):
    return sum(1 for l in open(logf, errors="replace") if f'"GET /v2/{NAME}/blobs/{digest}' in l)


async def node(binary, dirname, port, advertise, peers, upstream_port, streams):
    os.makedirs(dirname, exist_ok=True)
    plist = ", ".join(f'"{p}"' for p in peers)
    cfg = (f"[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{free_port()}\"\n"
           f"[cache]\ndir = \"{dirname}/cache\"\nmin_free = \"0\"\n"
           f"[cluster]\nadvertise = \"{advertise}\"\npeers = [{plist}]\ntimeout = \"30s\"\n"
           f"max_peer_streams = {streams}\n"
           f"[[upstream]]\nhost = \"up.bench\"\nurl = \"http://127.0.0.1:{upstream_port}\"\ndefault = true\n")
    path = os.path.join(dirname, "pullthrough.toml")
    open(path, "w").write(cfg)
    p = subprocess.Popen([binary, "serve", "--config", path], stdout=open(f"{dirname}/log", "wb"),
                         stderr=subprocess.STDOUT, env=dict(os.environ, RUST_LOG="warn",
                                                            PULLTHROUGH_CLUSTER_TOKEN=TOKEN))
    await wait_port(port)
    return p


async def client(port, digest):
    """GET the blob from the node on `port`: (seconds, bytes, sha256 matches)."""
    start = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split()[1])
    h, n = hashlib.sha256(), 0
    while True:
        b = await r.read(256 * 1024)
        if not b:
            break
        h.update(b)
        n += len(b)
    w.close()
    return time.monotonic() - start, n, status == 200 and "sha256:" + h.hexdigest() == digest


async def run(args, work, up_port, up_log, digest, n, streams):
    """One cold rollout on `n` fresh nodes; the measurements."""
    up_relay = await Relay(up_port, args.rate).start()
    ports = [free_port() for _ in range(n)]
    relays = [await Relay(p, args.rate).start() for p in ports]
    urls = [f"http://127.0.0.1:{r.port}" for r in relays]
    procs = []
    gets_before = upstream_gets(up_log, digest)
    try:
        for i in range(n):
            d = tempfile.mkdtemp(dir=work, prefix=f"n{n}-k{streams}-")
            procs.append(await node(args.binary, d, ports[i], urls[i], urls, up_relay.port, streams))
        results = await asyncio.gather(*(client(p, digest) for p in ports))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        for r in relays + [up_relay]:
            r.close()
    await asyncio.sleep(0.3)  # the registry's access log line lands after the response
    return {
        "nodes": n,
        "max_peer_streams": streams,
        "last_s": max(t for t, _, _ in results),
        "first_s": min(t for t, _, _ in results),
        "all_verified": all(ok and got == args.size for _, got, ok in results),
        "copies_by_node": [round(r.down / args.size, 2) for r in relays],
        "busiest_copies": round(max(r.down for r in relays) / args.size, 2),
        "upstream_gets": upstream_gets(up_log, digest) - gets_before,
        "upstream_copies": round(up_relay.down / args.size, 2),
    }


async def main_async(args):
    work = tempfile.mkdtemp(prefix="rollout-")
    up_port = free_port()
    reg, up_log = registry(os.path.join(work, "upstream"), up_port)
    try:
        await wait_port(up_port)
        data = os.urandom(args.size)
        rows = []
        designs = [("today", 1000), ("chain", 1)] + ([("tree2", 2)] if args.tree2 else [])
        for rnd in range(args.rounds):
            for n in args.nodes:
                for name, k in designs:
                    if n == 1 and k != 1:
                        continue  # one node has no peers: the designs do not differ
                    digest = push_blob(up_port, data + rnd.to_bytes(4, "big") + n.to_bytes(4, "big") + k.to_bytes(4, "big"))
                    args.size = len(data) + 12
                    row = await run(args, work, up_port, up_log, digest, n, k)
                    row.update(design=name if n > 1 else "one node", round=rnd)
                    log(json.dumps(row))
                    rows.append(row)
        return rows
    finally:
        reg.terminate()
        reg.wait()
        shutil.rmtree(work, ignore_errors=True)


def report(rows):
    one = [r["last_s"] for r in rows if r["nodes"] == 1]
    base = sorted(one)[len(one) // 2]
    print(f"one node's time (median of {len(one)}): {base:.2f} s")
    print(f"{'design':<9} {'N':>3} {'last (s)':>9} {'÷ one':>6} {'busiest link':>13} {'upstream GETs':>14} "
          f"{'upstream copies':>16} {'verified':>9}")
    for r in rows:
        r["ratio"] = round(r["last_s"] / base, 2)
        print(f"{r['design']:<9} {r['nodes']:>3} {r['last_s']:>9.2f} {r['ratio']:>6.2f} "
              f"{r['busiest_copies']:>12.2f}x {r['upstream_gets']:>14} {r['upstream_copies']:>15.2f}x "
              f"{str(r['all_verified']):>9}")
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--nodes", default="1,4,8")
    ap.add_argument("--mib", type=float, default=16)
    ap.add_argument("--mbit", type=float, default=50)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tree2", action="store_true", help="also run max_peer_streams = 2")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.nodes = [int(x) for x in args.nodes.split(",")]
    if 1 not in args.nodes:
        args.nodes.insert(0, 1)
    args.size = int(args.mib * MIB)
    args.rate = args.mbit * 1e6 / 8
    if shutil.which("docker-registry") is None:
        raise SystemExit("needs Debian's docker-registry (apt-get install docker-registry)")
    rows = asyncio.run(main_async(args))
    base = report(rows)
    if args.out:
        json.dump({"one_node_s": base, "mib": args.mib, "mbit": args.mbit, "rows": rows}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
