#!/usr/bin/env python3
"""Where a cold blob fill's time goes: one upstream (docker-registry), one pullthrough with
debug logs, N cold pulls of one blob with curl. Prints, per pull, the wall time, the
fill's own timing spans (the "blob fill received" debug line: source_wait, hash_busy,
hash_wait, write_busy, write_wait, chunks; "blob fill committed": took) and where the client's
bytes were read (pullthrough_follow_bytes_total by `from`), and with --perf, a
`perf record` of the daemon during one more cold pull, summarised by thread and DSO
(kernel vs user; the release binary has no symbols, so user time is per thread).

    python3 benches/profile_cold.py --binary target/release/pullthrough --mib 512 --rounds 3 [--perf]
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
    finally:
        for p in (pt, up):
            if p:
                p.stop()
        shutil.rmtree(work, ignore_errors=True)


def start(binary, d, port, admin, upstream):
    os.makedirs(d, exist_ok=True)
    cfg = (f"[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"{d}/cache\"\n"
           f"min_free = \"0\"\n[[upstream]]\nhost = \"up.bench\"\nurl = \"{upstream}\"\ndefault = true\n")
    path = os.path.join(d, "pullthrough.toml")
    open(path, "w").write(cfg)
    p = harness.Proc([binary, "serve", "--config", path], os.path.join(d, "pullthrough.log"),
                     env=dict(os.environ, RUST_LOG="warn,pullthrough::core::fill=debug"))
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
