#!/usr/bin/env bash
# Bounded fuzzing of every decoder (SECURITY.md P7): each target runs for SECONDS
# (default 60) from the committed seed corpus in fuzz/corpus/. A crash leaves
# its input in fuzz/artifacts/TARGET/; turn it into a regression test in
# crates/crypto/tests/ before fixing.
#
#   cargo install cargo-fuzz      # once
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope_open inbox_item delivery_key rn1_open membership_chain client_config server_config server_requests terminal_grants)
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "corpus/$t"
    # New interesting inputs go to a scratch corpus, so the committed seeds stay small.
    scratch="target/corpus-$t"
    mkdir -p "$scratch"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "$scratch" "corpus/$t" -- -max_total_time="$seconds" -max_len=4096
done
echo "== no crash in ${#targets[@]} target(s)"
