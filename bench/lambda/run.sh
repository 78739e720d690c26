#!/bin/sh
# Benchmark of the Lambda `bootstrap` binary: see README.md next to this script.
# Usage: bench/lambda/run.sh [findings] [batch sizes]   (defaults: 1000 "10,100")
# The issue asks for 10,000 findings (`bench/lambda/run.sh 10000 10,100`); moto's memory grows by
# about 2 GB a minute under the transactions of such a run (past 12 GB within six minutes of a
# 5,000-finding run), so the default stays at what a 24 GB machine finishes (see README.md).
# PROFILE=debug skips the (slow) release build and measures the debug binary instead.
#
# DynamoDB is moto started from bench/lambda/moto_server.py, which makes moto's TransactWriteItems
# back a table up once per transaction instead of once per item (see that file); without it the
# run slows down quadratically with the table. GDFWD_TEST_MOTO_ENDPOINT, when set, is used as is.
set -eu
cd "$(dirname "$0")/../.."
FINDINGS="${1:-1000}"
SIZES="${2:-10,100}"
PROFILE="${PROFILE:-release}"
if [ -z "${GDFWD_TEST_MOTO_ENDPOINT:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log=$(mktemp -t gdfwd-bench-moto.XXXXXX.log)
  python3 bench/lambda/moto_server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  moto_pid=$!
  trap 'kill "$moto_pid" 2>/dev/null || true' EXIT INT TERM
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
    kill -0 "$moto_pid" 2>/dev/null || { echo "bench moto died:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  GDFWD_TEST_MOTO_ENDPOINT="http://127.0.0.1:$port"
  export GDFWD_TEST_MOTO_ENDPOINT
fi
if [ "$PROFILE" = release ]; then
  cargo build --release -p gdfwd-lambda --bin bootstrap --example lambda_bench
  target/release/examples/lambda_bench target/release/bootstrap "$FINDINGS" "$SIZES"
else
  cargo build -p gdfwd-lambda --bin bootstrap --example lambda_bench
  target/debug/examples/lambda_bench target/debug/bootstrap "$FINDINGS" "$SIZES"
fi
