#!/bin/sh
# Benchmark of `gdfwd forward` on one bulk NDJSON file: see README.md next to this script.
# Usage: bench/bulk/run.sh [findings] [extra gdfwd forward options]   (default 1000000)
# PROFILE=debug skips the (slow) release build and measures the debug binary instead.
set -eu
cd "$(dirname "$0")/../.."
FINDINGS="${1:-1000000}"
[ $# -gt 0 ] && shift
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
if [ "$PROFILE" = release ]; then
  cargo build --release -p gdfwd-cli --bin gdfwd --example bulk_bench
else
  cargo build -p gdfwd-cli --bin gdfwd --example bulk_bench
fi
# A private copy: a shared target directory may be rebuilt by someone else while this runs.
bin=$(mktemp -d -t gdfwd-bulk-bench.XXXXXX)
trap 'rm -rf "$bin"' EXIT INT TERM
cp "$TARGET/$PROFILE/gdfwd" "$TARGET/$PROFILE/examples/bulk_bench" "$bin/"
"$bin/bulk_bench" "$bin/gdfwd" "$FINDINGS" "$@"
