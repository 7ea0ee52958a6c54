#!/usr/bin/env bash
# raft-kv against etcd 3.4 (Debian's etcd-server), on etcd's own terms, in one command: builds
# raft-kv in release, then `raft-kv compare-etcd`, which starts a fresh 3-node raft-kv and a
# fresh 3-member etcd on loopback for each round, sends both the same HTTP/JSON put load
# (keep-alive connections, 64-byte values) at 1, 16, 64 and 256 connections, alternating which
# goes first, and writes target/etcd-compare/etcd-compare.{md,json,svg} (and, as it goes,
# etcd-compare.jsonl: each sample as soon as it is measured). The clusters' data go under
# target/etcd-compare/work (--work-dir), which must be on a disk: tmpfs and ramfs are refused.
# Every process it starts is killed and its work directory removed when it ends, fails or is
# interrupted.
#
# Usage: examples/raft-kv/scripts/etcd-compare.sh [compare-etcd options]
#   e.g. --rounds 4 --secs 10 --wrk       (`raft-kv compare-etcd --help` lists them)
# Defaults: 4 rounds (each system first equally often), 2 s warm-up + 10 s measured per point:
# about 7 minutes (14 with --wrk, which gets its own warm-up run).
#
# Needs etcd (and wrk for --wrk): installed with apt-get when missing and run as root.
# QUIET_LOAD=1.5 waits (up to QUIET_WAIT_SECS, default 1800) until the 1-minute load average
# is below 1.5 before measuring; otherwise a busy machine is only warned about.
set -euo pipefail
cd "$(dirname "$0")/../../.."

need() { # need BINARY PACKAGE
    command -v "$1" > /dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" > /dev/null
    else
        echo "needs $1: apt-get install -y $2" >&2
        exit 1
    fi
}
need etcd etcd-server
for arg in "$@"; do [ "$arg" = --wrk ] && need wrk wrk; done

cargo build --release -p raft-kv

load1() { cut -d' ' -f1 /proc/loadavg; }
if [ -n "${QUIET_LOAD:-}" ]; then
    deadline=$((SECONDS + ${QUIET_WAIT_SECS:-1800}))
    until awk -v l="$(load1)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }'; do
        if [ $SECONDS -ge $deadline ]; then
            echo "load average still $(load1) (>= $QUIET_LOAD): measuring anyway; the numbers are noisy" >&2
            break
        fi
        sleep 15
    done
fi
if awk -v l="$(load1)" 'BEGIN { exit !(l >= 1.5) }'; then
    echo "WARNING: load average $(load1): other work is running on this machine; the numbers will be noisy" >&2
fi
exec target/release/raft-kv compare-etcd "$@"
