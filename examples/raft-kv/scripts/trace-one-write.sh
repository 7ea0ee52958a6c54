#!/usr/bin/env bash
# One write through a 3-node raft-kv cluster on loopback, with debug logs: prints what each
# node logged for it, from the HTTP request to the apply on every node. The guide's
# operations chapter ("A trace of one write") shows this script's output.
#
# Usage: scripts/trace-one-write.sh [RAFT_KV_BINARY] [NODE_TO_WRITE_THROUGH]
#   (defaults: target/debug/raft-kv from the workspace root, node 2: a follower once node 1
#   leads, so that the write is relayed). RUST_LOG overrides the filter below. Uses the
#   loopback ports 27001-27003 (Raft) and 28001-28003 (HTTP); stops the nodes when done.
set -euo pipefail

bin="${1:-target/debug/raft-kv}"
through="${2:-2}"
filter="${RUST_LOG:-info,quorate=debug,raft_kv=debug}"
dir="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

head -c 24 /dev/urandom | base64 > "$dir/admin.token"
peer() { echo "--peer $1=127.0.0.1:2700$1@127.0.0.1:2800$1"; }
for id in 1 2 3; do
    peers=()
    for other in 1 2 3; do [ "$other" = "$id" ] || peers+=($(peer "$other")); done
    bootstrap=()
    [ "$id" = 1 ] && bootstrap=(--bootstrap)
    RUST_LOG="$filter" "$bin" node --id "$id" --raft-addr "127.0.0.1:2700$id" --http-addr "127.0.0.1:2800$id" \
        --data-dir "$dir/node$id" --admin-token-file "$dir/admin.token" "${peers[@]}" "${bootstrap[@]}" \
        2> "$dir/node$id.log" &
    pids+=($!)
done

# Every node knows a leader (polling, at most 30 s).
for _ in $(seq 300); do
    known=0
    for id in 1 2 3; do
        curl -sf "127.0.0.1:2800$id/admin/metrics" | grep -q '"current_leader":[0-9]' && known=$((known + 1))
    done
    [ "$known" = 3 ] && break
    sleep 0.1
done
[ "$known" = 3 ] || { echo "no leader within 30 s" >&2; exit 1; }

declare -A offset
for id in 1 2 3; do offset[$id]=0; done
index_of() { echo "$1" | sed -n 's/.*"index":\([0-9]*\).*/\1/p'; }
# Until every node logged the apply of entry $1 after its offset (at most 10 s).
wait_applied() {
    for _ in $(seq 100); do
        applied=0
        for id in 1 2 3; do
            tail -c +"$((offset[$id] + 1))" "$dir/node$id.log" | grep -q "applied last=T[0-9]*-N[0-9]*\.$1 " &&
                applied=$((applied + 1))
        done
        [ "$applied" = 3 ] && return 0
        sleep 0.1
    done
    echo "entry $1 was not applied on every node within 10 s" >&2
    return 1
}

# A first write opens the connections and replication streams; the traced one comes after
# every node has applied it.
wait_applied "$(index_of "$(curl -sf -XPUT "127.0.0.1:28001/kv/warmup" -d x)")"
for id in 1 2 3; do offset[$id]=$(wc -c < "$dir/node$id.log"); done

answer="$(curl -sf -XPUT "127.0.0.1:2800$through/kv/greeting" -d hello)"
echo "PUT /kv/greeting through node $through: $answer"
wait_applied "$(index_of "$answer")"
for id in 1 2 3; do
    echo
    echo "---- node $id"
    tail -c +"$((offset[$id] + 1))" "$dir/node$id.log"
done
