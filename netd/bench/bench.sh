#!/bin/bash
# netd/bench/bench.sh - side-by-side setup/teardown benchmark: netd vs netavark 1.4 (iptables) vs netavark 2.x (nftables).
#
# One run times every tool on the same inputs (see README.md next to this file):
#  (A) setup + teardown of one container with one published TCP port on a new bridge
#      (every setup creates the bridge, every teardown removes it), ITER times;
#  (B) setup + teardown of one more container (one published port) while N containers, each
#      with its own published port, are already attached to the same bridge (N from NLIST), ITER_B times.
# Every tool runs inside its own private "host" network namespace (${PFX}-h-<tool>), so the bridge,
# ip_forward and all firewall rules live there and vanish with it; container netns are
# /run/netns/${PFX}-c-<i> and ${PFX}-x; configs in /tmp/${PFX}-bench. All removed on exit.
#
# Env knobs:
#   NETD      netd binary            (default <repo>/target/release/netd, built/updated with cargo build --release -p netd)
#   NETAVARK14 netavark 1.4 binary   (default /usr/lib/podman/netavark), run with NETAVARK_FW=iptables
#   NETAVARK2 netavark 2.x binary    (default /opt/netavark-ref/bin/netavark), run with NETAVARK_FW=nftables
#   TOOLS     which tools, in order  (default "netd nv14 nv2")
#   ITER (30)  ITER_B (15)  NLIST ("1 200 1000")
#   PREFILL_STEP_MAX_MS (2000)  PREFILL_MAX_S (180): a tool stops growing N once one prefill setup
#             takes longer than the first, or its total prefill time exceeds the second.
#   RESULTS   if set, a directory to copy the raw results TSV into.
#   NB_PREFIX name prefix for netns/dirs (default nb)
# Output: progress on stderr, the result table on stdout.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$HERE/../.." && pwd)"
PFX="${NB_PREFIX:-nb}"
WORK="/tmp/$PFX-bench"
ITER="${ITER:-30}"; ITER_B="${ITER_B:-15}"
NLIST="$(printf '%s\n' ${NLIST:-1 200 1000} | sort -n | tr '\n' ' ')"
PREFILL_STEP_MAX_MS="${PREFILL_STEP_MAX_MS:-2000}"; PREFILL_MAX_S="${PREFILL_MAX_S:-180}"
TOOLS="${TOOLS:-netd nv14 nv2}"
NETD="${NETD:-$ROOT/target/release/netd}"
NETAVARK14="${NETAVARK14:-/usr/lib/podman/netavark}"
NETAVARK2="${NETAVARK2:-/opt/netavark-ref/bin/netavark}"
NET=nbnet; BR="$PFX-br0"; XIP=10.89.250.2; XPORT=40999
RES="$WORK/results.tsv"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "FATAL: $*" >&2; exit 1; }
us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
# median of microsecond values -> milliseconds with 1 decimal
med_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{if(NR==0){print "NA";exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }
minmax_ms() { printf '%s\n' "$@" | sort -n | awk 'NR==1{mn=$1} {mx=$1} END{printf "%.1f-%.1f", mn/1000, mx/1000}'; }
rec() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }   # tool key value_ms note

tool_bin() { case "$1" in netd) echo "$NETD";; nv14) echo "$NETAVARK14";; nv2) echo "$NETAVARK2";; *) return 1;; esac; }
# container i: IP in the /16 and its own host port
cip() { echo "10.89.$(( $1 / 250 + 10 )).$(( $1 % 250 + 2 ))"; }
json() { # file id ip hostport
  cat >"$1" <<J
{"container_id":"$(printf '%064x' "$2")","container_name":"c$2","port_mappings":[{"host_ip":"","container_port":80,"host_port":$4,"range":1,"protocol":"tcp"}],
 "networks":{"$NET":{"static_ips":["$3"],"aliases":["c$2"],"interface_name":"eth0"}},
 "network_info":{"$NET":{"name":"$NET","id":"$(printf '%064x' 4242)","driver":"bridge","network_interface":"$BR","created":"2026-11-22T10:25:19.247448547Z",
   "subnets":[{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}],"ipv6_enabled":false,"internal":false,"dns_enabled":false,
   "ipam_options":{"driver":"host-local"}}}}
J
}

