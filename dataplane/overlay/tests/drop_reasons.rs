//! Every drop reason can be reached. The match in `reach` is exhaustive, so a new
//! `DropReason` does not compile until this test knows how to produce it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use shoal_overlay::counters::DropReason;
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::lb::conntrack::ConntrackConfig;
use shoal_overlay::lb::flow::Proto;
use shoal_overlay::lb::{Backend, BackendState, Balancer, BalancerConfig, LbVerdict};
use shoal_overlay::mac::MacAddr;
use shoal_overlay::offload::{TsoPlan, VnetHdr, GSO_TCPV4};
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer};
use shoal_overlay::switch::{EndpointId, EndpointRecord, Location, NetworkSpec, Switch, Verdict};
use shoal_overlay::vxlan::{Vni, VxlanPacket, VxlanRepr};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 12));
const NOW: Duration = Duration::from_secs(1_800_000_000);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn switch() -> Switch {
    let mut sw = Switch::new();
    let net = sw
        .add_network(NetworkSpec {
            name: "n".into(),
            vni: Vni::new(1).unwrap(),
            mtu: 1450,
            encrypted: false,
        })
        .unwrap();
    for (n, location) in [
        (2, Location::Local(EndpointId(0))),
        (3, Location::Remote(PEER)),
    ] {
        sw.upsert_endpoint(
            net,
            EndpointRecord {
                ip: ip(n),
                mac: MacAddr::from_ipv4(ip(n)),
                location,
            },
        )
        .unwrap();
    }
    sw
}

fn eth(src: MacAddr, dst: MacAddr, ethertype: [u8; 2], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ethertype);
    f
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(
        MacAddr::from_ipv4(ip(2)),
        MacAddr::BROADCAST,
        [0x08, 0x06],
        42,
    );
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&MacAddr::from_ipv4(ip(2)).0);
    f[28..32].copy_from_slice(&ip(2).octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

fn from_endpoint(frame: &[u8]) -> Verdict {
    switch().from_endpoint(EndpointId(0), frame, &mut [0u8; 64])
}

fn from_underlay(vni: u32, sender: IpAddr, frame: &[u8]) -> Verdict {
    switch().from_underlay(Vni::new(vni).unwrap(), sender, frame, &mut [0u8; 64])
}

fn open(ring_ids: &[u8], datagram: &mut [u8]) -> Result<usize, DropReason> {
    let ring = KeyRing::new(
        ring_ids
            .iter()
            .map(|&i| NetworkKey::new(i, [i; 32]))
            .collect(),
        ring_ids[0],
    )
    .unwrap();
    Opener::new(Cipher::Aes256Gcm, &ring)
        .open(PEER, datagram)
        .map(|f| f.len())
}

fn sealed(key: u8) -> (Sealer, Vec<u8>) {
    let ring = KeyRing::new(vec![NetworkKey::new(key, [key; 32])], key).unwrap();
    let s = Sealer::new(Cipher::Aes256Gcm, PEER, &ring, NOW, RekeyPolicy::default());
    let mut out = vec![0u8; 200];
    let n = s.seal(Vni::new(1).unwrap(), &[0x42; 60], &mut out).unwrap();
    out.truncate(n);
    (s, out)
}

/// A TCP SYN from 10.0.0.2:`sport` to the VIP 10.0.0.100:`dport` (IPv4 and
/// TCP headers only; the balancer does not check checksums).
fn syn_to_vip(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 2]);
    p[16..20].copy_from_slice(&[10, 0, 0, 100]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p
}

/// A balancer with one backend behind 10.0.0.100:80 and :81; the verdict for
/// each packet in turn, the last returned.
fn balance(max_entries: usize, packets: &[Vec<u8>]) -> LbVerdict {
    let mut lb = Balancer::new(BalancerConfig {
        conntrack: ConntrackConfig {
            max_entries,
            ..ConntrackConfig::default()
        },
        ..BalancerConfig::default()
    })
    .unwrap();
    let b = [Backend {
        addr: "10.0.1.1:8080".parse().unwrap(),
        state: BackendState::Active,
    }];
    for port in [80, 81] {
        lb.set_service(Ipv4Addr::new(10, 0, 0, 100), port, Proto::Tcp, &b);
    }
    let mut last = LbVerdict::NotForVip;
    for p in packets {
        last = lb.handle_outbound(NOW, &mut p.clone());
    }
    last
}

fn lb_drop(got: LbVerdict) -> Verdict {
    match got {
        LbVerdict::Drop(r) => Verdict::Drop(r),
        _ => Verdict::Reply(0),
    }
}

