//! Bad input: one clear error (`{"error": ...}` alone on stdout, exit 1), and the host and
//! container namespaces exactly as before (links, addresses, routes, nft ruleset).

use rpod_integration::{env_or_skip, netd_raw, sock, Attach, Container, Env, Opts, Port, HOST_IP4};
use serde_json::Value;

use crate::{bridge4, ip4};

/// Runs `netd setup <path>` with `stdin` and checks the error contract and that nothing
/// changed in the host namespace or in `c`'s namespace.
fn expect_rejected(env: &Env, c: Option<&Container>, path: &str, stdin: &[u8], ctx: &str) -> String {
    let host_before = env.host_snapshot();
    let ctr_before = c.map(|c| env.snapshot(&c.ns));
    let o = netd_raw(env, &["setup", path], Some(stdin));
    let msg = o.expect_error(ctx);
    eprintln!("[{}] {ctx}: netd said: {msg}", env.test);
    host_before.assert_same(&env.host_snapshot(), ctx);
    if let (Some(c), Some(before)) = (c, ctr_before) {
        before.assert_same(&env.snapshot(&c.ns), ctx);
    }
    msg
}

fn valid(env: &Env, c: &Container, n: u8) -> Value {
    Opts::new(c).net(&bridge4(env, "n", "br0", n), Attach::eth0(&[&ip4(n, 2)])).port(Port::tcp(8080, 80)).to_json()
}

fn reject_json(env: &Env, c: &Container, doc: &Value, ctx: &str) -> String {
    expect_rejected(env, Some(c), &c.path_str(), doc.to_string().as_bytes(), ctx)
}

#[test]
fn bad_input_malformed_json() {
    let env = env_or_skip!("bad_input_malformed_json");
    let a = env.container("a");
    let full = valid(&env, &a, 60).to_string();
    let truncated = &full[..full.len() / 2];
    expect_rejected(&env, Some(&a), &a.path_str(), truncated.as_bytes(), "truncated JSON");
    expect_rejected(&env, Some(&a), &a.path_str(), b"", "empty stdin");
    expect_rejected(&env, Some(&a), &a.path_str(), b"[1,2,3]", "a JSON array");
}

#[test]
fn bad_input_missing_required_field() {
    let env = env_or_skip!("bad_input_missing_required_field");
    let a = env.container("a");
    for pointer in ["/container_id", "/networks/n/interface_name", "/network_info/n/ipv6_enabled"] {
        let mut doc = valid(&env, &a, 61);
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        doc.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|o| o.remove(key))
            .unwrap_or_else(|| panic!("{pointer} is in the document"));
        reject_json(&env, &a, &doc, &format!("without {pointer}"));
    }
}

#[test]
fn bad_input_invalid_cidr() {
    let env = env_or_skip!("bad_input_invalid_cidr");
    let a = env.container("a");
    for bad in ["10.89.62.0/33", "10.89.620.0/24", "not-a-subnet"] {
        let mut doc = valid(&env, &a, 62);
        doc["network_info"]["n"]["subnets"][0]["subnet"] = Value::from(bad);
        reject_json(&env, &a, &doc, &format!("subnet {bad}"));
    }
}

#[test]
fn bad_input_ip_outside_subnet() {
    let env = env_or_skip!("bad_input_ip_outside_subnet");
    let a = env.container("a");
    let mut doc = valid(&env, &a, 63);
    doc["networks"]["n"]["static_ips"] = serde_json::json!(["10.89.99.2"]);
    reject_json(&env, &a, &doc, "static IP 10.89.99.2 outside 10.89.63.0/24");
}

#[test]
fn bad_input_interface_name_taken() {
    let env = env_or_skip!("bad_input_interface_name_taken");
    let a = env.container("a");
    a.ns.ip_ok(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    let doc = valid(&env, &a, 64);
    reject_json(&env, &a, &doc, "eth0 already exists in the container");
    // The same container can still join with a free name.
    let mut ok = doc.clone();
    ok["networks"]["n"]["interface_name"] = Value::from("eth1");
    let o = env.netd(&["setup", &a.path_str()], Some(&ok));
    o.expect_ok("setup with a free interface name");
    env.netd(&["teardown", &a.path_str()], Some(&ok)).expect_ok("teardown");
}

#[test]
fn bad_input_netns_not_a_namespace() {
    let env = env_or_skip!("bad_input_netns_not_a_namespace");
    let a = env.container("a");
    let doc = valid(&env, &a, 65);
    let file = env.dir().join("not-a-netns");
    std::fs::write(&file, "plain file\n").expect("write a plain file");
    let path = file.to_string_lossy().into_owned();
    expect_rejected(&env, None, &path, doc.to_string().as_bytes(), "a regular file as netns");
    let missing = env.dir().join("no-such-netns").to_string_lossy().into_owned();
    expect_rejected(&env, None, &missing, doc.to_string().as_bytes(), "a missing netns path");
}

#[test]
fn bad_input_bridge_name_is_another_kind() {
    let env = env_or_skip!("bad_input_bridge_name_is_another_kind");
    let a = env.container("a");
    let br = env.name("br0");
    env.host.ip_ok(&["link", "add", &br, "type", "veth", "peer", "name", &env.name("br0p")]);
    let doc = valid(&env, &a, 66);
    let msg = reject_json(&env, &a, &doc, "bridge name held by a veth");
    assert!(msg.contains(&br), "the error names the link: {msg}");
}

#[test]
fn bad_input_host_port_already_published() {
    let env = env_or_skip!("bad_input_host_port_already_published");
    let (a, b) = (env.container("a"), env.container("b"));
    let net = bridge4(&env, "n", "br0", 67);
    let oa = Opts::new(&a).net(&net, Attach::eth0(&[&ip4(67, 2)])).port(Port::tcp(8080, 8000));
    env.setup(&a, &oa);
    env.serve(&a.ns, "a", &["tcp:8000"]);
    let ob = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(67, 3)])).port(Port::tcp(8080, 8000));
    reject_json(&env, &b, &ob.to_json(), "host port 8080/tcp already published by a");
    // The first container keeps its port.
    assert_eq!(env.expect_tcp(&env.upstream, &sock(HOST_IP4, 8080)).name, "a");
    // Overlapping a range counts too.
    let oc = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(67, 3)])).port(Port::tcp(8078, 8000).range(5));
    reject_json(&env, &b, &oc.to_json(), "range 8078-8082/tcp overlaps 8080");
    // The same number in udp is another port.
    let od = Opts::new(&b).net(&net, Attach::eth0(&[&ip4(67, 3)])).port(Port::udp(8080, 8000));
    env.setup(&b, &od);
    env.teardown(&b, &od);
    env.teardown(&a, &oa);
}
