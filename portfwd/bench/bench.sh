#!/bin/bash
# portfwd/bench/bench.sh - portfwd vs slirp4netns 1.2 vs pasta (and rootlessport) in ONE run.
# All stacks are set up at once, each in its own fresh namespace, and every measurement round
# visits the modes in turn (round-robin), so load from other processes on the machine hits all
# of them alike. Traffic stays on host loopback and the namespaces made here.
#  TAP path : container -> host loopback through the gateway address (10.0.2.2): iperf3 TCP
#             ns->host and host->ns (-R), TCP_RR and TCP_CRR latency (tcprr from
#             /work/shared/bench/lib.sh), CPU seconds per GB of the stack processes.
#  published: host 127.0.0.1:HPORT -> service in the namespace: portfwd (API add_hostfwd,
#             splice fast path), slirp4netns (API add_hostfwd), pasta -t, rootlessport
#             (podman's helper, run directly against a namespace whose network is portfwd's).
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
[ -x $RLP ] || PF_MODES="${PF_MODES/rootlessport/}"
IPORT=15301; LPORT=17877
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
cpu_ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
kids() { pgrep -P "$1" | tr '\n' ' '; }
api() { $PY - "$1" "$2" <<'PYEOF'
import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()); s.shutdown(socket.SHUT_WR)
r=s.recv(65536).decode(); print(r); sys.exit(0 if '"error"' not in r else 1)
PYEOF
}
addfwd() { api "$1" "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":$2,\"guest_addr\":\"10.0.2.100\",\"guest_port\":$3}}" >&2 || die "add_hostfwd $2 failed"; }

declare -A STACK CLI TGT PORT LPT VALS CPUS MEDS P99S

# ---------------- set up the TAP-path stacks
for mode in $TAP_MODES; do
  k="tap $mode"; ns=bp-$mode; mkns $ns
  case $mode in
    portfwd) "$PORTFWD" -c --mtu=$MTU --netns-type=path /run/netns/$ns tap0 >"$TMPD/$mode.log" 2>&1 & ;;
    slirp4netns) slirp4netns -c --mtu=$MTU --netns-type=path /run/netns/$ns tap0 >"$TMPD/$mode.log" 2>&1 & ;;
    pasta) pasta -f -q -4 --runas 0:0 --config-net -m $MTU -a 10.0.2.100 -n 24 -g 10.0.2.2 -I tap0 \
             -t none -u none -T none -U none --netns /run/netns/$ns >"$TMPD/$mode.log" 2>&1 & ;;
  esac
  sp=$!; PIDS+=($sp)
  waitfor 100 ip -n $ns addr show tap0 up || die "$mode did not configure tap0"
  sleep 0.2; STACK[$k]="$sp $(kids $sp)"; CLI[$k]="ip netns exec $ns"; TGT[$k]=10.0.2.2; PORT[$k]=$IPORT; LPT[$k]=$LPORT
done
if [ -n "$TAP_MODES" ]; then
  iperf3 -s -B 127.0.0.1 -p $IPORT >/dev/null 2>&1 & PIDS+=($!)
  "$TCPRR" server $LPORT 127.0.0.1 1800 & PIDS+=($!)
fi

