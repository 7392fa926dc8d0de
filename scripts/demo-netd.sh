#!/usr/bin/env bash
# The netd-only demo (as root): netd wires two "containers" onto a bridge network, then tears it
# down, with no engine involved (scripts/demo.sh is the engine demo: rpod run, ps, stop...).
#
# Everything happens inside namespaces this script creates, so the machine's own network and
# firewall are never touched:
#   <prefix>-host    a network namespace standing in for the machine (bridge, nft table, DNS)
#   <prefix>-web     a "container" running busybox httpd on port 8000, published as host port 8080
#   <prefix>-client  a "container" that fetches from web by IP and by name
# The script itself runs in its own PID and mount namespace: whatever happens, no process
# (httpd, aardvark-dns) and no namespace outlives it.
#
# Environment:
#   RPOD_SKIP_SETUP=1   do not run scripts/setup.sh first (scripts/test.sh has already run it)
#   NETD=PATH           the netd binary (default: target/debug/netd, built here if needed)
#   AARDVARK=PATH       the DNS helper (default: Debian's /usr/lib/podman/aardvark-dns)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

if [ "${RPOD_DEMO_INNER:-}" != 1 ]; then
    if [ "${RPOD_SKIP_SETUP:-}" != 1 ]; then
        "$RPOD_ROOT/scripts/setup.sh"
    fi
    if [ -z "${NETD:-}" ]; then
        use_cargo
        say "cargo build -p netd"
        (cd "$RPOD_ROOT" && cargo build -q -p netd)
        NETD="$RPOD_ROOT/target/debug/netd"
    fi
    [ -x "$NETD" ] || die "no netd binary at $NETD"
    # Re-run this script as PID 1 of a new PID namespace, with a private mount namespace:
    # when it exits the kernel kills everything left in it, and the netns mounts go away.
    export NETD RPOD_DEMO_INNER=1
    exec unshare --pid --fork --mount-proc --kill-child=TERM "$0" "$@"
fi

# ---------------------------------------------------------------------------------------
# Inside the demo's own PID and mount namespaces from here on.

AARDVARK=${AARDVARK:-/usr/lib/podman/aardvark-dns}
[ -x "$AARDVARK" ] || die "no DNS helper at $AARDVARK (Debian package aardvark-dns)"
NETD=$(readlink -f "$NETD")

P="rpoddemo-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
HOSTNS=$P-host
WEBNS=$P-web
CLIENTNS=$P-client
BRIDGE=rpoddemo0
NET=demo
SUBNET=10.89.7.0/24
GATEWAY=10.89.7.1
WEB_IP=10.89.7.2
CLIENT_IP=10.89.7.3
WORK=$(mktemp -d /tmp/rpod-demo.XXXXXX)
CFG=$WORK/netd # netd --config (podman's /run/containers/networks)
declare -A ATTACHED=() # containers set up by netd and not yet torn down
HTTPD_PID=
real_host_nft_before=$(nft list ruleset 2>/dev/null | sha256sum)

hex64() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
NET_ID=$(hex64)
declare -A CID=([web]=$(hex64) [client]=$(hex64))
declare -A NS=([web]=$WEBNS [client]=$CLIENTNS)
declare -A IP=([web]=$WEB_IP [client]=$CLIENT_IP)

in_host() { ip netns exec "$HOSTNS" "$@"; }

# netd ACTION CONTAINER: runs netd in the host namespace like podman runs netavark.
netd() {
    in_host env RUST_LOG=netd=warn "$NETD" --config "$CFG" --rootless false \
        --aardvark-binary "$AARDVARK" "$1" "/run/netns/${NS[$2]}" <"$WORK/$2.json"
}

aardvark_pid() {
    local f=$CFG/aardvark-dns/aardvark.pid
    [ -s "$f" ] && pid=$(tr -dc 0-9 <"$f") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        printf '%s\n' "$pid"
}

