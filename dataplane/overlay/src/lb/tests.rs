use super::*;
use crate::lb::reply::tcp_rst_for;
use crate::lb::testutil::{assert_checksums, sa, tcp, udp};
use proptest::prelude::*;

const VIP: [u8; 4] = [10, 0, 0, 100];
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn vip() -> Ipv4Addr {
    Ipv4Addr::from(VIP)
}

fn client(port: u16) -> SocketAddrV4 {
    sa([10, 0, 0, 2], port)
}

fn backend(n: u8) -> SocketAddrV4 {
    sa([10, 0, 1, n], 8080)
}

fn backends(n: u8, state: BackendState) -> Vec<Backend> {
    (1..=n)
        .map(|i| Backend {
            addr: backend(i),
            state,
        })
        .collect()
}

fn balancer(n: u8) -> Balancer {
    let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
    lb.set_service(vip(), 80, Proto::Tcp, &backends(n, BackendState::Active));
    lb.set_service(vip(), 53, Proto::Udp, &backends(n, BackendState::Active));
    lb
}

fn out(lb: &mut Balancer, now: Duration, port: u16, flags: u8) -> (LbVerdict, Vec<u8>) {
    let mut p = tcp(client(port), sa(VIP, 80), flags, b"");
    (lb.handle_outbound(now, &mut p), p)
}

fn forwarded(v: LbVerdict) -> SocketAddrV4 {
    match v {
        LbVerdict::Forward { backend } => backend,
        other => panic!("expected Forward, got {other:?}"),
    }
}

fn set_state(lb: &mut Balancer, n: u8, who: SocketAddrV4, state: BackendState) -> bool {
    let mut bs = backends(n, BackendState::Active);
    bs.iter_mut()
        .filter(|b| b.addr == who)
        .for_each(|b| b.state = state);
    lb.set_service(vip(), 80, Proto::Tcp, &bs)
}

#[test]
fn other_traffic_passes_untouched() {
    let mut lb = balancer(3);
    for mut p in [
        tcp(client(1), sa([10, 0, 0, 9], 80), SYN, b""),
        tcp(client(1), sa(VIP, 81), SYN, b""),
        udp(client(1), sa(VIP, 80), b"x"),
        vec![0x60; 40],
        vec![0x45; 3],
    ] {
        let before = p.clone();
        assert_eq!(lb.handle_outbound(s(0), &mut p), LbVerdict::NotForVip);
        assert_eq!(p, before);
        assert_eq!(lb.handle_reply(s(0), &mut p), ReplyVerdict::NotTracked);
    }
    let mut icmp = tcp(client(1), sa(VIP, 80), SYN, b"");
    icmp[9] = 1;
    assert_eq!(lb.handle_outbound(s(0), &mut icmp), LbVerdict::NotForVip);
    assert!(lb.conntrack().is_empty());
}

#[test]
fn a_tcp_flow_is_pinned_and_replies_come_from_the_vip() {
    let mut lb = balancer(5);
    let (v, p) = out(&mut lb, s(0), 40000, SYN);
    let b = forwarded(v);
    assert_checksums(&p);
    let np = Ipv4L4::new_checked(&p[..]).unwrap();
    assert_eq!((np.src(), np.dst()), (client(40000), b));
    assert_eq!(
        Some(b),
        lb.pick(&FlowKey {
            proto: Proto::Tcp,
            src: client(40000),
            dst: sa(VIP, 80)
        })
    );

    let mut r = tcp(b, client(40000), SYN_ACK, b"");
    assert_eq!(
        lb.handle_reply(s(0), &mut r),
        ReplyVerdict::Translated {
            vip: sa(VIP, 80),
            client: client(40000)
        }
    );
    assert_checksums(&r);
    assert_eq!(Ipv4L4::new_checked(&r[..]).unwrap().src(), sa(VIP, 80));
    for t in 1..20 {
        assert_eq!(forwarded(out(&mut lb, s(t), 40000, ACK).0), b);
    }
    // Flows spread over the backends.
    let mut seen = std::collections::HashSet::new();
    for port in 1000..1100 {
        seen.insert(forwarded(out(&mut lb, s(30), port, SYN).0));
    }
    assert_eq!(seen.len(), 5);
}

