//! Network and container options beyond the basics: strict isolation, a container on two
//! networks, static MAC, MTU, static routes and `no_default_route`, DNS on a port other
//! than 53, `netd update`, and a teardown after the container's namespace is gone.

use std::path::Path;

use rpod_integration::{env_or_skip, netd_with_env, skip, sock, Attach, Opts, HOST_IP4, UPSTREAM_IP4};
use serde_json::json;

use crate::{bridge4, ip4};

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

#[test]
fn options_strict_isolation() {
    let env = env_or_skip!("options_strict_isolation");
    let ns = bridge4(&env, "strict", "brs", 20).isolate("strict");
    let no = bridge4(&env, "open", "bro", 21);
    let (s, o) = (env.container("s"), env.container("o"));
    let os = Opts::new(&s).net(&ns, Attach::eth0(&[&ip4(20, 2)]));
    let oo = Opts::new(&o).net(&no, Attach::eth0(&[&ip4(21, 2)]));
    env.setup(&s, &os);
    env.setup(&o, &oo);
    env.serve(&s.ns, "s", &["tcp:8000"]);
    env.serve(&o.ns, "o", &["tcp:8000"]);
    env.serve(&env.upstream, "up", &["tcp:8080"]);
    // Positive control: the strict network still reaches the outside world.
    assert_eq!(env.expect_tcp(&s.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4);
    // Strict: no traffic to any other bridge network, even a non-isolated one.
    env.expect_no_tcp(&s.ns, &sock(&ip4(21, 2), 8000));
    env.expect_no_tcp(&o.ns, &sock(&ip4(20, 2), 8000));
    env.teardown(&s, &os);
    env.teardown(&o, &oo);
}

#[test]
fn options_container_on_two_networks() {
    let env = env_or_skip!("options_container_on_two_networks");
    let n1 = bridge4(&env, "one", "br1", 22);
    let n2 = bridge4(&env, "two", "br2", 23);
    let (m, a, b) = (env.container("m"), env.container("a"), env.container("b"));
    let om = Opts::new(&m).net(&n1, Attach::eth0(&[&ip4(22, 2)])).net(&n2, Attach::new("eth1", &[&ip4(23, 2)]));
    let oa = Opts::new(&a).net(&n1, Attach::eth0(&[&ip4(22, 3)]));
    let ob = Opts::new(&b).net(&n2, Attach::eth0(&[&ip4(23, 3)]));
    let st = env.setup(&m, &om);
    assert_eq!(st.len(), 2, "one status block per network: {st:?}");
    assert!(st["two"].interfaces.contains_key("eth1"), "{st:?}");
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    env.serve(&a.ns, "a", &["tcp:8000"]);
    env.serve(&b.ns, "b", &["tcp:8000"]);
    assert_eq!(env.expect_tcp(&m.ns, &sock(&ip4(22, 3), 8000)).peer_ip(), ip4(22, 2));
    assert_eq!(env.expect_tcp(&m.ns, &sock(&ip4(23, 3), 8000)).peer_ip(), ip4(23, 2));
    env.teardown(&m, &om);
    assert_eq!(env.links(&m.ns, None), vec!["lo".to_string()], "both interfaces removed");
    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
    assert!(env.links(&env.host, Some("bridge")).is_empty(), "both bridges removed");
}

#[test]
fn options_mac_mtu_routes_no_default_route() {
    let env = env_or_skip!("options_mac_mtu_routes_no_default_route");
    let net = bridge4(&env, "opts", "br0", 24).option("mtu", "1400").option("no_default_route", "true");
    let a = env.container("a");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(24, 2)]).mac("02:aa:bb:cc:dd:01"));
    let mut input = oa.to_json();
    input["network_info"]["opts"]["routes"] =
        json!([{"destination": "192.0.2.0/24", "gateway": ip4(24, 1), "metric": 77}]);
    let path = a.path_str();
    let out = env.netd(&["setup", &path], Some(&input));
    out.expect_ok("setup with options");
    let st = out.status();
    assert_eq!(st["opts"].interfaces["eth0"].mac_address, "02:aa:bb:cc:dd:01");
    let link = env.link_details(&a.ns, "eth0").expect("eth0 exists");
    assert_eq!(link["mtu"], json!(1400), "{link}");
    assert_eq!(env.link_details(&env.host, &env.name("br0")).expect("bridge")["mtu"], json!(1400));
    let routes = env.run(&a.ns, "ip", &["route"]).stdout;
    assert!(!routes.contains("default"), "no_default_route: {routes}");
    assert!(routes.contains("192.0.2.0/24 via 10.89.24.1") && routes.contains("metric 77"), "{routes}");
    env.netd(&["teardown", &path], Some(&input)).expect_ok("teardown with options");
    assert!(env.links(&env.host, Some("bridge")).is_empty());
}

