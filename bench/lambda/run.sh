#!/bin/sh
# Benchmark of the Lambda `bootstrap` binary: see README.md next to this script.
# Usage: bench/lambda/run.sh [findings] [batch sizes]   (defaults: 1000 "10")
# The issue's full run is `bench/lambda/run.sh 10000 10,100`; with the DynamoDB store's
# transactions moto no longer copes with it (it copies the table per transaction item): see
# README.md next to this script.
# PROFILE=debug skips the (slow) release build and measures the debug binary instead.
set -eu
cd "$(dirname "$0")/../.."
FINDINGS="${1:-1000}"
SIZES="${2:-10}"
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release -p gdfwd-lambda --bin bootstrap --example lambda_bench
  exec target/release/examples/lambda_bench target/release/bootstrap "$FINDINGS" "$SIZES"
else
  cargo build -p gdfwd-lambda --bin bootstrap --example lambda_bench
  exec target/debug/examples/lambda_bench target/debug/bootstrap "$FINDINGS" "$SIZES"
fi
