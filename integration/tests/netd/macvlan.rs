//! macvlan (and ipvlan, where the kernel has it) on a veth parent in the host namespace.

use rpod_integration::{env_or_skip, skip, sock, Attach, Env, Network, Opts};

use crate::{assert_only_lo, ip4, kind_of};

/// A veth pair `<prefix>mvp` / `<prefix>mvq` in the host namespace, both up: the first is
/// the parent of the test's macvlan/ipvlan links.
fn parent(env: &Env) -> String {
    let p = env.name("mvp");
    let q = env.name("mvq");
    env.host.ip_ok(&["link", "add", &p, "type", "veth", "peer", "name", &q]);
    env.host.ip_ok(&["link", "set", &p, "up"]);
    env.host.ip_ok(&["link", "set", &q, "up"]);
    p
}

fn two_containers_talk(env: &Env, net: &Network, n: u8, kind: &str) {
    let parent_name = net.interface.clone().unwrap_or_default();
    let before = env.host_snapshot();
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(net, Attach::eth0(&[&ip4(n, 2)]));
    let ob = Opts::new(&b).net(net, Attach::eth0(&[&ip4(n, 3)]));
    let st = env.setup(&a, &oa);
    assert_eq!(st[&net.name].interfaces["eth0"].subnets[0].ipnet.to_string(), format!("10.89.{n}.2/24"));
    env.setup(&b, &ob);
    assert_eq!(kind_of(env, &a.ns, "eth0"), kind, "container eth0 is a {kind}");
    assert!(env.links(&env.host, Some(kind)).is_empty(), "no {kind} link is left in the host namespace");

    env.expect_ping(&a.ns, &ip4(n, 3));
    env.serve(&b.ns, "b", &["tcp:8000", "udp:8000"]);
    let r = env.expect_tcp(&a.ns, &sock(&ip4(n, 3), 8000));
    assert_eq!((r.name.as_str(), r.peer_ip()), ("b", ip4(n, 2)));
    assert_eq!(env.expect_udp(&a.ns, &sock(&ip4(n, 3), 8000)).name, "b");

    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
    assert_only_lo(env, &a);
    assert_only_lo(env, &b);
    assert!(env.links(&env.host, None).contains(&parent_name), "the parent stays");
    before.assert_same(&env.host_snapshot(), "macvlan setup+teardown leaves the host as it was");
}

#[test]
fn macvlan_bridge_mode_two_containers() {
    let env = env_or_skip!("macvlan_bridge_mode_two_containers");
    let p = parent(&env);
    let net = Network::macvlan("mv", Some(&p)).subnet("10.89.20.0/24", Some("10.89.20.1")).option("mode", "bridge");
    two_containers_talk(&env, &net, 20, "macvlan");
}

#[test]
fn ipvlan_l2_two_containers() {
    let env = env_or_skip!("ipvlan_l2_two_containers");
    let p = parent(&env);
    let probe = env.name("ivt");
    let o = env.host.ip(&["link", "add", &probe, "link", &p, "type", "ipvlan", "mode", "l2"]);
    if !o.ok() {
        skip!("ipvlan_l2_two_containers", "the kernel refuses ipvlan links: {}", o.stderr.trim());
    }
    env.host.ip_ok(&["link", "del", &probe]);
    let net = Network::ipvlan("iv", Some(&p)).subnet("10.89.21.0/24", Some("10.89.21.1")).option("mode", "l2");
    two_containers_talk(&env, &net, 21, "ipvlan");
}

#[test]
fn macvlan_parent_from_default_route() {
    let env = env_or_skip!("macvlan_parent_from_default_route");
    // No network_interface: netd takes the interface of the host's default route (the
    // harness's upstream-facing veth).
    let net = Network::macvlan("mvd", None).subnet("10.89.27.0/24", Some("10.89.27.1"));
    let a = env.container("a");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(27, 2)]));
    env.setup(&a, &oa);
    let link = env.link_details(&a.ns, "eth0").expect("eth0");
    assert_eq!(kind_of(&env, &a.ns, "eth0"), "macvlan");
    assert!(!link["link_netnsid"].is_null(), "parent is in the host namespace: {link}");
    // Its parent is the wan link: the upstream namespace sits on the same wire.
    env.run(&env.upstream, "ip", &["addr", "add", "10.89.27.1/24", "dev", &env.name("lan")]);
    env.expect_ping(&a.ns, "10.89.27.1");
    env.teardown(&a, &oa);
    assert_only_lo(&env, &a);
}

#[test]
fn macvlan_private_mode_blocks_neighbours() {
    let env = env_or_skip!("macvlan_private_mode_blocks_neighbours");
    let p = parent(&env);
    let net = Network::macvlan("mvp", Some(&p)).subnet("10.89.28.0/24", Some("10.89.28.1")).option("mode", "private");
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(28, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(28, 3)]));
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    assert!(env.ping(&a.ns, &ip4(28, 3)).is_err(), "private macvlans must not reach each other");
    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
}
