#!/usr/bin/env bash
# S3 ingest benchmark (not a test): a 1 GiB file into an S3 sandbox through Slipstream's S3
# sink (crates/s3/examples/s3_ingest.rs) vs `aws s3 cp` of the same file to the same server,
# in the same run. Prints both rates and the sink process's peak RSS, then a PASS/FAIL line.
# Targets: sink rate >= 0.9 x aws s3 cp; peak RSS <= file cache + 64 MiB.
#
# usage: bench/s3-ingest/run.sh            (uses the test S3 server of scripts/test-services.sh)
# env:   SIZE_MIB (default 1024), CACHE_MIB (default 256), CARGO_TARGET_DIR
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
CACHE_MIB=${CACHE_MIB:-256}
WORK=${S3_INGEST_DIR:-/tmp/slipstream-s3-ingest}
VENV=$WORK/venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

"$ROOT/scripts/test-services.sh" status >/dev/null 2>&1 || "$ROOT/scripts/test-services.sh" start
eval "$("$ROOT/scripts/test-services.sh" env)"
export AWS_ACCESS_KEY_ID=$SLIPSTREAM_TEST_S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SLIPSTREAM_TEST_S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export S3_ENDPOINT=$SLIPSTREAM_TEST_S3_ENDPOINT
export CACHE_MIB

mkdir -p "$WORK"
if [ ! -x "$VENV/bin/aws" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check awscli
fi
AWS="$VENV/bin/aws --endpoint-url $S3_ENDPOINT"

FILE=$WORK/file-${SIZE_MIB}MiB.bin
if [ ! -s "$FILE" ] || [ "$(stat -c %s "$FILE")" -ne $((SIZE_MIB << 20)) ]; then
  head -c $((SIZE_MIB << 20)) /dev/urandom >"$FILE"
fi

(cd "$ROOT" && cargo build --quiet --release -p slipstream-s3 --example s3_ingest)
BIN=$CARGO_TARGET_DIR/release/examples/s3_ingest

BUCKET=s3-ingest-$(date +%s)
$AWS s3 mb "s3://$BUCKET" >/dev/null
cat "$FILE" >/dev/null # both runs read from the page cache

start=$(date +%s.%N)
$AWS s3 cp --only-show-errors "$FILE" "s3://$BUCKET/awscli.bin"
end=$(date +%s.%N)
aws_rate=$(python3 -c "print(f'{$SIZE_MIB / ($end - $start):.1f}')")

out=$("$BIN" "$FILE" "$BUCKET" slipstream.bin)
echo "$out" | sed 's/^/  sink: /'
sink_rate=$(echo "$out" | sed -n 's/^mib_per_s=//p')
rss=$(echo "$out" | sed -n 's/^peak_rss_mib=//p')

size_aws=$($AWS s3api head-object --bucket "$BUCKET" --key awscli.bin --query ContentLength --output text)
size_sink=$($AWS s3api head-object --bucket "$BUCKET" --key slipstream.bin --query ContentLength --output text)
$AWS s3 rb --force "s3://$BUCKET" >/dev/null

echo "file:          ${SIZE_MIB} MiB (aws: $size_aws bytes stored, sink: $size_sink bytes stored)"
echo "aws s3 cp:     ${aws_rate} MiB/s"
echo "slipstream:    ${sink_rate} MiB/s (file cache ${CACHE_MIB} MiB)"
echo "peak RSS:      ${rss} MiB (limit $((CACHE_MIB + 64)) MiB)"
python3 - "$sink_rate" "$aws_rate" "$rss" "$CACHE_MIB" <<'PY'
import sys
sink, aws, rss, cache = map(float, sys.argv[1:])
ok_rate = sink >= 0.9 * aws
ok_rss = rss <= cache + 64
print(f"{'PASS' if ok_rate and ok_rss else 'FAIL'}: rate {sink / aws:.2f}x aws s3 cp "
      f"(target >= 0.90x: {'ok' if ok_rate else 'missed'}), "
      f"peak RSS {rss:.0f} MiB (target <= {cache + 64:.0f} MiB: {'ok' if ok_rss else 'missed'})")
PY
