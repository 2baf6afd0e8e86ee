#!/usr/bin/env python3
"""pullthrough benchmark harness: pullthrough side by side with its peers, on loopback.

One command (installs what it needs with apt, builds the release binary):

    python3 benches/harness.py            # full run (1 GiB blobs; about 10 minutes)
    python3 benches/harness.py --quick    # smaller blobs and fewer rounds, for a smoke test

It starts a real upstream (Debian's docker-registry), pullthrough, the peer (docker-registry
in proxy mode, `proxy: remoteurl:`), nginx serving the same files statically, and nginx as a
caching reverse proxy in front of the same upstream (`proxy_cache` with `proxy_cache_lock`,
caching blobs and manifests by digest: "nginx-cache"), then measures, alternating the
systems round by round and reporting medians and ratios:

 1. warm blob throughput, one client (pullthrough / nginx, pullthrough / peer)
 2. cold blob pull wall time, cache wiped (pullthrough against direct from upstream, the
    peer and nginx-cache)
 3. 64 clients on one cold blob: upstream bytes, wall time vs one client, peak RSS
    (pullthrough, peer, nginx-cache)
 4. many small requests: manifest GET by digest from cache with wrk (rate, p50, p99), for
    pullthrough, the peer, nginx-cache and nginx static
 5. whole-image pull with skopeo of a 200-layer image, cold and warm
 6. start-up with 100,000 cached blobs: time until the daemon answers

Every timed cold pull (2, 3, 5) and every request-rate run (4) starts after a `sync`, so
that no system pays for the dirty pages another one left behind (see `settle`).

`--binary PATH` measures a binary built elsewhere (e.g. the commit before a change) instead of
building this tree's; `--out PATH` writes the JSON results there.

Results are printed as a table and written to benches/results.json; benches/RESULTS.md
records a run with the machine it ran on.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_tools():
    need = [p for c, p in [("docker-registry", "docker-registry"), ("skopeo", "skopeo"), ("nginx", "nginx-light"),
                           ("wrk", "wrk"), ("curl", "curl")] if shutil.which(c) is None]
    if need:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        log("installing", need)
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + need, check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listening on {port} after {limit}s")


class Proc:
    def __init__(self, args, logfile, env=None):
        self.logfile = logfile
        self.p = subprocess.Popen(args, stdout=open(logfile, "wb"), stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def sample_rss_kib(self):
        """(VmRSS, RssAnon) now, in KiB."""
        vals = {}
        try:
            for line in open(f"/proc/{self.p.pid}/status"):
                if line.startswith(("VmRSS:", "RssAnon:")):
                    vals[line.split(":")[0]] = int(line.split()[1])
        except OSError:
            pass
        return vals.get("VmRSS", 0), vals.get("RssAnon", 0)

    def peak_rss_mib(self):
        try:
            for line in open(f"/proc/{self.p.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None


def registry(dirname, port, remote=None):
    os.makedirs(dirname, exist_ok=True)
    proxy = f"proxy:\n  remoteurl: {remote}\n" if remote else ""
    cfg = (f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n"
           f"    rootdirectory: {dirname}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
           f"  secret: bench\n{proxy}")
    path = os.path.join(dirname, "config.yml")
    open(path, "w").write(cfg)
    p = Proc(["docker-registry", "serve", path], os.path.join(dirname, "registry.log"))
    wait_port(port)
    return p


def pullthrough(binary, dirname, port, upstream_url, extra_cache=""):
    os.makedirs(dirname, exist_ok=True)
    admin = free_port()
    cfg = (f"[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n"
           f"[cache]\ndir = \"{dirname}/cache\"\nmin_free = \"0\"\n{extra_cache}\n"
           f"[[upstream]]\nhost = \"up.bench\"\nurl = \"{upstream_url}\"\ndefault = true\n")
    path = os.path.join(dirname, "pullthrough.toml")
    open(path, "w").write(cfg)
    p = Proc([binary, "serve", "--config", path], os.path.join(dirname, "pullthrough.log"),
             env=dict(os.environ, RUST_LOG="warn"))
    wait_port(port)
    return p


def start_nginx(dirname, port, http_body):
    """nginx in the foreground under `dirname` (pid, logs, temp paths), with `http_body`
    (server blocks and the like) inside its `http` block."""
    os.makedirs(dirname, exist_ok=True)
    conf = os.path.join(dirname, "nginx.conf")
    open(conf, "w").write(f"""
