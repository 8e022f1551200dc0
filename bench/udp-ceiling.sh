#!/usr/bin/env bash
# udp-ceiling.sh - the best a rate-based UDP sender can show on the harness: paced iperf3 UDP
# through wanemu at 50 ms one-way delay, 1 % loss on A->B and a 1 Gbit/s cap.
#
# Needs root. Installs iperf3 if missing and builds bench/wanemu if WANEMU is not set.
#
#   sudo bench/udp-ceiling.sh [RESULTS.jsonl]
#
# Environment: SECS [10], UDP_RATES ["950M"] (iperf3 -b values, one run each), LEN [1400]
# (datagram payload), SOCKBUF [4M] (iperf3 -w; the receiver needs several MB or it, not the
# path, drops packets), OWD_MS [50], LOSS [0.01], RATE [1g], BUF_MS [50], SEED [1], WANEMU.
set -euo pipefail

OUT=${1:-}
# shellcheck source=lib/emu.sh
. "$(dirname "$0")/lib/emu.sh"

SECS=${SECS:-10}
UDP_RATES=${UDP_RATES:-950M}
LEN=${LEN:-1400}
SOCKBUF=${SOCKBUF:-4M}
OWD_MS=${OWD_MS:-50}
LOSS=${LOSS:-0.01}
RATE=${RATE:-1g}
BUF_MS=${BUF_MS:-50}
SEED=${SEED:-1}

emu_init
if [ -n "$OUT" ]; then OUT=$(realpath -m "$OUT"); : >"$OUT"; fi
HZ=$(getconf CLK_TCK)

printf "owd_ms\tloss\toffered\tsent_Mbps\trecv_Mbps\tlost%%\temu_lost\temu_qdrops\tcpu_snd%%\tcpu_rcv%%\tcpu_emu%%\n"
for b in $UDP_RATES; do
    emu_start --delay-ms "$OWD_MS" --loss "$LOSS" --loss-a2b-only --rate "$RATE" --buf-ms "$BUF_MS" --seed "$SEED"
    emu_start_server
    t0=$(emu_cpu_ticks); w0=$(date +%s.%N)
    emu_client "$WORK/client.json" "$WORK/client.err" \
        ip netns exec "$NS_A" iperf3 -c "$ADDR_B" -p "$IPERF_PORT" -u -b "$b" -l "$LEN" -w "$SOCKBUF" -t "$SECS" -J
    t1=$(emu_cpu_ticks); w1=$(date +%s.%N)
    emu_stop
    python3 - "$WORK/client.json" "$EMU_ERR" "${OUT:-/dev/null}" <<PY
import json, sys
client, emu_err, out = sys.argv[1:]
row = {"owd_ms": float("$OWD_MS"), "loss_a2b": float("$LOSS"), "offered": "$b", "len": $LEN,
       "sockbuf": "$SOCKBUF", "rate": "$RATE", "buf_ms": float("$BUF_MS"), "secs": float("$SECS"),
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
    s = e["sum"]
    sent = e.get("sum_sent", s)["bits_per_second"] / 1e6
    # iperf3's UDP "sum" is the receiver's view: bytes that arrived over the test time.
    recv = e.get("sum_received", s)["bits_per_second"] / 1e6
    cpu = e.get("cpu_utilization_percent", {})
    row.update({"sent_mbps": round(sent, 1), "recv_mbps": round(recv, 1),
                "lost_pct": round(s.get("lost_percent", 0.0), 2),
                "lost_packets": s.get("lost_packets"), "packets": s.get("packets"),
                "cpu_sender_pct": round(cpu.get("host_total", 0.0), 1),
                "cpu_receiver_pct": round(cpu.get("remote_total", 0.0), 1)})
try:
    row["emu"] = json.loads(open(emu_err).read().strip().splitlines()[-1])
except Exception:
    row["emu"] = None
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
g = row.get
a2b = (row["emu"] or {}).get("a2b", {})
print("\t".join(str(x) for x in (g("owd_ms"), g("loss_a2b"), g("offered"), g("sent_mbps", "ERR " + str(g("error"))),
      g("recv_mbps"), g("lost_pct"), a2b.get("lost"), a2b.get("queue_drops"),
      g("cpu_sender_pct"), g("cpu_receiver_pct"), g("cpu_emu_pct"))), flush=True)
PY
done
[ -n "$OUT" ] && emu_log "results: $OUT"
exit 0
