# shellcheck shell=bash
# Helpers for benchmarks of Slipstream itself: a release build of the `slipstream` binary, two
# servers (sender and receiver, each with its own state dir, user and File sandbox), and one
# server-to-server transfer driven through the API, timed by the sender's own Transfer record.
#
# Source after lib/emu.sh (for emu_log/emu_die and $WORK). Servers are stopped by PID.

REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
SS_PIDS=()
SS_PASSWORD=bench-password-1

# Sets SLIPSTREAM to the binary: $SLIPSTREAM if given, else a release build of the workspace.
ss_build() {
    if [ -n "${SLIPSTREAM:-}" ]; then
        [ -x "$SLIPSTREAM" ] || emu_die "SLIPSTREAM=$SLIPSTREAM is not executable"
        return
    fi
    emu_log "building slipstream (release)"
    (cd "$REPO_DIR" && cargo build -q --release --bin slipstream) || emu_die "cargo build failed"
    SLIPSTREAM=$REPO_DIR/target/release/slipstream
}

# ss_start NAME NETNS|- HOST PORT SANDBOX : starts a server (in NETNS unless "-"), adds user
# "bench" (superuser) to its state dir, waits until its API answers.
ss_start() {
    local name=$1 ns=$2 host=$3 port=$4 sandbox=$5
    local state=$WORK/$name-state
    # A fresh state dir (database, certificate, user) for every server, so cases do not share state.
    rm -rf "$state"
    mkdir -p "$sandbox"
    echo "$SS_PASSWORD" | "$SLIPSTREAM" user add bench --superuser --password-stdin \
        --persistent-state-dir "$state" >/dev/null
    local run=()
    [ "$ns" != - ] && run=(ip netns exec "$ns")
    "${run[@]}" "$SLIPSTREAM" server --persistent-state-dir "$state" --api-host "$host" \
        --api-port "$port" --recv-port "$port" --sandbox-dir "$sandbox" \
        >"$WORK/$name.log" 2>&1 &
    SS_PIDS+=($!)
    eval "SS_PID_$name=$!"
    for _ in $(seq 200); do
        ss_api "$ns" "$host" "$port" server.getServerInfo >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    cat "$WORK/$name.log" >&2
    emu_die "slipstream server $name did not answer"
}

# ss_api NETNS|- HOST PORT METHOD ARGS... : one API call as user bench.
ss_api() {
    local ns=$1 host=$2 port=$3
    shift 3
    local run=()
    [ "$ns" != - ] && run=(ip netns exec "$ns")
    SLIPSTREAM_API_PASSWORD=$SS_PASSWORD XDG_CONFIG_HOME=$WORK/config \
        "${run[@]}" "$SLIPSTREAM" api --host "$host" --port "$port" --user bench --insecure "$@"
}

ss_stop_all() {
    local pid
    for pid in "${SS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    SS_PIDS=()
}

# CPU seconds (user + system) a process used so far.
ss_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# ss_transfer NS_A HOST_A PORT_A HOST_B PORT_B CIPHER RATE_KBPS OUT_JSON : sends /data.bin from
# the sender (A) to the receiver (B) and writes the finished Transfer as JSON to OUT_JSON.
# Params go as --params JSON or --name=value after METHOD (--user/--host/--port are the
# client's own options, so createDestination's "user" must go through --params).
ss_transfer() {
    local ns=$1 host_a=$2 port_a=$3 host_b=$4 port_b=$5 cipher=$6 rate=$7 out=$8
    local manifest destination transfer status mstatus
    ss_api "$ns" "$host_a" "$port_a" send.createManifest \
        --params '{"mappings": {"data.bin": "/data.bin"}}' >"$WORK/manifest.json" || return 1
    manifest=$(ss_json "$WORK/manifest.json" manifestId) || return 1
    for _ in $(seq 600); do
        mstatus=$(ss_json "$WORK/manifest.json" status)
        [ "$mstatus" = complete ] && break
        [ "$mstatus" = pending ] || { emu_log "manifest $mstatus: $(cat "$WORK/manifest.json")"; return 1; }
        sleep 0.5
        ss_api "$ns" "$host_a" "$port_a" send.getManifest --manifestId="$manifest" >"$WORK/manifest.json" || return 1
    done
    ss_api "$ns" "$host_a" "$port_a" send.createDestination \
        --params "{\"destinationAddress\": \"$host_b:$port_b\", \"user\": \"bench\", \"password\": \"$SS_PASSWORD\"}" \
        >"$WORK/destination.json" || return 1
    destination=$(ss_json "$WORK/destination.json" destinationId) || return 1
    ss_api "$ns" "$host_a" "$port_a" send.createTransfer --destinationId="$destination" \
        --manifestId="$manifest" --overwriteMode=1 --minCipher="$cipher" --sendRate="$rate" \
        >"$WORK/transfer-created.json" || return 1
    transfer=$(ss_json "$WORK/transfer-created.json" transferId) || return 1
    # Each poll is a TLS connection and a password check on the sender: poll once a second, and
    # the goodput comes from the Transfer's own startTime/endTime, not from the polling.
    for _ in $(seq 900); do
        sleep 1
        ss_api "$ns" "$host_a" "$port_a" send.getTransfer --transferId="$transfer" >"$out" || continue
        # SS_TRACE=FILE keeps every poll (one JSON line each), e.g. to follow currentSendRate.
        [ -z "${SS_TRACE:-}" ] || { printf '{"t": %s, "transfer": ' "$(date +%s.%N)"; tr -d '\n' <"$out"; echo '}'; } >>"$SS_TRACE"
        status=$(ss_json "$out" status)
        case $status in
          complete) return 0 ;;
          error|cancelled) emu_log "transfer ended in $status: $(cat "$out")"; return 1 ;;
        esac
    done
    emu_log "transfer did not finish in 15 minutes: $(cat "$out")"
    return 1
}

# ss_json FILE KEY : one top-level field of a JSON file.
ss_json() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# Goodput in Mbit/s of a finished Transfer JSON (totalBytes over startTime..endTime, in us).
ss_goodput_mbps() {
    python3 -c '
import json, sys
t = json.load(open(sys.argv[1]))
secs = ((t.get("endTime") or 0) - (t.get("startTime") or 0)) / 1e6
b = t.get("totalBytes") or 0
print(f"{b * 8 / secs / 1e6:.1f}" if secs > 0 else "0")' "$1"
}