#[test]
fn udp_flows_are_balanced_and_reversed() {
    let mut lb = balancer(2);
    let mut q = udp(client(5353), sa(VIP, 53), b"query");
    let b = forwarded(lb.handle_outbound(s(0), &mut q));
    assert_checksums(&q);
    let mut a = udp(b, client(5353), b"answer");
    assert!(matches!(
        lb.handle_reply(s(1), &mut a),
        ReplyVerdict::Translated { .. }
    ));
    assert_checksums(&a);
    // A reply after the flow timed out is not translated.
    let mut late = udp(b, client(5353), b"late");
    assert_eq!(lb.handle_reply(s(200), &mut late), ReplyVerdict::NotTracked);
}

#[test]
fn no_backend_is_reported_with_the_packet_untouched() {
    let mut lb = balancer(0);
    let (v, p) = out(&mut lb, s(0), 1, SYN);
    assert_eq!(v, LbVerdict::NoBackend);
    assert_eq!(p, tcp(client(1), sa(VIP, 80), SYN, b""));
    assert!(tcp_rst_for(&p).is_some());
    // Only draining backends: still none for new flows.
    lb.set_service(vip(), 80, Proto::Tcp, &backends(3, BackendState::Draining));
    assert_eq!(out(&mut lb, s(0), 2, SYN).0, LbVerdict::NoBackend);
}

#[test]
fn draining_keeps_old_flows_and_takes_no_new_ones() {
    let mut lb = balancer(4);
    let b = forwarded(out(&mut lb, s(0), 40000, SYN).0);
    assert!(set_state(&mut lb, 4, b, BackendState::Draining));
    assert_eq!(forwarded(out(&mut lb, s(1), 40000, ACK).0), b);
    for port in 1000..1400 {
        assert_ne!(forwarded(out(&mut lb, s(2), port, SYN).0), b);
    }
    // Same active set again: no rebuild.
    assert!(!set_state(&mut lb, 4, b, BackendState::Draining));
}

#[test]
fn dead_backends_reset_tcp_and_rebalance_udp() {
    let mut lb = balancer(4);
    let b = forwarded(out(&mut lb, s(0), 40000, SYN).0);
    set_state(&mut lb, 4, b, BackendState::Dead);
    let (v, p) = out(&mut lb, s(1), 40000, ACK);
    assert_eq!(v, LbVerdict::Reset);
    assert_eq!(p, tcp(client(40000), sa(VIP, 80), ACK, b""), "untouched");
    let rst = tcp_rst_for(&p).unwrap();
    assert_eq!(Ipv4L4::new_checked(&rst[..]).unwrap().src(), sa(VIP, 80));
    // The entry is gone: a retransmission goes to a live backend, which resets it.
    assert_ne!(forwarded(out(&mut lb, s(2), 40000, ACK).0), b);

    let mut q = udp(client(5353), sa(VIP, 53), b"q");
    let ub = forwarded(lb.handle_outbound(s(0), &mut q));
    let others: Vec<_> = backends(4, BackendState::Active)
        .into_iter()
        .filter(|x| x.addr != ub)
        .collect();
    lb.set_service(vip(), 53, Proto::Udp, &others); // removed from the set
    let mut q = udp(client(5353), sa(VIP, 53), b"q");
    assert_ne!(forwarded(lb.handle_outbound(s(1), &mut q)), ub);
}

#[test]
fn a_syn_after_close_is_a_new_flow() {
    let mut lb = balancer(4);
    let b = forwarded(out(&mut lb, s(0), 40000, SYN).0);
    let mut r = tcp(b, client(40000), SYN_ACK, b"");
    lb.handle_reply(s(0), &mut r);
    out(&mut lb, s(0), 40000, FIN_ACK);
    let mut r = tcp(b, client(40000), FIN_ACK, b"");
    lb.handle_reply(s(0), &mut r);
    // TIME_WAIT; the client reuses the port. Maglev may well pick the same
    // backend; what matters is a fresh entry in SYN_SENT.
    out(&mut lb, s(1), 40000, SYN);
    let key = FlowKey {
        proto: Proto::Tcp,
        src: client(40000),
        dst: sa(VIP, 80),
    };
    let (_, e) = lb.conntrack().get(s(1), &key).unwrap();
    assert_eq!(
        e.state,
        conntrack::FlowState::Tcp(conntrack::TcpState::SynSent)
    );
}

