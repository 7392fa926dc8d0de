#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every check, as root. This is what CI runs (.ci/run).
#
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings    (RPOD_SKIP_CLIPPY=1 skips it)
#   3. cargo test --workspace, with RPOD_REQUIRE_ROOT=1: a test that cannot get root is a
#      failure here, not a skip
#   4. scripts/demo.sh
# Every step runs even when an earlier one failed; the exit status is non-zero if any failed.
#
# Environment: RPOD_SKIP_SETUP=1 skips scripts/setup.sh; RPOD_SKIP_CLIPPY=1 skips clippy;
# RPOD_TEST_TIMEOUT (seconds, default 1200) bounds `cargo test`; extra arguments are passed
# to `cargo test` (for example: scripts/test.sh -- --test-threads=1).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
need_root
cd "$RPOD_ROOT"

start=$SECONDS
if [ "${RPOD_SKIP_SETUP:-}" != 1 ]; then
    scripts/setup.sh
fi
use_cargo

export RPOD_REQUIRE_ROOT=1 RUST_BACKTRACE=1 CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

results=()
failed=0
# step NAME CMD...: runs a step, records PASS/FAIL and its duration.
step() {
    local name=$1 t0=$SECONDS rc=0
    shift
    say "$name"
    "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        results+=("PASS  $name ($((SECONDS - t0)) s)")
    else
        results+=("FAIL  $name (exit $rc, $((SECONDS - t0)) s)")
        failed=1
    fi
}

step "cargo fmt --check" cargo fmt --all -- --check
if [ "${RPOD_SKIP_CLIPPY:-}" = 1 ]; then
    results+=("SKIP  cargo clippy (RPOD_SKIP_CLIPPY=1)")
else
    step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -q -- -D warnings
fi
step "cargo test --workspace (RPOD_REQUIRE_ROOT=1)" \
    timeout -k 30 "${RPOD_TEST_TIMEOUT:-1200}" cargo test --workspace "$@"
step "demo (scripts/demo.sh)" env RPOD_SKIP_SETUP=1 scripts/demo.sh

say "summary ($((SECONDS - start)) s in all)"
printf '    %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
    printf '\nTESTS FAILED\n'
    exit 1
fi
printf '\nALL TESTS PASSED\n'
