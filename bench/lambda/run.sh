#!/bin/sh
# Benchmark of the Lambda `bootstrap` binary: see README.md next to this script.
# Usage: bench/lambda/run.sh [findings] [batch sizes]   (defaults: 10000 "10,100", the issue's run;
# about 10 minutes with the build. `bench/lambda/run.sh 1000` is a quicker look.)
# PROFILE=debug skips the (slow) release build and measures the debug binary instead.
#
# DynamoDB is moto started from bench/lambda/moto_server.py, which makes moto's TransactWriteItems
# back up the items it writes instead of deep-copying the table per item (see that file); without
# it the run slows down with the table and moto's memory grows by gigabytes.
# GDFWD_TEST_MOTO_ENDPOINT, when set, is used as is.
set -eu
cd "$(dirname "$0")/../.."
FINDINGS="${1:-10000}"
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
