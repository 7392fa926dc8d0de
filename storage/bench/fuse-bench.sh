#!/bin/bash
# fuse-bench.sh: fuse-overlay against fuse-overlayfs 1.10 (C, Debian), fuse-overlayfs 2.0 (Rust,
# `cargo install --locked fuse-overlayfs --root /opt/fuse-overlayfs-ref`) and kernel overlayfs,
# in one run, as root, on the same lower tree.
#
# Lower layer: NSMALL small files (0.1-16 KiB, in directories of 100) plus two BIGMB files.
# Per file system, RUNS runs, each on a fresh upper/work directory:
#   untar    tar -xf of a tarball of the small-file tree into merged/ (no sync)
#   walk     find merged -printf '%s %m' (lstat of every entry), cold (after drop_caches,
#            remounted) and warm
#   seqread  dd of a BIGMB lower file through merged/, bs=1M, cold and warm (MiB/s)
#   fio      4k random writes, psync, FIOMB file in merged/, DUR seconds (IOPS)
#   copyup   first 1-byte write to the other BIGMB lower file (lower in page cache): the
#            time dd takes (first-write latency), and the time until the whole copy is in
#            the upper layer (ours copies large files lazily: the write does not wait for it)
# Prints medians and ratios (ours against each other file system; > 1 means ours is better).
#
# Every run gets a fresh ext4 file system (a loop device) holding the lower, upper and work
# directories: ext4 slows down inode allocation for some minutes after many deletions, which
# otherwise swamps the untar figures of whichever file system runs later (LOOPFS=0 runs on
# BASE's file system directly, like the reference harness).
# URING=1 (default): FUSE over io_uring for ours: the fuse module's enable_uring is set to Y for
# the run and restored on exit; URING=0: classic /dev/fuse (enable_uring=N, FUSE_OVERLAY_URING=0).
# The others do not use io_uring either way. Each run logs how many io_uring queues ours holds.
# Env: NSMALL BIGMB RUNS DUR FIOMB BASE LOOPFS OURS C110 R20 FSES ("kernel ours c110 r20") URING
# Build ours first: cargo build --release -p rpod-storage (or set OURS=path).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
NSMALL="${NSMALL:-20000}"
BIGMB="${BIGMB:-1024}"
RUNS="${RUNS:-3}"
DUR="${DUR:-10}"
FIOMB="${FIOMB:-256}"
BASE="${BASE:-/var/tmp/fuse-bench}"
OURS="${OURS:-${CARGO_TARGET_DIR:-$here/../../target}/release/fuse-overlay}"
C110="${C110:-/usr/bin/fuse-overlayfs}"
R20="${R20:-/opt/fuse-overlayfs-ref/bin/fuse-overlayfs}"
FSES="${FSES:-kernel ours c110 r20}"
LOOPFS="${LOOPFS:-1}"
URING="${URING:-1}"
ENABLE_URING=/sys/module/fuse/parameters/enable_uring

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "FATAL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
for t in fio tar find dd jq python3 mountpoint; do command -v "$t" >/dev/null || die "missing tool: $t"; done
declare -A BIN=([ours]="$OURS" [c110]="$C110" [r20]="$R20")
declare -A NAME=([kernel]="overlayfs(kernel)" [ours]="fuse-overlay" [c110]="fuse-overlayfs-1.10" [r20]="fuse-overlayfs-2.0")
active=()
for fs in $FSES; do
  if [ "$fs" != kernel ] && [ ! -x "${BIN[$fs]}" ]; then log "skipping ${NAME[$fs]}: ${BIN[$fs]} not found"; continue; fi
  active+=("$fs")
done

MASTER=$BASE/master; M=$BASE/merged; FS=$BASE/fs; IMG=$BASE/fs.img
if [ "$LOOPFS" = 1 ]; then L=$FS/lower; U=$FS/u; W=$FS/w; else L=$MASTER; U=$BASE/u; W=$BASE/w; fi
umnt() { if mountpoint -q "$M"; then umount "$M" 2>/dev/null || fusermount3 -u "$M" 2>/dev/null || umount -l "$M"; fi; }
OLD_URING=""
cleanup() {
  umnt || true; if mountpoint -q "$FS"; then umount -l "$FS"; fi; rm -rf "$BASE"
  if [ -n "$OLD_URING" ]; then echo "$OLD_URING" >"$ENABLE_URING"; fi
}
trap cleanup EXIT
cleanup
if [ -e "$ENABLE_URING" ]; then
  OLD_URING=$(cat "$ENABLE_URING")
  if [ "$URING" = 1 ]; then echo Y >"$ENABLE_URING"; else echo N >"$ENABLE_URING"; fi
