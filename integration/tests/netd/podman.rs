//! Try netd as a user would: Debian's podman 4.3.1 with netd as its `netavark` (and Debian's
//! aardvark-dns, or our dnsd), as `shared/reference/ENVIRONMENT.md` describes. `podman network create`,
//! `podman run -d -p` a web server, fetch it from the host, fetch it by name from a second
//! container, then remove everything.
//!
//! podman runs inside a private net + mount + PID namespace made by `unshare` (with a tmpfs on
//! /run), so its network, its containers, aardvark-dns and every mount vanish with the script;
//! its storage lives in the test's directory.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rpod_integration::cmd::{self, have_tool};
use rpod_integration::{env_or_skip, skip, Env};

const SCRIPT: &str = r#"
set -eu
D="$1"; NETD="$2"; AARDVARK="$3"
mount -t tmpfs none /run
ip link set lo up
mkdir -p "$D/bin" "$D/rootfs/bin" "$D/rootfs/www" "$D/rootfs/etc" "$D/rootfs/proc" "$D/rootfs/sys" "$D/rootfs/dev" "$D/rootfs/tmp"
ln -sf "$NETD" "$D/bin/netavark"
ln -sf "$AARDVARK" "$D/bin/aardvark-dns"
cp /usr/bin/busybox "$D/rootfs/bin/busybox"
for a in sh httpd wget cat; do ln -sf busybox "$D/rootfs/bin/$a"; done
echo hello-from-podman > "$D/rootfs/www/index.html"
cat > "$D/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
helper_binaries_dir = ["$D/bin"]
[network]
network_backend = "netavark"
network_config_dir = "$D/networks"
EOF
export CONTAINERS_CONF="$D/containers.conf"
P="podman --root $D/root --runroot $D/runroot --storage-driver vfs"
$P network create --subnet 10.99.0.0/24 rpodt1
$P run -d --name web --network rpodt1 -p 8080:8000 --rootfs "$D/rootfs" /bin/sh -c "exec httpd -f -p 8000 -h /www"
ok=""
for i in $(seq 1 50); do
  if out=$(busybox wget -qO- http://127.0.0.1:8080/ 2>/dev/null); then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "host could not fetch the published port"; exit 1; }
echo "HOST: $out"
echo "NFT: $(nft list tables | tr '\n' ' ')"
echo "DNS: $(readlink -f /proc/$(cat /run/containers/networks/aardvark-dns/aardvark.pid 2>/dev/null || echo 0)/exe 2>/dev/null || true)"
echo "CTR: $($P run --rm --network rpodt1 --rootfs "$D/rootfs" wget -qO- http://web:8000/)"
$P rm -f -t 0 web >/dev/null
echo "AFTER: $(nft list tables | tr '\n' ' ')|$(ip -br link | grep -c podman || true)"
$P network rm rpodt1 >/dev/null
$P --log-level error system reset -f >/dev/null 2>&1 || true
"#;

#[test]
fn podman_431_uses_netd_as_netavark() {
    let test = "podman_431_uses_netd_as_netavark";
    let env = env_or_skip!(test);
    let aardvark = Path::new("/usr/lib/podman/aardvark-dns");
    if !aardvark.is_file() {
        skip!(test, "Debian's aardvark-dns is not installed");
    }
    run_podman(&env, test, aardvark);
}

/// The same with our dnsd as podman's `aardvark-dns`: the second container reaches the first
/// by name through dnsd.
#[test]
fn podman_431_uses_netd_and_dnsd() {
    let test = "podman_431_uses_netd_and_dnsd";
    let env = env_or_skip!(test);
    let dnsd = env.netd_bin().with_file_name("dnsd");
    assert!(dnsd.is_file(), "{} not built (cargo build -p dnsd)", dnsd.display());
    run_podman(&env, test, &dnsd);
}

fn run_podman(env: &Env, test: &str, aardvark: &Path) {
    for tool in ["podman", "runc", "unshare"] {
        if !have_tool(tool) {
            skip!(test, "`{tool}` is not installed (scripts/setup.sh installs it)");
        }
    }
    let dir = env.dir().join("podman");
    std::fs::create_dir_all(&dir).expect("create podman dir");
    let mut c = Command::new("unshare");
    c.args(["-n", "-m", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["bash", "-c", SCRIPT, "podman-test"])
        .arg(&dir)
        .arg(env.netd_bin())
        .arg(aardvark);
    let out = cmd::run(c, None, Duration::from_secs(180));
    // podman leaves read-only layers in its storage: make sure Env's cleanup can remove them.
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&dir).status();
    assert!(out.ok(), "podman script failed:\n{out:?}");
    let stdout = out.stdout.clone();
    assert!(stdout.contains("HOST: hello-from-podman"), "{stdout}");
    assert!(stdout.contains("CTR: hello-from-podman"), "name resolution and container-to-container failed: {stdout}");
    assert!(stdout.contains("NFT: table inet netd"), "netd's table was not in place: {stdout}");
    let real = std::fs::canonicalize(aardvark).unwrap_or_else(|_| aardvark.to_path_buf());
    assert!(
        stdout.contains(&format!("DNS: {}", real.display())),
        "the DNS helper was not {}: {stdout}",
        real.display()
    );
    assert!(stdout.contains("AFTER: |0"), "teardown left a table or a bridge behind: {stdout}");
}
