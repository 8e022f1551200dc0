#!/usr/bin/env bash
# loopback.sh - Slipstream's top rate over loopback at each cipher level, beside iperf3's
# lossless UDP rate measured in the same run (paced, 1472-byte datagrams, rising rates until
# the receiver loses more than 0.1 %).
#
#   sudo bench/loopback.sh [RESULTS_DIR]     (root only for installing iperf3 when missing)
#
# Environment: SIZE [2G], SEND_RATE_KBPS [20000000], CIPHERS ["0 1 2 3"], SLIPSTREAM.
set -euo pipefail
RESULTS=$(realpath -m "${1:-$(dirname "$0")/results}")
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/emu.sh
. "$BENCH_DIR/lib/emu.sh"
# shellcheck source=lib/slipstream.sh
. "$BENCH_DIR/lib/slipstream.sh"
SIZE=${SIZE:-2G}
SEND_RATE_KBPS=${SEND_RATE_KBPS:-20000000}
CIPHERS=${CIPHERS:-"0 1 2 3"}

emu_install_iperf3
WORK=$(mktemp -d /tmp/ssloop.XXXXXX)
SRC=/dev/shm/ssloop-src.$$
DST=/dev/shm/ssloop-dst.$$
IPERF_PID=
cleanup() {
    ss_stop_all
    [ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null
    rm -rf "$WORK" "$SRC" "$DST"
}
trap cleanup EXIT
ss_build
mkdir -p "$RESULTS" "$SRC" "$DST"
OUT=$RESULTS/loopback.jsonl
: >"$OUT"
head -c "$SIZE" /dev/urandom >"$SRC/data.bin"

port_a=$((20000 + RANDOM % 10000))
port_b=$((port_a + 1))
ss_start receiver - 127.0.0.1 "$port_b" "$DST"
ss_start sender - 127.0.0.1 "$port_a" "$SRC"
for cipher in $CIPHERS; do
    rm -f "$DST/data.bin"
    if ss_transfer - 127.0.0.1 "$port_a" 127.0.0.1 "$port_b" "$cipher" "$SEND_RATE_KBPS" "$WORK/t.json"; then
        mbps=$(ss_goodput_mbps "$WORK/t.json")
    else
        mbps=0
    fi
    load1=$(cut -d' ' -f1 /proc/loadavg)
    echo "{\"tool\": \"slipstream\", \"cipher\": $cipher, \"mbps\": $mbps, \"size\": \"$SIZE\", \"send_rate_kbps\": $SEND_RATE_KBPS, \"load1\": $load1}" | tee -a "$OUT"
done
ss_stop_all

# iperf3 UDP: the highest paced rate with under 0.1 % loss.
iperf3 -s -B 127.0.0.1 -p 5399 >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
best=0
for rate in 1000 1500 2000 2500 3000 3500 4000 5000; do
    iperf3 -c 127.0.0.1 -p 5399 -u -b "${rate}M" -l 1472 -w 4M -t 4 -J >"$WORK/u.json" 2>/dev/null || true
    read -r got lost <<<"$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["end"]["sum"]
print(round(d["bits_per_second"] / 1e6, 1), d.get("lost_percent", 100))' "$WORK/u.json" 2>/dev/null || echo "0 100")"
    load1=$(cut -d' ' -f1 /proc/loadavg)
    echo "{\"tool\": \"iperf3-udp\", \"offered_mbps\": $rate, \"mbps\": $got, \"lost_percent\": $lost, \"load1\": $load1}" | tee -a "$OUT"
    if python3 -c "import sys; sys.exit(0 if float('$lost') < 0.1 else 1)"; then
        best=$got
    else
        break
    fi
done
kill "$IPERF_PID" 2>/dev/null; IPERF_PID=
echo "{\"tool\": \"iperf3-udp-lossless\", \"mbps\": $best, \"load1\": $(cut -d' ' -f1 /proc/loadavg)}" | tee -a "$OUT"
