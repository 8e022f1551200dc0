#!/usr/bin/env bash
# emu-throughput.sh - how much the emulator itself carries (0 delay, no loss): iperf3 TCP
# uncapped and at a 2.5 Gbit/s cap, and paced UDP at the cap. Shows that wanemu is not the
# bottleneck of a 1 Gbit/s benchmark.
#
# Needs root. Installs iperf3 if missing and builds bench/wanemu if WANEMU is not set.
#
#   sudo bench/emu-throughput.sh [RESULTS.jsonl]
#
# Environment: SECS [8], CAP [2.5g], UDP_RATE [2400M], EMU_FLAGS [""] (extra wanemu flags, for
# example --no-offload to measure the per-packet path), WANEMU.
set -euo pipefail

OUT=${1:-}
# shellcheck source=lib/emu.sh
. "$(dirname "$0")/lib/emu.sh"

SECS=${SECS:-8}
CAP=${CAP:-2.5g}
UDP_RATE=${UDP_RATE:-2400M}
EMU_FLAGS=${EMU_FLAGS:-}

emu_init
if [ -n "$OUT" ]; then OUT=$(realpath -m "$OUT"); : >"$OUT"; fi
HZ=$(getconf CLK_TCK)

printf "case\trate\tsent_Mbps\trecv_Mbps\tcpu_emu%%\tload1\n"
run_case() { # NAME RATE IPERF-FLAGS...
    local name=$1 rate=$2
    shift 2
    # shellcheck disable=SC2086 # EMU_FLAGS is a list of flags
    emu_start --rate "$rate" $EMU_FLAGS
    emu_start_server
    local t0 w0 t1 w1
    t0=$(emu_cpu_ticks); w0=$(date +%s.%N)
    emu_client "$WORK/client.json" "$WORK/client.err" \
        ip netns exec "$NS_A" iperf3 -c "$ADDR_B" -p "$IPERF_PORT" -t "$SECS" -J "$@"
    t1=$(emu_cpu_ticks); w1=$(date +%s.%N)
    emu_stop
    python3 - "$WORK/client.json" "$EMU_ERR" "${OUT:-/dev/null}" <<PY
import json, sys
client, emu_err, out = sys.argv[1:]
row = {"case": "$name", "rate": "$rate", "emu_flags": "$EMU_FLAGS", "secs": float("$SECS"),
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
    s = e.get("sum_sent") or e["sum"]
    r = e.get("sum_received") or e["sum"]
    row.update({"sent_mbps": round(s["bits_per_second"] / 1e6, 1),
                "recv_mbps": round(r["bits_per_second"] / 1e6, 1)})
    if "lost_percent" in e.get("sum", {}):
        row["udp_lost_pct"] = round(e["sum"]["lost_percent"], 2)
try:
    row["emu"] = json.loads(open(emu_err).read().strip().splitlines()[-1])
except Exception:
    row["emu"] = None
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
g = row.get
print("\t".join(str(x) for x in (g("case"), g("rate"), g("sent_mbps", "ERR " + str(g("error"))),
      g("recv_mbps"), g("cpu_emu_pct"), g("load1"))), flush=True)
PY
}

run_case tcp-uncapped 0 -C cubic
run_case tcp-capped "$CAP" -C cubic
run_case udp-capped "$CAP" -u -b "$UDP_RATE" -l 1400 -w 8M
[ -n "$OUT" ] && emu_log "results: $OUT"
exit 0
