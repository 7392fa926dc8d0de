#!/bin/bash
# portfwd/bench/bench.sh - portfwd vs slirp4netns 1.2 vs pasta (and rootlessport), one run,
# same machine, fresh namespaces per mode (traffic on host loopback and those namespaces only).
#  TAP path : container -> host loopback through the gateway address (10.0.2.2), iperf3 TCP
#             ns->host and host->ns (-R), TCP_RR and TCP_CRR latency (tcprr), CPU s per GB of
#             the stack process.
#  published: host 127.0.0.1:HPORT -> service in the namespace: portfwd (API add_hostfwd,
#             splice fast path), slirp4netns (API add_hostfwd), pasta -t, rootlessport
#             (podman's helper, run directly against a namespace set up by portfwd).
# Env: RUNS (3) DUR (5 s) N_CRR (2000) N_RR (20000) PORTFWD (release binary) TAP_MODES PF_MODES
set -u
source /work/shared/bench/lib.sh
need ip iperf3 jq slirp4netns pasta bc
HERE="$(cd "$(dirname "$0")" && pwd)"
PORTFWD="${PORTFWD:-/work/tgt/portfwd/release/portfwd}"
[ -x "$PORTFWD" ] || die "build it first: cargo build --release -p portfwd (or set PORTFWD)"
RLP=/usr/lib/podman/rootlessport
DUR="${DUR:-5}"; N_CRR="${N_CRR:-2000}"; N_RR="${N_RR:-20000}"; MTU=65520
TAP_MODES="${TAP_MODES:-portfwd slirp4netns pasta}"
PF_MODES="${PF_MODES:-portfwd slirp4netns pasta rootlessport}"
IPORT=15301; LPORT=17877; HIPORT=25301; HLPORT=27877
OUT="$HERE/results.tsv"; : >"$OUT"
build_tcprr
PIDS=(); NSS=(); TMPD=$(mktemp -d /tmp/pfbench.XXXXXX)
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
  for n in "${NSS[@]:-}"; do [ -n "$n" ] && ip netns del "$n" 2>/dev/null; done
  PIDS=(); NSS=()
}
trap 'cleanup; rm -rf "$TMPD"' EXIT
mkns() { ip netns add "$1" && ip netns exec "$1" ip link set lo up && NSS+=("$1"); }
cpu_ticks() { local t=0 p; for p in "$@"; do [ -n "$p" ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
kids() { pgrep -P "$1" | tr '\n' ' '; }   # helper children (portfwd's namespace helper, pasta's none)
api() { $PY - "$1" "$2" <<'PYEOF'
import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()); s.shutdown(socket.SHUT_WR)
r=s.recv(65536).decode(); print(r); sys.exit(0 if '"error"' not in r else 1)
PYEOF
}
addfwd() { api "$1" "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":$2,\"guest_addr\":\"10.0.2.100\",\"guest_port\":$3}}" >/dev/null || die "add_hostfwd $2 failed"; }

# measure MODE KIND CLI TGT PORT LPORT STACKPIDS...
measure() {
  local mode=$1 kind=$2 cli=$3 tgt=$4 port=$5 lport=$6; shift 6
  local stack="$*"
  for dir in fwd rev; do
    local vals=() cpus=() flag=""; [ $dir = rev ] && flag="-R"
    for ((r=1;r<=RUNS;r++)); do
      local c0 c1 j v bytes
      c0=$(cpu_ticks $stack)
      j=$($cli iperf3 -c $tgt -p $port -t $DUR $flag -J)
      c1=$(cpu_ticks $stack)
      v=$(echo "$j" | jq -r '.end.sum_received.bits_per_second/1e9'); bytes=$(echo "$j" | jq -r '.end.sum_received.bytes')
      vals+=("$v"); [ -n "$stack" ] && cpus+=("$(echo "($c1-$c0)/100/($bytes/1000000000)" | bc -l)")
      log "$mode $kind $dir run$r: $v Gbit/s"
    done
    local name
    if [ $kind = tap ]; then name="ns->host"; [ $dir = rev ] && name="host->ns"
    else name="host:port->ns"; [ $dir = rev ] && name="ns->host:port"; fi
    local note="runs(min/med/max)=$(mmm "${vals[@]}")"
    [ ${#cpus[@]} -gt 0 ] && note="$note; stack CPU $(median "${cpus[@]}") s/GB"
    rec "$OUT" "$kind $mode tcp $name" "$(median "${vals[@]}")" "Gbit/s" "$note"
  done
  for k in crr rr; do
    local n=$N_CRR; [ $k = rr ] && n=$N_RR
    local meds=() p99s=()
    for ((r=1;r<=RUNS;r++)); do
      local line; line=$($cli "$TCPRR" $k $tgt $lport $n 64) || die "tcprr $mode $k failed"
      meds+=("$(echo "$line" | tcprr_field median_us)"); p99s+=("$(echo "$line" | tcprr_field p99_us)")
    done
    rec "$OUT" "$kind $mode tcp_$k latency" "$(median "${meds[@]}")" "us" "p99=$(median "${p99s[@]}")us n=$n x $RUNS"
  done
}

# ---------------- TAP path: container -> host loopback via 10.0.2.2
for mode in $TAP_MODES; do
  log "=== TAP $mode"
  mkns bp-$mode
  case $mode in
    portfwd) "$PORTFWD" -c --mtu=$MTU --netns-type=path /run/netns/bp-$mode tap0 >"$TMPD/$mode.log" 2>&1 & ;;
    slirp4netns) slirp4netns -c --mtu=$MTU --netns-type=path /run/netns/bp-$mode tap0 >"$TMPD/$mode.log" 2>&1 & ;;
    pasta) pasta -f -q -4 --runas 0:0 --config-net -m $MTU -a 10.0.2.100 -n 24 -g 10.0.2.2 -I tap0 \
             -t none -u none -T none -U none --netns /run/netns/bp-$mode >"$TMPD/$mode.log" 2>&1 & ;;
  esac
  SP=$!; PIDS+=($SP)
  waitfor 100 ip -n bp-$mode addr show tap0 up || die "$mode did not configure tap0"
  sleep 0.3
  iperf3 -s -B 127.0.0.1 -p $IPORT >/dev/null 2>&1 & PIDS+=($!)
  "$TCPRR" server $LPORT 127.0.0.1 900 & PIDS+=($!)
  sleep 0.3
  measure $mode tap "ip netns exec bp-$mode" 10.0.2.2 $IPORT $LPORT $SP $(kids $SP)
  cleanup
