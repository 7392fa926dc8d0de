//! Bridge networks: container to container, masquerade to the outside, isolation,
//! internal networks, dual stack.

use rpod_integration::{env_or_skip, sock, Attach, Network, Opts, HOST_IP4, HOST_IP6, UPSTREAM_IP4, UPSTREAM_IP6};

use crate::{assert_only_lo, bridge4, ip4, kind_of, mac_of};

#[test]
fn bridge_container_to_container() {
    let env = env_or_skip!("bridge_container_to_container");
    let net = bridge4(&env, "n1", "br0", 1);
    let br = env.name("br0");
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(1, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(1, 3)]));

    let st = env.setup(&a, &oa);
    let iface = st["n1"].interfaces.get("eth0").expect("status block has eth0");
    assert_eq!(iface.subnets.len(), 1, "{st:?}");
    assert_eq!(iface.subnets[0].ipnet.to_string(), "10.89.1.2/24");
    assert_eq!(iface.subnets[0].gateway.map(|g| g.to_string()), Some(ip4(1, 1)));
    assert_eq!(iface.mac_address, mac_of(&env, &a.ns, "eth0"), "status MAC = the container's eth0 MAC");
    assert_eq!(kind_of(&env, &a.ns, "eth0"), "veth");
    assert_eq!(kind_of(&env, &env.host, &br), "bridge", "netd made the bridge {br}");
    env.setup(&b, &ob);

    env.expect_ping(&a.ns, &ip4(1, 3));
    env.expect_ping(&b.ns, &ip4(1, 2));
    env.expect_ping(&a.ns, &ip4(1, 1));
    env.httpd(&b.ns, 8000, "hello from b\n");
    assert_eq!(env.expect_wget(&a.ns, &sock(&ip4(1, 3), 8000)), "hello from b\n");
    env.serve(&a.ns, "a", &["tcp:8001", "udp:8001"]);
    let r = env.expect_tcp(&b.ns, &sock(&ip4(1, 2), 8001));
    assert_eq!((r.name.as_str(), r.peer_ip()), ("a", ip4(1, 3)), "no NAT on one bridge");
    let r = env.expect_udp(&b.ns, &sock(&ip4(1, 2), 8001));
    assert_eq!(r.peer_ip(), ip4(1, 3));

    env.teardown(&a, &oa);
    assert!(env.links(&env.host, Some("bridge")).contains(&br), "bridge stays while b is attached");
    env.expect_ping(&b.ns, &ip4(1, 1));
    env.teardown(&b, &ob);
    assert!(env.links(&env.host, Some("bridge")).is_empty(), "bridge removed with its last container");
    assert_only_lo(&env, &a);
    assert_only_lo(&env, &b);
}

#[test]
fn bridge_masquerade_to_upstream() {
    let env = env_or_skip!("bridge_masquerade_to_upstream");
    let net = bridge4(&env, "n2", "br0", 2);
    let a = env.container("a");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(2, 2)]));
    let up = env.serve(&env.upstream, "up", &["tcp:8080", "udp:5300"]);
    env.setup(&a, &oa);

    env.expect_ping(&a.ns, UPSTREAM_IP4);
    let r = env.expect_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080));
    assert_eq!(r.name, "up");
    assert_eq!(r.peer_ip(), HOST_IP4, "upstream must see the host's address (masquerade)");
    let r = env.expect_udp(&a.ns, &sock(UPSTREAM_IP4, 5300));
    assert_eq!(r.peer_ip(), HOST_IP4, "udp is masqueraded too");
    assert!(
        up.lines().iter().all(|l| !l.contains("peer=10.89.")),
        "the upstream server saw a container address: {:?}",
        up.lines()
    );
    env.teardown(&a, &oa);
}

