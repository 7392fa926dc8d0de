#!/usr/bin/env bash
# The rpod demo (as root): the engine runs a web server in a container on a bridge network,
# publishes its port, and a second container fetches it by name. Then everything is removed.
#
#   1. build a small image from Debian's busybox-static (a docker-archive made with tar + jq)
#   2. rpod load, rpod network create demo (bridge podman1)
#   3. rpod run -d --name web --network demo -p 8080:80 IMG httpd -f -p 80 -h /www
#   4. fetch http://127.0.0.1:8080/ from the host, and http://web/ from a second container
#   5. rpod ps, rpod stop -t 2 web, rpod rm web, rpod network rm demo, and check nothing is left
#
# The script re-runs itself inside a private network + mount + PID namespace (with a tmpfs on
# /run and lo up) that stands in for the machine, with a fresh `rpod --root` in a temp folder:
# the machine's own network, firewall and container state are never touched, and whatever
# happens, no process, mount, bridge or nft table outlives the demo.
#
# Environment:
#   RPOD_SKIP_SETUP=1   do not run scripts/setup.sh first (scripts/test.sh has already run it)
#   RPOD=PATH           the rpod binary (default: target/debug/rpod, built here with netd and
#                       dnsd); netd and dnsd must be beside it
#   BUSYBOX=PATH        the static busybox put in the image (default: /bin/busybox)
# scripts/demo-netd.sh is the older demo that drives netd directly, without the engine.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

if [ "${RPOD_DEMO_INNER:-}" != 1 ]; then
    if [ "${RPOD_SKIP_SETUP:-}" != 1 ]; then
        "$RPOD_ROOT/scripts/setup.sh"
    fi
    if [ -z "${RPOD:-}" ]; then
        use_cargo
        say "cargo build -p rpod -p netd -p dnsd"
        (cd "$RPOD_ROOT" && cargo build -q -p rpod -p netd -p dnsd)
        RPOD="$RPOD_ROOT/target/debug/rpod"
    fi
    RPOD=$(readlink -f "$RPOD")
    [ -x "$RPOD" ] || die "no rpod binary at $RPOD"
    for h in netd dnsd; do
        [ -x "$(dirname "$RPOD")/$h" ] || die "no $h beside $RPOD (cargo build -p $h)"
    done
    for t in runc unshare nft ip jq sha256sum; do
        command -v "$t" >/dev/null || die "'$t' is not installed (run scripts/setup.sh)"
    done
    # Re-run this script as PID 1 of new PID, network and mount namespaces: when it exits,
    # the kernel kills everything left in them, and their mounts and links go away.
    export RPOD RPOD_DEMO_INNER=1
    exec unshare -n -m --propagation private --pid --fork --mount-proc --kill-child=TERM "$0" "$@"
fi

# ---------------------------------------------------------------------------------------
# Inside the demo's own network, mount and PID namespaces from here on.

BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "no busybox at $BUSYBOX (Debian package busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q dynamically && die "$BUSYBOX is not static (install busybox-static)"
IMG=localhost/rpod-demo:latest
PAGE="hello from rpod"
WORK=$(mktemp -d /tmp/rpod-demo.XXXXXX)
ROOT=$WORK/root
mount -t tmpfs none /run
ip link set lo up

rpod() { timeout -k 5 60 "$RPOD" --root "$ROOT" "$@"; }

# show CMD...: prints and runs an rpod command, indenting its output; fails when it fails.
show() {
    local out rc=0
    printf '    $ rpod %s\n' "$*"
    out=$(rpod "$@" 2>&1) || rc=$?
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/      /'
    [ "$rc" -eq 0 ] || die "rpod $* exited $rc"
    OUT=$out
}

