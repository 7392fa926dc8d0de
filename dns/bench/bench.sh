#!/bin/bash
# dns/bench/bench.sh - side-by-side benchmark: dnsd vs aardvark-dns 1.4 vs aardvark-dns 2.x, with dnsperf.
#
# One run measures every tool on the same config (see README.md next to this file):
#   (a) A queries for container names, 100 outstanding (dnsperf -q 100 -l DUR), RUNS runs -> queries/s
#   (b) the same with 1 outstanding (dnsperf -q 1 -l DUR_LAT), RUNS runs            -> average latency
#   (c) forwarded names (x<N>.fwd.test -> local dnsmasq upstream), 100 outstanding, RUNS runs -> queries/s
#       and 1 outstanding -> latency
#   (d) RELOADS config rewrites + SIGHUP under a constant load (dnsperf -Q RELOAD_QPS), 1 run
#       -> queries lost (no answer within 2 s) and answers that were not NOERROR
#   (e) VmRSS (and VmHWM) of the daemon after all of the above; also the daemon CPU per query in (a) and (c)
# Topology (all private network namespaces named ${PFX}-*, removed on exit):
#   ${PFX}-h  "host": bridge br0 with the gateway 10.90.0.1/16; the daemons run here, bound to 10.90.0.1:<port>
#   ${PFX}-c  "container" 10.90.0.2/16 (veth on br0), the querying container (dnsperf -a 10.90.0.2)
#   ${PFX}-u  upstream resolver 10.90.255.53/16 (veth on br0): dnsmasq --address=/fwd.test/1.2.3.4,
#             configured as the network's DNS server (line 1 of the config)
# Config: one network "benchnet", NCTR containers c0..c<NCTR-1> at 10.90.0.2.., written in aardvark
# format, one config dir per tool; each daemon is started as netavark does it:
# `<bin> --config <dir> -p <port> run` (it forks; <dir>/aardvark.pid holds the daemon pid). All daemons
# run side by side (idle while another is measured; each on its own port), the rate runs are
# interleaved round by round, the reload test runs one tool at a time; all are killed at the end.
#
# Env knobs:
#   DNSD       dnsd binary (default <repo>/target/release/dnsd, built with cargo build --release -p dnsd)
#   AARDVARK14 aardvark-dns 1.4 (default /usr/lib/podman/aardvark-dns)
#   AARDVARK2  aardvark-dns 2.x (default /opt/aardvark-ref/bin/aardvark-dns; skipped with a note if absent)
#   TOOLS      which tools, in order (default "dnsd av14 av2")
#   RUNS (3)  DUR (10)  DUR_LAT (5)  NCTR (100)  RELOADS (100)  RELOAD_QPS (5000)
#   PORT_BASE (5301)  the first tool listens on this port, the next on +1, ... (all on the gateway 10.90.0.1)
#   DP_OPTS    extra dnsperf options for every dnsd/aardvark run (default none: 1 thread, 1 client socket)
#   REF (1)    also measure dnsmasq directly (reference for the forwarded rates), 1 run
#   RESULTS    if set, a directory to copy the raw results TSV and the table into
#   DB_PREFIX  prefix of netns names and the work dir (default dnsb<pid>)
# Output: progress on stderr, the result table on stdout. Run as root, nothing else busy (2 cores).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PFX="${DB_PREFIX:-dnsb$$}"
WORK="/tmp/$PFX-bench"
RUNS="${RUNS:-3}"; DUR="${DUR:-10}"; DUR_LAT="${DUR_LAT:-5}"; NCTR="${NCTR:-100}"
DP_OPTS="${DP_OPTS:-}"; RELOADS="${RELOADS:-100}"; RELOAD_QPS="${RELOAD_QPS:-5000}"; PORT_BASE="${PORT_BASE:-5301}"; REF="${REF:-1}"
TOOLS="${TOOLS:-dnsd av14 av2}"
AARDVARK14="${AARDVARK14:-/usr/lib/podman/aardvark-dns}"
AARDVARK2="${AARDVARK2:-/opt/aardvark-ref/bin/aardvark-dns}"
GW=10.90.0.1; CIP=10.90.0.2; UPIP=10.90.255.53; NET=benchnet
NSH="$PFX-h"; NSC="$PFX-c"; NSU="$PFX-u"
RES="$WORK/results.tsv"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "FATAL: $*" >&2; exit 1; }
in_h() { ip netns exec "$NSH" "$@"; }
in_c() { ip netns exec "$NSC" "$@"; }
median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END{if(NR==0){print "NA";exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }
minmax() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk 'NR==1{mn=$1} {mx=$1} END{if(NR==0){print "NA";exit} printf "%.0f-%.0f", mn, mx}'; }
rec() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }   # tool key value note
get() { awk -F'\t' -v t="$1" -v k="$2" '$1==t && $2==k {v=$3} END{print (v==""?"NA":v)}' "$RES"; }
note() { awk -F'\t' -v t="$1" -v k="$2" '$1==t && $2==k {v=$4} END{print v}' "$RES"; }

