#!/usr/bin/env bash
# Runs every check of the project on a fresh machine: installs and starts the real services the
# tests talk to (an S3 server and an HTTP proxy with a password, see scripts/test-services.sh),
# then cargo fmt --check, clippy with warnings as errors, and the whole test suite; stops the
# services again by process id, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== starting test services"
scripts/test-services.sh start
trap 'scripts/test-services.sh stop' EXIT
eval "$(scripts/test-services.sh env)"

echo "== cargo test"
cargo test --workspace
