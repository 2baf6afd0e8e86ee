#!/usr/bin/env python3
"""Where a cold blob fill's time goes: one upstream (docker-registry), one pullthrough with
debug logs, N cold pulls of one blob with curl. Prints, per pull, the wall time, the
fill's own timing spans (the "blob fill received" debug line: source_wait, hash_busy,
hash_wait, write_busy, write_wait, chunks; "blob fill committed": took) and where the client's
bytes were read (pullthrough_follow_bytes_total by `from`), and with --perf, a
`perf record` of the daemon during one more cold pull, summarised by thread and DSO
(kernel vs user; the release binary has no symbols, so user time is per thread). With --cpu,
where the machine's CPU went during each pull: CPU seconds and run-queue waits of the
daemon's threads (by name; from /proc/<pid>/task/*/schedstat, sampled while the pull runs,
so threads that end with the fill are counted), the upstream registry's and curl's CPU
seconds, and the daemon's minor page faults. On a machine where the pull is CPU-bound, the
sum of CPU seconds over the cores is the floor of the pull's wall time.

    python3 benches/profile_cold.py --binary target/release/pullthrough --mib 512 --rounds 3 [--perf] [--cpu]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--perf", action="store_true", help="also perf-record one cold pull")
    ap.add_argument("--cpu", action="store_true", help="CPU seconds per thread and process, page faults")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="pt-profile-")
    os.chmod(work, 0o755)
    up = pt = None
    try:
        up_port, pt_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
        up = harness.registry(os.path.join(work, "upstream"), up_port)
        layout = os.path.join(work, "big")
        _, (digest,) = harness.make_image(layout, [args.mib * harness.MIB], "big")
        harness.push(layout, "big", up_port, "bench/big")
        url = f"http://127.0.0.1:{pt_port}/v2/bench/big/blobs/{digest}"
        direct = f"http://127.0.0.1:{up_port}/v2/bench/big/blobs/{digest}"
        d = os.path.join(work, "pt")
        for r in range(args.rounds + (1 if args.perf else 0)):
            if pt:
                pt.stop()
            shutil.rmtree(os.path.join(d, "cache"), ignore_errors=True)
            pt = start(args.binary, d, pt_port, admin_port, f"http://127.0.0.1:{up_port}")
            _, direct_s = harness.curl(direct)
            rec = None
            if args.perf and r == args.rounds:
                rec = subprocess.Popen(["perf", "record", "-q", "-o", os.path.join(work, "perf.data"),
                                        "-p", str(pt.p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
            if args.cpu:
                secs, cpu = pull_with_cpu(url, pt.p.pid, up.p.pid)
            else:
                _, secs = harness.curl(url)
            time.sleep(0.3)
            if rec:
                rec.send_signal(2)
                rec.wait(30)
                report(os.path.join(work, "perf.data"))
                continue
            log = open(pt.logfile, errors="replace").read()
            spans = {k: v for line in log.splitlines() if "blob fill received" in line or "blob fill committed" in line
                     for k, v in re.findall(r"(\w+)=([\d.]+(?:[mµn]?s)?)\b", line)}
            metrics = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{admin_port}/metrics"],
                                     capture_output=True, text=True).stdout
            spans.update({f"follow_{m[0]}_MiB": f"{float(m[1]) / harness.MIB:.0f}" for m in
                          re.findall(r'pullthrough_follow_bytes_total\{from="(\w+)"\} ([\d.e+]+)', metrics)})
            print(f"round {r + 1}: direct {direct_s:.2f} s, pullthrough {secs:.2f} s; " +
                  ", ".join(f"{k} {v}" for k, v in spans.items()))
            if args.cpu:
                print(cpu)
    finally:
        for p in (pt, up):
            if p:
                p.stop()
        shutil.rmtree(work, ignore_errors=True)


def schedstat(pid):
    """Per thread of `pid`: (name, ns on a CPU, ns waiting on a run queue)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            run, wait, _ = map(int, open(f"/proc/{pid}/task/{tid}/schedstat").read().split())
        except (OSError, ValueError):
            continue
        out[tid] = (name, run, wait)
    return out


def minflt(pid):
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[7])


def pull_with_cpu(url, daemon, upstream):
    """One curl of `url`, sampling the daemon's threads every 10 ms while it runs: the wall
    seconds and a report of where the CPU went."""
    before, up_before, faults = schedstat(daemon), schedstat(upstream), minflt(daemon)
    after = dict(before)
    t = time.time()
    c = subprocess.Popen(["/usr/bin/time", "-f", "%U %S", "curl", "-sS", "-o", "/dev/null", url],
                         stderr=subprocess.PIPE, text=True)
    while c.poll() is None:
        after.update(schedstat(daemon))
        time.sleep(0.01)
    secs = time.time() - t
    time.sleep(0.3)
    after.update(schedstat(daemon))
    curl_cpu = sum(map(float, c.stderr.read().split()[-2:]))
    threads = {}
    for tid, (name, run, wait) in after.items():
        r0, w0 = before.get(tid, (name, 0, 0))[1:]
        t = threads.setdefault(name, [0, 0])
        t[0] += run - r0
        t[1] += wait - w0
    up_after = schedstat(upstream)
    up_cpu = sum(run - up_before.get(tid, (n, 0, 0))[1] for tid, (n, run, _) in up_after.items())
    daemon_cpu = sum(v[0] for v in threads.values())
    lines = [f"  CPU s: daemon {daemon_cpu / 1e9:.3f}, upstream {up_cpu / 1e9:.3f}, curl {curl_cpu:.3f}, "
             f"sum {(daemon_cpu + up_cpu) / 1e9 + curl_cpu:.3f} on {os.cpu_count()} cores; "
             f"daemon minor faults {minflt(daemon) - faults}"]
    for name, (run, wait) in sorted(threads.items(), key=lambda kv: -kv[1][0]):
        if run > 1e6:
            lines.append(f"    {name:18s} CPU {run / 1e9:.3f} s, waiting for a CPU {wait / 1e9:.3f} s")
    return secs, "\n".join(lines)


def start(binary, d, port, admin, upstream):
    os.makedirs(d, exist_ok=True)
    cfg = (f"[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"{d}/cache\"\n"
           f"min_free = \"0\"\n[[upstream]]\nhost = \"up.bench\"\nurl = \"{upstream}\"\ndefault = true\n")
    path = os.path.join(d, "pullthrough.toml")
    open(path, "w").write(cfg)
    p = harness.Proc([binary, "serve", "--config", path], os.path.join(d, "pullthrough.log"),
                     env=dict(os.environ, RUST_LOG="warn,pullthrough::core::blob::fill=debug"))
    harness.wait_port(port)
    return p


def report(data):
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm,dso", "--stdio", "-q"],
                         capture_output=True, text=True).stdout
    print("perf (share of the daemon's samples, by thread and DSO):")
    for line in out.splitlines():
        if line.strip() and "%" in line.split()[0]:
            print("  " + line.strip())
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm,sym", "--stdio", "-q"],
                         capture_output=True, text=True).stdout
    print("perf, top symbols (kernel symbols named; the stripped binary's are addresses):")
    for line in [l for l in out.splitlines() if l.strip() and "%" in l.split()[0]][:25]:
        print("  " + line.strip())


if __name__ == "__main__":
    main()