#[test]
fn options_dns_on_another_port_and_update() {
    let env = env_or_skip!("options_dns_on_another_port_and_update");
    if !Path::new(AARDVARK).is_file() {
        skip!("options_dns_on_another_port_and_update", "{AARDVARK} is not installed (Debian aardvark-dns)");
    }
    let net = bridge4(&env, "dp", "br0", 25).dns(true);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(25, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(25, 3)]));
    let vars = [("NETAVARK_DNS_PORT", "5354")];
    for (c, o) in [(&a, &oa), (&b, &ob)] {
        let p = c.path_str();
        netd_with_env(&env, &vars, &["--aardvark-binary", AARDVARK, "setup", &p], Some(&o.to_json()))
            .expect_ok("setup with NETAVARK_DNS_PORT");
    }
    let gw = ip4(25, 1);
    // The container asks the gateway on port 53; netd's DNAT sends it to 5354.
    let mut ok = String::new();
    for _ in 0..50 {
        let out = env.run(&a.ns, "busybox", &["nslookup", "b", &gw]);
        if out.ok() && out.stdout.contains(&ip4(25, 3)) {
            ok = out.stdout;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!ok.is_empty(), "a could not resolve b through {gw}:53 -> 5354");
    let listening = env.run(&env.host, "ss", &["-Hlun", "sport", "= :5354"]).stdout;
    assert!(listening.contains(&gw), "the DNS helper listens on {gw}:5354: {listening}");

    // update rewrites line 1 of the network's file.
    env.netd(&["--aardvark-binary", AARDVARK, "update", "dp", "--network-dns-servers", "192.0.2.53"], None)
        .expect_ok("update");
    let conf = std::fs::read_to_string(env.config_dir().join("aardvark-dns").join("dp")).expect("dns config");
    assert_eq!(conf.lines().next(), Some(format!("{gw} 192.0.2.53").as_str()), "{conf}");

    for (c, o) in [(&a, &oa), (&b, &ob)] {
        let p = c.path_str();
        netd_with_env(&env, &vars, &["--aardvark-binary", AARDVARK, "teardown", &p], Some(&o.to_json()))
            .expect_ok("teardown");
    }
    assert!(!env.nft_table_exists(), "table removed with the last network");
}

#[test]
fn options_teardown_after_netns_is_gone() {
    let env = env_or_skip!("options_teardown_after_netns_is_gone");
    let net = bridge4(&env, "gone", "br0", 26);
    let a = env.container("a");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(26, 2)])).port(rpod_integration::Port::tcp(18080, 80));
    env.setup(&a, &oa);
    // The engine lost the namespace (crash, reboot of the runtime): the veth went with it.
    env.run(&env.host, "ip", &["netns", "del", a.ns.name()]);
    // The kernel cleans a deleted namespace up asynchronously: wait for the host end to go.
    for _ in 0..100 {
        if env.links(&env.host, Some("veth")).iter().all(|l| l == &env.wan()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = env.try_teardown(&a, &oa);
    assert!(out.success(), "teardown carries on when the netns is gone\n{out}");
    assert!(env.links(&env.host, Some("bridge")).is_empty(), "bridge removed");
    assert!(!env.nft_table_exists(), "no table left");
}