daemon off;
worker_processes 2;
pid {dirname}/nginx.pid;
error_log {dirname}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path {dirname}/body;
  proxy_temp_path {dirname}/proxy;
  fastcgi_temp_path {dirname}/fastcgi;
  uwsgi_temp_path {dirname}/uwsgi;
  scgi_temp_path {dirname}/scgi;
{http_body}}}
""")
    p = Proc(["nginx", "-c", conf, "-p", dirname], os.path.join(dirname, "nginx.log"))
    wait_port(port)
    return p


def nginx(dirname, port, root):
    return start_nginx(dirname, port, f"""  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
""")


def nginx_cache(dirname, port, upstream_port, wipe=False):
    """nginx as a caching reverse proxy for the registry at `upstream_port`: blobs and
    manifests by digest cached on disk (`proxy_cache`), one upstream fetch per key at a time
    (`proxy_cache_lock`, with timeouts long enough that followers never bypass it), the
    rest (tags, /v2/) passed through uncached."""
    if wipe:
        shutil.rmtree(dirname, ignore_errors=True)
    return start_nginx(dirname, port, f"""  proxy_cache_path {dirname}/cache levels=1:2 keys_zone=registry:16m max_size=64g inactive=1d use_temp_path=off;
  upstream registry {{
    server 127.0.0.1:{upstream_port};
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_read_timeout 300s;
    location ~ "^/v2/.+/(blobs|manifests)/sha256:[0-9a-f]{{64}}$" {{
      proxy_pass http://registry;
      proxy_cache registry;
      proxy_cache_key "$uri $http_accept";
      proxy_cache_valid 200 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 1h;
      proxy_cache_lock_age 1h;
      proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires;
    }}
    location / {{
      proxy_pass http://registry;
    }}
  }}
""")


def curl(url, headers=()):
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout.split()
    code, size, secs = int(out[0]), int(out[1]), float(out[2])
    if code != 200:
        raise SystemExit(f"{url}: HTTP {code}")
    return size, secs


def write_blob(dirpath, size):
    """A blob of `size` random bytes in an OCI layout's blobs dir; returns (digest, size)."""
    h = hashlib.sha256()
    tmp = os.path.join(dirpath, "blobs", "sha256", "tmp")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    with open(tmp, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    d = h.hexdigest()
    os.rename(tmp, os.path.join(dirpath, "blobs", "sha256", d))
    return "sha256:" + d, size


def write_json_blob(dirpath, obj):
    data = json.dumps(obj).encode()
    d = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(dirpath, "blobs", "sha256"), exist_ok=True)
    open(os.path.join(dirpath, "blobs", "sha256", d), "wb").write(data)
    return "sha256:" + d, len(data)