# ---------------------------------------------------------------- inner: runs inside the tool's host netns
if [ "${1:-}" = "--inner" ]; then
  tool="$2"; BIN="$(tool_bin "$tool")"; CFG="$WORK/cfg-$tool"; ELOG="$WORK/$tool.stderr"
  mkdir -p "$CFG"; ip link set lo up
  case "$tool" in
    netd) run() { env -u NETAVARK_FW "$BIN" --config "$CFG" -f "$1" "$2" "$3"; };;
    nv14) run() { NETAVARK_FW=iptables "$BIN" --config "$CFG" -f "$1" "$2" "$3"; };;
    nv2)  run() { NETAVARK_FW=nftables "$BIN" --config "$CFG" -f "$1" "$2" "$3"; };;
  esac
  X="$WORK/json/x.json"; XNS="/run/netns/$PFX-x"
  fail() { log "$tool: $*"; rec "$tool" error NA "$*"; exit 1; }

  # sanity: setup creates the bridge and eth0, returns a status block; teardown removes both
  out=$(run "$X" setup "$XNS" 2>>"$ELOG") || fail "sanity setup failed: $(echo "$out" | head -c 300) $(tail -n 3 "$ELOG" | tr '\n' ' ')"
  echo "$out" | grep -q "\"$NET\"" || fail "sanity setup: no status block for $NET in: $(echo "$out" | head -c 300)"
  ip link show "$BR" >/dev/null 2>&1 || fail "sanity setup: bridge $BR not created"
  ip -n "$PFX-x" -4 addr show eth0 2>/dev/null | grep -q "$XIP/16" || fail "sanity setup: eth0 with $XIP/16 missing in container"
  out=$(run "$X" teardown "$XNS" 2>>"$ELOG") || fail "sanity teardown failed: $(echo "$out" | head -c 300)"
  ip -n "$PFX-x" link show eth0 >/dev/null 2>&1 && fail "sanity teardown: eth0 still in container"
  ip link show "$BR" >/dev/null 2>&1 && fail "sanity teardown: bridge $BR not removed with the last container"

  pair() { # -> "setup_us teardown_us" for the extra container
    local t0 t1 t2
    t0=$(us); run "$X" setup "$XNS" >/dev/null 2>>"$ELOG" || return 1
    t1=$(us); run "$X" teardown "$XNS" >/dev/null 2>>"$ELOG" || return 1
    t2=$(us); echo "$(( t1-t0 )) $(( t2-t1 ))"
  }

  # (A) new bridge each time
  log "$tool: (A) $ITER x setup+teardown on a new bridge"
  S=(); T=(); A=()
  for ((i=0;i<ITER;i++)); do
    read -r s t < <(pair) && [ -n "${t:-}" ] || fail "(A) setup/teardown failed at iteration $i: $(tail -n 3 "$ELOG" | tr '\n' ' ')"
    S+=("$s"); T+=("$t"); A+=("$((s+t))"); s=; t=
  done
  ip link show "$BR" >/dev/null 2>&1 && log "$tool: WARNING: bridge still present after (A)"
  rec "$tool" A_total "$(med_ms "${A[@]}")" "min-max $(minmax_ms "${A[@]}") ms, n=$ITER"
  rec "$tool" A_setup "$(med_ms "${S[@]}")" "min-max $(minmax_ms "${S[@]}") ms"
  rec "$tool" A_teardown "$(med_ms "${T[@]}")" "min-max $(minmax_ms "${T[@]}") ms"
  log "$tool: (A) median setup+teardown $(med_ms "${A[@]}") ms (setup $(med_ms "${S[@]}"), teardown $(med_ms "${T[@]}"))"

  # (B) extra container with N already attached
  have=0; pf_us=0; stop=""
  for N in $NLIST; do
    if [ -n "$stop" ]; then rec "$tool" "B_setup_$N" NA "$stop"; rec "$tool" "B_teardown_$N" NA "$stop"; continue; fi
    log "$tool: (B) prefill to N=$N (have $have, prefill so far $((pf_us/1000000)) s)"
    while [ "$have" -lt "$N" ]; do
      t0=$(us)
      run "$WORK/json/c$have.json" setup "/run/netns/$PFX-c-$have" >/dev/null 2>>"$ELOG" \
        || { stop="prefill setup $have failed: $(tail -n 2 "$ELOG" | tr '\n' ' ' | head -c 200)"; log "$tool: $stop"; break; }
      dt=$(( $(us) - t0 )); pf_us=$(( pf_us + dt )); have=$((have+1))
      (( have % 100 == 0 )) && log "$tool:   prefilled $have (last setup $((dt/1000)) ms, total $((pf_us/1000000)) s)"
      if (( dt > PREFILL_STEP_MAX_MS*1000 || pf_us > PREFILL_MAX_S*1000000 )); then
        stop="did not finish: prefill limit hit at N=$have after $((pf_us/1000000)) s (last setup $((dt/1000)) ms)"
        log "$tool: prefill limit hit at N=$have after $((pf_us/1000000)) s (last setup $((dt/1000)) ms): no larger N"; break
      fi
    done
    if [ "$have" -lt "$N" ]; then rec "$tool" "B_setup_$N" NA "$stop"; rec "$tool" "B_teardown_$N" NA "$stop"; continue; fi
    S=(); T=()
    for ((i=0;i<ITER_B;i++)); do
      read -r s t < <(pair) && [ -n "${t:-}" ] || fail "(B) N=$N extra setup/teardown failed: $(tail -n 3 "$ELOG" | tr '\n' ' ')"
      S+=("$s"); T+=("$t"); s=; t=
    done
    rec "$tool" "B_setup_$N" "$(med_ms "${S[@]}")" "min-max $(minmax_ms "${S[@]}") ms, n=$ITER_B"
    rec "$tool" "B_teardown_$N" "$(med_ms "${T[@]}")" "min-max $(minmax_ms "${T[@]}") ms"
    log "$tool: (B) N=$N: median setup $(med_ms "${S[@]}") ms, teardown $(med_ms "${T[@]}") ms"
  done
  rec "$tool" prefill_s "$(( pf_us/1000000 ))" "$have containers prefilled"
  echo "$have" >"$WORK/$tool.have"
  exit 0
