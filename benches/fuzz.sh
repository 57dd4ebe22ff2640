#!/usr/bin/env bash
# Coverage-guided fuzzing of tidegate's parsers (issue 11): the request-head parser, the chunked
# decoder, the response-head reader, host normalisation and the app-file loader. Each target in
# fuzz/fuzz_targets runs for SECONDS (default 120) with libFuzzer under AddressSanitizer, starting
# from the small corpus committed in fuzz/corpus/<target> (new inputs it finds go to a scratch
# copy, so the committed corpus stays small). Not part of CI's time budget: run it by hand.
#
#   SECONDS_PER_TARGET=600 benches/fuzz.sh            # all targets
#   SECONDS_PER_TARGET=60 benches/fuzz.sh chunked     # one target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`, installed here if missing). Its
# `-Zsanitizer` flag is a nightly flag; stable Rust accepts it with RUSTC_BOOTSTRAP=1.
# A crash leaves its input in fuzz/artifacts/<target>/ and stops the script with its output:
# turn it into a regression test next to the code it broke.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${SECONDS_PER_TARGET:-120}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
printf '%-15s %10s %12s %8s %6s\n' target seconds executions exec/s edges
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "corpus/$target"
    cp -r "corpus/$target/." "$scratch/$target/" 2>/dev/null || true
    log="$scratch/$target.log"
    if ! cargo fuzz run -O "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "benches/fuzz.sh: $target found a crash; its input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')"
    rate="$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$')"
    edges="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')"
    printf '%-15s %10s %12s %8s %6s\n' "$target" "$seconds" "$runs" "$rate" "${edges:-?}"
done