cleanup() {
    local rc=$? m
    trap '' INT TERM
    set +e
    say "cleaning up"
    if [ -d "$ROOT" ]; then
        rpod rm -f -a >/dev/null 2>&1 || rpod rm -f web >/dev/null 2>&1
        rpod network rm -f demo >/dev/null 2>&1
        grep -o " ${WORK}[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    fi
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then
        printf '\nDEMO PASSED\n'
    else
        printf '\nDEMO FAILED (exit %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# retry N CMD...: up to N tries, 0.2 s apart.
retry() {
    local n=$1 i
    shift
    for ((i = 1; i <= n; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

# fetch URL: from the "host" namespace; prints the body (no wget -T: it crashes busybox 1.35).
fetch() { timeout 5 "$BUSYBOX" wget -q -O - "$1"; }

# leftovers: what rpod could leave behind: container mounts, netns, nft tables, bridges.
leftovers() {
    printf 'mounts=%s netns=%s nft=%s bridges=%s\n' \
        "$(grep -c " $ROOT/" /proc/self/mounts || true)" \
        "$(find /run/rpod/netns /run/netns -mindepth 1 2>/dev/null | wc -l)" \
        "$(nft list tables 2>/dev/null | wc -l)" \
        "$(ip -br link show type bridge | wc -l)"
}

say "rpod $("$RPOD" version 2>/dev/null | awk '/^Version/ {print $2; exit}')"
info "binary $RPOD (netd, dnsd beside it), runtime runc"
info "rpod --root $ROOT; private network + mount + PID namespace, tmpfs on /run"

# ---------------------------------------------------------------------------------------
say "building $IMG from $BUSYBOX (a docker-archive)"
# A rootfs with busybox, relative applet links and /www/index.html, as one layer; then the
# docker-archive layout `docker save` writes: manifest.json, <config>.json, <layer>/layer.tar.
rootfs=$WORK/rootfs
mkdir -p "$rootfs"/{bin,etc,www,tmp,proc,sys,dev}
cp "$BUSYBOX" "$rootfs/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"
done
printf '%s\n' "$PAGE" >"$rootfs/www/index.html"
docker_archive "$rootfs" "$IMG" /bin "$WORK/image.tar"
rm -rf "$rootfs"
pass "image archive built: $(du -h "$WORK/image.tar" | cut -f1), $("$BUSYBOX" --list | wc -l) applets"

show load -i "$WORK/image.tar"
show images
printf '%s\n' "$OUT" | grep -q "rpod-demo" || die "rpod images does not list $IMG"
pass "rpod load: $IMG is in the store"

# ---------------------------------------------------------------------------------------
say "a bridge network"
show network create demo
show network ls
br=$(jq -r .network_interface "$ROOT/networks/demo.json" 2>/dev/null || true)
[ "$br" = podman1 ] || die "network demo has bridge '$br', expected podman1"
pass "rpod network create demo: bridge podman1"

say "a web server, port 8080 published"
show run -d --name web --network demo -p 8080:80 "$IMG" httpd -f -p 80 -h /www
[ "${#OUT}" -eq 64 ] || die "rpod run -d printed '$OUT', expected a 64-character container ID"
pass "rpod run -d: web is running ($(printf '%.12s' "$OUT"))"
ip -br addr show podman1 | sed 's/^/    /'

say "fetching from the host"
info "wget http://127.0.0.1:8080/"
body=$(retry 50 fetch http://127.0.0.1:8080/) || die "the host cannot fetch http://127.0.0.1:8080/"
[ "$body" = "$PAGE" ] || die "http://127.0.0.1:8080/ returned '$body', expected '$PAGE'"
pass "the host fetches http://127.0.0.1:8080/ -> \"$body\""

say "fetching by name from a second container"
show run --rm --network demo "$IMG" wget -qO- http://web/
[ "$OUT" = "$PAGE" ] || die "the second container got '$OUT', expected '$PAGE'"
pass "a second container fetches http://web/ by name (dnsd) -> \"$OUT\""

say "listing containers"
show ps
printf '%s\n' "$OUT" | grep -q '0.0.0.0:8080->80/tcp.*web' || die "rpod ps does not show web with 0.0.0.0:8080->80/tcp"
[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 2 ] || die "rpod ps shows more than web (the --rm container is gone)"
pass "rpod ps: web, 0.0.0.0:8080->80/tcp (and the --rm container is gone)"

# ---------------------------------------------------------------------------------------
say "cleaning up with rpod"
info "while web runs: $(leftovers)"
# httpd is the container's PID 1 and ignores SIGTERM: -t 2 sends SIGKILL after 2 s, not 10.
show stop -t 2 web
show rm web
show network rm demo
show ps -a
[ "$(printf '%s\n' "$OUT" | wc -l)" -eq 1 ] || die "rpod ps -a still lists containers"
pass "rpod stop, rm, network rm"

say "checking that nothing is left"
left=$(leftovers)
info "$left"
[ "$left" = "mounts=0 netns=0 nft=0 bridges=0" ] || die "something was left behind: $left"
pass "no container mount, network namespace, nft table or bridge is left"
if fetch http://127.0.0.1:8080/ >/dev/null 2>&1; then die "port 8080 still answers"; fi
pass "port 8080 is closed"
