#!/usr/bin/env bash
# raft-kv's write throughput with mutual TLS on the Raft port and without: the same load
# (`raft-kv bench`) on the same machine, in alternating rounds, each on a fresh 3-node cluster
# on loopback; prints every round and the medians.
#
# Usage: examples/raft-kv/scripts/tls-bench.sh [ROUNDS] [CLIENTS] [OPS]
#   (defaults 5, 64, 20000). Needs a release build (`cargo build --release -p raft-kv`),
#   openssl (to make the throwaway CA), curl and python3.
set -euo pipefail
ROUNDS=${1:-5}
CLIENTS=${2:-64}
OPS=${3:-20000}
BIN=${RAFT_KV_BIN:-target/release/raft-kv}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A throwaway CA and one certificate per node, naming node-<id>.raft-kv.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
for id in 1 2 3; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node-$id" \
        -keyout "$WORK/node$id.key" -out "$WORK/node$id.csr" 2>/dev/null
    printf 'subjectAltName=DNS:node-%s.raft-kv\n' "$id" > "$WORK/node$id.ext"
    openssl x509 -req -in "$WORK/node$id.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
        -days 1 -extfile "$WORK/node$id.ext" -out "$WORK/node$id.pem" 2>/dev/null
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run MODE ROUND: start a cluster, load it, print writes/s.
run() {
    local mode=$1 dir="$WORK/$1-$2" peers=() raft=() http=()
    mkdir -p "$dir"
    for id in 1 2 3; do raft[$id]=127.0.0.1:$(free_port); http[$id]=127.0.0.1:$(free_port); done
    PIDS=()
    for id in 1 2 3; do
        local tls=()
        if [ "$mode" = tls ]; then
            tls=(--tls-ca "$WORK/ca.pem" --tls-cert "$WORK/node$id.pem" --tls-key "$WORK/node$id.key")
        fi
        "$BIN" node --id "$id" --raft-addr "${raft[$id]}" --http-addr "${http[$id]}" --data-dir "$dir/n$id" \
            --admin-token-file "$WORK/token" "${tls[@]}" > "$dir/n$id.log" 2>&1 &
        PIDS+=($!)
    done
    for id in 1 2 3; do
        for _ in $(seq 100); do curl -sf "http://${http[$id]}/admin/metrics" > /dev/null && break; sleep 0.1; done
    done
    local members
    members=$(printf '{"1":{"raft_addr":"%s","http_addr":"%s"},"2":{"raft_addr":"%s","http_addr":"%s"},"3":{"raft_addr":"%s","http_addr":"%s"}}' \
        "${raft[1]}" "${http[1]}" "${raft[2]}" "${http[2]}" "${raft[3]}" "${http[3]}")
    curl -sf -H "Authorization: Bearer $(cat "$WORK/token")" -d "$members" "http://${http[1]}/admin/init" > /dev/null
    local leader=""
    for _ in $(seq 100); do
        leader=$(curl -sf "http://${http[1]}/admin/metrics" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_http_addr") or "")')
        [ -n "$leader" ] && break
        sleep 0.1
    done
    "$BIN" bench --target "http://$leader" --clients "$CLIENTS" --ops "$OPS" \
        | tee -a "$WORK/$mode.txt" | sed "s/^/$mode round $2: /"
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

for round in $(seq "$ROUNDS"); do
    # Alternate which goes first, so that neither always runs on a warmer (or busier) machine.
    if [ $((round % 2)) -eq 1 ]; then run plain "$round"; run tls "$round"; else run tls "$round"; run plain "$round"; fi
done
for mode in plain tls; do
    python3 - "$WORK/$mode.txt" "$mode" <<'PY'
import re, statistics, sys
rates = [float(m.group(1)) for m in re.finditer(r"([0-9.]+) writes/s", open(sys.argv[1]).read())]
p50 = [float(m.group(1)) for m in re.finditer(r"p50 ([0-9.]+) ms", open(sys.argv[1]).read())]
print(f"{sys.argv[2]}: median {statistics.median(rates):.0f} writes/s (runs {sorted(round(r) for r in rates)}), median p50 {statistics.median(p50):.2f} ms")
PY
done
