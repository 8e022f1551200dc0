# shellcheck shell=bash
# Shared helpers for the bench scripts: root check, iperf3 install, building wanemu, starting and
# stopping the emulator and an iperf3 server by PID, and a cleanup trap.
#
# Source it, then call `emu_init`. Everything it starts is recorded by PID and stopped by PID in
# `emu_cleanup`, which `emu_init` installs as the EXIT/INT/TERM trap. Traffic only goes between
# the 10.77.9.x addresses inside the namespaces the emulator creates.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Unique per run, so two runs (or a run and a developer's emulator) never collide.
NS_A=${NS_A:-sswbA$$}
NS_B=${NS_B:-sswbB$$}
ADDR_A=10.77.9.1
ADDR_B=10.77.9.2
IPERF_PORT=${IPERF_PORT:-5201}
EMU_PID=
SRV_PID=
CLI_PID=
EMU_OUT=
EMU_ERR=
WORK=

emu_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
emu_die() { emu_log "error: $*"; exit 1; }

emu_require_root() {
    [ "$(id -u)" = 0 ] || emu_die "needs root (network namespaces, TUN devices): run with sudo"
}

emu_install_iperf3() {
    command -v iperf3 >/dev/null && return
    emu_log "iperf3 missing: installing it with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
    command -v iperf3 >/dev/null || emu_die "could not install iperf3"
}

# Sets WANEMU to the emulator binary: $WANEMU if given, else a release build of bench/wanemu
# (built here if needed, in $CARGO_TARGET_DIR or bench/wanemu/target).
emu_build() {
    if [ -n "${WANEMU:-}" ]; then
        [ -x "$WANEMU" ] || emu_die "WANEMU=$WANEMU is not executable"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$BENCH_DIR/wanemu/target}
    emu_log "building wanemu (release) in $target"
    CARGO_TARGET_DIR=$target cargo build -q --release --manifest-path "$BENCH_DIR/wanemu/Cargo.toml" \
        || emu_die "cargo build of bench/wanemu failed"
    WANEMU=$target/release/wanemu
}

emu_init() {
    emu_require_root
    command -v ip >/dev/null || emu_die "needs iproute2 (ip)"
    command -v python3 >/dev/null || emu_die "needs python3 (to read iperf3 JSON)"
    emu_install_iperf3
    emu_build
    WORK=$(mktemp -d /tmp/sswbench.XXXXXX)
    trap emu_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

emu_stop_server() {
    if [ -n "$SRV_PID" ]; then
        kill "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
        SRV_PID=
    fi
}

# emu_client OUT ERR CMD... : runs a client in the background and waits for it. (A foreground
# child would delay the INT/TERM traps until it finished; `wait` returns at once.)
emu_client() {
    local out=$1 err=$2
    shift 2
    "$@" >"$out" 2>"$err" &
    CLI_PID=$!
    wait "$CLI_PID" || true
    CLI_PID=
}

# Stops the emulator (SIGTERM: it prints its counters and removes its namespaces).
emu_stop() {
    if [ -n "$CLI_PID" ]; then
        kill "$CLI_PID" 2>/dev/null || true
        wait "$CLI_PID" 2>/dev/null || true
        CLI_PID=
    fi
    emu_stop_server
    if [ -n "$EMU_PID" ]; then
        kill -TERM "$EMU_PID" 2>/dev/null || true
        wait "$EMU_PID" 2>/dev/null || true
        EMU_PID=
    fi
}

emu_cleanup() {
    local rc=$?
    emu_stop
    # Belt and braces: if the emulator died hard, remove its namespaces by name.
    if [ -n "${WANEMU:-}" ] && { [ -e "/run/netns/$NS_A" ] || [ -e "/run/netns/$NS_B" ]; }; then
        "$WANEMU" cleanup --ns-a "$NS_A" --ns-b "$NS_B" 2>/dev/null || true
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}

# emu_start WANEMU-FLAGS... : starts the emulator in the background and waits for READY.
emu_start() {
    EMU_OUT=$WORK/emu.out
    EMU_ERR=$WORK/emu.err
    "$WANEMU" --ns-a "$NS_A" --ns-b "$NS_B" --addr-a "$ADDR_A" --addr-b "$ADDR_B" "$@" \
        >"$EMU_OUT" 2>"$EMU_ERR" &
    EMU_PID=$!
    for _ in $(seq 100); do
        grep -q READY "$EMU_OUT" 2>/dev/null && return 0
        kill -0 "$EMU_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$EMU_ERR" >&2
    emu_die "wanemu did not become ready"
}

# Emulator CPU time so far (user + system clock ticks of all its threads).
emu_cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$EMU_PID/stat" 2>/dev/null || echo 0
}

# emu_sysctl KEY=VALUE... : sets /proc/sys/net/KEY (e.g. ipv4/tcp_rmem) inside both namespaces.
emu_sysctl() {
    local ns kv
    for ns in "$NS_A" "$NS_B"; do
        for kv in "$@"; do
            ip netns exec "$ns" sh -c "echo '${kv#*=}' > /proc/sys/net/${kv%%=*}" \
                || emu_die "cannot set $kv in $ns"
        done
    done
}

# emu_sysctl_get KEY : reads /proc/sys/net/KEY inside namespace A.
emu_sysctl_get() {
    ip netns exec "$NS_A" cat "/proc/sys/net/$1" | tr -s '\t ' ' '
}

# Starts an iperf3 server in namespace B and waits until it listens.
emu_start_server() {
    ip netns exec "$NS_B" iperf3 -s -B "$ADDR_B" -p "$IPERF_PORT" >"$WORK/srv.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 100); do
        ip netns exec "$NS_B" ss -Htln "sport = :$IPERF_PORT" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    emu_die "iperf3 server did not start: $(cat "$WORK/srv.log")"
}
