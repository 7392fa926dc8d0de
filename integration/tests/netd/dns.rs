//! DNS: netd writes the per-network config and starts Debian's aardvark-dns (in the host
//! namespace, since netd runs there); containers resolve each other by name.

use std::path::Path;
use std::time::{Duration, Instant};

use rpod_integration::{env_or_skip, skip, Attach, Env, Netns, Opts};

use crate::{bridge4, ip4};

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

/// `busybox nslookup NAME SERVER` from `ns`; the output when it lists `want`.
fn resolves(env: &Env, ns: &Netns, name: &str, server: &str, want: &str) -> Result<String, String> {
    let o = env.run(ns, "busybox", &["nslookup", name, server]);
    // busybox prints the server's own address first ("Address: 10.89.70.1:53"); look at the
    // answer lines only.
    let answer = o.stdout.split_once("Name:").map(|(_, a)| a.to_string()).unwrap_or_default();
    if answer.lines().any(|l| l.trim() == format!("Address: {want}")) {
        Ok(o.stdout)
    } else {
        Err(format!("{}{}", o.stdout, o.stderr))
    }
}

fn eventually(what: &str, f: impl Fn() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn dns_containers_resolve_each_other() {
    let env = env_or_skip!("dns_containers_resolve_each_other");
    if !Path::new(AARDVARK).is_file() {
        skip!("dns_containers_resolve_each_other", "{AARDVARK} is not installed (Debian aardvark-dns)");
    }
    resolve_each_other(&env, AARDVARK);
}

/// The same with our own DNS helper, `dnsd`, from this build.
#[test]
fn dns_containers_resolve_each_other_with_dnsd() {
    let env = env_or_skip!("dns_containers_resolve_each_other_with_dnsd");
    let dnsd = env.netd_bin().with_file_name("dnsd");
    assert!(dnsd.is_file(), "{} not built (cargo build -p dnsd)", dnsd.display());
    resolve_each_other(&env, dnsd.to_str().expect("utf-8 path"));
}

fn resolve_each_other(env: &Env, helper: &str) {
    let args = ["--aardvark-binary", helper];
    let net = bridge4(env, "named", "br0", 70).dns(true);
    let gw = ip4(70, 1);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(70, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(70, 3)]).alias("bee"));
    let st = env.setup_args(&a, &oa, &args);
    let servers: Vec<String> = st["named"].dns_server_ips.iter().map(|i| i.to_string()).collect();
    assert_eq!(servers, vec![gw.clone()], "dns_server_ips = the gateway");
    env.setup_args(&b, &ob, &args);

    let conf = env.config_dir().join("aardvark-dns").join("named");
    let text = std::fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    assert!(text.starts_with(&gw), "line 1 binds the gateway: {text}");
    assert!(text.contains(&a.id) && text.contains(&b.id), "both containers listed: {text}");
    assert!(env.aardvark_pid().is_some(), "aardvark-dns wrote its pid file");

    eventually("a resolves b", || resolves(env, &a.ns, "b", &gw, &ip4(70, 3)));
    eventually("b resolves a", || resolves(env, &b.ns, "a", &gw, &ip4(70, 2)));
    eventually("a resolves b's alias", || resolves(env, &a.ns, "bee", &gw, &ip4(70, 3)));
    eventually("a resolves b.dns.podman", || resolves(env, &a.ns, "b.dns.podman", &gw, &ip4(70, 3)));

    env.teardown_args(&b, &ob, &args);
    let text = std::fs::read_to_string(&conf).unwrap_or_default();
    assert!(!text.contains(&b.id), "b's entry is removed: {text}");
    eventually("b is forgotten", || match resolves(env, &a.ns, "b.dns.podman", &gw, &ip4(70, 3)) {
        Ok(out) => Err(format!("b still resolves:\n{out}")),
        Err(_) => Ok(String::new()),
    });
    env.teardown_args(&a, &oa, &args);
    assert!(!conf.exists(), "the network's DNS config goes with its last container");
}
