#!/bin/sh
# Benchmark of the Lambda `bootstrap` binary: see README.md next to this script.
# Usage: bench/lambda/run.sh [findings] [batch sizes]   (defaults: 10000 "10,100")
# PROFILE=debug skips the (slow) release build and measures the debug binary instead.
set -eu
cd "$(dirname "$0")/../.."
FINDINGS="${1:-10000}"
SIZES="${2:-10,100}"
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release -p gdfwd-lambda --bin bootstrap --example lambda_bench
  exec target/release/examples/lambda_bench target/release/bootstrap "$FINDINGS" "$SIZES"
else
  cargo build -p gdfwd-lambda --bin bootstrap --example lambda_bench
  exec target/debug/examples/lambda_bench target/debug/bootstrap "$FINDINGS" "$SIZES"
fi