#[test]
fn bridge_isolate_blocks_other_isolated_network() {
    let env = env_or_skip!("bridge_isolate_blocks_other_isolated_network");
    let na = bridge4(&env, "isoa", "bra", 3).isolate("true");
    let nb = bridge4(&env, "isob", "brb", 4).isolate("true");
    let nc = bridge4(&env, "open", "brc", 5);
    let (a, b, c) = (env.container("a"), env.container("b"), env.container("c"));
    let oa = Opts::new(&a).net(&na, Attach::eth0(&[&ip4(3, 2)]));
    let ob = Opts::new(&b).net(&nb, Attach::eth0(&[&ip4(4, 2)]));
    let oc = Opts::new(&c).net(&nc, Attach::eth0(&[&ip4(5, 2)]));
    for (ctr, o) in [(&a, &oa), (&b, &ob), (&c, &oc)] {
        env.setup(ctr, o);
        env.serve(&ctr.ns, &ctr.name, &["tcp:8000"]);
    }
    env.serve(&env.upstream, "up", &["tcp:8080"]);

    // Positive controls: isolated networks still reach the outside and a non-isolated network.
    assert_eq!(env.expect_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4);
    assert_eq!(env.expect_tcp(&b.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4);
    assert_eq!(env.expect_tcp(&a.ns, &sock(&ip4(5, 2), 8000)).name, "c");
    assert_eq!(env.expect_tcp(&c.ns, &sock(&ip4(3, 2), 8000)).name, "a");
    assert_eq!(env.expect_tcp(&c.ns, &sock(&ip4(4, 2), 8000)).name, "b");
    // Isolated to isolated: blocked both ways.
    env.expect_no_tcp(&a.ns, &sock(&ip4(4, 2), 8000));
    env.expect_no_tcp(&b.ns, &sock(&ip4(3, 2), 8000));
    assert!(env.ping(&a.ns, &ip4(4, 2)).is_err(), "ping a -> b must be blocked");

    for (ctr, o) in [(&a, &oa), (&b, &ob), (&c, &oc)] {
        env.teardown(ctr, o);
    }
}

#[test]
fn bridge_internal_cannot_reach_upstream() {
    let env = env_or_skip!("bridge_internal_cannot_reach_upstream");
    let net = bridge4(&env, "inner", "br0", 6).internal(true);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(6, 2)]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(6, 3)]));
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    env.serve(&b.ns, "b", &["tcp:8000"]);
    env.serve(&env.upstream, "up", &["tcp:8080"]);

    assert_eq!(env.expect_tcp(&a.ns, &sock(&ip4(6, 3), 8000)).name, "b", "same internal network works");
    // The upstream server is there: the host reaches it.
    assert_eq!(env.expect_tcp(&env.host, &sock(UPSTREAM_IP4, 8080)).name, "up");
    let routes = a.ns.ip_ok(&["route", "show", "default"]);
    assert!(routes.trim().is_empty(), "an internal network gives no default route, got: {routes}");
    env.expect_no_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080));
    env.expect_no_tcp(&a.ns, &sock(HOST_IP4, 22));
    assert!(env.ping(&a.ns, UPSTREAM_IP4).is_err(), "ping to upstream must fail");

    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
}

#[test]
fn bridge_ipv6_dual_stack() {
    let env = env_or_skip!("bridge_ipv6_dual_stack");
    let net = Network::bridge("dual", &env.name("br0"))
        .subnet("10.89.7.0/24", Some("10.89.7.1"))
        .subnet("fd10:89:7::/64", Some("fd10:89:7::1"));
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&["10.89.7.2", "fd10:89:7::2"]));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&["10.89.7.3", "fd10:89:7::3"]));
    let st = env.setup(&a, &oa);
    let nets: Vec<String> = st["dual"].interfaces["eth0"].subnets.iter().map(|s| s.ipnet.to_string()).collect();
    assert!(
        nets.contains(&"10.89.7.2/24".to_string()) && nets.contains(&"fd10:89:7::2/64".to_string()),
        "status block lists both addresses: {nets:?}"
    );
    env.setup(&b, &ob);
    env.serve(&b.ns, "b", &["tcp:8000", "udp:8000"]);
    env.serve(&env.upstream, "up", &["tcp:8080", "udp:5300"]);

    env.expect_ping(&a.ns, "fd10:89:7::3");
    let r = env.expect_tcp(&a.ns, &sock("fd10:89:7::3", 8000));
    assert_eq!((r.name.as_str(), r.peer_ip()), ("b", "fd10:89:7::2".to_string()));
    assert_eq!(env.expect_udp(&a.ns, &sock("fd10:89:7::3", 8000)).name, "b");
    assert_eq!(env.expect_tcp(&a.ns, &sock("10.89.7.3", 8000)).name, "b");

    env.expect_ping(&a.ns, UPSTREAM_IP6);
    let r = env.expect_tcp(&a.ns, &sock(UPSTREAM_IP6, 8080));
    assert_eq!(r.peer_ip(), HOST_IP6, "v6 to the outside is masqueraded");
    assert_eq!(env.expect_udp(&a.ns, &sock(UPSTREAM_IP6, 5300)).peer_ip(), HOST_IP6);
    assert_eq!(env.expect_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4);

    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
    assert!(env.links(&env.host, Some("bridge")).is_empty());
}
