#!/usr/bin/env bash
# Benchmark of the rpod image store (issue 4, "Benchmark"): one run measures
#   (a) extracting a ~230 MiB gzip layer of ~20k files: our extraction (the `extract` example,
#       and a full `rpod load` of an OCI archive holding that layer) against `tar -xzf`;
#   (b) pulling a 5-layer ~300 MiB image from a local docker-registry: `rpod pull` against
#       `podman pull`, each into a fresh store;
#   (c) the peak memory (max RSS, /usr/bin/time %M) of each.
# Medians of $RUNS runs (default 3), interleaved; `sync` before each run (no cache dropping).
# Needs root (podman's overlay store, ownership in layers), docker-registry, skopeo, podman,
# python3, GNU time. Test data is generated once into $BENCH_CACHE (default
# /tmp/rpod-bench-cache, kept for later runs; BENCH_CLEAN_CACHE=1 removes it at the end).
# Everything else (registry, stores, mounts) lives under one temp dir removed on exit.
set -euo pipefail

RUNS=${RUNS:-3}
CACHE=${BENCH_CACHE:-/tmp/rpod-bench-cache}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
RPOD=$TARGET/release/rpod
EXTRACT=$TARGET/release/examples/extract
REGISTRY_BIN=/usr/bin/docker-registry
DATA_VERSION=2 # bump when the generated data changes

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (podman's rootful overlay store; layers keep ownership)"
for t in podman skopeo python3 tar gzip /usr/bin/time unshare "$REGISTRY_BIN"; do
    command -v "$t" >/dev/null || die "missing $t (apt-get install podman skopeo docker-registry time)"
done

W=""
REG_PID=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$REG_PID" ]; then
        kill "$REG_PID" 2>/dev/null
        wait "$REG_PID" 2>/dev/null
    fi
    if [ -n "$W" ] && [ -d "$W" ]; then
        # podman runs in its own mount namespace, so nothing should be mounted here; in case
        # anything is, unmount it (deepest first) before removing the tree.
        awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
            umount -l "$m" || echo "bench: could not unmount $m" >&2
        done
        rm -rf "$W"
    fi
    if [ "${BENCH_CLEAN_CACHE:-0}" = 1 ]; then rm -rf "$CACHE"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

W=$(mktemp -d /tmp/rpod-bench.XXXXXX)
mkdir -p "$W/res" "$W/tmp"

# ------------------------------------------------------------------ build
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$REPO" && cargo build --release -q -p rpod -p rpod-storage --examples)
fi
[ -x "$RPOD" ] && [ -x "$EXTRACT" ] || die "missing $RPOD or $EXTRACT (cargo build --release -p rpod -p rpod-storage --examples)"

# ------------------------------------------------------------------ test data (cached)
gen_data() {
    local tmp="$CACHE.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "generating test data into $CACHE (once; takes a minute or two)"
    python3 - "$tmp" <<'PY'
import os, random, sys
out = sys.argv[1]
rng = random.Random(4)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(3000)]
lines, n = [], 0
while n < (6 << 20):
    l = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "\n"
    lines.append(l); n += len(l)
pool = "".join(lines).encode()

def content(size, text_ratio):
    if rng.random() < text_ratio:
        off = rng.randrange(0, len(pool) - size)
        return pool[off:off + size]
    return rng.randbytes(size)

def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)