#[test]
fn drops_are_typed() {
    let mut lb = Balancer::new(BalancerConfig {
        conntrack: ConntrackConfig {
            max_entries: 1,
            ..ConntrackConfig::default()
        },
        ..BalancerConfig::default()
    })
    .unwrap();
    lb.set_service(vip(), 80, Proto::Tcp, &backends(1, BackendState::Active));
    lb.set_service(vip(), 81, Proto::Tcp, &backends(1, BackendState::Active));
    forwarded(out(&mut lb, s(0), 1, SYN).0);
    assert_eq!(
        out(&mut lb, s(0), 2, SYN).0,
        LbVerdict::Drop(DropReason::ConntrackFull)
    );

    let mut lb = balancer(1);
    lb.set_service(vip(), 81, Proto::Tcp, &backends(1, BackendState::Active));
    forwarded(out(&mut lb, s(0), 1, SYN).0);
    let mut p = tcp(client(1), sa(VIP, 81), SYN, b"");
    assert_eq!(
        lb.handle_outbound(s(0), &mut p),
        LbVerdict::Drop(DropReason::ConntrackClash)
    );

    let mut frag = tcp(client(1), sa(VIP, 80), SYN, b"");
    frag[7] = 8;
    assert_eq!(
        lb.handle_outbound(s(0), &mut frag),
        LbVerdict::Drop(DropReason::VipFragment)
    );
    let mut short = tcp(client(1), sa(VIP, 80), SYN, b"");
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(
        lb.handle_outbound(s(0), &mut short),
        LbVerdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn an_rst_for_an_unknown_flow_is_passed_on_untracked() {
    let mut lb = balancer(2);
    forwarded(out(&mut lb, s(0), 7, 0x04).0);
    assert!(lb.conntrack().is_empty());
}

#[test]
fn removing_a_service_forgets_its_flows() {
    let mut lb = balancer(2);
    forwarded(out(&mut lb, s(0), 7, SYN).0);
    assert!(lb.remove_service(vip(), 80, Proto::Tcp));
    assert!(!lb.remove_service(vip(), 80, Proto::Tcp));
    assert!(lb.conntrack().is_empty());
    assert!(lb.is_vip(vip()), "the UDP service remains");
    assert!(lb.remove_service(vip(), 53, Proto::Udp));
    assert!(!lb.is_vip(vip()));
    assert_eq!(out(&mut lb, s(0), 7, SYN).0, LbVerdict::NotForVip);
}

#[test]
fn partial_checksums_are_carried() {
    let mut lb = balancer(2);
    let mut p = tcp(client(1), sa(VIP, 80), SYN, b"");
    p[36..38].copy_from_slice(&[0x12, 0x34]);
    let v = lb.handle_outbound_with(s(0), &mut p, L4Checksum::Partial);
    let b = forwarded(v);
    // Partial: only the address delta is added (ports are summed later).
    let old = crate::offload::checksum_add(0x1234, &[])
        + !u16::from_be_bytes([VIP[0], VIP[1]]) as u64
        + !u16::from_be_bytes([VIP[2], VIP[3]]) as u64
        + crate::offload::checksum_add(0, &b.ip().octets());
    assert_eq!(
        u16::from_be_bytes([p[36], p[37]]),
        crate::offload::checksum_fold(old)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Two nodes given the same backends in any order pick the same backend
    /// for every flow.
    #[test]
    fn nodes_agree(order in Just((1..=20u8).collect::<Vec<_>>()).prop_shuffle(), ports in proptest::collection::vec(any::<u16>(), 50)) {
        let mut a = Balancer::new(BalancerConfig::default()).unwrap();
        let mut b = Balancer::new(BalancerConfig::default()).unwrap();
        a.set_service(vip(), 80, Proto::Tcp, &backends(20, BackendState::Active));
        let shuffled: Vec<_> = order.iter().map(|&i| Backend { addr: backend(i), state: BackendState::Active }).collect();
        b.set_service(vip(), 80, Proto::Tcp, &shuffled);
        for port in ports {
            let k = FlowKey { proto: Proto::Tcp, src: client(port), dst: sa(VIP, 80) };
            prop_assert_eq!(a.pick(&k), b.pick(&k));
        }
    }

    /// Under random backend state changes and traffic: a new flow only ever
    /// goes to an active backend; a tracked flow keeps its backend while that
    /// backend is active or draining, and is reset once it is dead or gone.
    #[test]
    fn lifecycle_invariants(steps in proptest::collection::vec((0u8..3, 0u8..6, 0u16..30), 1..120)) {
        let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
        let mut states = [BackendState::Active; 6];
        let set = |lb: &mut Balancer, states: &[BackendState; 6]| {
            let bs: Vec<_> = states.iter().enumerate().map(|(i, &state)| Backend { addr: backend(i as u8 + 1), state }).collect();
            lb.set_service(vip(), 80, Proto::Tcp, &bs);
        };
        set(&mut lb, &states);
        let mut pinned: HashMap<u16, SocketAddrV4> = HashMap::new();
        for (t, (op, who, port)) in steps.into_iter().enumerate() {
            let now = s(t as u64);
            if op == 0 {
                states[who as usize] = [BackendState::Active, BackendState::Draining, BackendState::Dead][usize::from(port % 3)];
                set(&mut lb, &states);
                continue;
            }
            let state_of = |a: SocketAddrV4| states[usize::from(a.ip().octets()[3]) - 1];
            let flags = if op == 1 { SYN } else { ACK };
            let (v, _) = out(&mut lb, now, port, flags);
            match (pinned.get(&port).copied(), v) {
                (Some(b), LbVerdict::Forward { backend }) if state_of(b) != BackendState::Dead => {
                    prop_assert_eq!(backend, b);
                }
                (Some(b), LbVerdict::Reset) => {
                    prop_assert_eq!(state_of(b), BackendState::Dead);
                    pinned.remove(&port);
                }
                (_, LbVerdict::Forward { backend }) => {
                    prop_assert_eq!(state_of(backend), BackendState::Active);
                    pinned.insert(port, backend);
                }
                (_, LbVerdict::NoBackend) => {
                    prop_assert!(!states.contains(&BackendState::Active));
                    pinned.remove(&port);
                }
                (p, v) => prop_assert!(false, "port {} pinned {:?}: {:?}", port, p, v),
            }
        }
    }
}

#[test]
fn an_any_port_service_keeps_the_port_and_an_exact_port_wins() {
    let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
    let any = |n: u8| Backend {
        addr: sa([10, 0, 1, n], ANY_PORT),
        state: BackendState::Active,
    };
    lb.set_service(vip(), ANY_PORT, Proto::Tcp, &[any(1)]);
    lb.set_service(vip(), 80, Proto::Tcp, &backends(1, BackendState::Active));
    // Port 22 goes to the any-port service, its number kept.
    let mut p = tcp(client(40000), sa(VIP, 22), SYN, b"");
    assert_eq!(
        forwarded(lb.handle_outbound(s(0), &mut p)),
        sa([10, 0, 1, 1], 22)
    );
    assert_checksums(&p);
    // Port 80 has a service of its own (target port 8080).
    let (v, _) = out(&mut lb, s(0), 40001, SYN);
    assert_eq!(forwarded(v), backend(1));
    // Replies of the any-port flow come back from VIP:22.
    let mut r = tcp(sa([10, 0, 1, 1], 22), client(40000), SYN_ACK, b"");
    assert_eq!(
        lb.handle_reply(s(0), &mut r),
        ReplyVerdict::Translated {
            vip: sa(VIP, 22),
            client: client(40000)
        }
    );
    // UDP has no service: untouched.
    let mut u = udp(client(1), sa(VIP, 22), b"x");
    assert_eq!(lb.handle_outbound(s(0), &mut u), LbVerdict::NotForVip);

    // Removing the any-port service forgets its flows, not port 80's.
    assert_eq!(lb.conntrack().len(), 2);
    assert!(lb.remove_service(vip(), ANY_PORT, Proto::Tcp));
    assert_eq!(lb.conntrack().len(), 1);
    assert!(lb.is_vip(vip()));
}

#[test]
fn a_draining_any_port_backend_keeps_its_flows() {
    let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
    let b = |state| Backend {
        addr: sa([10, 0, 1, 1], ANY_PORT),
        state,
    };
    lb.set_service(vip(), ANY_PORT, Proto::Tcp, &[b(BackendState::Active)]);
    let mut p = tcp(client(40000), sa(VIP, 443), SYN, b"");
    assert_eq!(
        forwarded(lb.handle_outbound(s(0), &mut p)),
        sa([10, 0, 1, 1], 443)
    );
    lb.set_service(vip(), ANY_PORT, Proto::Tcp, &[b(BackendState::Draining)]);
    let mut p = tcp(client(40000), sa(VIP, 443), ACK, b"x");
    assert_eq!(
        forwarded(lb.handle_outbound(s(1), &mut p)),
        sa([10, 0, 1, 1], 443)
    );
    let mut p = tcp(client(40001), sa(VIP, 443), SYN, b"");
    assert_eq!(lb.handle_outbound(s(1), &mut p), LbVerdict::NoBackend);
    lb.set_service(vip(), ANY_PORT, Proto::Tcp, &[]);
    let mut p = tcp(client(40000), sa(VIP, 443), ACK, b"x");
    assert_eq!(lb.handle_outbound(s(2), &mut p), LbVerdict::Reset);
}
