#!/bin/sh
# Seeds fuzz/corpus/parse_map with every fixture record: the repository's tests/fixtures/guardduty
# (real findings: attribution in its real/SOURCES.md) and, when present, the shared fixtures.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/parse_map"
mkdir -p "$out"
for dir in "$here/../tests/fixtures/guardduty" "${GDFWD_SHARED_FIXTURES:-/work/shared/fixtures/guardduty}"; do
    [ -d "$dir" ] || continue
    find "$dir" -name '*.json' -exec cp {} "$out/" \;
    find "$dir" -name '*.ndjson' | while read -r f; do
        split -l 1 -a 4 "$f" "$out/$(basename "$f" .ndjson)-"
    done
done
echo "seeded $(ls "$out" | wc -l) inputs in $out"