cleanup() {
    local rc=$? c pid
    trap '' INT TERM
    set +e
    say "cleaning up"
    if [ -n "$HTTPD_PID" ]; then
        kill "$HTTPD_PID" 2>/dev/null
        wait "$HTTPD_PID" 2>/dev/null
    fi
    for c in "${!ATTACHED[@]}"; do
        info "netd teardown ${NS[$c]} (left over)"
        netd teardown "$c" >/dev/null
    done
    if pid=$(aardvark_pid); then
        info "stopping aardvark-dns (pid $pid)"
        kill "$pid" 2>/dev/null
    fi
    for ns in "$CLIENTNS" "$WEBNS" "$HOSTNS"; do
        [ -e "/run/netns/$ns" ] && ip netns del "$ns"
    done
    rm -rf "/etc/netns/$CLIENTNS" "/etc/netns/$WEBNS" "$WORK"
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

# fetch NS URL: prints the body, fails on any error.
# (no wget -T: it crashes Debian 12's busybox 1.35 wget)
fetch() { timeout 5 ip netns exec "$1" busybox wget -q -O - "$2"; }

# expect_page NS URL WHAT: fetch URL from NS and check it is web's page.
expect_page() {
    local body
    body=$(retry 15 fetch "$1" "$2") || die "$3: wget $2 from $1 failed"
    [ "$body" = "$PAGE" ] || die "$3: wget $2 returned '$body', expected '$PAGE'"
    pass "$3: $2 -> \"$body\""
}

say "netd version: $("$NETD" version | jq -c . 2>/dev/null)"
info "namespaces: $HOSTNS (the machine), $WEBNS, $CLIENTNS (the containers)"
info "netd --config $CFG, DNS helper $AARDVARK"

say "creating the namespaces"
for ns in "$HOSTNS" "$WEBNS" "$CLIENTNS"; do
    ip netns add "$ns"
done
ip -n "$HOSTNS" link set lo up
mkdir -p "$CFG"
pass "namespaces created"

# The JSON podman 4.3.1 sends (see ../shared/reference/netavark-aardvark.md, 7.3).
network_info() {
    jq -n --arg id "$NET_ID" --arg br "$BRIDGE" --arg sn "$SUBNET" --arg gw "$GATEWAY" --arg net "$NET" \
        '{($net): {name: $net, id: $id, driver: "bridge", network_interface: $br,
          created: "2026-01-01T00:00:00Z", subnets: [{subnet: $sn, gateway: $gw}],
          ipv6_enabled: false, internal: false, dns_enabled: true,
          ipam_options: {driver: "host-local"}}}'
}
# options_json NAME PORTS_JSON
options_json() {
    jq -n --arg cid "${CID[$1]}" --arg name "$1" --arg ip "${IP[$1]}" --arg net "$NET" \
        --argjson ports "$2" --argjson info "$(network_info)" \
        '{container_id: $cid, container_name: $name}
         + (if $ports == [] then {} else {port_mappings: $ports} end)
         + {networks: {($net): {static_ips: [$ip], aliases: [$cid[0:12]], interface_name: "eth0"}},
            network_info: $info}'
}
options_json web '[{"host_ip":"","container_port":8000,"host_port":8080,"range":1,"protocol":"tcp"}]' >"$WORK/web.json"
options_json client '[]' >"$WORK/client.json"

for c in web client; do
    say "netd setup ${NS[$c]}  (container '$c', $NET network, ${IP[$c]})"
    info "stdin:"
    jq -c . "$WORK/$c.json" | sed 's/^/      /'
    rc=0
    netd setup "$c" >"$WORK/$c.out" || rc=$?
    [ "$rc" -eq 0 ] && ATTACHED[$c]=1
    info "stdout:"
    jq . "$WORK/$c.out" 2>/dev/null | sed 's/^/      /' || sed 's/^/      /' "$WORK/$c.out"
    [ "$rc" -eq 0 ] || die "netd setup $c exited $rc: $(cat "$WORK/$c.out")"
    got=$(jq -r --arg net "$NET" '.[$net].interfaces.eth0.subnets[0].ipnet' "$WORK/$c.out")
    [ "$got" = "${IP[$c]}/24" ] || die "netd setup $c: status block has ipnet '$got', expected ${IP[$c]}/24"
    ip -n "${NS[$c]}" -br addr show eth0 | grep -qw "${IP[$c]}/24" || die "no ${IP[$c]}/24 on eth0 in ${NS[$c]}"
    pass "netd setup $c: eth0 ${IP[$c]}/24 in ${NS[$c]}"
done

