#!/usr/bin/env python3
"""Benchmarks of the shared tier (S3, on Garage) and of cluster-wide single flight.

One command (installs Garage with cargo when missing, builds the release binary):

    python3 benches/tiers.py            # 256 MiB image, 3 rounds
    python3 benches/tiers.py --quick    # 64 MiB, 1 round

Everything on loopback: one upstream (Debian's docker-registry), one Garage, and 1 to 4
pullthrough nodes, each with its own cache directory and ports. Reports, in the same run:

 1. shared tier: upstream bytes when 1, 2 and 4 nodes pull the same image one after
    another (goal: 1x the image), and a node's cold pull from the bucket vs from the upstream
 2. shared tier: a node's read throughput from the bucket vs Garage's own raw GET (curl,
    SigV4-signed) of the same object
 3. cluster: upstream bytes when 1, 2 and 4 nodes x 8 clients pull one cold blob at once
    (goal: 1x for every node count), and the time until the last of 4 nodes x 8 clients has
    it vs one node's cold time
Results are printed and written to benches/tiers.json; benches/RESULTS.md records a run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (shared helpers: processes, images, curl)

MIB = 1 << 20
AK = "GK31c2f218a2e44f485b94239e"
SK = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835"
BUCKET = "pullthrough"
TOKEN = "bench-cluster-token-0123456789"


def garage_bin():
    found = shutil.which("garage")
    if found:
        return found
    installed = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "bin", "garage")
    if not os.path.exists(installed):
        harness.log("installing garage 2.5.0 (about 9 minutes, once) ...")
        subprocess.run(["cargo", "install", "--locked", "garage", "--version", "2.5.0"], check=True)
    return installed


def start_garage(work):
    d = os.path.join(work, "garage")
    os.makedirs(d, exist_ok=True)
    port, rpc = harness.free_port(), harness.free_port()
    open(os.path.join(d, "garage.toml"), "w").write(
        f'metadata_dir = "{d}/meta"\ndata_dir = "{d}/data"\ndb_engine = "sqlite"\nreplication_factor = 1\n'
        f'rpc_bind_addr = "127.0.0.1:{rpc}"\nrpc_public_addr = "127.0.0.1:{rpc}"\nrpc_secret = "{"0f" * 32}"\n'
        f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{port}"\nroot_domain = ".s3.garage.localhost"\n')
    env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=AK, GARAGE_DEFAULT_SECRET_KEY=SK, GARAGE_DEFAULT_BUCKET=BUCKET,
               RUST_LOG="warn")
    p = harness.Proc([garage_bin(), "-c", os.path.join(d, "garage.toml"), "server", "--single-node",
                      "--default-bucket"], os.path.join(d, "garage.log"), env=env)
    harness.wait_port(port)
    end = time.time() + 30
    while time.time() < end:  # the bucket exists a moment after the port opens
        r = subprocess.run(raw_s3_get(port, "probe-none", "/dev/null"), capture_output=True, text=True)
        if r.stdout.strip() in ("404", "200"):
            return p, port
        time.sleep(0.1)
    p.stop()  # never leave it running behind a failed start
    raise SystemExit(f"garage did not serve its bucket (see {d}/garage.log)")


def raw_s3_get(port, key, out):
    # Garage wants x-amz-content-sha256 on every request; curl signs it when given.
    return ["curl", "-sS", "-o", out, "-w", "%{http_code}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--aws-sigv4", "aws:amz:garage:s3", "--user",
            f"{AK}:{SK}", f"http://127.0.0.1:{port}/{BUCKET}/{key}"]


class Node:
    def __init__(self, binary, work, name, upstream_url, garage_port=None, prefix="", cluster=None):
        self.dir = os.path.join(work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port, self.admin = cluster["port"] if cluster else harness.free_port(), harness.free_port()
        extra = ""
        if garage_port:
            extra += (f'[shared.s3]\nbucket = "{BUCKET}"\nprefix = "{prefix}"\nregion = "garage"\n'
                      f'endpoint_url = "http://127.0.0.1:{garage_port}"\npath_style = true\n')
        if cluster:
            peers = ", ".join(f'"http://127.0.0.1:{p}"' for p in cluster["peers"])
            extra += f'[cluster]\nadvertise = "http://127.0.0.1:{self.port}"\npeers = [{peers}]\n'
        cfg = (f'[server]\nlisten = "127.0.0.1:{self.port}"\nadmin_listen = "127.0.0.1:{self.admin}"\n'
               f'[cache]\ndir = "{self.dir}/cache"\nmin_free = "0"\n{extra}'
               f'[[upstream]]\nhost = "up.bench"\nurl = "{upstream_url}"\ndefault = true\n')
        path = os.path.join(self.dir, "pullthrough.toml")
        open(path, "w").write(cfg)
        env = dict(os.environ, RUST_LOG="warn", AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK,
                   AWS_EC2_METADATA_DISABLED="true", PULLTHROUGH_CLUSTER_TOKEN=TOKEN)
        self.proc = harness.Proc([binary, "serve", "--config", path], os.path.join(self.dir, "log"), env=env)
        harness.wait_port(self.port)

    def metric(self, series):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics").read().decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.proc.stop()


def wait_uploads(node, n, limit=120):
    """Until the node reports `n` finished blob uploads (or found them in the bucket)."""
    end = time.time() + limit
    while time.time() < end:
        done = sum(node.metric(f'pullthrough_shared_uploads_total{{kind="{k}",result="{r}"}}')
                   for k in ("blob", "manifest") for r in ("ok", "exists"))
        if done >= n:
            return
        time.sleep(0.2)
    raise SystemExit("uploads did not finish")


def skopeo_pull(node, name):
    out = tempfile.mkdtemp()
    t = time.time()
    harness.skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{node.port}/{name}", f"dir:{out}")
    secs = time.time() - t
    shutil.rmtree(out)
    return secs


def parallel_curls(urls):
    times = [None] * len(urls)

    def one(i, u):
        times[i] = harness.curl(u)[1]

    t0 = time.time()
    ts = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(urls)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work")
    args = ap.parse_args()
    size, rounds = (64 * MIB, 1) if args.quick else (256 * MIB, 3)
    harness.ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pullthrough"], cwd=harness.ROOT, check=True)
    binary = os.path.join(harness.ROOT, "target", "release", "pullthrough")
    work = args.work or tempfile.mkdtemp(prefix="pt-tiers-")
    res = {"size_MiB": size // MIB, "rounds": rounds}
    procs = []
    try:
        up_port = harness.free_port()
        procs.append(harness.registry(os.path.join(work, "upstream"), up_port))
        upstream = f"http://127.0.0.1:{up_port}"
        g, gport = start_garage(work)
        procs.append(g)
        layout = os.path.join(work, "img")
        manifest, (layer,) = harness.make_image(layout, [size], "v1")
        harness.push(layout, "v1", up_port, "bench/img")
        image_bytes = size + 1024  # the layer dominates; config and manifest are < 1 KiB

        # 1. shared tier: nodes one after another, each with an empty disk, one bucket prefix.
        log = harness.log
        log("1. shared tier: nodes one after another ...")
        for n in (1, 2, 4):
            prefix = f"seq{n}-{time.time_ns()}/"
            up_bytes, times = 0.0, []
            for i in range(n):
                node = Node(binary, work, f"seq{n}-{i}", upstream, gport, prefix)
                times.append(skopeo_pull(node, "bench/img:v1"))
                fetched = node.metric('pullthrough_tier_fill_bytes_total{tier="upstream"}')
                up_bytes += fetched
                if fetched:
                    wait_uploads(node, 3)  # layer, config, manifest: the next node finds them
                node.stop()
            res[f"sequential_{n}_nodes_upstream_x_image"] = round(up_bytes / image_bytes, 3)
            if n == 4:
                res["cold_pull_from_upstream_s"] = round(times[0], 3)
                res["cold_pull_from_bucket_s"] = round(harness.median(times[1:]), 3)
                res["bucket_vs_upstream_cold_ratio"] = round(harness.median(times[1:]) / times[0], 3)

        # 2. read throughput: a node reading the layer from the bucket vs a raw S3 GET.
        log("2. shared tier read throughput vs raw Garage GET ...")
        key = f"{prefix}blobs/sha256/{layer.split(':')[1]}"
        ours, raw = [], []
        for r in range(rounds):
            node = Node(binary, work, f"tput-{r}", upstream, gport, prefix)
            _, secs = harness.curl(node.url(f"/v2/bench/img/blobs/{layer}"))
            ours.append(size / secs / MIB)
            node.stop()
            t = time.time()
            code = subprocess.run(raw_s3_get(gport, key, "/dev/null"), capture_output=True, text=True).stdout
            assert code.strip() == "200", code
            raw.append(size / (time.time() - t) / MIB)
        res["tier_read_MiB_s"] = round(harness.median(ours), 1)
        res["garage_raw_get_MiB_s"] = round(harness.median(raw), 1)
        res["tier_vs_raw_ratio"] = round(harness.median(ours) / harness.median(raw), 3)

        # 3. cluster single flight: N nodes x 8 clients, one cold blob, no shared tier.
        log("3. cluster: nodes x 8 clients at once ...")
        one_node_cold = []
        for n in (1, 2, 4):
            walls, ratios = [], []
            for r in range(rounds):
                ports = [harness.free_port() for _ in range(n)]
                nodes = [Node(binary, work, f"c{n}-{i}", upstream, cluster={"port": p, "peers": ports})
                         for i, p in enumerate(ports)]
                before = registry_blob_gets(work, layer)
                wall = parallel_curls([nd.url(f"/v2/bench/img/blobs/{layer}") for nd in nodes for _ in range(8)])
                fetched = registry_blob_gets(work, layer) - before
                walls.append(wall)
                ratios.append(fetched)
                for nd in nodes:
                    nd.stop()
            res[f"cluster_{n}x8_upstream_x_blob"] = max(ratios)
            res[f"cluster_{n}x8_wall_s"] = round(harness.median(walls), 3)
            if n == 1:
                one_node_cold = walls
        res["cluster_4x8_vs_1_node_cold"] = round(res["cluster_4x8_wall_s"] / harness.median(one_node_cold), 3)
    finally:
        for p in procs:
            p.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    json.dump(res, open(os.path.join(harness.ROOT, "benches", "tiers.json"), "w"), indent=2)


def registry_blob_gets(work, digest):
    text = open(os.path.join(work, "upstream", "registry.log"), errors="replace").read()
    return text.count(f"\"GET /v2/bench/img/blobs/{digest} HTTP")


if __name__ == "__main__":
    main()