# (a) one layer of 20000 files in 2000 directories, mixed sizes, about 70% random bytes.
root = os.path.join(out, "layer")
files = []
for i in range(20000):
    r = rng.random()
    if r < 0.75:
        size = rng.randint(256, 6 << 10)
    elif r < 0.99:
        size = rng.randint(6 << 10, 40 << 10)
    else:
        size = rng.randint(200 << 10, 800 << 10)
    p = os.path.join(root, "usr", "d%03d" % (i % 200), "s%d" % (i // 200 % 10), "f%05d" % i)
    write(p, content(size, 0.3), 0o755 if i % 10 == 0 else 0o644)
    files.append(p)
for i in range(300):  # symlinks and hard links, as real layers have
    t = files[rng.randrange(len(files))]
    d = os.path.join(root, "links")
    os.makedirs(d, exist_ok=True)
    if i % 3:
        os.symlink(os.path.relpath(t, d), os.path.join(d, "sym%03d" % i))
    else:
        os.link(t, os.path.join(d, "hard%03d" % i))

# (b) five layers of about 60 MiB each (mostly random, some text), 5 different trees.
for l in range(5):
    root = os.path.join(out, "pull%d" % l)
    for i in range(260):
        write(os.path.join(root, "opt", "l%d" % l, "big%03d" % i), content(rng.randint(128 << 10, 352 << 10), 0.05))
    for i in range(800):
        write(os.path.join(root, "etc", "l%d" % l, "conf%03d" % i), content(rng.randint(100, 6000), 1.0))
PY
    local tarflags=(--sort=name --numeric-owner --owner=0 --group=0 --mtime=@1700000000 --format=posix
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
    log "tar + gzip -6 of the extraction layer"
    tar "${tarflags[@]}" -C "$tmp/layer" -cf - . | gzip -6 -n >"$tmp/layer.tar.gz"
    for l in 0 1 2 3 4; do
        log "tar + gzip -6 of pull layer $l"
        tar "${tarflags[@]}" -C "$tmp/pull$l" -cf - . | gzip -6 -n >"$tmp/pull$l.tar.gz"
    done
    # OCI layouts: "load" (one layer: the extraction layer) as an archive, "pull" (5 layers) as
    # a directory for skopeo.
    python3 - "$tmp" <<'PY'
import gzip, hashlib, json, os, shutil, sys, tarfile
out = sys.argv[1]

def sha_file(p, gz=False):
    h = hashlib.sha256()
    with (gzip.open(p, "rb") if gz else open(p, "rb")) as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()

def layout(d, name, layers):
    blobs = os.path.join(d, "blobs", "sha256")
    os.makedirs(blobs)
    descs, diff_ids = [], []
    for p in layers:
        dg = sha_file(p)
        shutil.copyfile(p, os.path.join(blobs, dg))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": "sha256:" + dg, "size": os.path.getsize(p)})
        diff_ids.append("sha256:" + sha_file(p, gz=True))
    def blob(obj):
        b = json.dumps(obj).encode()
        dg = hashlib.sha256(b).hexdigest()
        with open(os.path.join(blobs, dg), "wb") as f:
            f.write(b)
        return dg, len(b)
    cdg, clen = blob({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    mdg, mlen = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": "sha256:" + cdg, "size": clen},
                      "layers": descs})
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mdg,
            "size": mlen, "annotations": {"org.opencontainers.image.ref.name": name}}]}, f)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')

layout(os.path.join(out, "load-layout"), "v1", [os.path.join(out, "layer.tar.gz")])
with tarfile.open(os.path.join(out, "load.oci.tar"), "w", format=tarfile.PAX_FORMAT) as t:
    for n in sorted(os.listdir(os.path.join(out, "load-layout"))):
        t.add(os.path.join(out, "load-layout", n), arcname=n)
shutil.rmtree(os.path.join(out, "load-layout"))
layout(os.path.join(out, "pull-layout"), "v1", [os.path.join(out, "pull%d.tar.gz" % l) for l in range(5)])
PY
    rm -rf "$tmp/layer" "$tmp"/pull[0-4] "$tmp"/pull[0-4].tar.gz
    echo "$DATA_VERSION" >"$tmp/VERSION"
    rm -rf "$CACHE"
    mv "$tmp" "$CACHE"
}
if [ "$(cat "$CACHE/VERSION" 2>/dev/null)" != "$DATA_VERSION" ]; then gen_data; fi
LAYER=$CACHE/layer.tar.gz
LAYER_MIB=$(($(stat -c %s "$LAYER") >> 20))
LAYER_FILES=$(tar -tzf "$LAYER" | wc -l)
PULL_MIB=$(($(du -sb "$CACHE/pull-layout" | cut -f1) >> 20))
log "extraction layer: $LAYER_MIB MiB gzip, $LAYER_FILES entries; pull image: 5 layers, $PULL_MIB MiB"

# ------------------------------------------------------------------ measuring
# measure NAME CMD...: runs CMD after a sync, appends "seconds maxrss_kib" to $W/res/NAME.
measure() {
    local name=$1
    shift
    sync
    local t0 t1
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%M' -o "$W/time.out" "$@" >"$W/cmd.log" 2>&1; then
        cat "$W/cmd.log" >&2
        die "$name failed: $*"
    fi
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000000)) $(tail -n1 "$W/time.out")" >>"$W/res/$name"
}

