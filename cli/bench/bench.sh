#!/usr/bin/env bash
# shellcheck disable=SC2086
# rpod against podman 4.3.1, in one run, with the same image and the same OCI runtime (runc):
#
#   run, no network      rpod run --rm --network none IMG true   vs  podman run --rm --network none IMG true
#   run, bridge + port   rpod run --rm --network B -p 8080:80 ... vs  podman run --rm --network B -p 8081:80 ...
#   ps -a, 100 created   rpod ps -a                              vs  podman ps -a
#
# Targets (issue 5): rpod at most 1/3 of podman's time for run, at most 1/5 for ps.
# It is a benchmark, not a test: it prints the figures and the verdicts and exits 0 when it
# could measure, whatever the verdicts (non-zero only when something failed to run).
#
# As root. Everything runs inside a private network + mount + PID namespace made here (tmpfs on
# /run, lo up), with per-run `rpod --root` and `podman --root/--runroot` and a containers.conf in
# a temp folder, so the machine's network, firewall and container state are never touched.
# podman uses Debian's netavark 1.4 (iptables) and aardvark-dns; rpod uses netd and dnsd.
#
# Environment:
#   RPOD=PATH         the rpod binary (default: target/release/rpod, built here with
#                     `cargo build --release -p rpod -p netd -p dnsd`); netd, dnsd beside it
#   RUNS=N            hyperfine runs per `run` command (default 20), WARMUP=N (default 3)
#   PS_RUNS=N         hyperfine runs per `ps -a` command (default 30)
#   NCONT=N           containers created for ps -a (default 100)
#   BUSYBOX=PATH      the static busybox put in the image (default /bin/busybox)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/../../scripts/lib.sh"
need_root

if [ "${RPOD_BENCH_INNER:-}" != 1 ]; then
    if [ -z "${RPOD:-}" ]; then
        use_cargo
        say "cargo build --release -p rpod -p netd -p dnsd"
        (cd "$RPOD_ROOT" && cargo build -q --release -p rpod -p netd -p dnsd)
        RPOD="${CARGO_TARGET_DIR:-$RPOD_ROOT/target}/release/rpod"
    fi
    RPOD=$(readlink -f "$RPOD")
    [ -x "$RPOD" ] || die "no rpod binary at $RPOD"
    for h in netd dnsd; do
        [ -x "$(dirname "$RPOD")/$h" ] || die "no $h beside $RPOD"
    done
    for t in podman runc hyperfine jq unshare nft ip sha256sum; do
        command -v "$t" >/dev/null || die "'$t' is not installed (Debian: apt-get install ${t/sha256sum/coreutils})"
    done
    export RPOD RPOD_BENCH_INNER=1
    exec unshare -n -m --propagation private --pid --fork --mount-proc --kill-child=TERM "$0" "$@"
fi

# ---------------------------------------------------------------------------------------
# Inside the benchmark's own network, mount and PID namespaces from here on.

RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
PS_RUNS=${PS_RUNS:-30}
NCONT=${NCONT:-100}
BUSYBOX=${BUSYBOX:-/bin/busybox}
RUNC=$(command -v runc)
IMG=localhost/rpod-bench:latest
WORK=$(mktemp -d /var/tmp/rpod-bench.XXXXXX)
mount -t tmpfs none /run
ip link set lo up

# $R and $P are command prefixes, split into words on purpose (shellcheck SC2086 is off).
R="$RPOD --root $WORK/rpod --runtime $RUNC"
export CONTAINERS_CONF=$WORK/containers.conf
P="podman --root $WORK/podman/root --runroot $WORK/podman/runroot --storage-driver overlay"
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
network_config_dir = "$WORK/podman/networks"
EOF