fi
if [ "$URING" = 1 ]; then unset FUSE_OVERLAY_URING; else export FUSE_OVERLAY_URING=0; fi
log "fuse-overlay transport: $([ "$URING" = 1 ] && echo "FUSE over io_uring requested" || echo "classic /dev/fuse") (enable_uring=$(cat "$ENABLE_URING" 2>/dev/null || echo absent))"
# io_uring instances held by the daemon serving $M (0 = classic /dev/fuse).
uring_queues() {
  local p
  for p in $(pgrep -f "fuse-overlay.* $M\$" || true); do
    find "/proc/$p/fd" -lname '*io_uring*' 2>/dev/null | wc -l; return
  done
  echo "?"
}
mkdir -p "$MASTER" "$M" "$FS"
us() { echo "${EPOCHREALTIME/./}"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b-a)/1e6}'; }
# Only this run's file system is synced and its caches dropped: a global sync(2) or
# drop_caches waits for every superblock on the machine, and hangs for good behind one stuck
# in teardown. With LOOPFS=1 the loop ext4 is remounted (the FUSE mount must be down: the
# daemon may need a moment to exit and let go of the layers); dropf evicts one file's pages.
syncfs() { if [ "$LOOPFS" = 1 ]; then sync -f "$FS"; else sync -f "$BASE"; fi; }
dropc() {
  if [ "$LOOPFS" != 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; return; fi
  sync -f "$FS"
  local i
  for ((i = 0; i < 100; i++)); do umount "$FS" 2>/dev/null && break; sleep 0.05; done
  if mountpoint -q "$FS"; then log "WARN: $FS busy, caches not dropped"; return; fi
  mount -o loop "$IMG" "$FS"
}
dropf() { sync -f "$1"; dd if="$1" iflag=nocache count=0 status=none; }
median() { printf '%s\n' "$@" | python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.stdin if x.strip()]; print("%.3f"%s.median(v) if v else "NA")'; }

log "building lower: $NSMALL small files + 2 x ${BIGMB} MiB"
python3 "$here/mktree.py" "$MASTER/tree" "$NSMALL"
head -c "${BIGMB}M" /dev/urandom >"$MASTER/big-read"
head -c "${BIGMB}M" /dev/urandom >"$MASTER/big-copyup"
tar -cf "$BASE/tree.tar" -C "$MASTER" tree
sync -f "$BASE"
[ "$LOOPFS" = 1 ] && { command -v mkfs.ext4 >/dev/null || die "missing tool: mkfs.ext4"; }

mnt() { # fs
  if [ "$LOOPFS" = 1 ]; then
    # Lazy: a mount namespace created meanwhile by another process may hold a copy.
    mountpoint -q "$FS" && umount -l "$FS"
    rm -f "$IMG"; truncate -s "$((2 * BIGMB + 4096))M" "$IMG"
    mkfs.ext4 -q -F -N $((NSMALL * 4 + 10000)) -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
    mount -o loop "$IMG" "$FS"
    cp -a "$MASTER" "$L"
  fi
  rm -rf "$U" "$W"; mkdir -p "$U" "$W"; syncfs
  remnt "$1"
}
remnt() {
  local o="lowerdir=$L,upperdir=$U,workdir=$W"
  if [ "$1" = kernel ]; then mount -t overlay overlay -o "$o" "$M"
  else "${BIN[$1]}" -o "$o" "$M" 2>/dev/null; fi
  mountpoint -q "$M" || die "mount $1 failed"
}

declare -A R
for ((r = 1; r <= RUNS; r++)); do
  for fs in "${active[@]}"; do
    n="${NAME[$fs]}"
    mnt "$fs"
    t0=$(us); tar -xf "$BASE/tree.tar" -C "$M" --transform 's,^tree,newtree,'; t1=$(us); untar=$(secs "$t0" "$t1")
    umnt; dropc; remnt "$fs"
    t0=$(us); cnt=$(find "$M" -printf '%s %m\n' | wc -l); t1=$(us); wc=$(secs "$t0" "$t1")
    t0=$(us); find "$M" -printf '%s %m\n' >/dev/null; t1=$(us); ww=$(secs "$t0" "$t1")
    dropf "$L/big-read"
    t0=$(us); dd if="$M/big-read" of=/dev/null bs=1M status=none; t1=$(us); rc=$(awk -v s="$(secs "$t0" "$t1")" -v m="$BIGMB" 'BEGIN{printf "%.0f", m/s}')
    t0=$(us); dd if="$M/big-read" of=/dev/null bs=1M status=none; t1=$(us); rw=$(awk -v s="$(secs "$t0" "$t1")" -v m="$BIGMB" 'BEGIN{printf "%.0f", m/s}')
    fio_iops=$(fio --name=rw --filename="$M/fio.dat" --rw=randwrite --bs=4k --size="${FIOMB}M" --ioengine=psync \
      --runtime="$DUR" --time_based --output-format=json 2>/dev/null | jq '.jobs[0].write.iops|floor')
    rm -f "$M/fio.dat"
    cat "$L/big-copyup" >/dev/null; syncfs
    t0=$(us); dd if=/dev/zero of="$M/big-copyup" bs=1 count=1 conv=notrunc status=none; t1=$(us); cu=$(secs "$t0" "$t1")
    while [ ! -f "$U/big-copyup" ] && [ $(($(us) - t0)) -lt 30000000 ]; do sleep 0.001; done
    t2=$(us); cud=$(secs "$t0" "$t2")
    mountpoint -q "$M" || log "WARN: $n: $M is no longer mounted (daemon gone?)"
    [ -f "$U/big-copyup" ] || log "WARN: $n: no copy-up happened"
    [ "$(head -c 1 "$L/big-copyup" | od -An -tx1)" = "$(head -c 1 "$MASTER/big-copyup" | od -An -tx1)" ] \
      || log "ERROR: $n wrote to the lower layer"
    [ "$fs" = ours ] && log "$n run $r: io_uring queues: $(uring_queues)"
    log "$n run $r: untar ${untar}s walk($cnt) cold ${wc}s warm ${ww}s read cold ${rc} warm ${rw} MiB/s fio ${fio_iops} IOPS copy-up ${cu}s (complete ${cud}s)"
    R[$fs,untar]+=" $untar"; R[$fs,walkc]+=" $wc"; R[$fs,walkw]+=" $ww"; R[$fs,readc]+=" $rc"
    R[$fs,readw]+=" $rw"; R[$fs,fio]+=" $fio_iops"; R[$fs,copyup]+=" $cu"; R[$fs,cudone]+=" $cud"
    umnt; sleep 0.3
  done
done

metrics="untar walkc walkw readc readw fio copyup cudone"
declare -A UNIT=([untar]=s [walkc]=s [walkw]=s [readc]=MiB/s [readw]=MiB/s [fio]=IOPS [copyup]=s [cudone]=s)
declare -A LABEL=([untar]="untar ${NSMALL} files" [walkc]="find+lstat walk, cold" [walkw]="find+lstat walk, warm"
  [readc]="seq read ${BIGMB} MiB, cold" [readw]="seq read ${BIGMB} MiB, warm" [fio]="fio 4k randwrite" [copyup]="copy-up ${BIGMB} MiB, 1st write"
  [cudone]="copy-up ${BIGMB} MiB, complete")
declare -A MED
for m in $metrics; do for fs in "${active[@]}"; do MED[$fs,$m]=$(median ${R[$fs,$m]}); done; done

echo
printf '%-34s' "median ($RUNS runs)"; for fs in "${active[@]}"; do printf '%22s' "${NAME[$fs]}"; done; echo
for m in $metrics; do
  printf '%-34s' "${LABEL[$m]} (${UNIT[$m]})"
  for fs in "${active[@]}"; do printf '%22s' "${MED[$fs,$m]}"; done; echo
done
echo
echo "ratios, ours against each (> 1 = ours better; time: theirs/ours, rate: ours/theirs)"
for m in $metrics; do
  printf '%-34s' "${LABEL[$m]}"
  for fs in "${active[@]}"; do
    [ "$fs" = ours ] && continue
    awk -v o="${MED[ours,$m]:-NA}" -v t="${MED[$fs,$m]}" -v u="${UNIT[$m]}" -v n="${NAME[$fs]}" 'BEGIN{
      if (o=="NA"||t=="NA"||o==0||t==0) {printf " %31s", n": NA"; exit}
      r = (u=="s") ? t/o : o/t; printf " %31s", sprintf("vs %s: %.2fx", n, r)}'
  done
  echo
done