# ---------------------------------------------------------------- cleanup (by pid / by our names only)
DAEMON_PIDS=(); OTHER_PIDS=()
cleanup() {
  local p
  for f in "$WORK"/cfg-*/aardvark.pid; do [ -f "$f" ] && DAEMON_PIDS+=("$(cat "$f" 2>/dev/null)"); done
  for p in "${DAEMON_PIDS[@]}" "${OTHER_PIDS[@]}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${DAEMON_PIDS[@]}" "${OTHER_PIDS[@]}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  for n in "$NSC" "$NSU" "$NSH"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}

# ---------------------------------------------------------------- checks
[ "$(id -u)" = 0 ] || die "must run as root"
for t in ip dnsperf dnsmasq dig awk; do command -v $t >/dev/null || die "missing tool: $t (apt-get install dnsperf dnsmasq-base bind9-dnsutils iproute2)"; done
[ -e "/run/netns/$NSH" ] && die "netns $NSH exists already (another run with DB_PREFIX=$PFX?)"
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$WORK"; mkdir -p "$WORK"; : >"$RES"

declare -A BIN LABEL
LABEL[dnsd]=dnsd; LABEL[av14]="aardvark 1.4"; LABEL[av2]="aardvark 2.x"
SEL=()
for t in $TOOLS; do
  case "$t" in
    dnsd)
      if [ -z "${DNSD:-}" ]; then
        DNSD="$ROOT/target/release/dnsd"
        log "building dnsd: cargo build --release -p dnsd"
        (cd "$ROOT" && cargo build --release -p dnsd) >"$WORK/build.log" 2>&1 || { tail -n 20 "$WORK/build.log" >&2; die "cargo build --release -p dnsd failed"; }
      fi
      [ -x "$DNSD" ] || die "dnsd binary $DNSD not found"
      BIN[dnsd]="$DNSD";;
    av14) [ -x "$AARDVARK14" ] || die "aardvark-dns 1.4 not found at $AARDVARK14"; BIN[av14]="$AARDVARK14";;
    av2)
      if [ -x "$AARDVARK2" ]; then BIN[av2]="$AARDVARK2"
      else log "NOTE: aardvark-dns 2.x not found at $AARDVARK2 (cargo install --locked aardvark-dns --root /opt/aardvark-ref): skipped"
           rec av2 skipped 1 "not installed at $AARDVARK2"; continue; fi;;
    *) die "unknown tool $t (dnsd av14 av2)";;
  esac
  SEL+=("$t")
  v=$("${BIN[$t]}" version 2>/dev/null | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1)
  if [ -n "$v" ]; then case "$t" in av14|av2) LABEL[$t]="aardvark $v";; dnsd) LABEL[$t]="dnsd $v";; esac; fi
done
[ "${#SEL[@]}" -gt 0 ] || die "no tool to run"

