#!/bin/sh
# Build every fuzz target and run each for FUZZ_SECONDS (default 60) from the committed seeds
# (seeds/<target>) plus what earlier runs found (corpus/<target>, not committed). Fails on the
# first crash (printing the end of its log, logs/<target>.log); libFuzzer leaves the input in
# artifacts/<target>/, and `target/<host>/release/<target> artifacts/<target>/<file>` reruns it.
#
# Only cargo and a stable toolchain are needed: the targets are built with the flags cargo-fuzz
# passes (SanitizerCoverage for libFuzzer, `--cfg fuzzing`, debug assertions), without a
# sanitizer (the crates under test forbid unsafe code), so no cargo-fuzz is installed; `cargo
# fuzz run -s none TARGET` works on the same layout.
set -eu
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --locked --release --bins --target "$host"
mkdir -p logs
for target in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -vx turnout-fuzz); do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "fuzz/run.sh: $target for ${seconds}s (libFuzzer's output: fuzz/logs/$target.log)"
    if ! "target/$host/release/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
        "corpus/$target" "seeds/$target" >"logs/$target.log" 2>&1; then
        tail -n 60 "logs/$target.log" >&2
        echo "fuzz/run.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "logs/$target.log" || true
done
