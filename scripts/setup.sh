#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) to build and test rpod, then build the workspace.
# Idempotent: when everything is already installed it only runs `cargo build`.
#
#   scripts/setup.sh            system packages, Rust toolchain, `cargo build --workspace`
#   scripts/setup.sh --bench    also what the benchmarks need (hyperfine, dnsperf, iperf3, fio; protobuf-compiler to
#                               `cargo install` the reference netavark 2.x)
#   scripts/setup.sh --no-build skip the build
#
# Toolchain: an installed cargo >= 1.91 (on PATH, in ~/.cargo/bin or /root/.cargo/bin) is
# used as is; otherwise Debian's rustc-web/cargo-web 1.96 (bookworm-security) are installed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

bench=0
build=1
for arg in "$@"; do
    case "$arg" in
    --bench) bench=1 ;;
    --no-build) build=0 ;;
    -h | --help)
        sed -n '2,12p' "$0"
        exit 0
        ;;
    *) die "unknown option $arg (see --help)" ;;
    esac
done

need_root
[ -r /etc/debian_version ] || warn "this is not Debian; the package names below are Debian 12's"

# What the build, the tests and the demo use.
packages=(
    build-essential gcc pkg-config libzstd-dev ca-certificates curl jq
    iproute2 nftables iptables procps util-linux
    netavark aardvark-dns podman runc crun conmon slirp4netns fuse-overlayfs catatonit
    busybox-static dnsmasq-base uidmap fuse3
    docker-registry skopeo apache2-utils openssl passt python3 acl
)
[ "$bench" -eq 1 ] && packages+=(protobuf-compiler hyperfine dnsperf bind9-dnsutils iperf3 fio)

# Rust: keep a new enough cargo, else Debian's -web toolchain with rustfmt and clippy
# (installed without recommends: those would add a whole LLVM).
rust_packages=()
if find_cargo >/dev/null; then
    rust_from="already installed"
else
    rust_from="installed from Debian rustc-web/cargo-web"
    rust_packages=(rustc-web cargo-web rustfmt-web rust-web-clippy)
fi

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

updated=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$updated" -eq 0 ]; then
        say "apt-get update"
        apt-get update -q
        updated=1
    fi
    say "apt-get install $*"
    apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

say "checking ${#packages[@]} Debian packages"
missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    info "all present"
else
    info "missing: ${missing[*]}"
    apt_install "${missing[@]}"
fi
if [ "${#rust_packages[@]}" -gt 0 ]; then
    info "no cargo >= $RPOD_MIN_RUST found: installing Debian's ${rust_packages[*]}"
    apt_install --no-install-recommends "${rust_packages[@]}"
fi

say "Rust toolchain"
if ! find_cargo >/dev/null; then
    v=$(cargo_version /usr/bin/cargo || true)
    die "no cargo >= $RPOD_MIN_RUST after installing cargo-web (got ${v:-none}); cargo-web 1.96 comes from bookworm-security: add 'deb http://deb.debian.org/debian-security bookworm-security main' to the apt sources and re-run"
fi
use_cargo
info "using $CARGO_BIN ($(cargo_version "$CARGO_BIN"), $rust_from)"

# rustfmt and clippy, from the same toolchain as cargo (scripts/test.sh runs both).
tools_missing=()
cargo fmt --version >/dev/null 2>&1 || tools_missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || tools_missing+=(clippy)
if [ "${#tools_missing[@]}" -gt 0 ]; then
    rustup_bin="$(dirname "$CARGO_BIN")/rustup"
    if [ -x "$rustup_bin" ]; then
        say "rustup component add ${tools_missing[*]}"
        "$rustup_bin" component add "${tools_missing[@]}"
    elif [ "$CARGO_BIN" = /usr/bin/cargo ] && is_installed cargo-web; then
        apt_install --no-install-recommends rustfmt-web rust-web-clippy
    else
        warn "cargo ${tools_missing[*]} not available for $CARGO_BIN: scripts/test.sh will fail its fmt/clippy steps"
    fi
fi

# Rootless tests (fuse-overlay, portfwd, rootless rpod) run as unprivileged users. Debian ships
# /dev/net/tun and /dev/fuse as 0600 on this kind of VM, and the nodes are recreated at boot:
# open them to users as most distributions do. `useradd -m` also gives each user its
# /etc/subuid and /etc/subgid ranges.
say "rootless test users and devices"
for u in rpodtest rpodtest2; do
    if ! id "$u" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$u"
        info "created user $u"
    fi
    for f in /etc/subuid /etc/subgid; do
        grep -q "^$u:" "$f" || warn "$u has no range in $f: rootless tests will fail"
    done
done
for d in /dev/net/tun /dev/fuse; do
    [ -e "$d" ] && chmod 0666 "$d"
done
info "users rpodtest, rpodtest2; /dev/net/tun and /dev/fuse are 0666"

if [ "$build" -eq 1 ]; then
    say "cargo build --workspace (debug; the tests and the demo use target/debug)"
    cd "$RPOD_ROOT"
    cargo build --workspace
fi

say "setup done"
