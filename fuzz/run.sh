#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, from the seeds
# committed in fuzz/seeds/ (new inputs go to fuzz/corpus/, not committed);
# fails on the first crash, panic, timeout or memory blow-up, leaving the
# input in fuzz/artifacts/TARGET/. With a nightly toolchain, under
# AddressSanitizer (leaks reported too); with the stable one only (as on
# CI), without a sanitizer: panics, timeouts and memory are still caught.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
seconds=${1:-60}
shift || true
cd "$(dirname "$0")"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ssh command config session_socket screen)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# KEEPSH_FUZZ_STABLE=1: the stable toolchain even where nightly is (as CI).
if [ "${KEEPSH_FUZZ_STABLE:-}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly) sanitizer=address
else
    toolchain=() sanitizer=none
fi
cargo "${toolchain[@]}" fuzz build -s "$sanitizer"
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    rm -rf "artifacts/$target"
    echo "== fuzz $target: $seconds s ($sanitizer sanitizer)"
    cargo "${toolchain[@]}" fuzz run -s "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec)|==|thread|panicked|SUMMARY|ERROR)' || true
    # A failure leaves an artifact; cargo fuzz's status is lost in the pipe.
    if compgen -G "artifacts/$target/*" >/dev/null; then
        echo "fuzz $target failed: $(ls artifacts/"$target"/)" >&2
        exit 1
    fi
done