/// Produces `reason` through the pure core, or names the driver test that does.
fn reach(reason: DropReason) -> Result<(), String> {
    let me = MacAddr::from_ipv4(ip(2));
    let got = match reason {
        DropReason::Malformed => from_endpoint(&[0u8; 10]),
        DropReason::BadVxlanFlags => {
            let pkt = VxlanPacket::new_checked(&[0u8; 8][..]).unwrap();
            return (VxlanRepr::parse(&pkt) == Err(reason))
                .then_some(())
                .ok_or("flags".into());
        }
        DropReason::UnknownVni => from_underlay(99, PEER, &eth(me, me, [8, 0], 60)),
        DropReason::PlainOnEncrypted => {
            let mut d = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
            d.extend([0u8; 60]);
            return (open(&[1], &mut d) == Err(reason))
                .then_some(())
                .ok_or("plain".into());
        }
        DropReason::SealedOnPlain | DropReason::IoError => {
            // Decided by the driver, not the pure core (the VNI's policy is
            // applied before the opener; I/O errors come from the kernel). Both
            // are reached by tests/overlay/pairs.rs,
            // sealed_frames_on_a_plain_network_and_writes_to_a_downed_endpoint_are_counted.
            return Ok(());
        }
        DropReason::UnknownKey => {
            return (open(&[2], &mut sealed(1).1) == Err(reason))
                .then_some(())
                .ok_or("key".into())
        }
        DropReason::StaleSession => {
            let (mut s, first) = sealed(1);
            let ring = KeyRing::new(vec![NetworkKey::new(1, [1; 32])], 1).unwrap();
            let mut o = Opener::new(Cipher::Aes256Gcm, &ring);
            let mut late = first.clone();
            o.open(PEER, &mut first.clone()).unwrap();
            for _ in 0..2 {
                s.rekey(NOW);
                let mut out = vec![0u8; 200];
                let n = s.seal(Vni::new(1).unwrap(), &[0x42; 60], &mut out).unwrap();
                o.open(PEER, &mut out[..n]).unwrap();
            }
            return (o.open(PEER, &mut late).map(|f| f.len()) == Err(reason))
                .then_some(())
                .ok_or("stale".into());
        }
        DropReason::Replay => {
            let (_, d) = sealed(1);
            let ring = KeyRing::new(vec![NetworkKey::new(1, [1; 32])], 1).unwrap();
            let mut o = Opener::new(Cipher::Aes256Gcm, &ring);
            o.open(PEER, &mut d.clone()).unwrap();
            return (o.open(PEER, &mut d.clone()).map(|f| f.len()) == Err(reason))
                .then_some(())
                .ok_or("replay".into());
        }
        DropReason::AuthFailure => {
            let (_, mut d) = sealed(1);
            d[30] ^= 1;
            return (open(&[1], &mut d) == Err(reason))
                .then_some(())
                .ok_or("auth".into());
        }
        DropReason::UnknownDestination => {
            from_endpoint(&eth(me, MacAddr([2, 0, 0, 0, 0, 9]), [8, 0], 60))
        }
        DropReason::SpoofedSource => {
            from_endpoint(&eth(MacAddr([2, 0, 0, 0, 0, 9]), me, [8, 0], 60))
        }
        DropReason::Oversize => from_endpoint(&eth(me, MacAddr::from_ipv4(ip(3)), [8, 0], 1500)),
        DropReason::Flood => from_endpoint(&eth(me, MacAddr::BROADCAST, [8, 0], 60)),
        DropReason::ArpUnknownTarget => from_endpoint(&arp_request(ip(200))),
        DropReason::UnknownPeer => from_underlay(
            1,
            IpAddr::V4(Ipv4Addr::new(10, 99, 0, 99)),
            &eth(me, me, [8, 0], 60),
        ),
        DropReason::VipFragment => {
            let mut p = syn_to_vip(1, 80);
            p[7] = 8;
            lb_drop(balance(8, &[p]))
        }
        DropReason::ConntrackFull => lb_drop(balance(1, &[syn_to_vip(1, 80), syn_to_vip(2, 80)])),
        DropReason::ConntrackClash => lb_drop(balance(8, &[syn_to_vip(1, 80), syn_to_vip(1, 81)])),
    };
    if got == Verdict::Drop(reason) {
        Ok(())
    } else {
        Err(format!("{reason:?}: got {got:?}"))
    }
}

#[test]
fn every_drop_reason_can_be_reached() {
    let failures: Vec<String> = DropReason::ALL
        .iter()
        .filter_map(|&r| reach(r).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn malformed_super_frames_are_malformed() {
    let hdr = VnetHdr {
        gso_type: GSO_TCPV4,
        gso_size: 1400,
        ..VnetHdr::default()
    };
    assert_eq!(TsoPlan::new(&[0u8; 20], &hdr), Err(DropReason::Malformed));
}
