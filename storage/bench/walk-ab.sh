#!/bin/bash
# walk-ab.sh: cold `find M -printf '%s %m\n'` walk through fuse-overlay builds A and B and
# fuse-overlayfs 1.10, interleaved in ONE run, as root. Lower layer: NSMALL small files in
# directories of 100 (as fuse-bench.sh); empty upper. Each round and file system gets a fresh
# loop ext4 holding the layers, remounted before the walk (cold dentry/inode caches without
# a global drop_caches, which can hang behind a stuck superblock), and a fresh mount.
# FUSE over io_uring (enable_uring=Y) for the run, the old value restored on exit.
# Env: A B (fuse-overlay binaries) C110 NSMALL ROUNDS BASE. Prints medians and ratios.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
A="${A:?A=path of the previous fuse-overlay build}"
B="${B:?B=path of the new fuse-overlay build}"
C110="${C110:-/usr/bin/fuse-overlayfs}"
NSMALL="${NSMALL:-20000}"
ROUNDS="${ROUNDS:-5}"
BASE="${BASE:-/var/tmp/walk-ab}"
ENABLE_URING=/sys/module/fuse/parameters/enable_uring
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
MASTER=$BASE/master; M=$BASE/merged; FS=$BASE/fs; IMG=$BASE/fs.img
L=$FS/lower; U=$FS/u; W=$FS/w
OLD_URING=""
umnt() { if mountpoint -q "$M"; then umount "$M" 2>/dev/null || fusermount3 -u "$M" 2>/dev/null || umount -l "$M"; fi; }
cleanup() {
  umnt || true; if mountpoint -q "$FS"; then umount -l "$FS"; fi; rm -rf "$BASE"
  if [ -n "$OLD_URING" ]; then echo "$OLD_URING" >"$ENABLE_URING"; fi
}
trap cleanup EXIT
cleanup
if [ -e "$ENABLE_URING" ]; then OLD_URING=$(cat "$ENABLE_URING"); echo Y >"$ENABLE_URING"; fi
unset FUSE_OVERLAY_URING
mkdir -p "$MASTER" "$M" "$FS"
python3 "$here/mktree.py" "$MASTER/tree" "$NSMALL"
sync -f "$BASE"
us() { echo "${EPOCHREALTIME/./}"; }
walk() { # binary -> seconds
  mountpoint -q "$FS" && umount -l "$FS"
  rm -f "$IMG"; truncate -s 1G "$IMG"
  mkfs.ext4 -q -F -N $((NSMALL * 2 + 10000)) -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
  mount -o loop "$IMG" "$FS"; cp -a "$MASTER" "$L"; mkdir -p "$U" "$W"
  sync -f "$FS"; umount "$FS"; mount -o loop "$IMG" "$FS"
  "$1" -o "lowerdir=$L,upperdir=$U,workdir=$W" "$M" 2>/dev/null
  mountpoint -q "$M" || { echo "mount $1 failed" >&2; exit 1; }
  local t0 t1 n
  t0=$(us); n=$(find "$M" -printf '%s %m\n' | wc -l); t1=$(us)
  umnt; sleep 0.2
  echo "$1: $n entries" >&2
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e6}'
}
declare -A R=([A]="" [B]="" [C]="")
for ((r = 1; r <= ROUNDS; r++)); do
  for k in A B C; do
    case $k in A) bin=$A ;; B) bin=$B ;; C) bin=$C110 ;; esac
    [ -x "$bin" ] || continue
    t=$(walk "$bin"); R[$k]+="$t "
    echo "round $r $k $t" >&2
  done
done
median() { printf '%s\n' $1 | python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.stdin if x.strip()]; print("%.3f"%s.median(v) if v else "NA")'; }
ma=$(median "${R[A]}"); mb=$(median "${R[B]}"); mc=$(median "${R[C]}")
echo "cold walk, $NSMALL files, median of $ROUNDS (s): A=$ma  B=$mb  fuse-overlayfs-1.10=$mc"
awk -v a="$ma" -v b="$mb" -v c="$mc" 'BEGIN{printf "B vs A: %.2fx  B vs 1.10: %.2fx  A vs 1.10: %.2fx\n", a/b, c/b, c/a}'