# ------------------------------------------------------------------ (a) extraction
for run in $(seq "$RUNS"); do
    log "extraction run $run/$RUNS"
    mkdir "$W/x"
    measure tar tar -xzf "$LAYER" -C "$W/x"
    rm -rf "$W/x"
    measure extract "$EXTRACT" "$LAYER" "$W/x"
    rm -rf "$W/x"
    measure load "$RPOD" --root "$W/x" load -q -i "$CACHE/load.oci.tar"
    rm -rf "$W/x"
done

# ------------------------------------------------------------------ (b) pull
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/registry/data
http:
  addr: 127.0.0.1:$PORT
EOF
"$REGISTRY_BIN" serve "$W/registry/config.yml" >/dev/null 2>"$W/registry/log" &
REG_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done
kill -0 "$REG_PID" 2>/dev/null || { cat "$W/registry/log" >&2; die "docker-registry did not start"; }
IMAGE=127.0.0.1:$PORT/bench/img:v1
log "pushing the 5-layer image to $IMAGE with skopeo"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false --preserve-digests \
    "oci:$CACHE/pull-layout:v1" "docker://$IMAGE"

cat >"$W/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
events_logger = "none"
EOF
for run in $(seq "$RUNS"); do
    log "pull run $run/$RUNS"
    P=$W/podman$run
    mkdir -p "$P/root" "$P/run" "$P/tmp"
    # Its own mount namespace: whatever podman mounts goes away with it.
    measure podman env CONTAINERS_CONF="$W/containers.conf" TMPDIR="$P/tmp" \
        unshare -m --propagation private \
        podman --root "$P/root" --runroot "$P/run" --tmpdir "$P/tmp" --storage-driver overlay \
        pull -q --tls-verify=false "$IMAGE"
    podman_layers=$(find "$P/root/overlay" -mindepth 1 -maxdepth 1 -type d ! -name l | wc -l)
    [ "$podman_layers" = 5 ] || die "podman stored $podman_layers layers, expected 5"
    rm -rf "$P"
    measure pull "$RPOD" --root "$W/rpod$run" pull -q --tls-verify=false "$IMAGE"
    "$RPOD" --root "$W/rpod$run" images | grep -q bench/img || die "rpod pull stored no image"
    rm -rf "$W/rpod$run"
done
if awk -v w="$W" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
    die "mounts left under $W"
fi

# ------------------------------------------------------------------ report
# median COLUMN NAME: the median of column 1 (ms) or 2 (KiB) of $W/res/NAME.
median() { cut -d' ' -f"$1" "$W/res/$2" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
row() { # NAME LABEL
    printf '%-44s %9.2f %12.1f   %s\n' "$2" "$(echo "$(median 1 "$1") / 1000" | bc -l)" \
        "$(echo "$(median 2 "$1") / 1024" | bc -l)" "$(awk '{ printf "%s%.2f", (NR > 1) ? " " : "", $1 / 1000 }' "$W/res/$1")"
}
ratio() { printf '%.2f' "$(echo "$(median 1 "$1") / $(median 1 "$2")" | bc -l)"; }
verdict() { if [ "$(echo "$1 >= $2" | bc -l)" = 1 ]; then echo "met"; else echo "NOT met"; fi; }
R_EXTRACT=$(ratio tar extract)
R_LOAD=$(ratio tar load)
R_PULL=$(ratio podman pull)
{
    echo
    echo "rpod storage benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, medians of $RUNS runs"
    echo "layer: $LAYER_MIB MiB gzip, $LAYER_FILES entries; image: 5 gzip layers, $PULL_MIB MiB"
    echo
    printf '%-44s %9s %12s   %s\n' "case" "median s" "peak RSS MiB" "runs (s)"
    row tar "extract: tar -xzf"
    row extract "extract: rpod (examples/extract)"
    row load "extract: rpod load (OCI archive, 1 layer)"
    row podman "pull: podman pull (overlay, fresh store)"
    row pull "pull: rpod pull (fresh store)"
    echo
    echo "tar -xzf / rpod extract = ${R_EXTRACT}x  (target >= 1.0: $(verdict "$R_EXTRACT" 1.0))"
    echo "tar -xzf / rpod load    = ${R_LOAD}x  (blob copy + verify + extract; informational)"
    echo "podman / rpod pull      = ${R_PULL}x  (target >= 2.0: $(verdict "$R_PULL" 2.0))"
}
