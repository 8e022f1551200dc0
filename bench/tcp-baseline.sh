#!/usr/bin/env bash
# tcp-baseline.sh - the TCP numbers Slipstream has to beat, measured through the wanemu WAN
# emulator (two network namespaces, 1 Gbit/s bottleneck, drop-tail buffer).
#
# Needs root (it creates network namespaces and TUN devices). Installs iperf3 if missing and
# builds bench/wanemu if WANEMU is not set.
#
#   sudo bench/tcp-baseline.sh RESULTS.jsonl
#
# For every combination of one-way delay x loss x congestion control x buffers it starts a fresh
# emulator (loss only on the data direction A->B), sets tcp_rmem/tcp_wmem inside both namespaces,
# runs one single-stream iperf3 TCP test A->B for SECS seconds, and appends one JSON object per
# line to RESULTS.jsonl. A table goes to stdout.
#
# Environment (defaults in brackets):
#   SECS [10]            seconds per case
#   DELAYS_MS ["0 50"]   one-way delays (each direction; RTT ~ 2x)
#   LOSSES ["0 0.01"]    loss probabilities on A->B
#   CCS ["cubic bbr"]    congestion controls (must be in tcp_available_congestion_control)
#   BUFS ["default 64m"] "default" = the kernel's tcp_rmem/tcp_wmem of a fresh namespace;
#                        "64m" = both maxima 64 MiB (net.core.rmem_max cannot be set inside a
#                        namespace on this kernel, but TCP autotuning only needs tcp_rmem/tcp_wmem)
#   RATE [1g]  BUF_MS [50]  SEED [1]   emulator settings
#   WANEMU               path to a built wanemu binary (skips the build)
set -euo pipefail

OUT=${1:-}
[ -n "$OUT" ] || { echo "usage: sudo $0 RESULTS.jsonl   (see the header for the environment)" >&2; exit 2; }
# shellcheck source=lib/emu.sh
. "$(dirname "$0")/lib/emu.sh"

SECS=${SECS:-10}
DELAYS_MS=${DELAYS_MS:-"0 50"}
LOSSES=${LOSSES:-"0 0.01"}
CCS=${CCS:-"cubic bbr"}
BUFS=${BUFS:-"default 64m"}
RATE=${RATE:-1g}
BUF_MS=${BUF_MS:-50}
SEED=${SEED:-1}

emu_init
OUT=$(realpath -m "$OUT")
: >"$OUT"
HZ=$(getconf CLK_TCK)

printf "owd_ms\tloss\tcc\tbufs\tsecs\tMbps\tMbps_2nd_half\tretrans\tmean_rtt_ms\tcpu_snd%%\tcpu_rcv%%\tcpu_emu%%\n"
for owd in $DELAYS_MS; do
  for loss in $LOSSES; do
    for cc in $CCS; do
      for bufs in $BUFS; do
        emu_start --delay-ms "$owd" --loss "$loss" --loss-a2b-only --rate "$RATE" --buf-ms "$BUF_MS" --seed "$SEED"
        emu_sysctl ipv4/tcp_no_metrics_save=1
        case $bufs in
          default) ;;
          64m) emu_sysctl "ipv4/tcp_rmem=4096 131072 67108864" "ipv4/tcp_wmem=4096 16384 67108864" ;;
          *) emu_die "unknown BUFS entry $bufs (default|64m)" ;;
        esac
        rmem=$(emu_sysctl_get ipv4/tcp_rmem)
        wmem=$(emu_sysctl_get ipv4/tcp_wmem)
        emu_start_server
        t0=$(emu_cpu_ticks)
        w0=$(date +%s.%N)
        emu_client "$WORK/client.json" "$WORK/client.err" \
            ip netns exec "$NS_A" iperf3 -c "$ADDR_B" -p "$IPERF_PORT" -t "$SECS" -C "$cc" -J
        t1=$(emu_cpu_ticks)
        w1=$(date +%s.%N)
        emu_stop
        python3 - "$WORK/client.json" "$EMU_ERR" "$OUT" <<PY
import json, sys
client, emu_err, out = sys.argv[1:]
row = {"owd_ms": float("$owd"), "loss_a2b": float("$loss"), "cc": "$cc", "bufs": "$bufs",
       "tcp_rmem": "$rmem", "tcp_wmem": "$wmem", "rate": "$RATE", "buf_ms": float("$BUF_MS"),
       "seed": $SEED, "secs": float("$SECS"),
       "cpu_emu_pct": round(100.0 * ($t1 - $t0) / $HZ / max($w1 - $w0, 1e-9), 1),
       "load1": float(open("/proc/loadavg").read().split()[0])}
try:
    d = json.load(open(client))
except Exception as e:
    d = {"error": f"no iperf3 JSON: {e}"}
if "error" in d:
    row["error"] = d["error"]
else:
    e = d["end"]
    iv = [i["sum"]["bits_per_second"] / 1e6 for i in d["intervals"]]
    half = iv[len(iv) // 2:] or [0.0]
    snd = e["streams"][0]["sender"]
    cpu = e.get("cpu_utilization_percent", {})
    row.update({
        "mbps": round(e["sum_received"]["bits_per_second"] / 1e6, 1),
        "mbps_2nd_half": round(sum(half) / len(half), 1),
        "retransmits": e["sum_sent"].get("retransmits"),
        "mean_rtt_ms": round(snd.get("mean_rtt", 0) / 1000.0, 1),
        "max_rtt_ms": round(snd.get("max_rtt", 0) / 1000.0, 1),
        "cpu_sender_pct": round(cpu.get("host_total", 0.0), 1),
        "cpu_receiver_pct": round(cpu.get("remote_total", 0.0), 1),
        "iperf3_cc": e.get("sender_tcp_congestion"),
    })
try:
    row["emu"] = json.loads(open(emu_err).read().strip().splitlines()[-1])
except Exception:
    row["emu"] = None
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
g = row.get
print("\t".join(str(x) for x in (g("owd_ms"), g("loss_a2b"), g("cc"), g("bufs"), g("secs"),
      g("mbps", "ERR " + str(g("error"))), g("mbps_2nd_half"), g("retransmits"), g("mean_rtt_ms"),
      g("cpu_sender_pct"), g("cpu_receiver_pct"), g("cpu_emu_pct"))), flush=True)
PY
      done
    done
  done
done
emu_log "results: $OUT"
