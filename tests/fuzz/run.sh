#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer's coverage instrumentation and run each for a bounded
# time. Stable Rust: the instrumentation is LLVM's SanitizerCoverage, enabled with stable `-C`
# flags (those cargo-fuzz passes, without the address sanitizer, which needs nightly; Rust's own
# bounds checks, debug assertions and overflow checks stand in for it).
#
# Usage: tests/fuzz/run.sh [SECONDS]   (default 30 per target)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-30}
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing --cfg tokio_unstable"
# With an explicit --target, RUSTFLAGS instrument the target only, not build scripts and proc
# macros (which would then miss libFuzzer's symbols).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bin frame_decoder --target "$host"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp corpus/frame_decoder/* "$corpus/"
# -malloc_limit_mb: one allocation over 64 MiB is a crash (the frame bound is 1 MiB).
# -max_len: inputs up to 64 KiB, room for several frames.
mkdir -p artifacts
"./target/$host/release/frame_decoder" "$corpus" -artifact_prefix=artifacts/ \
    -max_total_time="$SECONDS_PER_TARGET" -malloc_limit_mb=64 -rss_limit_mb=1024 -max_len=65536 \
    -print_final_stats=1