done

# ---------------- published port: host 127.0.0.1:HPORT -> ns
for mode in $PF_MODES; do
  log "=== published port $mode"
  mkns bq-$mode; SPS=""
  case $mode in
    portfwd|slirp4netns)
      sock="$TMPD/$mode.sock"
      if [ $mode = portfwd ]; then B="$PORTFWD"; else B=slirp4netns; fi
      $B -c --mtu=$MTU --disable-host-loopback --api-socket "$sock" --netns-type=path /run/netns/bq-$mode tap0 >"$TMPD/pf-$mode.log" 2>&1 &
      SP=$!; PIDS+=($SP)
      waitfor 100 test -S "$sock" || die "$mode: no API socket"
      waitfor 100 ip -n bq-$mode addr show tap0 up || die "$mode: no tap0"
      addfwd "$sock" $HIPORT $IPORT; addfwd "$sock" $HLPORT $LPORT
      sleep 0.2; SPS="$SP $(kids $SP)" ;;
    pasta)
      pasta -f -q -4 --runas 0:0 --config-net -m $MTU -a 10.0.2.100 -n 24 -g 10.0.2.2 -I tap0 \
        -t 127.0.0.1/$HIPORT:$IPORT -t 127.0.0.1/$HLPORT:$LPORT -u none -T none -U none \
        --netns /run/netns/bq-$mode >"$TMPD/pf-pasta.log" 2>&1 &
      SP=$!; PIDS+=($SP); SPS=$SP
      waitfor 100 ip -n bq-$mode addr show tap0 up || die "pasta: no tap0" ;;
    rootlessport)
      [ -x $RLP ] || { log "no $RLP, skipping"; continue; }
      # the namespace gets its network from portfwd; rootlessport publishes the ports
      "$PORTFWD" -c --mtu=$MTU --disable-host-loopback --netns-type=path /run/netns/bq-$mode tap0 >"$TMPD/pf-rlp-net.log" 2>&1 &
      PIDS+=($!)
      waitfor 100 ip -n bq-$mode addr show tap0 up || die "rootlessport: no tap0"
      mkdir -p "$TMPD/rlp"
      mkfifo "$TMPD/rlp.exit"; sleep 100000 >"$TMPD/rlp.exit" & PIDS+=($!)
      exec {ER}<"$TMPD/rlp.exit"; exec {RW}>"$TMPD/rlp.ready"
      cfg="{\"Mappings\":[{\"host_ip\":\"127.0.0.1\",\"container_port\":$IPORT,\"host_port\":$HIPORT,\"range\":1,\"protocol\":\"tcp\"},{\"host_ip\":\"127.0.0.1\",\"container_port\":$LPORT,\"host_port\":$HLPORT,\"range\":1,\"protocol\":\"tcp\"}],\"NetNSPath\":\"/run/netns/bq-$mode\",\"ExitFD\":3,\"ReadyFD\":4,\"TmpDir\":\"$TMPD/rlp\",\"ChildIP\":\"10.0.2.100\",\"ContainerID\":\"bench\",\"RootlessCNI\":false}"
      echo "$cfg" | $RLP 3<&$ER 4>&$RW >"$TMPD/rlp.out" 2>"$TMPD/rlp.log" &
      SP=$!; PIDS+=($SP)
      exec {ER}<&- {RW}>&-
      waitfor 100 test -s "$TMPD/rlp.ready" || die "rootlessport not ready: $(cat "$TMPD/rlp.out")"
      sleep 0.3; SPS="$SP $(pgrep -P $SP | tr '\n' ' ')" ;;
  esac
  ip netns exec bq-$mode iperf3 -s -B 0.0.0.0 -p $IPORT >/dev/null 2>&1 & PIDS+=($!)
  ip netns exec bq-$mode "$TCPRR" server $LPORT 0.0.0.0 900 & PIDS+=($!)
  sleep 0.5
  measure $mode pub "" 127.0.0.1 $HIPORT $HLPORT $SPS
  cleanup