cleanup() {
    local rc=$? m
    trap '' INT TERM
    set +e
    say "cleaning up"
    $R rm -f -a >/dev/null 2>&1
    $R network rm -f benchnet >/dev/null 2>&1
    $P rm -a -f -t 0 >/dev/null 2>&1
    $P network rm -f benchnet >/dev/null 2>&1
    $P system reset -f >/dev/null 2>&1
    grep -o " ${WORK}[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
say "building $IMG from $BUSYBOX (a docker-archive, loaded into both stores)"
rootfs=$WORK/rootfs
mkdir -p "$rootfs"/{bin,etc,www,tmp,proc,sys,dev}
cp "$BUSYBOX" "$rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"
done
echo hello >"$rootfs/www/index.html"
docker_archive "$rootfs" "$IMG" /bin "$WORK/image.tar"
rm -rf "$rootfs"

$R load -q -i "$WORK/image.tar" >/dev/null || die "rpod load failed"
$P load -q -i "$WORK/image.tar" >/dev/null || die "podman load failed"
# Different bridges and subnets, so the two engines never share a link; different host ports.
$R network create benchnet >/dev/null || die "rpod network create failed"
# (podman 4.3 has no --interface-name: rename the bridge in its network file.)
$P network create --subnet 10.99.0.0/24 benchnet >/dev/null || die "podman network create failed"
f=$WORK/podman/networks/benchnet.json
jq '.network_interface = "podbench0"' "$f" >"$f.new" && mv "$f.new" "$f"

info "rpod:   $RPOD ($($R version 2>/dev/null | awk '/^Version/ {print $2; exit}'))"
info "podman: $(podman --version), netavark $(/usr/lib/podman/netavark --version 2>/dev/null | awk '{print $2}')"
info "runtime: $RUNC ($(runc --version | head -1)); kernel $(uname -r), $(nproc) CPUs"
info "hyperfine: $RUNS runs (+$WARMUP warm-up) per run command, $PS_RUNS per ps command"

# Both must work before timing them.
check() { "$@" >/dev/null 2>&1 || die "does not work: $* ($("$@" 2>&1 | tail -1))"; }
check $R run --rm --network none $IMG true
check $P run --rm --network none $IMG true
check $R run --rm --network benchnet -p 8080:80 $IMG true
check $P run --rm --network benchnet -p 8081:80 $IMG true

declare -a ROWS=()
# bench LABEL TARGET_DIVISOR RUNS RPOD_CMD PODMAN_CMD
bench() {
    local label=$1 div=$2 runs=$3 json=$WORK/h-$RANDOM.json
    say "$label"
    hyperfine -N -w "$WARMUP" -r "$runs" --export-json "$json" \
        -n rpod "$4" -n podman "$5" >&2
    local r p
    r=$(jq '.results[0].median * 1000' "$json")
    p=$(jq '.results[1].median * 1000' "$json")
    ROWS+=("$(awk -v l="$label" -v r="$r" -v p="$p" -v d="$div" 'BEGIN {
        ratio = r / p; verdict = (ratio <= 1 / d) ? "met" : "NOT met";
        printf "%-28s %9.1f %9.1f %7.3f   <= 1/%d (%.3f)  %s", l, r, p, ratio, d, 1 / d, verdict }')")
}

bench "run --rm, no network" 3 "$RUNS" \
    "$R run --rm --network none $IMG true" "$P run --rm --network none $IMG true"
bench "run --rm, bridge + 1 port" 3 "$RUNS" \
    "$R run --rm --network benchnet -p 8080:80 $IMG true" \
    "$P run --rm --network benchnet -p 8081:80 $IMG true"

say "creating $NCONT containers in each engine"
t0=$(date +%s.%N)
for ((i = 0; i < NCONT; i++)); do $R create --name "c$i" $IMG true >/dev/null || die "rpod create c$i failed"; done
t1=$(date +%s.%N)
for ((i = 0; i < NCONT; i++)); do $P create --name "c$i" $IMG true >/dev/null || die "podman create c$i failed"; done
t2=$(date +%s.%N)
info "rpod create: $(awk -v a="$t0" -v b="$t1" -v n="$NCONT" 'BEGIN {printf "%.1f ms each", (b - a) * 1000 / n}')," \
    "podman create: $(awk -v a="$t1" -v b="$t2" -v n="$NCONT" 'BEGIN {printf "%.1f ms each", (b - a) * 1000 / n}')"
nr=$($R ps -a | tail -n +2 | wc -l)
np=$($P ps -a | tail -n +2 | wc -l)
if [ "$nr" -ne "$NCONT" ] || [ "$np" -ne "$NCONT" ]; then
    die "ps -a lists $nr (rpod) and $np (podman) containers, expected $NCONT"
fi
bench "ps -a, $NCONT containers" 5 "$PS_RUNS" "$R ps -a" "$P ps -a"

say "results (medians, ms; ratio = rpod / podman)"
printf '%-28s %9s %9s %7s   %s\n' "" rpod podman ratio target
printf '%s\n' "${ROWS[@]}"
