#!/usr/bin/env bash
# run.sh - reruns every benchmark and rewrites bench/results/: the WAN matrix (Slipstream vs
# iperf3 TCP through wanemu), the loopback rates per cipher level beside iperf3 UDP, and the S3
# ingest benchmark. Needs root (network namespaces, TUN devices, apt-get for iperf3).
#
#   sudo bench/run.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
RESULTS=$BENCH_DIR/results
[ "$(id -u)" = 0 ] || { echo "bench/run.sh needs root (network namespaces, TUN devices)" >&2; exit 1; }
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    VENV=/tmp/slipstream-bench-venv
    [ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q matplotlib
    PATH=$VENV/bin:$PATH
fi
"$BENCH_DIR/loopback.sh" "$RESULTS"
"$BENCH_DIR/wan.sh" "$RESULTS"
if [ -x "$BENCH_DIR/s3-ingest/run.sh" ]; then
    # Its output (rates, peak RSS, PASS/FAIL line) goes into the report as it is.
    "$BENCH_DIR/s3-ingest/run.sh" | tee "$RESULTS/s3-ingest.txt" || echo "S3 ingest benchmark failed" >&2
fi
python3 "$BENCH_DIR/report.py" wan "$RESULTS"