# ---------------------------------------------------------------- topology
log "netns $NSH (bridge br0 $GW/16, daemons), $NSC (container $CIP, dnsperf), $NSU (dnsmasq $UPIP)"
for n in "$NSH" "$NSC" "$NSU"; do ip netns add "$n" || die "ip netns add $n"; ip -n "$n" link set lo up; done
ip -n "$NSH" link add br0 type bridge || die "cannot create a bridge"
ip -n "$NSH" addr add "$GW/16" dev br0
ip -n "$NSH" link set br0 up
for x in c u; do
  ns="$PFX-$x"
  ip -n "$NSH" link add "v$x" type veth peer name eth0 netns "$ns" || die "veth for $ns"
  ip -n "$NSH" link set "v$x" master br0 up
done
ip -n "$NSC" addr add "$CIP/16" dev eth0; ip -n "$NSC" link set eth0 up
ip -n "$NSU" addr add "$UPIP/16" dev eth0; ip -n "$NSU" link set eth0 up
# wait for the bridge ports to forward (no STP: immediate, but be safe)
for ((i=0;i<50;i++)); do in_c ping -c1 -W1 "$GW" >/dev/null 2>&1 && break; sleep 0.1; done

ip netns exec "$NSU" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address="$UPIP" \
  --port=53 --address=/fwd.test/1.2.3.4 --cache-size=0 --dns-forward-max=1000 --user=root --pid-file= \
  --log-facility="$WORK/dnsmasq.log" >"$WORK/dnsmasq.out" 2>&1 &
OTHER_PIDS+=($!)
for ((i=0;i<50;i++)); do in_c dig +short +time=1 +tries=1 @"$UPIP" x1.fwd.test A 2>/dev/null | grep -q 1.2.3.4 && break; sleep 0.1; done
in_c dig +short +time=1 +tries=1 @"$UPIP" x1.fwd.test A | grep -q 1.2.3.4 || die "dnsmasq upstream not answering: $(cat "$WORK/dnsmasq.out")"

# ---------------------------------------------------------------- config and query files
ctr_line() { # i -> aardvark container line: <id> <v4> <v6> <names>
  printf '%064x 10.90.%d.%d  c%d,%012x\n' $(( $1 + 1 )) $(( ($1 + 2) / 256 )) $(( ($1 + 2) % 256 )) "$1" $(( $1 + 1 ))
}
write_cfg() { # dir [extra]  (extra=1: one more container line, for the reload test)
  local n=$NCTR i; [ "${2:-0}" = 1 ] && n=$((NCTR+1))
  { echo "$GW $UPIP"; for ((i=0;i<n;i++)); do ctr_line $i; done; } >"$1/$NET.tmp"
  mv -f "$1/$NET.tmp" "$1/$NET"   # atomic replace (a reader never sees half a file)
}
for ((i=0;i<NCTR;i++)); do echo "c$i A"; done >"$WORK/q-names"
for ((i=0;i<10000;i++)); do echo "x$i.fwd.test A"; done >"$WORK/q-fwd"
# reload load: container names, every 5th query a forwarded name (both paths must survive reloads)
for ((i=0;i<1000;i++)); do if (( i % 5 == 4 )); then echo "x$i.fwd.test A"; else echo "c$(( i % NCTR )) A"; fi; done >"$WORK/q-mix"

# ---------------------------------------------------------------- dnsperf
# dp PORT OUTFILE args... -> dnsperf from the container netns with the container's source address
dp() { local p="$1" o="$2"; shift 2; in_c dnsperf -s "$GW" -p "$p" -a "$CIP" -t 2 $DP_OPTS "$@" >"$o" 2>&1; }
dp_qps()  { awk '/Queries per second/ {print $4}' "$1"; }
dp_lat()  { awk '/Average Latency/ {printf "%.1f", $4*1e6}' "$1"; }   # microseconds
dp_lost() { awk '/Queries lost/ {print $3}' "$1"; }
dp_sent() { awk '/Queries sent/ {print $3}' "$1"; }
dp_bad()  { awk '/Response codes/ {for(i=3;i<=NF;i+=2) if($i!~/NOERROR/) s+=$(i+1)} END{print s+0}' "$1"; }
dp_codes() { awk '/Response codes/ {sub(/^.*Response codes: */,""); print}' "$1"; }

