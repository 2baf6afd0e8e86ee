#!/usr/bin/env bash
# max_rate (the WAN budget): a cold 64 MiB blob through pullthrough with
#   max_rate = "8MiB/s" should take about 8 s (±20%); two concurrent cold 32 MiB fills from
# the same upstream share the cap (both end after about 8 s too, not 4 s).
# Upstream: Debian's docker-registry on loopback (fast). Usage:
#   flock /tmp/pt-cargo.lock bash benches/max_rate.sh [target/debug/pullthrough]
set -euo pipefail
bin="$(realpath "${1:-target/debug/pullthrough}")"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

rport=$(port)
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$rport
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 & pids+=($!)
wait_port "$rport"

# Three blobs: one of 64 MiB, two of 32 MiB (random, so each is a cold fill).
push() { # file -> digest
  local d="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
  local loc; loc=$(curl -sSf -X POST -D - -o /dev/null "http://127.0.0.1:$rport/v2/bench/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$loc" in http*) ;; *) loc="http://127.0.0.1:$rport$loc" ;; esac
  local sep='?'; [[ "$loc" == *\?* ]] && sep='&'
  curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$loc${sep}digest=$d" -o /dev/null
  echo "$d"
}
head -c $((64 << 20)) /dev/urandom > "$work/big"; big=$(push "$work/big")
head -c $((32 << 20)) /dev/urandom > "$work/a"; a=$(push "$work/a")
head -c $((32 << 20)) /dev/urandom > "$work/b"; b=$(push "$work/b")

pport=$(port); aport=$(port)
cat > "$work/pt.toml" <<TOML
[server]
listen = "127.0.0.1:$pport"
admin_listen = "127.0.0.1:$aport"
[cache]
dir = "$work/cache"
min_free = "0"
[[upstream]]
host = "bench.test"
url = "http://127.0.0.1:$rport"
max_rate = "8MiB/s"
TOML
"$bin" serve --config "$work/pt.toml" > "$work/pt.log" 2>&1 & pids+=($!)
wait_port "$pport"

url() { echo "http://127.0.0.1:$pport/v2/bench/blobs/$1?ns=bench.test"; }
t() { curl -sSf -o /dev/null -w '%{time_total}' "$(url "$1")"; }
one=$(t "$big")
start=$(date +%s.%N)
( t "$a" > "$work/ta" ) & ja=$!
( t "$b" > "$work/tb" ) & jb=$!
wait "$ja" "$jb"
both=$(python3 -c "import time; print(f'{time.time() - $start:.2f}')")
python3 - "$one" "$(cat "$work/ta")" "$(cat "$work/tb")" "$both" <<'PY'
import sys
one, ta, tb, both = map(float, sys.argv[1:])
print(f"cold 64 MiB at max_rate 8MiB/s: {one:.2f} s (expected 8 s ±20%: {'ok' if 6.4 <= one <= 9.6 else 'OUT OF RANGE'})")
print(f"two concurrent cold 32 MiB fills: {ta:.2f} s and {tb:.2f} s, both done after {both:.2f} s (shared cap: about 8 s each)")
PY