def make_image(dirpath, layer_sizes, tag):
    """An OCI layout holding one image with random (uncompressed tar media type) layers."""
    layers = [write_blob(dirpath, s) for s in layer_sizes]
    cfg = write_json_blob(dirpath, {"architecture": "amd64", "os": "linux",
                                    "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}})
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                           for d, s in layers]}
    m = write_json_blob(dirpath, manifest)
    open(os.path.join(dirpath, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    open(os.path.join(dirpath, "index.json"), "w").write(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": manifest["mediaType"], "digest": m[0], "size": m[1],
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return m[0], [d for d, _ in layers]


def skopeo(*args):
    subprocess.run(["skopeo", "--insecure-policy"] + list(args), check=True, stdout=subprocess.DEVNULL)


def push(layout, tag, port, name):
    skopeo("copy", "--dest-tls-verify=false", "--preserve-digests", f"oci:{layout}:{tag}",
           f"docker://127.0.0.1:{port}/{name}:{tag}")


def median(xs):
    return statistics.median(xs)


def wrk(url, method="GET", seconds=5, conns=32, headers=()):
    script = None
    args = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if method != "GET":
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "{method}"\n')
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [url], check=True, capture_output=True, text=True).stdout
    if script:
        os.unlink(script.name)
    rate = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec:")))

    def pct(p):
        line = next(l for l in out.splitlines() if l.strip().startswith(p))
        v = line.split()[1]
        for suffix, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
            if v.endswith(suffix):
                return float(v[: -len(suffix)]) * scale
        return float(v)

    non2xx = [l for l in out.splitlines() if "Non-2xx" in l]
    if non2xx:
        raise SystemExit(f"wrk saw errors: {non2xx}")
    return rate, pct("50%"), pct("99%")


class Lab:
    """Upstream, pullthrough, peer and nginx, each restartable with an empty cache."""

    def __init__(self, work, binary):
        self.work, self.binary = work, binary
        self.up_port = free_port()
        self.upstream = registry(os.path.join(work, "upstream"), self.up_port)
        self.up_url = f"http://127.0.0.1:{self.up_port}"
        self.pt_port, self.peer_port, self.ngc_port = free_port(), free_port(), free_port()
        self.pt = self.peer = self.ngc = None
        self.start_pt()
        self.start_peer()
        self.start_ngc()

    def start_pt(self, wipe=False):
        if self.pt:
            self.pt.stop()
        d = os.path.join(self.work, "pullthrough")
        if wipe:
            shutil.rmtree(os.path.join(d, "cache"), ignore_errors=True)
        self.pt = pullthrough(self.binary, d, self.pt_port, self.up_url)

    def start_peer(self, wipe=False):
        if self.peer:
            self.peer.stop()
        d = os.path.join(self.work, "peer")
        if wipe:
            shutil.rmtree(os.path.join(d, "data"), ignore_errors=True)
        self.peer = registry(d, self.peer_port, remote=self.up_url)

    def start_ngc(self, wipe=False):
        if self.ngc:
            self.ngc.stop()
        self.ngc = nginx_cache(os.path.join(self.work, "nginx-cache"), self.ngc_port, self.up_port, wipe=wipe)

    def urls(self, path):
        return {"direct": self.up_url + path, "pullthrough": f"http://127.0.0.1:{self.pt_port}{path}",
                "peer": f"http://127.0.0.1:{self.peer_port}{path}",
                "nginx_cache": f"http://127.0.0.1:{self.ngc_port}{path}"}

    def upstream_bytes(self, path, since_lines):
        lines = open(self.upstream.logfile, errors="replace").read().splitlines()[since_lines:]
        total = 0
        for l in lines:
            if f'"GET {path} HTTP' in l:
                try:
                    total += int(l.split('" ')[1].split()[1])
                except (IndexError, ValueError):
                    pass
        return total

    def upstream_log_len(self):
        return len(open(self.upstream.logfile, errors="replace").read().splitlines())

    def stop(self):
        for p in (self.pt, self.peer, self.ngc, self.upstream):
            if p:
                p.stop()


def bench_warm(lab, results, big_path, nginx_url, size, rounds):
    urls = lab.urls(big_path)
    # The same binary with [cache] verify_on_read = true (a cache of its own), in the same
    # rotation: its cost is the ratio to plain pullthrough measured side by side.
    vor_port = free_port()
    vor = pullthrough(lab.binary, os.path.join(lab.work, "pullthrough-vor"), vor_port, lab.up_url,
                      "verify_on_read = true")
    urls["pullthrough_verify_on_read"] = f"http://127.0.0.1:{vor_port}{big_path}"
    try:
        curl(urls["pullthrough"])
        curl(urls["peer"])
        curl(urls["pullthrough_verify_on_read"])
        times = {"nginx": [], "pullthrough": [], "peer": [], "pullthrough_verify_on_read": []}
        order = ["nginx", "pullthrough", "peer", "pullthrough_verify_on_read"]
        for r in range(rounds):
            for name in order[r % 4:] + order[: r % 4]:
                url = nginx_url if name == "nginx" else urls[name]
                got, secs = curl(url)
                assert got == size, (name, got)
                times[name].append(size / secs / 1e9)
    finally:
        vor.stop()
    med = {k: median(v) for k, v in times.items()}
    results["warm_ratio_verify_on_read"] = med["pullthrough_verify_on_read"] / med["pullthrough"]
    results["warm_throughput_GBps"] = med
    results["warm_ratio_vs_nginx"] = med["pullthrough"] / med["nginx"]
    results["warm_ratio_vs_peer"] = med["pullthrough"] / med["peer"]


def busy_fraction(seconds=0.5):
    """The share of the machine's CPU time spent busy over the next `seconds`."""
    def sample():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def settle(limit=60):
    """Bring the machine to the same quiet state before every timed run, whichever system
    ran last: write back every dirty page, then wait (at most `limit` seconds) until the CPU
    is nearly idle, so no system's leftover work runs into the next one's measurement.
    pullthrough fsyncs what it caches; the peer and nginx do not, and the gigabytes they left
    unwritten were written back by the kernel during whichever pull came next (1 GiB blob,
    /proc/vmstat: 1.3-2.2 GiB dirty when pullthrough's turn came, 1.0-1.2 GiB at the
    peer's)."""
    os.sync()
    deadline = time.time() + limit
    while busy_fraction() > 0.1 and time.time() < deadline:
        pass


def bench_cold(lab, results, big_path, size, rounds):
    urls = lab.urls(big_path)
    times = {"direct": [], "pullthrough": [], "peer": [], "nginx_cache": []}
    for _ in range(rounds):
        settle()
        times["direct"].append(curl(urls["direct"])[1])
        lab.start_pt(wipe=True)
        settle()
        times["pullthrough"].append(curl(urls["pullthrough"])[1])
        lab.start_peer(wipe=True)
        settle()
        times["peer"].append(curl(urls["peer"])[1])
        lab.start_ngc(wipe=True)
        settle()
        times["nginx_cache"].append(curl(urls["nginx_cache"])[1])
    med = {k: median(v) for k, v in times.items()}
    results["cold_seconds"] = med
    results["cold_ratio_pullthrough_vs_direct"] = med["pullthrough"] / med["direct"]
    results["cold_ratio_peer_vs_direct"] = med["peer"] / med["direct"]
    results["cold_ratio_nginx_cache_vs_direct"] = med["nginx_cache"] / med["direct"]
    results["cold_ratio_pullthrough_vs_peer"] = med["pullthrough"] / med["peer"]
    results["cold_ratio_pullthrough_vs_nginx_cache"] = med["pullthrough"] / med["nginx_cache"]


def bench_concurrency(lab, results, path, size, clients):
    out = {}
    for name, restart in (("pullthrough", lab.start_pt), ("peer", lab.start_peer), ("nginx_cache", lab.start_ngc)):
        restart(wipe=True)
        url = lab.urls(path)[name]
        settle()
        t = time.time()
        curl(url)
        single = time.time() - t
        restart(wipe=True)
        proc = {"pullthrough": lab.pt, "peer": lab.peer, "nginx_cache": lab.ngc}[name]
        mark = lab.upstream_log_len()
        settle()
        t = time.time()
        procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
                                  stdout=subprocess.PIPE, text=True) for _ in range(clients)]
        peak_anon = 0
        while any(p.poll() is None for p in procs):
            peak_anon = max(peak_anon, proc.sample_rss_kib()[1])
            time.sleep(0.01)
        sizes = [int(p.communicate()[0] or 0) for p in procs]
        wall = time.time() - t
        time.sleep(0.5)
        out[name] = {"clients": clients, "all_complete": all(s == size for s in sizes), "wall_s": wall,
                     "single_client_s": single, "wall_vs_single": wall / single,
                     "upstream_bytes_x_blob": lab.upstream_bytes(path, mark) / size,
                     # nginx: its master process only (the workers do the work): not comparable.
                     "peak_rss_MiB": proc.peak_rss_mib(), "peak_anon_rss_MiB": peak_anon / 1024}
    results["concurrency"] = out


