#!/bin/sh
# Build every fuzz target and run each for FUZZ_SECONDS (default 60) from the committed seeds
# (seeds/<target>) plus what earlier runs found (corpus/<target>, not committed). Fails on the
# first crash (printing the end of its log, logs/<target>.log); libFuzzer leaves the input in
# artifacts/<target>/ and says how to rerun it.
#
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets cargo fuzz pass its -Z flags, and
# `-s none` skips AddressSanitizer (the crates under test forbid unsafe code).
set -eu
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || {
    echo "fuzz/run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 1
}
cargo fuzz build -s none
mkdir -p logs
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    echo "fuzz/run.sh: $target for ${seconds}s (libFuzzer's output: fuzz/logs/$target.log)"
    if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"logs/$target.log" 2>&1; then
        tail -n 60 "logs/$target.log" >&2
        echo "fuzz/run.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "logs/$target.log" || true
done
