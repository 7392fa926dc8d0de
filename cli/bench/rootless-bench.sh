#!/usr/bin/env bash
# shellcheck disable=SC2086
# Rootless rpod against rootless podman 4.3.1, in one run, as the same unprivileged user
# (rpodtest, made by scripts/setup.sh), with the same image and runtime (runc):
#
#   container -> host TCP      iperf3 -c HOSTADDR in the container (and -R), server on the host:
#                              rpod's portfwd (the rootless default) vs podman's slirp4netns
#   published port             iperf3 -c 127.0.0.1 -p PORT on the host (and -R), server in the
#                              container: rpod's portfwd API forward vs podman's rootlessport
#   run                        run --rm IMG true (default rootless network: portfwd vs slirp4netns)
#
# Targets (issue 8): container traffic at least 2x podman's slirp4netns, published ports at least
# rootlessport's throughput, run at most 1/3 of podman's time. It is a benchmark, not a test: it
# prints medians, ratios and verdicts, and exits 0 when it could measure.
#
# As root. Everything runs inside a private network + mount + PID namespace made here (lo up, a
# veth pair giving the stand-in host the address 192.0.2.1, a tmpfs on /tmp), with the user's
# HOME and XDG_RUNTIME_DIR in temp folders, so the machine and the user's own state are never
# touched and no process outlives the run.
#
# Environment:
#   RPOD=PATH      the rpod binary (default: target/release/rpod, built here with
#                  `cargo build --release -p rpod -p netd -p dnsd -p portfwd -p rpod-storage`);
#                  netd, dnsd, portfwd beside it
#   BUSER=NAME     the user (default rpodtest)
#   RUNS=N         iperf3 runs per case (default 3), DUR=S seconds each (default 5)
#   HRUNS=N        hyperfine runs per run command (default 15), WARMUP=N (default 3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
need_root

BUSER=${BUSER:-rpodtest}
if [ "${RPOD_BENCH_INNER:-}" != 1 ]; then
    if [ -z "${RPOD:-}" ]; then
        use_cargo
        say "cargo build --release -p rpod -p netd -p dnsd -p portfwd -p rpod-storage"
        (cd "$RPOD_ROOT" && cargo build -q --release -p rpod -p netd -p dnsd -p portfwd -p rpod-storage)
        RPOD="${CARGO_TARGET_DIR:-$RPOD_ROOT/target}/release/rpod"
    fi
    RPOD=$(readlink -f "$RPOD")
    [ -x "$RPOD" ] || die "no rpod binary at $RPOD"
    for h in netd dnsd portfwd; do
        [ -x "$(dirname "$RPOD")/$h" ] || die "no $h beside $RPOD"
    done
    for t in podman runc slirp4netns hyperfine iperf3 jq unshare setpriv newuidmap; do
        command -v "$t" >/dev/null || die "'$t' is not installed"
    done
    id "$BUSER" >/dev/null 2>&1 || die "no user $BUSER (run scripts/setup.sh)"
    export RPOD BUSER RPOD_BENCH_INNER=1
    exec unshare -n -m --propagation private --pid --fork --mount-proc --kill-child=TERM "$0" "$@"
fi

# ---------------------------------------------------------------------------------------
# Inside the benchmark's own network, mount and PID namespaces from here on.

RUNS=${RUNS:-3}
DUR=${DUR:-5}
HRUNS=${HRUNS:-15}
WARMUP=${WARMUP:-3}
IMG=localhost/rpod-rlbench:latest
WORK=$(mktemp -d /var/tmp/rpod-rlbench.XXXXXX)
chmod 0755 "$WORK"
mount -t tmpfs -o mode=1777 none /tmp
ip link set lo up
# The stand-in host's own address (containers reach the host through it: both engines
# refuse the host's loopback by default).
ip link add rlb0 type veth peer name rlb1
ip addr add 192.0.2.1/24 dev rlb0
ip link set rlb0 up
ip link set rlb1 up
HOSTADDR=192.0.2.1

BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/home"
for b in rpod netd dnsd portfwd fuse-overlay; do
    [ -x "$(dirname "$RPOD")/$b" ] && install -m 0755 "$(dirname "$RPOD")/$b" "$BIN/$b"
done
RT=/tmp/rlb-rt
mkdir -p "$RT"
chmod 0700 "$RT" "$WORK/home"
chown "$BUSER:$BUSER" "$RT" "$WORK/home"
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
chmod 0644 "$WORK/containers.conf"
U="setpriv --reuid $BUSER --regid $BUSER --init-groups env -i HOME=$WORK/home XDG_RUNTIME_DIR=$RT
   PATH=/usr/sbin:/usr/bin:/sbin:/bin CONTAINERS_CONF=$WORK/containers.conf"
R="$BIN/rpod"
P="podman --storage-driver overlay"

cleanup() {
    local rc=$?
    trap '' INT TERM
    set +e
    say "cleaning up"
    $U $R rm -f -a -t 0 >/dev/null 2>&1
    $U $R system reset -f >/dev/null 2>&1
    $U $P rm -a -f -t 0 >/dev/null 2>&1
    $U $P system reset -f >/dev/null 2>&1
    grep -o " ${WORK}[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
say "building $IMG: static busybox and iperf3 with its libraries (a docker-archive, loaded by both)"
rootfs=$WORK/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev}
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh true sleep cat; do ln -sf busybox "$rootfs/bin/$a"; done
mkdir -p "$rootfs/usr/bin"
cp /usr/bin/iperf3 "$rootfs/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
docker_archive "$rootfs" "$IMG" /usr/bin:/bin "$WORK/image.tar"
chmod 0644 "$WORK/image.tar"
rm -rf "$rootfs"

