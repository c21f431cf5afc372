use super::*;
use crate::lb::testutil::sa;
use proptest::prelude::*;

const SYN: Seen = Seen::Tcp(TcpFlags(TcpFlags::SYN));
const SYN_ACK: Seen = Seen::Tcp(TcpFlags(TcpFlags::SYN | TcpFlags::ACK));
const ACK: Seen = Seen::Tcp(TcpFlags(TcpFlags::ACK));
const FIN: Seen = Seen::Tcp(TcpFlags(TcpFlags::FIN | TcpFlags::ACK));
const RST: Seen = Seen::Tcp(TcpFlags(TcpFlags::RST));

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn flow(port: u16, proto: Proto) -> FlowKey {
    FlowKey {
        proto,
        src: sa([10, 0, 0, 2], port),
        dst: sa([10, 0, 0, 100], 80),
    }
}

const BACKEND: SocketAddrV4 = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 1, 7), 8080);

fn table(max: usize) -> Conntrack {
    Conntrack::new(ConntrackConfig {
        max_entries: max,
        ..ConntrackConfig::default()
    })
    .unwrap()
}

fn state(ct: &Conntrack, now: Duration, k: &FlowKey) -> Option<FlowState> {
    ct.get(now, k).map(|(_, e)| e.state)
}

#[test]
fn config_is_validated_by_field() {
    let bad = ConntrackConfig {
        udp_timeout: Duration::ZERO,
        ..ConntrackConfig::default()
    };
    assert_eq!(
        Conntrack::new(bad).unwrap_err(),
        ConfigError::ZeroTimeout("udp_timeout")
    );
    assert!(ConfigError::ZeroTimeout("udp_timeout")
        .to_string()
        .contains("udp_timeout"));
    let bad = ConntrackConfig {
        max_entries: 0,
        ..ConntrackConfig::default()
    };
    assert_eq!(Conntrack::new(bad).unwrap_err(), ConfigError::ZeroEntries);
}

#[test]
fn tcp_handshake_and_close() {
    let mut ct = table(10);
    let k = flow(40000, Proto::Tcp);
    let e = ct.insert(s(0), k, BACKEND, SYN).unwrap();
    assert_eq!(e.state, FlowState::Tcp(TcpState::SynSent));
    assert_eq!(e.deadline(), s(120));
    let r = e.reply_key();
    assert_eq!(r.src, BACKEND);
    let (dir, e) = ct.observe(s(1), &r, SYN_ACK).unwrap();
    assert_eq!(
        (dir, e.state),
        (Direction::Reply, FlowState::Tcp(TcpState::SynRecv))
    );
    let (dir, e) = ct.observe(s(2), &k, ACK).unwrap();
    assert_eq!(
        (dir, e.state),
        (Direction::Original, FlowState::Tcp(TcpState::Established))
    );
    assert_eq!(e.deadline(), s(2) + s(5 * 24 * 3600));
    ct.observe(s(3), &k, FIN).unwrap();
    assert_eq!(
        state(&ct, s(3), &k),
        Some(FlowState::Tcp(TcpState::FinWait))
    );
    ct.observe(s(4), &r, FIN).unwrap();
    assert_eq!(
        state(&ct, s(4), &k),
        Some(FlowState::Tcp(TcpState::TimeWait))
    );
    // TIME_WAIT lasts the transitory timeout, and the sweep finds it although
    // the first timer was armed days later.
    assert_eq!(ct.expire(s(123)), 0);
    assert_eq!(ct.expire(s(124)), 1);
    assert!(ct.is_empty());
    assert!(ct.get(s(124), &r).is_none());
}

#[test]
fn rst_closes_quickly_and_midstream_is_established() {
    let mut ct = table(10);
    let k = flow(1, Proto::Tcp);
    let e = ct.insert(s(0), k, BACKEND, ACK).unwrap();
    assert_eq!(e.state, FlowState::Tcp(TcpState::Established));
    let r = e.reply_key();
    ct.observe(s(1), &r, RST).unwrap();
    assert_eq!(state(&ct, s(1), &k), Some(FlowState::Tcp(TcpState::Close)));
    assert_eq!(ct.get(s(11), &k).map(|_| ()), None, "close lasts 10 s");
    assert_eq!(ct.expire(s(11)), 1);
}

#[test]
fn udp_becomes_a_stream_on_reply() {
    let mut ct = table(10);
    let k = flow(5353, Proto::Udp);
    let r = ct.insert(s(0), k, BACKEND, Seen::Udp).unwrap().reply_key();
    assert_eq!(state(&ct, s(29), &k), Some(FlowState::UdpUnreplied));
    ct.observe(s(29), &r, Seen::Udp).unwrap();
    assert_eq!(state(&ct, s(29), &k), Some(FlowState::UdpStream));
    assert!(ct.get(s(148), &k).is_some());
    assert!(ct.get(s(149), &k).is_none());
    // An expired entry is gone for `observe` too, and removed on the spot.
    assert!(ct.observe(s(149), &k, Seen::Udp).is_none());
    assert!(ct.is_empty());
}