def bench_small(lab, results, manifest_path, nginx_static_url, seconds):
    accept = "Accept: application/vnd.oci.image.manifest.v1+json"
    urls = dict(lab.urls(manifest_path), nginx_static=nginx_static_url)
    systems = ("pullthrough", "peer", "nginx_cache", "nginx_static")
    for name in systems:
        curl(urls[name], [accept])
    out = {}
    # GET only: wrk's response parser does not know a HEAD answer has no body and stalls.
    for method in ("GET",):
        for name in systems:
            settle()
            rate, p50, p99 = wrk(urls[name], method, seconds, headers=[accept])
            out[f"{name}_{method}"] = {"rps": rate, "p50_ms": p50, "p99_ms": p99}
        out[f"ratio_{method}"] = out[f"pullthrough_{method}"]["rps"] / out[f"peer_{method}"]["rps"]
        for ref in ("nginx_cache", "nginx_static"):
            out[f"ratio_{method}_vs_{ref}"] = out[f"pullthrough_{method}"]["rps"] / out[f"{ref}_{method}"]["rps"]
    results["small_requests"] = out


def bench_image(lab, results, name, rounds):
    out = {}
    for system in ("direct", "pullthrough", "peer", "nginx_cache"):
        port = {"direct": lab.up_port, "pullthrough": lab.pt_port, "peer": lab.peer_port,
                "nginx_cache": lab.ngc_port}[system]
        cold, warm = [], []
        for _ in range(rounds):
            if system == "pullthrough":
                lab.start_pt(wipe=True)
            if system == "peer":
                lab.start_peer(wipe=True)
            if system == "nginx_cache":
                lab.start_ngc(wipe=True)
            for bucket in (cold, warm):
                dest = tempfile.mkdtemp(dir=lab.work)
                settle()
                t = time.time()
                skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{port}/{name}", f"oci:{dest}:x")
                bucket.append(time.time() - t)
                shutil.rmtree(dest)
        out[system] = {"cold_s": median(cold), "warm_s": median(warm)}
    out["cold_ratio_pullthrough_vs_peer"] = out["pullthrough"]["cold_s"] / out["peer"]["cold_s"]
    out["warm_ratio_pullthrough_vs_peer"] = out["pullthrough"]["warm_s"] / out["peer"]["warm_s"]
    out["cold_ratio_pullthrough_vs_nginx_cache"] = out["pullthrough"]["cold_s"] / out["nginx_cache"]["cold_s"]
    results["image_pull"] = out


