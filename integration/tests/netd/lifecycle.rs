//! Teardown leaves nothing; many containers at once.

use std::time::Instant;

use rpod_integration::{env_or_skip, sock, Attach, Network, Opts, Port, HOST_IP4, UPSTREAM_IP4};

use crate::{assert_only_lo, bridge4, ip4};

#[test]
fn lifecycle_teardown_leaves_nothing() {
    let env = env_or_skip!("lifecycle_teardown_leaves_nothing");
    let before = env.host_snapshot();
    let n1 = Network::bridge("full", &env.name("br1"))
        .subnet("10.89.40.0/24", Some("10.89.40.1"))
        .subnet("fd10:89:40::/64", Some("fd10:89:40::1"))
        .isolate("true");
    let n2 = bridge4(&env, "second", "br2", 41).isolate("true");
    let n3 = bridge4(&env, "inside", "br3", 42).internal(true);
    let (a, b, c) = (env.container("a"), env.container("b"), env.container("c"));
    let oa = Opts::new(&a)
        .net(&n1, Attach::eth0(&["10.89.40.2", "fd10:89:40::2"]))
        .port(Port::tcp(8080, 8000))
        .port(Port::udp(8053, 5300));
    let ob = Opts::new(&b)
        .net(&n1, Attach::eth0(&["10.89.40.3", "fd10:89:40::3"]))
        .port(Port::tcp(9000, 7000).range(2).host_ip(HOST_IP4));
    let oc = Opts::new(&c)
        .net(&n2, Attach::eth0(&[&ip4(41, 2)]))
        .net(&n3, Attach::new("eth1", &[&ip4(42, 2)]))
        .port(Port::tcp(8090, 8000));
    env.setup(&a, &oa);
    env.setup(&b, &ob);
    let st = env.setup(&c, &oc);
    assert!(st["second"].interfaces.contains_key("eth0") && st["inside"].interfaces.contains_key("eth1"));
    env.serve(&a.ns, "a", &["tcp:8000"]);
    env.serve(&c.ns, "c", &["tcp:8000"]);
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a");
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8090)).name, "c");
    assert!(env.nft_table_exists(), "netd keeps its rules in `table inet netd`");

    env.teardown(&a, &oa);
    env.teardown(&b, &ob);
    env.teardown(&c, &oc);

    assert!(env.links(&env.host, Some("bridge")).is_empty(), "no bridge left");
    assert!(env.links(&env.host, Some("veth")) == vec![env.wan()], "no veth left but the harness's own");
    assert!(!env.nft_table_exists(), "no `table inet netd` left:\n{}", env.nft_ruleset());
    for ctr in [&a, &b, &c] {
        assert_only_lo(&env, ctr);
    }
    before.assert_same(&env.host_snapshot(), "after the last teardown");
}

#[test]
fn lifecycle_parallel_20_containers() {
    const N: usize = 20;
    let env = env_or_skip!("lifecycle_parallel_20_containers");
    let before = env.host_snapshot();
    let net = bridge4(&env, "crowd", "br0", 50);
    env.serve(&env.upstream, "up", &["tcp:8080"]);
    let ctrs: Vec<_> = (0..N).map(|i| env.container(&format!("c{i}"))).collect();
    let opts: Vec<Opts> = ctrs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Opts::new(c).net(&net, Attach::eth0(&[&ip4(50, 10 + i as u8)])).port(Port::tcp(10000 + i as u16, 8000))
        })
        .collect();
    for c in &ctrs {
        env.serve(&c.ns, &c.name, &["tcp:8000"]);
    }

    let t = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ctrs.iter().zip(&opts).map(|(c, o)| s.spawn(|| env.try_setup(c, o))).collect();
        hs.into_iter().map(|h| h.join().expect("setup thread")).collect()
    });
    eprintln!("[lifecycle_parallel_20_containers] {N} parallel setups: {:?}", t.elapsed());
    for (c, o) in ctrs.iter().zip(&outs) {
        o.expect_ok(&format!("parallel setup of {}", c.name));
        o.status();
    }

    std::thread::scope(|s| {
        for (i, c) in ctrs.iter().enumerate() {
            let env = &env;
            s.spawn(move || {
                let r = env.expect_tcp(&c.ns, &sock(UPSTREAM_IP4, 8080));
                assert_eq!(r.peer_ip(), HOST_IP4, "{} reaches the outside, masqueraded", c.name);
                let r = env.expect_tcp(&env.upstream, &sock(HOST_IP4, 10000 + i as u16));
                assert_eq!(r.name, c.name, "host port {} reaches {}", 10000 + i, c.name);
                let peer = ip4(50, 10 + ((i + 1) % N) as u8);
                env.expect_ping(&c.ns, &peer);
            });
        }
    });

    let t = Instant::now();
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ctrs.iter().zip(&opts).map(|(c, o)| s.spawn(|| env.try_teardown(c, o))).collect();
        hs.into_iter().map(|h| h.join().expect("teardown thread")).collect()
    });
    eprintln!("[lifecycle_parallel_20_containers] {N} parallel teardowns: {:?}", t.elapsed());
    for (c, o) in ctrs.iter().zip(&outs) {
        o.expect_ok(&format!("parallel teardown of {}", c.name));
    }
    for c in &ctrs {
        assert_only_lo(&env, c);
    }
    before.assert_same(&env.host_snapshot(), "after 20 parallel teardowns");
}
