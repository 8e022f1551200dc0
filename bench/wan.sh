#!/usr/bin/env bash
# wan.sh - Slipstream server to server through the wanemu WAN emulator, beside iperf3 TCP
# (CUBIC and BBR, default and 64 MiB buffers) measured in the same run.
#
# Needs root (network namespaces, TUN devices). Installs iperf3, builds wanemu and slipstream.
#
#   sudo bench/wan.sh [RESULTS_DIR]      (default bench/results)
#
# For one-way delay {0, 50 ms} x loss {0, 1 %} (loss on the data direction) at a 1 Gbit/s cap
# it sends a SIZE file (default 2 GiB) from a server in namespace A to one in namespace B and
# records the goodput, the CPU used by each server and the emulator, then runs
# tcp-baseline.sh with the same cases, and writes RESULTS_DIR/wan.jsonl, wan.md and wan.png.
#
# Environment: SIZE [2G], DELAYS_MS ["0 50"], LOSSES ["0 0.01"], RATE [1g], BUF_MS [50],
# SEND_RATE_KBPS [1000000], CIPHER [3], TCP_SECS [10], SLIPSTREAM, WANEMU.
# APPEND=1 appends to wan-slipstream.jsonl instead of rewriting it (e.g. a second send rate);
# SKIP_TCP=1 leaves out the iperf3 baselines (wan-tcp.jsonl is then kept as it is).
set -euo pipefail
RESULTS=$(realpath -m "${1:-$(dirname "$0")/results}")
# shellcheck source=lib/emu.sh
. "$(dirname "$0")/lib/emu.sh"
# shellcheck source=lib/slipstream.sh
. "$(dirname "$0")/lib/slipstream.sh"

SIZE=${SIZE:-2G}
DELAYS_MS=${DELAYS_MS:-"0 50"}
LOSSES=${LOSSES:-"0 0.01"}
RATE=${RATE:-1g}
BUF_MS=${BUF_MS:-50}
SEND_RATE_KBPS=${SEND_RATE_KBPS:-1000000}
CIPHER=${CIPHER:-3}
TCP_SECS=${TCP_SECS:-10}
APPEND=${APPEND:-0}
SKIP_TCP=${SKIP_TCP:-0}

emu_init
ss_build
trap 'rc=$?; ss_stop_all; (exit $rc); emu_cleanup' EXIT
mkdir -p "$RESULTS"
OUT=$RESULTS/wan-slipstream.jsonl
[ "$APPEND" = 1 ] || : >"$OUT"

SRC=/dev/shm/ssbench-src.$$
DST=/dev/shm/ssbench-dst.$$
mkdir -p "$SRC" "$DST"
# emu_cleanup exits with $?, so hand it the script's own status, not that of rm.
trap 'rc=$?; ss_stop_all; rm -rf "$SRC" "$DST"; (exit $rc); emu_cleanup' EXIT
emu_log "making a $SIZE test file in $SRC"
head -c "$SIZE" /dev/urandom >"$SRC/data.bin"

for owd in $DELAYS_MS; do
  for loss in $LOSSES; do
    load0=$(cut -d' ' -f1 /proc/loadavg)
    emu_log "case: one-way delay $owd ms, loss $loss, send rate $SEND_RATE_KBPS kbit/s, load1 $load0"
    emu_start --delay-ms "$owd" --loss "$loss" --loss-a2b-only --rate "$RATE" --buf-ms "$BUF_MS"
    rm -f "$DST/data.bin"
    ss_start receiver "$NS_B" "$ADDR_B" 8886 "$DST"
    ss_start sender "$NS_A" "$ADDR_A" 8886 "$SRC"
    # shellcheck disable=SC2154 # SS_PID_* are set by ss_start through eval
    { c_snd0=$(ss_cpu_seconds "$SS_PID_sender"); c_rcv0=$(ss_cpu_seconds "$SS_PID_receiver"); }
    e0=$(emu_cpu_ticks)
    w0=$(date +%s.%N)
    if ss_transfer "$NS_A" "$ADDR_A" 8886 "$ADDR_B" 8886 "$CIPHER" "$SEND_RATE_KBPS" "$WORK/transfer.json"; then
      ok=true
    else
      ok=false
      tail -n 20 "$WORK/sender.log" "$WORK/receiver.log" >&2 || true
    fi
    w1=$(date +%s.%N)
    c_snd1=$(ss_cpu_seconds "$SS_PID_sender"); c_rcv1=$(ss_cpu_seconds "$SS_PID_receiver")
    e1=$(emu_cpu_ticks)
    identical=false
    $ok && cmp -s "$SRC/data.bin" "$DST/data.bin" && identical=true
    # Datagrams the receiving host's kernel dropped because the server did not read in time.
    rcvbuf_errors=$(ip netns exec "$NS_B" awk '/^Udp:/ { if (n++) print $6 }' /proc/net/snmp)
    ss_stop_all
    emu_stop
    python3 - "$WORK/transfer.json" "$OUT" "$EMU_ERR" <<PY
import json, sys
transfer, out, emu_err = sys.argv[1:]
try:
    t = json.load(open(transfer))
except Exception:
    t = {}
secs = ((t.get("endTime") or 0) - (t.get("startTime") or 0)) / 1e6
wall = $w1 - $w0
row = {"tool": "slipstream", "owd_ms": float("$owd"), "loss_a2b": float("$loss"), "rate": "$RATE",
       "cipher": $CIPHER, "send_rate_kbps": $SEND_RATE_KBPS, "size": "$SIZE", "ok": "$ok" == "true", "identical": "$identical" == "true",
       "bytes": t.get("totalBytes"), "secs": round(secs, 3),
       "mbps": round(t["totalBytes"] * 8 / secs / 1e6, 1) if secs > 0 else 0.0,
       "blocks_retransmitted": t.get("blocksRetransmitted"), "rtt_ms": t.get("roundTripTimeMs"),
       "cpu_snd_pct": round(100 * ($c_snd1 - $c_snd0) / wall, 1),
       "cpu_rcv_pct": round(100 * ($c_rcv1 - $c_rcv0) / wall, 1),
       "cpu_emu_pct": round(100 * ($e1 - $e0) / $(getconf CLK_TCK) / wall, 1),
       "load1_start": float("$load0"), "udp_rcvbuf_errors_b": int("${rcvbuf_errors:-0}" or 0),
       "load1": float(open("/proc/loadavg").read().split()[0])}
try:
    emu = json.loads(open(emu_err).read().strip().splitlines()[-1])
    row["emu"] = {k: emu.get(d, {}).get(k) for d in ("a2b",) for k in ("lost", "queue_drops", "ring_full")}
    row["emu"]["tun_queue_drops_a2b"] = emu.get("tun_queue_drops_a2b")
except Exception:
    pass
open(out, "a").write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
  done
done

if [ "$SKIP_TCP" != 1 ]; then
  emu_log "TCP baselines (iperf3) in the same run"
  SECS=$TCP_SECS DELAYS_MS=$DELAYS_MS LOSSES=$LOSSES WANEMU=$WANEMU \
      "$BENCH_DIR/tcp-baseline.sh" "$RESULTS/wan-tcp.jsonl"
fi
python3 "$BENCH_DIR/report.py" wan "$RESULTS"