def bench_startup(binary, work, results, n):
    d = os.path.join(work, "startup")
    blobs = os.path.join(d, "cache", "blobs", "sha256")
    for i in range(n):
        hx = hashlib.sha256(str(i).encode()).hexdigest()
        os.makedirs(os.path.join(blobs, hx[:2]), exist_ok=True)
        with open(os.path.join(blobs, hx[:2], hx), "wb") as f:
            f.write(b"x" * 512)
    port = free_port()
    t = time.time()
    p = pullthrough(binary, d, port, "http://127.0.0.1:9")
    ready = time.time() - t
    p.stop()
    results["startup"] = {"blobs": n, "ready_s": ready}


SECTIONS = ("warm", "cold", "concurrency", "small", "image", "startup")


def computable(row):
    """Whether a result row's figures were measured in this run (see --only)."""
    try:
        row()
        return True
    except (KeyError, TypeError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small blobs, few rounds")
    ap.add_argument("--work", help="work directory (default: a temp dir, removed after)")
    ap.add_argument("--binary", help="pullthrough binary to measure (default: build this tree's)")
    ap.add_argument("--out", help="JSON results file (default: benches/results.json)")
    ap.add_argument("--big-mib", type=int, help="size of the warm/cold blob in MiB (default 1024; quick 64)")
    ap.add_argument("--conc-mib", type=int, help="size of the concurrency blob in MiB (default 256; quick 32)")
    ap.add_argument("--clients", type=int, default=64, help="clients on the concurrency blob (default 64)")
    ap.add_argument("--rounds", type=int, help="rounds per measurement (default 5; quick 3)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    args = ap.parse_args()
    big, conc, rounds, small_secs, layers, startup_n = (
        (64 * MIB, 32 * MIB, 3, 2, 50, 10_000) if args.quick else (1024 * MIB, 256 * MIB, 5, 5, 200, 100_000))
    big = args.big_mib * MIB if args.big_mib else big
    conc = args.conc_mib * MIB if args.conc_mib else conc
    rounds = args.rounds or rounds
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {sorted(unknown)}")

    ensure_tools()
    if args.binary:
        binary = os.path.abspath(args.binary)
    else:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pullthrough"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "pullthrough")
    work = args.work or tempfile.mkdtemp(prefix="pt-bench-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)  # nginx's workers run as an unprivileged user and must read the blob
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                           "mem_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
               "sizes": {"big_MiB": big // MIB, "concurrency_MiB": conc // MIB, "image_layers": layers}}
    lab = None
    ngx = None
    try:
        log("generating images ...")
        lab = Lab(work, binary)
        big_layout = os.path.join(work, "big")
        _, (big_digest,) = make_image(big_layout, [big], "big")
        push(big_layout, "big", lab.up_port, "bench/big")
        conc_layout = os.path.join(work, "conc")
        _, (conc_digest,) = make_image(conc_layout, [conc], "conc")
        push(conc_layout, "conc", lab.up_port, "bench/conc")
        many_layout = os.path.join(work, "many")
        # Only the small-request and whole-image sections use it; its manifest stands in
        # for nothing otherwise (--only).
        many_manifest, _ = make_image(many_layout, [64 * 1024 + i for i in range(layers if only & {"small", "image"} else 1)], "many")
        push(many_layout, "many", lab.up_port, "bench/many")

        # nginx static serves the big blob and the many-layer manifest, as files.
        static = os.path.join(work, "static")
        os.makedirs(static, exist_ok=True)
        for layout, digest in ((big_layout, big_digest), (many_layout, many_manifest)):
            hexd = digest.split(":")[1]
            os.link(os.path.join(layout, "blobs", "sha256", hexd), os.path.join(static, hexd))
        ngx_port = free_port()
        ngx = nginx(os.path.join(work, "nginx"), ngx_port, static)
        nginx_url = f"http://127.0.0.1:{ngx_port}/{big_digest.split(':')[1]}"
        nginx_manifest_url = f"http://127.0.0.1:{ngx_port}/{many_manifest.split(':')[1]}"

        if "warm" in only:
            log("1. warm throughput ...")
            bench_warm(lab, results, f"/v2/bench/big/blobs/{big_digest}", nginx_url, big, rounds)
        if "cold" in only:
            log("2. cold pulls ...")
            bench_cold(lab, results, f"/v2/bench/big/blobs/{big_digest}", big,
                       args.rounds or max(3, rounds - 2))
        if "concurrency" in only:
            log("3. concurrency ...")
            bench_concurrency(lab, results, f"/v2/bench/conc/blobs/{conc_digest}", conc, args.clients)
        if "small" in only:
            log("4. small requests ...")
            lab.start_pt()
            lab.start_peer()
            lab.start_ngc()
            bench_small(lab, results, f"/v2/bench/many/manifests/{many_manifest}", nginx_manifest_url, small_secs)
        if "image" in only:
            log("5. whole-image pulls ...")
            bench_image(lab, results, "bench/many:many", 3 if not args.quick else 1)
        if "startup" in only:
            log("6. start-up ...")
            bench_startup(binary, work, results, startup_n)
    finally:
        if ngx:
            ngx.stop()
        if lab:
            lab.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    out_path = args.out or os.path.join(ROOT, "benches", "results.json")
    json.dump(results, open(out_path, "w"), indent=2)
    r = results
    c = r.get("concurrency")
    s = r.get("small_requests")
    i = r.get("image_pull")
    cs = r.get("cold_seconds")
    n = args.clients
    rows = [
        ("warm blob GB/s (pt / nginx / peer)", lambda: f"{r['warm_throughput_GBps']['pullthrough']:.2f} / {r['warm_throughput_GBps']['nginx']:.2f} / {r['warm_throughput_GBps']['peer']:.2f}"),
        ("warm ratio pt/nginx (target >= 1.0)", lambda: f"{r['warm_ratio_vs_nginx']:.2f}x"),
        ("warm ratio pt/peer (target >= 1.5)", lambda: f"{r['warm_ratio_vs_peer']:.2f}x"),
        ("warm GB/s with verify_on_read, ratio to without", lambda: f"{r['warm_throughput_GBps']['pullthrough_verify_on_read']:.2f}, {r['warm_ratio_verify_on_read']:.2f}x"),
        ("cold s (direct / pt / peer / nginx-cache)", lambda: f"{cs['direct']:.2f} / {cs['pullthrough']:.2f} / {cs['peer']:.2f} / {cs['nginx_cache']:.2f}"),
        ("cold ratio pt/direct (target <= 1.25)", lambda: f"{r['cold_ratio_pullthrough_vs_direct']:.2f}x (peer {r['cold_ratio_peer_vs_direct']:.2f}x, nginx-cache {r['cold_ratio_nginx_cache_vs_direct']:.2f}x)"),
        ("cold ratio pt/peer, pt/nginx-cache (target <= 1.0)", lambda: f"{r['cold_ratio_pullthrough_vs_peer']:.2f}x, {r['cold_ratio_pullthrough_vs_nginx_cache']:.2f}x"),
        (f"{n} clients: upstream bytes / blob (pt, peer, nginx-cache)", lambda: f"{c['pullthrough']['upstream_bytes_x_blob']:.2f}x, {c['peer']['upstream_bytes_x_blob']:.2f}x, {c['nginx_cache']['upstream_bytes_x_blob']:.2f}x"),
        (f"{n} clients: wall s (pt, peer, nginx-cache)", lambda: f"{c['pullthrough']['wall_s']:.2f}, {c['peer']['wall_s']:.2f}, {c['nginx_cache']['wall_s']:.2f}"),
        (f"{n} clients: wall vs one client (pt, peer, nginx-cache)", lambda: f"{c['pullthrough']['wall_vs_single']:.2f}x, {c['peer']['wall_vs_single']:.2f}x, {c['nginx_cache']['wall_vs_single']:.2f}x"),
        (f"{n} clients: peak RSS MiB (pt, peer; target <= 64)", lambda: f"{c['pullthrough']['peak_rss_MiB']:.0f}, {c['peer']['peak_rss_MiB']:.0f}"),
        (f"{n} clients: peak anonymous RSS MiB (pt, peer)", lambda: f"{c['pullthrough']['peak_anon_rss_MiB']:.0f}, {c['peer']['peak_anon_rss_MiB']:.0f}"),
        ("manifest GET rps (pt / peer)", lambda: f"{s['pullthrough_GET']['rps']:.0f} / {s['peer_GET']['rps']:.0f} = {s['ratio_GET']:.2f}x (target >= 3)"),
        ("manifest GET rps (pt / nginx-cache)", lambda: f"{s['pullthrough_GET']['rps']:.0f} / {s['nginx_cache_GET']['rps']:.0f} = {s['ratio_GET_vs_nginx_cache']:.2f}x (target >= 1)"),
        ("manifest GET rps (pt / nginx static)", lambda: f"{s['pullthrough_GET']['rps']:.0f} / {s['nginx_static_GET']['rps']:.0f} = {s['ratio_GET_vs_nginx_static']:.2f}x"),
        ("manifest GET p50/p99 ms (pt; peer; nginx-cache)", lambda: f"{s['pullthrough_GET']['p50_ms']:.2f}/{s['pullthrough_GET']['p99_ms']:.2f}; {s['peer_GET']['p50_ms']:.2f}/{s['peer_GET']['p99_ms']:.2f}; {s['nginx_cache_GET']['p50_ms']:.2f}/{s['nginx_cache_GET']['p99_ms']:.2f}"),
        (f"skopeo {layers}-layer pull cold s (direct / pt / peer / nginx-cache)", lambda: f"{i['direct']['cold_s']:.2f} / {i['pullthrough']['cold_s']:.2f} / {i['peer']['cold_s']:.2f} / {i['nginx_cache']['cold_s']:.2f}"),
        (f"skopeo {layers}-layer pull warm s (direct / pt / peer / nginx-cache)", lambda: f"{i['direct']['warm_s']:.2f} / {i['pullthrough']['warm_s']:.2f} / {i['peer']['warm_s']:.2f} / {i['nginx_cache']['warm_s']:.2f}"),
        (f"start-up with {r.get('startup', {}).get('blobs')} blobs", lambda: f"{r['startup']['ready_s']:.2f} s (target < 2)"),
    ]
    rows = [(a, b()) for a, b in rows if computable(b)]
    w = max((len(a) for a, _ in rows), default=0)
    for a, b in rows:
        print(f"{a:<{w}}  {b}")
    log(f"results: {out_path}")


if __name__ == "__main__":
    main()