# ---------------- set up the published-port stacks (host ports 25301+2i, 25302+2i)
pfi=0
for mode in $PF_MODES; do
  k="pub $mode"; ns=bq-$mode; mkns $ns
  hp=$((25301 + 2*pfi)); hl=$((hp + 1)); pfi=$((pfi+1))
  case $mode in
    portfwd|slirp4netns)
      sock="$TMPD/$mode.sock"
      if [ $mode = portfwd ]; then B="$PORTFWD"; else B=slirp4netns; fi
      $B -c --mtu=$MTU --disable-host-loopback --api-socket "$sock" --netns-type=path /run/netns/$ns tap0 >"$TMPD/pf-$mode.log" 2>&1 &
      sp=$!; PIDS+=($sp)
      waitfor 100 test -S "$sock" || die "$mode: no API socket"
      waitfor 100 ip -n $ns addr show tap0 up || die "$mode: no tap0"
      addfwd "$sock" $hp $IPORT; addfwd "$sock" $hl $LPORT
      sleep 0.2; STACK[$k]="$sp $(kids $sp)" ;;
    pasta)
      pasta -f -q -4 --runas 0:0 --config-net -m $MTU -a 10.0.2.100 -n 24 -g 10.0.2.2 -I tap0 \
        -t 127.0.0.1/$hp:$IPORT -t 127.0.0.1/$hl:$LPORT -u none -T none -U none \
        --netns /run/netns/$ns >"$TMPD/pf-pasta.log" 2>&1 &
      sp=$!; PIDS+=($sp); STACK[$k]=$sp
      waitfor 100 ip -n $ns addr show tap0 up || die "pasta: no tap0" ;;
    rootlessport)
      # the namespace gets its network from portfwd; rootlessport publishes the ports
      "$PORTFWD" -c --mtu=$MTU --disable-host-loopback --netns-type=path /run/netns/$ns tap0 >"$TMPD/pf-rlp-net.log" 2>&1 &
      PIDS+=($!)
      waitfor 100 ip -n $ns addr show tap0 up || die "rootlessport: no tap0"
      mkdir -p "$TMPD/rlp"; mkfifo "$TMPD/rlp.exit"
      sleep 100000 >"$TMPD/rlp.exit" & PIDS+=($!)
      exec {ER}<"$TMPD/rlp.exit"; exec {RW}>"$TMPD/rlp.ready"
      cfg="{\"Mappings\":[{\"host_ip\":\"127.0.0.1\",\"container_port\":$IPORT,\"host_port\":$hp,\"range\":1,\"protocol\":\"tcp\"},{\"host_ip\":\"127.0.0.1\",\"container_port\":$LPORT,\"host_port\":$hl,\"range\":1,\"protocol\":\"tcp\"}],\"NetNSPath\":\"/run/netns/$ns\",\"ExitFD\":3,\"ReadyFD\":4,\"TmpDir\":\"$TMPD/rlp\",\"ChildIP\":\"10.0.2.100\",\"ContainerID\":\"bench\",\"RootlessCNI\":false}"
      echo "$cfg" | $RLP 3<&$ER 4>&$RW >"$TMPD/rlp.out" 2>"$TMPD/rlp.log" &
      sp=$!; PIDS+=($sp)
      exec {ER}<&- {RW}>&-
      waitfor 100 test -s "$TMPD/rlp.ready" || die "rootlessport not ready: $(cat "$TMPD/rlp.out")"
      sleep 0.3; STACK[$k]="$sp $(kids $sp)" ;;
  esac
  ip netns exec $ns iperf3 -s -B 0.0.0.0 -p $IPORT >/dev/null 2>&1 & PIDS+=($!)
  ip netns exec $ns "$TCPRR" server $LPORT 0.0.0.0 1800 & PIDS+=($!)
  CLI[$k]=""; TGT[$k]=127.0.0.1; PORT[$k]=$hp; LPT[$k]=$hl
done
sleep 0.5

KEYS=(); for m in $TAP_MODES; do KEYS+=("tap $m"); done; for m in $PF_MODES; do KEYS+=("pub $m"); done