# rates KEY FILE Q DUR: RUNS rounds; each round runs every live tool once, in turn (interleaved, so
# that slow drifts of this shared 2-vCPU machine hit every tool alike); medians per tool.
rates() {
  local k="$1" f="$2" q="$3" d="$4" r t o u0 s0 u1 s1 pid
  for ((r=1;r<=RUNS;r++)); do
    for t in "${LIVE[@]}"; do
      o="$WORK/$t-$k-$r.out"; pid=$(pid_of "$t")
      read -r u0 s0 < <(ticks "$pid")
      dp "${PORTOF[$t]}" "$o" -d "$f" -l "$d" -q "$q"
      read -r u1 s1 < <(ticks "$pid")
      # daemon CPU per answered query, user and system, in microseconds
      awk -v u=$((u1-u0)) -v s=$((s1-s0)) -v n="$(awk '/Queries completed/ {print $3}' "$o")" -v hz="$HZ" \
        'BEGIN{ if(n+0==0){print "NA NA"; exit} printf "%.2f %.2f\n", u*1e6/hz/n, s*1e6/hz/n }' >"$o.cpu"
      log "  $k run $r $t: $(dp_qps "$o") q/s, avg latency $(dp_lat "$o") us, lost $(dp_lost "$o"), codes: $(dp_codes "$o"); daemon cpu us/query user+sys: $(cat "$o.cpu")"
      [ "$(dp_bad "$o")" = 0 ] || log "  WARNING: $t $k run $r: answers other than NOERROR: $(dp_codes "$o")"
    done
  done
  for t in "${LIVE[@]}"; do
    local v=() l=() lo=() cu=() cs=() a b
    for ((r=1;r<=RUNS;r++)); do
      o="$WORK/$t-$k-$r.out"; v+=("$(dp_qps "$o")"); l+=("$(dp_lat "$o")"); lo+=("$(dp_lost "$o")")
      read -r a b <"$o.cpu"; cu+=("$a"); cs+=("$b")
    done
    rec "$t" "$k.cpu_user" "$(median "${cu[@]}")" "us/query"
    rec "$t" "$k.cpu_sys" "$(median "${cs[@]}")" "us/query"
    rec "$t" "$k.qps" "$(median "${v[@]}")" "runs $(minmax "${v[@]}")"
    rec "$t" "$k.lat" "$(median "${l[@]}")" "runs $(minmax "${l[@]}") us"
    rec "$t" "$k.lost" "$(median "${lo[@]}")" ""
  done
}

# ---------------------------------------------------------------- daemons
stop_daemon() { # pid
  local p="$1" i
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null
  for ((i=0;i<50;i++)); do [ -d "/proc/$p" ] || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null; sleep 0.1
}
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }   # utime stime of a pid
pid_of() { cat "$WORK/cfg-$1/aardvark.pid" 2>/dev/null; }
ask() { in_c dig +short +time="${3:-1}" +tries=1 @"$GW" -p "${PORTOF[$1]}" -b "$CIP" "$2" A 2>/dev/null; }