fi

# ---------------------------------------------------------------- outer
[ "$(id -u)" = 0 ] || die "must run as root"
for t in ip nft awk python3; do command -v $t >/dev/null || die "missing tool: $t"; done
MAXN=0; for n in $NLIST; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done

kill_ours() { # processes (e.g. aardvark-dns) whose command line mentions our work dir, by PID
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -- "$WORK/cfg-" && kill "${p#/proc/}" 2>/dev/null
  done
  return 0
}
cleanup() {
  kill_ours
  ip netns list 2>/dev/null | awk -v p="$PFX-" 'index($1,p)==1 {print "netns del " $1}' | ip -force -batch - 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup

# resolve tools
RUN_TOOLS=""
mkdir -p "$WORK/json"; : >"$RES"
for tool in $TOOLS; do
  bin="$(tool_bin "$tool")" || die "unknown tool $tool (use netd nv14 nv2)"
  if [ "$tool" = netd ] && [ "$bin" = "$ROOT/target/release/netd" ]; then
    # the default binary: build it if missing, and bring it up to date (a no-op when it is)
    log "netd: cargo build --release -p netd"
    (cd "$ROOT" && cargo build --release -p netd >&2) || log "netd: build failed${bin:+ (using $bin if it exists)}"
  fi
  if [ ! -x "$bin" ]; then
    echo "note: $tool skipped: no executable at $bin" >&2; rec "$tool" error NA "skipped: no executable at $bin"; continue
  fi
  RUN_TOOLS="$RUN_TOOLS $tool"
  ver=$("$bin" version 2>/dev/null | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -1)
  rec "$tool" version "${ver:-?}" "$bin"
done

log "writing inputs and creating $MAXN+1 container netns"
json "$WORK/json/x.json" 99999 "$XIP" "$XPORT"
for ((i=0;i<MAXN;i++)); do json "$WORK/json/c$i.json" "$i" "$(cip "$i")" $((30000+i)); done
{ echo "netns add $PFX-x"; for ((i=0;i<MAXN;i++)); do echo "netns add $PFX-c-$i"; done; } | ip -batch - || die "cannot create netns"

wait_clean() { # after deleting a host netns: wait until the container ends of its veths are gone
  local n="$1" i k
  for ((i=0;i<n;i++)); do
    for ((k=0;k<600;k++)); do ip -n "$PFX-c-$i" link show eth0 >/dev/null 2>&1 || break; sleep 0.1; done
  done
  for ((k=0;k<600;k++)); do ip -n "$PFX-x" link show eth0 >/dev/null 2>&1 || break; sleep 0.1; done
  sleep 2   # let the kernel's netns cleanup work finish before timing the next tool
}

T0=$(us)
for tool in $RUN_TOOLS; do
  log "=== $tool ($(tool_bin "$tool"))"
  ip netns add "$PFX-h-$tool" || die "cannot create host netns"
  ip netns exec "$PFX-h-$tool" env WORK="$WORK" RES="$RES" ITER="$ITER" ITER_B="$ITER_B" NLIST="$NLIST" \
     PREFILL_STEP_MAX_MS="$PREFILL_STEP_MAX_MS" PREFILL_MAX_S="$PREFILL_MAX_S" NB_PREFIX="$PFX" \
     NETD="$NETD" NETAVARK14="$NETAVARK14" NETAVARK2="$NETAVARK2" "$SELF" --inner "$tool" \
     || log "$tool: run failed (see $tool error line in the table)"
  kill_ours
  ip netns del "$PFX-h-$tool"
  wait_clean "$(cat "$WORK/$tool.have" 2>/dev/null || echo 0)"
done
log "total benchmark time $(( ($(us)-T0)/1000000 )) s"
[ -n "${RESULTS:-}" ] && { mkdir -p "$RESULTS" && cp "$RES" "$RESULTS/netd-bench-$(date +%Y%m%d-%H%M%S).tsv"; }

# ---------------------------------------------------------------- report
python3 - "$RES" "$NLIST" "$ITER" "$ITER_B" <<'PY'
import sys
res, nlist, it, itb = sys.argv[1], [int(x) for x in sys.argv[2].split()], sys.argv[3], sys.argv[4]
d, note = {}, {}
for line in open(res):
    p = line.rstrip("\n").split("\t")
    if len(p) < 3: continue
    tool, key, val, nt = p[0], p[1], p[2], (p[3] if len(p) > 3 else "")
    d[(tool, key)] = val; note[(tool, key)] = nt
def num(tool, key):
    try: return float(d.get((tool, key), "NA"))
    except ValueError: return None
tools = [("netd", "netd"), ("nv14", "netavark-%s (iptables-nft)" % d.get(("nv14", "version"), "1.4")),
         ("nv2", "netavark-%s (nftables)" % d.get(("nv2", "version"), "2.x"))]
print("\nnetd benchmark: median wall time per call (ms), one run, same inputs; ITER=%s ITER_B=%s" % (it, itb))
for t, lbl in tools:
    if (t, "version") in d: print("  %-4s = %s  %s" % (t, lbl, note[(t, "version")]))
    if (t, "error") in d: print("  %-4s : %s" % (t, d.get((t, "error")) if d[(t, "error")] != "NA" else note[(t, "error")]))
rows = [("A_total", "(A) setup+teardown, new bridge, 1 port"), ("A_setup", "(A)   setup (creates bridge)"), ("A_teardown", "(A)   teardown (removes bridge)")]
for n in nlist:
    rows += [("B_setup_%d" % n, "(B) setup ctr N+1, N=%d attached" % n), ("B_teardown_%d" % n, "(B)   teardown ctr N+1, N=%d" % n)]
def f(t, key):
    v = num(t, key)
    if v is not None: return "%.1f" % v
    return "n/a (did not finish)" if "did not finish" in note.get((t, key), "") else "n/a"
def r(a, b): return "-" if a is None or b is None or b == 0 else "%.3f" % (a / b)
hdr = ("scenario", "netd", "netavark-1.4", "netavark-2.x", "netd/nv-1.4", "netd/nv-2.x")
w = (38, 20, 20, 20, 11, 11)
line = lambda c: print("  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i]) for i, x in enumerate(c)))
print(); line(hdr); line(["-" * x for x in w])
for key, lbl in rows:
    a, b, c = num("netd", key), num("nv14", key), num("nv2", key)
    line((lbl, f("netd", key), f("nv14", key), f("nv2", key), r(a, b), r(a, c)))
print("  ms = median wall time of one process call (spawn included); n/a = tool skipped or failed (see notes above)")
print("\nLong format (tool, scenario, median ms, spread):")
for t, lbl in tools:
    for key, rl in rows:
        if (t, key) in d: print("  %-28s %-40s %8s  %s" % (lbl, rl, "n/a" if d[(t, key)] == "NA" else d[(t, key)], note[(t, key)]))
    if (t, "prefill_s") in d: print("  %-28s %-40s %8s  %s" % (lbl, "prefill total (s)", d[(t, "prefill_s")], note[(t, "prefill_s")]))
print("\nTargets:")
def target_fast(key, lbl):
    a, b, c = num("netd", key), num("nv14", key), num("nv2", key)
    ref = [x for x in (b, c) if x is not None]
    if a is None or not ref: print("  %-58s n/a" % (lbl + ": netd <= 1/4 of faster netavark")); return
    m = min(ref); ok = a <= m / 4
    print("  %-58s %s  (netd %.1f ms vs faster netavark %.1f ms: %.3f, target <= 0.25)" % (lbl + ": netd <= 1/4 of faster netavark", "PASS" if ok else "FAIL", a, m, a / m))
target_fast("A_total", "(A) setup+teardown")
for n in nlist: target_fast("B_setup_%d" % n, "(B) setup at N=%d" % n)
lo, hi = min(nlist), max(nlist)
for t, lbl in tools:
    a, b = num(t, "B_setup_%d" % lo), num(t, "B_setup_%d" % hi)
    if t == "netd":
        if a is None or b is None: print("  %-58s n/a" % ("netd setup N=%d / N=%d <= 1.5" % (hi, lo)))
        else: print("  %-58s %s  (%.1f / %.1f ms = %.2f)" % ("netd setup N=%d / N=%d <= 1.5" % (hi, lo), "PASS" if b <= 1.5 * a else "FAIL", b, a, b / a))
    else:
        print("  %-58s %s" % ("(for comparison) %s N=%d / N=%d" % (t, hi, lo), "n/a" if a is None or b is None else "%.2f" % (b / a)))
PY
