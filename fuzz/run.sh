#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each):
#   bash fuzz/run.sh [SECONDS]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# A crash is saved by libFuzzer under fuzz/artifacts/<target>/; copy it into
# fuzz/regressions/<target>/ so tests/fuzz_regressions.rs replays it forever.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
for target in notification webhook recurrence wire; do
  echo "==> $target (${secs}s)"
  mkdir -p "corpus/$target"
  # rustix 0.37 (pulled in through lapin) does not build with --cfg fuzzing on
  # recent nightlies unless it uses its libc backend.
  RUSTFLAGS="${RUSTFLAGS:-} --cfg rustix_use_libc" cargo +nightly fuzz run "$target" "corpus/$target" "regressions/$target" -- \
    -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 | tail -n 20
done