start_daemon() { # tool -> 0 when it answers
  local t="$1" bin="${BIN[$1]}" cfg="$WORK/cfg-$1" port="${PORTOF[$1]}" pid="" i ppid ok=""
  mkdir -p "$cfg"; write_cfg "$cfg"
  # started as netavark does: it forks; the parent returns once the child listens
  in_h env DNSD_LOG="$WORK/$t.log" "$bin" --config "$cfg" -p "$port" run >"$WORK/$t.start" 2>&1 &
  ppid=$!; OTHER_PIDS+=("$ppid")
  for ((i=0;i<100;i++)); do [ -d "/proc/$ppid" ] || break; sleep 0.1; done
  [ -d "/proc/$ppid" ] && log "$t: WARNING: the starting process is still running after 10 s"
  wait "$ppid" 2>/dev/null; local rc=$?
  for ((i=0;i<50;i++)); do pid=$(pid_of "$t"); [ -n "$pid" ] && break; sleep 0.1; done
  [ -n "$pid" ] && DAEMON_PIDS+=("$pid")
  for ((i=0;i<50;i++)); do ok=$(ask "$t" c5); [ "$ok" = 10.90.0.7 ] && break; sleep 0.1; done
  if [ "$ok" != 10.90.0.7 ]; then
    log "$t: not answering c5 A with 10.90.0.7 (got '$ok'; start exit $rc: $(head -c 400 "$WORK/$t.start" | tr '\n' ' '))"
    rec "$t" error 1 "did not answer c5 (start exit $rc: $(head -c 200 "$WORK/$t.start" | tr '\n' ' '))"; stop_daemon "$pid"; return 1
  fi
  local fw; fw=$(ask "$t" x1.fwd.test 2)
  log "$t: ${LABEL[$t]} ($bin) on $GW:$port, start exit $rc, daemon pid $pid; c5 -> $ok; x1.fwd.test -> ${fw:-<no answer>}"
  [ "$fw" = 1.2.3.4 ] || log "$t: WARNING: forwarding to dnsmasq does not work"
  rec "$t" rss_start "$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)" ""
}

reload_test() { # tool: RELOADS config rewrites + SIGHUP under a constant load
  local t="$1" cfg="$WORK/cfg-$1" pid o="$WORK/$1-reload.out" dl i n=0 dpp ok
  pid=$(pid_of "$t")
  dl=$(awk -v n="$RELOADS" 'BEGIN{d=int(n*0.08+2.5); print (d<5?5:d)}')   # ~80 ms per reload + 2.5 s
  log "$t: (d) $RELOADS reloads (config rewrite + SIGHUP) under ${RELOAD_QPS} q/s for ${dl}s"
  dp "${PORTOF[$t]}" "$o" -d "$WORK/q-mix" -l "$dl" -Q "$RELOAD_QPS" -q 100 &
  dpp=$!; OTHER_PIDS+=("$dpp")
  sleep 1
  for ((i=1;i<=RELOADS;i++)); do
    write_cfg "$cfg" $(( i % 2 ))   # odd: one more container line; even: back to the base config
    kill -HUP "$pid" 2>/dev/null || { log "$t: daemon gone at reload $i"; break; }
    n=$i; sleep 0.07
  done
  wait "$dpp"
  log "  $t reload: $n SIGHUPs; sent $(dp_sent "$o"), lost $(dp_lost "$o"), codes: $(dp_codes "$o")"
  rec "$t" reload.n "$n" ""
  rec "$t" reload.sent "$(dp_sent "$o")" ""
  rec "$t" reload.lost "$(dp_lost "$o")" ""
  rec "$t" reload.bad "$(dp_bad "$o")" "$(dp_codes "$o")"
  if [ ! -d "/proc/$pid" ]; then log "$t: WARNING: daemon pid $pid is gone after the reloads"; rec "$t" died 1 "after reloads"; return; fi
  ok=$(ask "$t" c5); [ "$ok" = 10.90.0.7 ] || log "$t: WARNING: after the reloads c5 A -> '$ok'"
  ok=$(ask "$t" c$NCTR); (( n % 2 )) || [ -z "$ok" ] || log "$t: WARNING: after the reloads c$NCTR (removed again) still resolves: '$ok'"
}

declare -A PORTOF; LIVE=(); idx=0
for t in "${SEL[@]}"; do
  PORTOF[$t]=$(( PORT_BASE + idx )); idx=$((idx+1))
  start_daemon "$t" && LIVE+=("$t")
