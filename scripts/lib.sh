# shellcheck shell=bash
# Helpers shared by setup.sh, demo.sh and test.sh. Source it; do not run it.

RPOD_MIN_RUST=1.91
RPOD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
pass() { printf 'PASS: %s\n' "$*"; }
warn() { printf 'WARN: %s\n' "$*" >&2; }
die() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root (try: sudo $0)"
}

# version_ge A B: true when dotted version A >= B.
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# cargo_version PATH: prints "1.95.0" for a working cargo, nothing otherwise.
cargo_version() {
    (cd "$RPOD_ROOT" && "$1" --version 2>/dev/null) | awk '$1 == "cargo" { print $2; exit }'
}

# find_cargo: prints the path of the first cargo >= RPOD_MIN_RUST, or fails.
# RPOD_CARGO overrides the search.
find_cargo() {
    local c v seen=" "
    for c in ${RPOD_CARGO:-} "$(command -v cargo 2>/dev/null || true)" \
        "${CARGO_HOME:-${HOME:-/root}/.cargo}/bin/cargo" /root/.cargo/bin/cargo /usr/bin/cargo; do
        if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
        case "$seen" in *" $c "*) continue ;; esac
        seen="$seen$c "
        v=$(cargo_version "$c")
        if [ -n "$v" ] && version_ge "$v" "$RPOD_MIN_RUST"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# use_cargo: puts the chosen cargo's folder first on PATH (so cargo-fmt,
# cargo-clippy and rustc come from the same toolchain) and sets CARGO_BIN.
use_cargo() {
    CARGO_BIN=$(find_cargo) || die "no cargo >= $RPOD_MIN_RUST found; run scripts/setup.sh"
    PATH="$(dirname "$CARGO_BIN"):$PATH"
    export PATH CARGO_BIN
}

# docker_archive ROOTFS TAG PATH OUT: packs the folder ROOTFS as the single layer of a
# docker-archive image TAG (Env PATH=PATH, Cmd /bin/sh) written to OUT. Reproducible: owners 0,
# a fixed mtime and sorted names, so the same folder gives the same image ID.
docker_archive() {
    local rootfs=$1 tag=$2 path=$3 out=$4 arch lid cid
    arch=$(mktemp -d "${TMPDIR:-/tmp}/rpod-archive.XXXXXX")
    (cd "$rootfs" && tar --numeric-owner --owner=0 --group=0 --mtime=@1700000000 --sort=name \
        -cf "$arch/layer.tar" .)
    lid=$(sha256sum "$arch/layer.tar" | cut -d' ' -f1)
    mkdir "$arch/$lid"
    mv "$arch/layer.tar" "$arch/$lid/layer.tar"
    jq -cn --arg diff "sha256:$lid" --arg path "PATH=$path" '{architecture: "amd64", os: "linux",
        created: "2023-11-14T22:13:20Z", config: {Env: [$path], Cmd: ["/bin/sh"]},
        rootfs: {type: "layers", diff_ids: [$diff]}}' >"$arch/config.json"
    cid=$(sha256sum "$arch/config.json" | cut -d' ' -f1)
    mv "$arch/config.json" "$arch/$cid.json"
    jq -cn --arg c "$cid.json" --arg l "$lid/layer.tar" --arg t "$tag" \
        '[{Config: $c, RepoTags: [$t], Layers: [$l]}]' >"$arch/manifest.json"
    tar -C "$arch" -cf "$out" manifest.json "$cid.json" "$lid/layer.tar"
    rm -rf "$arch"
}