#[test]
fn refreshed_entries_survive_the_sweep() {
    let mut ct = table(10);
    let k = flow(9, Proto::Udp);
    ct.insert(s(0), k, BACKEND, Seen::Udp).unwrap();
    for t in (10..300).step_by(10) {
        ct.observe(s(t), &k, Seen::Udp).unwrap();
        assert_eq!(ct.expire(s(t)), 0);
    }
    assert_eq!(ct.expire(s(330)), 1);
    // The heap stays small: one armed timer per entry plus few stale ones.
    assert!(ct.timers.len() <= 2, "{}", ct.timers.len());
}

#[test]
fn closed_flows_leave_no_long_lived_timers() {
    // Many short connections: each lives through ESTABLISHED (5-day deadline)
    // and closes. The heap must not keep a timer per past flow for days.
    let mut ct = table(100_000);
    for port in 0..2000u16 {
        let now = s(u64::from(port) / 10);
        let k = flow(port, Proto::Tcp);
        let r = ct.insert(now, k, BACKEND, SYN).unwrap().reply_key();
        ct.observe(now, &r, SYN_ACK).unwrap();
        ct.observe(now, &k, ACK).unwrap();
        ct.observe(now, &k, RST).unwrap();
        ct.expire(now);
    }
    ct.expire(s(200 + 3 * 60));
    assert!(ct.is_empty());
    assert!(ct.timers.is_empty(), "{} timers left", ct.timers.len());
}

#[test]
fn idle_established_flows_are_rearmed_not_reaped() {
    let mut ct = table(10);
    let k = flow(1, Proto::Tcp);
    ct.insert(s(0), k, BACKEND, ACK).unwrap();
    for t in (0..3600).step_by(7) {
        assert_eq!(ct.expire(s(t)), 0);
    }
    assert!(ct.timers.len() <= 1);
    assert!(ct.get(s(3600), &k).is_some());
}

#[test]
fn full_table_refuses_then_reaps() {
    let mut ct = table(2);
    ct.insert(s(0), flow(1, Proto::Udp), BACKEND, Seen::Udp)
        .unwrap();
    ct.insert(s(0), flow(2, Proto::Udp), BACKEND, Seen::Udp)
        .unwrap();
    assert_eq!(
        ct.insert(s(1), flow(3, Proto::Udp), BACKEND, Seen::Udp)
            .unwrap_err(),
        ConntrackError::Full(2)
    );
    // Once the first two are past their timeout, a full table reaps itself.
    assert!(ct
        .insert(s(31), flow(3, Proto::Udp), BACKEND, Seen::Udp)
        .is_ok());
    assert_eq!(ct.len(), 1);
}

#[test]
fn clashing_reply_keys_are_refused() {
    let mut ct = table(10);
    let a = flow(1, Proto::Tcp);
    let b = FlowKey {
        dst: sa([10, 0, 0, 100], 81),
        ..a
    };
    ct.insert(s(0), a, BACKEND, SYN).unwrap();
    assert_eq!(
        ct.insert(s(0), b, BACKEND, SYN).unwrap_err(),
        ConntrackError::Clash(b)
    );
    assert_eq!(
        ct.insert(s(0), a, BACKEND, SYN).unwrap_err(),
        ConntrackError::Clash(a)
    );
    // Removal by either key frees both.
    let r = ct.get(s(0), &a).unwrap().1.reply_key();
    assert!(ct.remove(&r).is_some());
    assert!(ct.get(s(0), &a).is_none());
    assert!(ct.insert(s(0), b, BACKEND, SYN).is_ok());
}

#[test]
fn retain_drops_flows_of_a_backend() {
    let mut ct = table(10);
    let other = sa([10, 0, 1, 8], 8080);
    ct.insert(s(0), flow(1, Proto::Tcp), BACKEND, SYN).unwrap();
    ct.insert(s(0), flow(2, Proto::Tcp), other, SYN).unwrap();
    ct.retain(|e| e.backend != BACKEND);
    assert_eq!(ct.len(), 1);
    assert_eq!(ct.iter().next().unwrap().backend, other);
}

proptest! {
    /// Under any sequence of inserts, packets, removals and sweeps: the index
    /// holds exactly two keys per entry, the count matches, and after a sweep
    /// at `now` no entry is past its deadline.
    #[test]
    fn index_and_expiry_stay_consistent(ops in proptest::collection::vec((0u8..4, 0u16..24, 0u8..32, 0u64..400), 1..200)) {
        let mut ct = Conntrack::new(ConntrackConfig {
            max_entries: 16,
            tcp_established_timeout: s(300),
            ..ConntrackConfig::default()
        }).unwrap();
        let mut now = s(0);
        for (op, port, flags, dt) in ops {
            now += Duration::from_millis(dt * 100);
            let proto = if port % 2 == 0 { Proto::Tcp } else { Proto::Udp };
            let k = flow(port, proto);
            let seen = match proto {
                Proto::Tcp => Seen::Tcp(TcpFlags(flags & 0x17)),
                Proto::Udp => Seen::Udp,
            };
            match op {
                0 => { let _ = ct.insert(now, k, BACKEND, seen); }
                1 => { ct.observe(now, &k, seen); }
                2 => { ct.observe(now, &FlowKey { proto, src: BACKEND, dst: k.src }, seen); }
                _ => { ct.expire(now); }
            }
            prop_assert_eq!(ct.index.len(), 2 * ct.len());
            prop_assert_eq!(ct.iter().count(), ct.len());
            prop_assert!(ct.len() <= 16);
        }
        ct.expire(now);
        prop_assert!(ct.iter().all(|e| e.deadline() > now));
    }
}