done
[ "${#LIVE[@]}" -gt 0 ] || die "no daemon answered"
log "(a) container names, q=100, ${DUR}s x $RUNS rounds";  rates names  "$WORK/q-names" 100 "$DUR"
log "(b) container names, q=1, ${DUR_LAT}s x $RUNS rounds"; rates names1 "$WORK/q-names" 1 "$DUR_LAT"
log "(c) forwarded, q=100, ${DUR}s x $RUNS rounds";        rates fwd    "$WORK/q-fwd" 100 "$DUR"
log "(c) forwarded, q=1, ${DUR_LAT}s x $RUNS rounds";       rates fwd1   "$WORK/q-fwd" 1 "$DUR_LAT"
for t in "${LIVE[@]}"; do reload_test "$t"; done
# (e) memory, after all runs
for t in "${LIVE[@]}"; do
  pid=$(pid_of "$t"); [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
  rec "$t" rss "$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")" "KiB"
  rec "$t" hwm "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")" "KiB"
  rec "$t" threads "$(awk '/Threads/ {print $2}' "/proc/$pid/status")" ""
  log "$t: VmRSS $(get "$t" rss) KiB, VmHWM $(get "$t" hwm) KiB, $(get "$t" threads) threads"
done
for t in "${LIVE[@]}"; do stop_daemon "$(pid_of "$t")"; done

if [ "$REF" = 1 ]; then
  log "reference: dnsmasq directly, forwarded names, q=100, ${DUR}s x 1"
  o="$WORK/ref.out"; in_c dnsperf -s "$UPIP" -p 53 -a "$CIP" -t 2 $DP_OPTS -d "$WORK/q-fwd" -l "$DUR" -q 100 >"$o" 2>&1
  rec ref fwd.qps "$(dp_qps "$o")" ""
  log "  dnsmasq direct: $(dp_qps "$o") q/s"
fi

# ---------------------------------------------------------------- table
fmt() { # value kind
  local v="$1"; [ "$v" = NA ] || [ -z "$v" ] && { echo "n/a"; return; }
  case "$2" in
    k) awk -v v="$v" 'BEGIN{printf "%.1fk", v/1000}';;
    us) awk -v v="$v" 'BEGIN{printf "%.0f us", v}';;
    ms) awk -v v="$v" 'BEGIN{printf "%.2f ms", v/1000}';;
    mib) awk -v v="$v" 'BEGIN{printf "%.1f MiB", v/1024}';;
    *) echo "$v";;
  esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if(a=="NA"||b=="NA"||a==""||b==""||b+0==0){print "n/a"} else printf "%.2fx", a/b }'; }
