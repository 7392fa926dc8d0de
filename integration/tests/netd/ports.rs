//! Published ports: TCP, UDP, ranges, host_ip, and firewall-reload.

use rpod_integration::{env_or_skip, sock, Attach, Opts, Port, HOST_IP4, UPSTREAM_IP4};

use crate::{bridge4, ip4};

#[test]
fn ports_published_tcp() {
    let env = env_or_skip!("ports_published_tcp");
    let net = bridge4(&env, "web", "br0", 10);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(10, 2)])).port(Port::tcp(8080, 8000));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(10, 3)]));
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    env.serve(&a.ns, "a", &["tcp:8000"]);

    let r = env.expect_tcp(&env.host, &sock("127.0.0.1", 8080));
    assert_eq!((r.name.as_str(), r.local_port()), ("a", 8000), "host via 127.0.0.1");
    assert_eq!(env.expect_tcp(&env.host, &sock(HOST_IP4, 8080)).name, "a", "host via its own address");
    assert_eq!(env.expect_tcp(&b.ns, &sock(HOST_IP4, 8080)).name, "a", "another container");
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a", "the outside world");
    // Control: a port that is not published is not forwarded.
    env.expect_no_tcp(&env.upstream, &sock(HOST_IP4, 8081));

    env.teardown(&a, &oa);
    env.expect_no_tcp(&env.upstream, &sock(HOST_IP4, 8080));
    env.teardown(&b, &ob);
}

#[test]
fn ports_published_udp() {
    let env = env_or_skip!("ports_published_udp");
    let net = bridge4(&env, "dnsish", "br0", 11);
    let (a, b) = (env.container("a"), env.container("b"));
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(11, 2)])).port(Port::udp(8053, 5300));
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(11, 3)]));
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    env.serve(&a.ns, "a", &["udp:5300", "tcp:5300"]);

    let r = env.expect_udp(&env.host, &sock("127.0.0.1", 8053));
    assert_eq!((r.name.as_str(), r.local_port()), ("a", 5300));
    assert_eq!(env.expect_udp(&env.host, &sock(HOST_IP4, 8053)).name, "a");
    assert_eq!(env.expect_udp(&b.ns, &sock(HOST_IP4, 8053)).name, "a");
    assert_eq!(env.expect_udp(&env.upstream, &sock(HOST_IP4, 8053)).name, "a");
    // Only udp was published.
    env.expect_no_tcp(&env.upstream, &sock(HOST_IP4, 8053));

    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
}

#[test]
fn ports_range() {
    let env = env_or_skip!("ports_range");
    let net = bridge4(&env, "rng", "br0", 12);
    let a = env.container("a");
    let oa = Opts::new(&a)
        .net(&net, Attach::eth0(&[&ip4(12, 2)]))
        .port(Port::tcp(9000, 7000).range(3))
        .port(Port::udp(9100, 7100).range(2));
    env.setup(&a, &oa);
    env.serve(&a.ns, "a", &["tcp:7000", "tcp:7001", "tcp:7002", "tcp:7003", "udp:7100", "udp:7101"]);

    for i in 0..3u16 {
        let r = env.expect_tcp(&env.upstream, &sock(HOST_IP4, 9000 + i));
        assert_eq!(r.local_port(), 7000 + i, "host port {} maps to container port {}", 9000 + i, 7000 + i);
    }
    assert_eq!(env.expect_tcp(&env.host, &sock("127.0.0.1", 9001)).local_port(), 7001);
    for i in 0..2u16 {
        assert_eq!(env.expect_udp(&env.upstream, &sock(HOST_IP4, 9100 + i)).local_port(), 7100 + i);
    }
    // Just past the range: not forwarded (the container does listen on 7003).
    env.expect_no_tcp(&env.upstream, &sock(HOST_IP4, 9003));

    env.teardown(&a, &oa);
}

#[test]
fn ports_host_ip_binding() {
    let env = env_or_skip!("ports_host_ip_binding");
    let second = "198.18.0.3";
    env.host.ip_ok(&["addr", "add", &format!("{second}/24"), "dev", &env.wan()]);
    let net = bridge4(&env, "bound", "br0", 13);
    let a = env.container("a");
    let oa = Opts::new(&a)
        .net(&net, Attach::eth0(&[&ip4(13, 2)]))
        .port(Port::tcp(8080, 8000).host_ip(HOST_IP4))
        .port(Port::tcp(8081, 8000));
    env.setup(&a, &oa);
    env.serve(&a.ns, "a", &["tcp:8000"]);

    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a", "bound address");
    // Control: the second address does forward a port published on all addresses.
    assert_eq!(env.expect_tcp(&env.upstream, &sock(second, 8081)).name, "a");
    env.expect_no_tcp(&env.upstream, &sock(second, 8080));
    env.expect_no_tcp(&env.host, &sock("127.0.0.1", 8080));

    env.teardown(&a, &oa);
}

#[test]
fn ports_firewall_reload_after_flush() {
    let env = env_or_skip!("ports_firewall_reload_after_flush");
    let net = bridge4(&env, "rl", "br0", 14);
    let a = env.container("a");
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(14, 2)])).port(Port::tcp(8080, 8000));
    env.setup(&a, &oa);
    env.serve(&a.ns, "a", &["tcp:8000"]);
    env.serve(&env.upstream, "up", &["tcp:8080"]);
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a");
    assert_eq!(env.expect_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4);

    let container_before = env.snapshot(&a.ns);
    let host_before = env.host_snapshot();
    env.host.run("nft", &["flush", "ruleset"]).expect_ok("nft flush ruleset");
    assert!(env.nft_ruleset().trim().is_empty());
    env.expect_no_tcp(&env.upstream, &sock(HOST_IP4, 8080));

    let o = env.netd(&["firewall-reload"], None);
    o.expect_ok("firewall-reload");
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a", "published port is back");
    assert_eq!(env.expect_tcp(&env.host, &sock("127.0.0.1", 8080)).name, "a");
    assert_eq!(env.expect_tcp(&a.ns, &sock(UPSTREAM_IP4, 8080)).peer_ip(), HOST_IP4, "masquerade is back");
    container_before.assert_same(&env.snapshot(&a.ns), "firewall-reload must not touch the container");
    host_before.assert_same(&env.host_snapshot(), "firewall-reload restores exactly the ruleset that was flushed");

    // A second reload on an intact ruleset changes nothing either.
    env.netd(&["firewall-reload"], None).expect_ok("second firewall-reload");
    host_before.assert_same(&env.host_snapshot(), "firewall-reload twice");

    env.teardown(&a, &oa);
    assert!(!env.nft_table_exists(), "the netd table goes with the last network");
}