# ---------------- measurements, round-robin over the modes
for ((r=1;r<=RUNS;r++)); do
  for dir in fwd rev; do
    flag=""; [ $dir = rev ] && flag="-R"
    for k in "${KEYS[@]}"; do
      c0=$(cpu_ticks "${STACK[$k]}")
      j=$(${CLI[$k]} iperf3 -c ${TGT[$k]} -p ${PORT[$k]} -t $DUR $flag -J) || die "iperf3 $k"
      c1=$(cpu_ticks "${STACK[$k]}")
      v=$(echo "$j" | jq -r '.end.sum_received.bits_per_second/1e9'); bytes=$(echo "$j" | jq -r '.end.sum_received.bytes')
      VALS[$k $dir]="${VALS[$k $dir]:-} $v"
      CPUS[$k $dir]="${CPUS[$k $dir]:-} $(echo "($c1-$c0)/100/($bytes/1000000000)" | bc -l)"
      log "$k $dir run$r: $v Gbit/s"
    done
  done
  for kind in crr rr; do
    n=$N_CRR; [ $kind = rr ] && n=$N_RR
    for k in "${KEYS[@]}"; do
      line=$(${CLI[$k]} "$TCPRR" $kind ${TGT[$k]} ${LPT[$k]} $n 64) || die "tcprr $k $kind"
      MEDS[$k $kind]="${MEDS[$k $kind]:-} $(echo "$line" | tcprr_field median_us)"
      P99S[$k $kind]="${P99S[$k $kind]:-} $(echo "$line" | tcprr_field p99_us)"
      log "$k $kind run$r: $line"
    done
  done
done

for k in "${KEYS[@]}"; do
  for dir in fwd rev; do
    set -- ${k}
    if [ $1 = tap ]; then name="ns->host"; [ $dir = rev ] && name="host->ns"
    else name="host:port->ns"; [ $dir = rev ] && name="ns->host:port"; fi
    rec "$OUT" "$k tcp $name" "$(median ${VALS[$k $dir]})" "Gbit/s" "runs(min/med/max)=$(mmm ${VALS[$k $dir]}); stack CPU $(median ${CPUS[$k $dir]}) s/GB"
  done
  for kind in crr rr; do
    n=$N_CRR; [ $kind = rr ] && n=$N_RR
    rec "$OUT" "$k tcp_$kind latency" "$(median ${MEDS[$k $kind]})" "us" "p99=$(median ${P99S[$k $kind]})us; runs=$(mmm ${MEDS[$k $kind]}); n=$n x $RUNS"
  done
done
column -t -s $'\t' "$OUT" >&2

val() { awk -F'\t' -v k="$1" '$1==k {print $2}' "$OUT"; }
ratio() { local a b; a=$(val "$1"); b=$(val "$2"); [ -n "$a" ] && [ -n "$b" ] && echo "$(echo "scale=2; $a/$b" | bc -l)x" || echo NA; }
{
echo "RATIOS (portfwd / reference; throughput: higher is better, latency: lower is better):"
for n in "ns->host" "host->ns"; do
  echo "  TAP tcp $n: vs slirp4netns $(ratio "tap portfwd tcp $n" "tap slirp4netns tcp $n"), vs pasta $(ratio "tap portfwd tcp $n" "tap pasta tcp $n")"
done
for n in "host:port->ns" "ns->host:port"; do
  echo "  published tcp $n: vs slirp4netns $(ratio "pub portfwd tcp $n" "pub slirp4netns tcp $n"), vs pasta $(ratio "pub portfwd tcp $n" "pub pasta tcp $n"), vs rootlessport $(ratio "pub portfwd tcp $n" "pub rootlessport tcp $n")"
done
for k in rr crr; do
  echo "  TAP tcp_$k latency: vs slirp4netns $(ratio "tap portfwd tcp_$k latency" "tap slirp4netns tcp_$k latency"), vs pasta $(ratio "tap portfwd tcp_$k latency" "tap pasta tcp_$k latency")"
  echo "  published tcp_$k latency: vs slirp4netns $(ratio "pub portfwd tcp_$k latency" "pub slirp4netns tcp_$k latency"), vs pasta $(ratio "pub portfwd tcp_$k latency" "pub pasta tcp_$k latency"), vs rootlessport $(ratio "pub portfwd tcp_$k latency" "pub rootlessport tcp_$k latency")"
done
} | tee "$HERE/ratios.txt"