have() { [ -n "${BIN[$1]:-}" ] && [ "$(get "$1" error)" = NA ]; }
val() { have "$1" && get "$1" "$2" || echo NA; }
# best aardvark: max for rates, min for latency/memory/losses
best() { # key max|min
  local a b; a=$(val av14 "$1"); b=$(val av2 "$1")
  awk -v a="$a" -v b="$b" -v m="$2" 'BEGIN{ if(a=="NA"){print b;exit} if(b=="NA"){print a;exit}
    if(m=="max") print (a+0>b+0?a:b); else print (a+0<b+0?a:b) }'
}
verdict() { # value target cmp(ge|le)
  awk -v v="$1" -v t="$2" -v c="$3" 'BEGIN{ if(v=="NA"||t=="NA"||v==""||t==""){print "n/a";exit}
    ok=(c=="ge")?(v+0>=t+0):(v+0<=t+0); print ok?"PASS":"FAIL" }'
}
row() { # label key kind target-text verdict
  local c="| $1 |"
  for t in dnsd av14 av2; do c+=" $(fmt "$(val $t "$2")" "$3") |"; done
  c+=" $(ratio "$(val dnsd "$2")" "$(val av14 "$2")") | $(ratio "$(val dnsd "$2")" "$(val av2 "$2")") | $4 | $5 |"
  echo "$c"
}
cpurow() { # label key: "user+sys us" per tool
  local c="| $1 |" t
  for t in dnsd av14 av2; do
    c+=" $(awk -v u="$(val $t "$2.cpu_user")" -v s="$(val $t "$2.cpu_sys")" 'BEGIN{ if(u=="NA"||s=="NA") print "n/a"; else printf "%.1f+%.1f us", u, s }') |"
  done
  echo "$c | | | |"
}
h14="${LABEL[av14]}"; h2="${LABEL[av2]}"
b_names=$(best names.qps max); b_fwd=$(best fwd.qps max); b_rss=$(best rss min)
t_names=$(awk -v b="$b_names" 'BEGIN{print (b=="NA")?"NA":2*b}'); t_fwd=$(awk -v b="$b_fwd" 'BEGIN{print (b=="NA")?"NA":2*b}')
lostsum() { local l b; l=$(val "$1" reload.lost); b=$(val "$1" reload.bad); awk -v l="$l" -v b="$b" 'BEGIN{print (l=="NA")?"NA":l+b}'; }
relo() { local t="$1"; have "$t" || { echo "n/a"; return; }; echo "$(val "$t" reload.lost) lost, $(val "$t" reload.bad) failed / $(val "$t" reload.sent)"; }
TABLE="$WORK/table.md"
{
  echo "dnsd benchmark: $NCTR containers in one network, dnsperf from container $CIP, medians of $RUNS runs (rates ${DUR}s, latency ${DUR_LAT}s); $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs"
  echo
  echo "| metric | ${LABEL[dnsd]} | $h14 | $h2 | dnsd/1.4 | dnsd/2.x | target | dnsd |"
  echo "|---|---|---|---|---|---|---|---|"
  row "(a) container names, q/s (100 outstanding)" names.qps k ">= $(fmt "$t_names" k) (2x best aardvark)" "$(verdict "$(val dnsd names.qps)" "$t_names" ge)"
  row "(a) avg latency at 100 outstanding" names.lat ms "" ""
  cpurow "(a) daemon CPU per name query, user+sys" names

  row "(b) container names, latency (1 outstanding)" names1.lat us "" ""
  row "(c) forwarded names, q/s (100 outstanding)" fwd.qps k ">= $(fmt "$t_fwd" k) (2x best aardvark)" "$(verdict "$(val dnsd fwd.qps)" "$t_fwd" ge)"
  cpurow "(c) daemon CPU per forwarded query, user+sys" fwd
  row "(c) forwarded, latency (1 outstanding)" fwd1.lat us "" ""
  echo "| (d) $RELOADS reloads under ${RELOAD_QPS} q/s: lost + failed / sent | $(relo dnsd) | $(relo av14) | $(relo av2) | | | 0 lost, 0 failed | $(verdict "$(lostsum dnsd)" 0 le) |"
  row "(e) VmRSS after the runs" rss mib "<= $(fmt "$b_rss" mib) (best aardvark)" "$(verdict "$(val dnsd rss)" "$b_rss" le)"
  row "(e) VmHWM (peak RSS)" hwm mib "" ""
  row "(e) VmRSS right after start" rss_start mib "" ""
  for t in dnsd av14 av2; do
    [ "$(get "$t" skipped)" = 1 ] && echo "note: $t skipped: $(note "$t" skipped)"
    [ "$(get "$t" error)" = 1 ] && echo "note: $t failed: $(note "$t" error)"
  done
  echo
  [ "$REF" = 1 ] && echo "reference: dnsmasq (single-threaded) queried directly by the same client (fwd.test names, q=100, 1 run): $(fmt "$(get ref fwd.qps)" k) q/s"
  echo "runs min-max: names q/s dnsd $(note dnsd names.qps), 1.4 $(note av14 names.qps), 2.x $(note av2 names.qps); fwd q/s dnsd $(note dnsd fwd.qps), 1.4 $(note av14 fwd.qps), 2.x $(note av2 fwd.qps)"
} >"$TABLE"
cat "$TABLE"
if [ -n "${RESULTS:-}" ]; then mkdir -p "$RESULTS" && cp "$RES" "$TABLE" "$RESULTS/" && cp "$WORK"/*.out "$RESULTS/" 2>/dev/null; log "results copied to $RESULTS"; fi
exit 0