say "the host namespace now"
in_host ip -br link show | sed 's/^/    /'
in_host ip -br addr show dev "$BRIDGE" | sed 's/^/    /'
say "nft list table inet netd (in $HOSTNS)"
table=$(in_host nft list table inet netd) || die "no 'table inet netd' in $HOSTNS"
printf '%s\n' "$table" | sed 's/^/    /'
pass "netd's nft table is in place"

say "starting busybox httpd on port 8000 in $WEBNS"
PAGE="hello from web"
mkdir -p "$WORK/www"
printf '%s\n' "$PAGE" >"$WORK/www/index.html"
ip netns exec "$WEBNS" busybox httpd -f -p 8000 -h "$WORK/www" &
HTTPD_PID=$!

say "client -> web"
expect_page "$CLIENTNS" "http://$WEB_IP:8000/" "client reaches web by IP"

# The containers' /etc/resolv.conf, from the status block (ip netns exec bind-mounts
# /etc/netns/NS/resolv.conf over /etc/resolv.conf).
mkdir -p "/etc/netns/$CLIENTNS"
jq -r --arg net "$NET" '.[$net] | (.dns_server_ips[]? | "nameserver \(.)"),
    (if (.dns_search_domains // []) != [] then "search \(.dns_search_domains | join(" "))" else empty end)' \
    "$WORK/client.out" >"/etc/netns/$CLIENTNS/resolv.conf"
grep -q nameserver "/etc/netns/$CLIENTNS/resolv.conf" || die "client's status block has no dns_server_ips"
info "client's resolv.conf: $(tr '\n' ';' <"/etc/netns/$CLIENTNS/resolv.conf")"
if pid=$(aardvark_pid); then info "aardvark-dns is running (pid $pid)"; else die "aardvark-dns is not running"; fi
info "config $CFG/aardvark-dns/$NET:"
sed 's/^/      /' "$CFG/aardvark-dns/$NET"
expect_page "$CLIENTNS" "http://web:8000/" "client reaches web by name (aardvark-dns)"

say "published port 8080 -> web:8000"
expect_page "$HOSTNS" "http://127.0.0.1:8080/" "the host reaches the published port on 127.0.0.1"
expect_page "$HOSTNS" "http://$GATEWAY:8080/" "the host reaches the published port on the bridge address"
expect_page "$CLIENTNS" "http://$GATEWAY:8080/" "client reaches the published port through the host"

say "stopping httpd"
kill "$HTTPD_PID"
wait "$HTTPD_PID" 2>/dev/null || true
HTTPD_PID=

for c in client web; do
    say "netd teardown ${NS[$c]}"
    rc=0
    netd teardown "$c" >"$WORK/$c.td" || rc=$?
    unset "ATTACHED[$c]"
    [ -s "$WORK/$c.td" ] && sed 's/^/      /' "$WORK/$c.td"
    [ "$rc" -eq 0 ] || die "netd teardown $c exited $rc: $(cat "$WORK/$c.td")"
    ip -n "${NS[$c]}" link show eth0 >/dev/null 2>&1 && die "eth0 still in ${NS[$c]} after teardown"
    pass "netd teardown $c"
done

say "checking that nothing is left"
in_host ip link show "$BRIDGE" >/dev/null 2>&1 && die "bridge $BRIDGE still exists"
pass "bridge $BRIDGE removed with its last container"
links=$(in_host ip -o link show | awk -F': ' '{print $2}' | grep -v '^lo$' || true)
[ -z "$links" ] || die "links left in $HOSTNS: $links"
pass "no link left in $HOSTNS"
in_host nft list table inet netd >/dev/null 2>&1 && die "table inet netd still exists: $(in_host nft list table inet netd)"
pass "table inet netd removed with the last network"
[ -e "$CFG/aardvark-dns/$NET" ] && die "DNS config $CFG/aardvark-dns/$NET still exists"
pass "DNS entries removed"
retry 25 sh -c "! [ -s '$CFG/aardvark-dns/aardvark.pid' ]" || die "aardvark-dns still running after the last network left"
pass "aardvark-dns exited"
if [ "$(nft list ruleset 2>/dev/null | sha256sum)" = "$real_host_nft_before" ]; then
    pass "the machine's own nft ruleset is unchanged"
else
    warn "the machine's own nft ruleset changed during the demo (another process?)"
fi
