#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for N seconds each (default 60).
#
#   scripts/fuzz.sh            # all targets, 60 s each
#   scripts/fuzz.sh 300        # all targets, 5 min each
#   scripts/fuzz.sh 30 config  # only the listed targets
#
# Installs cargo-fuzz if missing. Works on stable Rust: cargo-fuzz needs
# nightly flags, which RUSTC_BOOTSTRAP=1 unlocks. Each target starts from its
# checked-in seeds (fuzz/seeds/<target>) plus whatever earlier runs left in
# fuzz/corpus/<target> (git-ignored); crashes land in fuzz/artifacts/<target>.
# Exits non-zero if any target crashed or failed to build. scripts/test.sh
# (and so CI) runs it with 10 s per target.
set -euo pipefail

secs="${1:-60}"
shift || true
cd "$(dirname "$0")/../fuzz"

if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
    corpus="corpus/$t"
    artifacts="artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "seeds/$t" ]; then
        cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    echo "== $t: ${secs}s"
    if cargo fuzz run "$t" "$corpus" -- \
        -max_total_time="$secs" -artifact_prefix="$artifacts/" -print_final_stats=1; then
        echo "== $t: ok"
    else
        echo "== $t: FAILED (inputs in fuzz/$artifacts; reproduce with" \
            "RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/$artifacts/<file>)" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${secs}s without a crash"