done

column -t -s $'\t' "$OUT" >&2
# ratios
val() { awk -F'\t' -v k="$1" '$1==k {print $2}' "$OUT"; }
ratio() { local a b; a=$(val "$1"); b=$(val "$2"); [ -n "$a" ] && [ -n "$b" ] && echo "$(echo "scale=2; $a/$b" | bc -l)x" || echo NA; }
{
echo "RATIOS (portfwd / reference):"
for n in "ns->host" "host->ns"; do
  echo "  TAP tcp $n: vs slirp4netns $(ratio "tap portfwd tcp $n" "tap slirp4netns tcp $n"), vs pasta $(ratio "tap portfwd tcp $n" "tap pasta tcp $n")"
done
for n in "host:port->ns" "ns->host:port"; do
  echo "  published tcp $n: vs slirp4netns $(ratio "pub portfwd tcp $n" "pub slirp4netns tcp $n"), vs pasta $(ratio "pub portfwd tcp $n" "pub pasta tcp $n"), vs rootlessport $(ratio "pub portfwd tcp $n" "pub rootlessport tcp $n")"
done
for k in rr crr; do
  echo "  TAP tcp_$k latency (lower is better): vs slirp4netns $(ratio "tap portfwd tcp_$k latency" "tap slirp4netns tcp_$k latency"), vs pasta $(ratio "tap portfwd tcp_$k latency" "tap pasta tcp_$k latency")"
  echo "  published tcp_$k latency: vs slirp4netns $(ratio "pub portfwd tcp_$k latency" "pub slirp4netns tcp_$k latency"), vs pasta $(ratio "pub portfwd tcp_$k latency" "pub pasta tcp_$k latency")"
done
} | tee "$HERE/ratios.txt"