$U $R load -q -i "$WORK/image.tar" >/dev/null || die "rpod load failed"
$U $P load -q -i "$WORK/image.tar" >/dev/null || die "podman load failed"

info "rpod:   $R ($($U $R version 2>/dev/null | awk '/^Version/ {print $2; exit}')), portfwd: $($BIN/portfwd --version 2>/dev/null | head -1)"
info "podman: $(podman --version), $(slirp4netns --version | head -1), rootlessport"
info "runtime: runc ($(runc --version | head -1)); kernel $(uname -r), $(nproc) CPUs; user $BUSER"
info "iperf3: $RUNS runs of ${DUR}s per case (median); hyperfine: $HRUNS runs (+$WARMUP warm-up)"

check() { "$@" >/dev/null 2>&1 || die "does not work: $* ($("$@" 2>&1 | tail -1))"; }
check $U $R run --rm $IMG true
check $U $P run --rm $IMG true

declare -a ROWS=()
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# row LABEL RPOD PODMAN UNIT KIND(min|max) TARGET_FACTOR
row() {
    ROWS+=("$(awk -v l="$1" -v r="$2" -v p="$3" -v u="$4" -v k="$5" -v f="$6" 'BEGIN {
        ratio = (p > 0) ? r / p : 0
        if (k == "min") { ok = (ratio >= f); t = sprintf(">= %.2fx", f) } else { ok = (ratio <= f); t = sprintf("<= %.3fx", f) }
        printf "%-34s %9.2f %9.2f %-7s %6.2fx  %-10s %s", l, r, p, u, ratio, t, ok ? "met" : "NOT met" }')")
}
gbits() { jq -r '.end.sum_received.bits_per_second / 1e9' 2>/dev/null || echo 0; }

# Container -> host: the server on the stand-in host, as the user.
$U iperf3 -s -B $HOSTADDR -p 5201 >/dev/null 2>&1 &
SRV=$!
sleep 0.5
for dir in fwd rev; do
    flag=""
    [ "$dir" = rev ] && flag="-R"
    for eng in rpod podman; do
        cmd="$R"
        [ "$eng" = podman ] && cmd="$P"
        vals=()
        for ((i = 1; i <= RUNS; i++)); do
            v=$($U $cmd run --rm $IMG iperf3 -c $HOSTADDR -p 5201 -t "$DUR" $flag -J | gbits)
            vals+=("$v")
            info "container->host $dir $eng run $i: $v Gbit/s"
        done
        eval "m_$eng=$(median "${vals[@]}")"
    done
    label="container -> host"
    [ "$dir" = rev ] && label="host -> container (-R)"
    # shellcheck disable=SC2154
    row "$label" "$m_rpod" "$m_podman" Gbit/s min 2
done
kill $SRV 2>/dev/null || true

# Published port: the server in the container, the client on the host.
$U $R run -d --name rpsrv -p 25201:5201 $IMG iperf3 -s -p 5201 >/dev/null || die "rpod iperf3 server failed"
$U $P run -d --name ppsrv -p 25202:5201 $IMG iperf3 -s -p 5201 >/dev/null || die "podman iperf3 server failed"
sleep 1
for dir in fwd rev; do
    flag=""
    [ "$dir" = rev ] && flag="-R"
    for eng in rpod podman; do
        port=25201
        [ "$eng" = podman ] && port=25202
        vals=()
        for ((i = 1; i <= RUNS; i++)); do
            v=$($U iperf3 -c 127.0.0.1 -p $port -t "$DUR" $flag -J | gbits)
            vals+=("$v")
            info "published port $dir $eng run $i: $v Gbit/s"
        done
        eval "m_$eng=$(median "${vals[@]}")"
    done
    label="published port, host -> ctr"
    [ "$dir" = rev ] && label="published port, ctr -> host (-R)"
    row "$label" "$m_rpod" "$m_podman" Gbit/s min 1
done
$U $R rm -f -t 0 rpsrv >/dev/null
$U $P rm -f -t 0 ppsrv >/dev/null

say "run --rm $IMG true (default rootless network)"
json=$RT/h.json
$U hyperfine -N -w "$WARMUP" -r "$HRUNS" --export-json "$json" \
    -n rpod "$R run --rm $IMG true" -n podman "$P run --rm $IMG true" >&2
r=$(jq '.results[0].median * 1000' "$json")
p=$(jq '.results[1].median * 1000' "$json")
row "run --rm IMG true" "$r" "$p" ms max 0.3334
json=$RT/h2.json
$U hyperfine -N -w "$WARMUP" -r "$HRUNS" --export-json "$json" \
    -n rpod "$R run --rm --network none $IMG true" -n podman "$P run --rm --network none $IMG true" >&2
r=$(jq '.results[0].median * 1000' "$json")
p=$(jq '.results[1].median * 1000' "$json")
row "run --rm --network none IMG true" "$r" "$p" ms max 0.3334

say "results (medians; ratio = rpod / podman)"
printf '%-34s %9s %9s %-7s %7s  %s\n' "" rpod podman unit ratio target
printf '%s\n' "${ROWS[@]}"
