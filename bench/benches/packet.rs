//! Per-packet costs of the pure core: encapsulate, decapsulate, seal and open at
//! 64, 512, 1400 and 9000 bytes, and cutting / merging a 64 KiB TCP super-frame.
//! Criterion reports time per packet and throughput (bytes/s) on one core.
//! `maglev`: building a service's Maglev table (65537 slots) for 10, 100 and
//! 1000 backends, and one balanced packet (conntrack hit + DNAT).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_overlay::keys::{Cipher, KeyRing, NetworkKey};
use shoal_overlay::lb::flow::Proto;
use shoal_overlay::lb::maglev::{BackendId, Maglev, TableSize};
use shoal_overlay::lb::nat::L4Checksum;
use shoal_overlay::lb::vip::{VipAction, VipBackend, VipService, VipTable};
use shoal_overlay::lb::{Backend, BackendState, Balancer, BalancerConfig};
use shoal_overlay::offload::{Push, TcpCoalescer, TsoPlan, VnetHdr, GSO_TCPV4, VNET_F_NEEDS_CSUM};
use shoal_overlay::seal::{Opener, RekeyPolicy, Sealer, SEALED_PAYLOAD_AT, TAG_LEN};
use shoal_overlay::vxlan::{Vni, VxlanPacket, VxlanRepr, VXLAN_HEADER_LEN};

const SIZES: [usize; 4] = [64, 512, 1400, 9000];
const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11));

fn vni() -> Vni {
    Vni::new(4096).unwrap()
}

fn plain(c: &mut Criterion) {
    let mut g = c.benchmark_group("plain");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; VXLAN_HEADER_LEN + size];
        g.bench_with_input(BenchmarkId::new("encap", size), &size, |b, _| {
            b.iter(|| {
                let mut pkt = VxlanPacket::new_unchecked(&mut buf[..]);
                VxlanRepr {
                    vni: vni(),
                    sealed: None,
                }
                .emit(&mut pkt);
                black_box(&buf);
            })
        });
        g.bench_with_input(BenchmarkId::new("decap", size), &size, |b, _| {
            b.iter(|| {
                let pkt = VxlanPacket::new_checked(black_box(&buf[..])).unwrap();
                black_box(VxlanRepr::parse(&pkt).unwrap());
                black_box(pkt.payload().len())
            })
        });
    }
    g.finish();
}

fn sealed(c: &mut Criterion) {
    for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
        let mut g = c.benchmark_group(format!("sealed/{cipher}"));
        let ring = KeyRing::new(vec![NetworkKey::new(1, [7; 32])], 1).unwrap();
        let policy = RekeyPolicy {
            after_packets: u64::MAX,
            after: Duration::MAX,
        };
        let sealer = Sealer::new(cipher, SENDER, &ring, Duration::from_secs(1 << 30), policy);
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            let mut buf = vec![0u8; SEALED_PAYLOAD_AT + size + TAG_LEN];
            g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
                b.iter(|| black_box(sealer.seal_in_place(vni(), &mut buf, size).unwrap()))
            });
            // One opener for the whole run (its traffic key derived once, as in
            // steady state); fresh frames are sealed outside the timed part, so
            // every counter opens exactly once.
            let mut opener = Opener::new(cipher, &ring);
            let mut frames = vec![vec![0u8; SEALED_PAYLOAD_AT + size + TAG_LEN]; 256];
            g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(frames.len() as u64) as usize;
                        for f in &mut frames[..n] {
                            sealer.seal_in_place(vni(), f, size).unwrap();
                        }
                        let start = Instant::now();
                        for f in &mut frames[..n] {
                            black_box(opener.open(SENDER, f).unwrap().len());
                        }
                        total += start.elapsed();
                        left -= n as u64;
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

/// A 64 KiB TCP/IPv4 super-frame with a 1398-byte MSS, as a TAP hands it over.
fn super_frame() -> (Vec<u8>, VnetHdr) {
    let payload = 65000;
    let mut f = vec![0u8; 14 + 20 + 32 + payload];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[14 + 8] = 64;
    f[14 + 9] = 6;
    f[14 + 12..14 + 20].copy_from_slice(&[10, 0, 0, 10, 10, 0, 0, 20]);
    f[34 + 12] = 8 << 4; // data offset: 32 bytes (timestamps)
    f[34 + 13] = 0x10; // ACK
    let hdr = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1398,
        csum_start: 34,
        csum_offset: 16,
    };
    (f, hdr)
}

fn offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    let (frame, hdr) = super_frame();
    g.throughput(Throughput::Bytes(frame.len() as u64));
    let plan = TsoPlan::new(&frame, &hdr).unwrap();
    let mut out = vec![0u8; 2048];
    g.bench_function("segment_64k", |b| {
        b.iter(|| {
            for i in 0..plan.count {
                black_box(plan.write_segment(&frame, i, &mut out));
            }
        })
    });
    let segments: Vec<Vec<u8>> = (0..plan.count)
        .map(|i| {
            let n = plan.write_segment(&frame, i, &mut out);
            out[..n].to_vec()
        })
        .collect();
    let mut gro = TcpCoalescer::new();
    g.bench_function("coalesce_64k", |b| {
        b.iter(|| {
            for s in &segments {
                assert_eq!(gro.push(s), Push::Merged);
            }
            black_box(gro.take().map(<[u8]>::len))
        })
    });
    g.finish();
}

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev");
    for n in [10u32, 100, 1000] {
        let ids: Vec<BackendId> = (0..n)
            .map(|i| {
                BackendId::from(std::net::SocketAddrV4::new(
                    Ipv4Addr::from(0x0a00_0000 + i),
                    8080,
                ))
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("build", n), &ids, |b, ids| {
            b.iter(|| black_box(Maglev::build(black_box(ids), TableSize::DEFAULT)))
        });
    }
    // One packet of an established flow: VIP test, conntrack hit, DNAT.
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let mut lb = Balancer::new(BalancerConfig::default()).unwrap();
    let backends: Vec<Backend> = (1..=10)
        .map(|i| Backend {
            addr: std::net::SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i), 8080),
            state: BackendState::Active,
        })
        .collect();
    lb.set_service(vip, 80, Proto::Tcp, &backends);
    let mut pkt = [0u8; 40];
    pkt[0] = 0x45;
    pkt[2..4].copy_from_slice(&40u16.to_be_bytes());
    pkt[9] = 6;
    pkt[12..16].copy_from_slice(&[10, 0, 0, 2]);
    pkt[20..22].copy_from_slice(&40000u16.to_be_bytes());
    pkt[32] = 5 << 4;
    pkt[33] = 0x10;
    let fresh = |p: &mut [u8; 40]| {
        p[16..20].copy_from_slice(&vip.octets());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
    };
    let now = Duration::from_secs(1);
    g.bench_function("packet/established", |b| {
        b.iter(|| {
            fresh(&mut pkt);
            black_box(lb.handle_outbound(now, black_box(&mut pkt)))
        })
    });
    g.finish();
}

/// The per-frame VIP path of the switch (`lb::vip::VipTable`): a frame a
/// task sends to a VIP (VIP test, conntrack hit, DNAT of an established flow),
/// the backend's answer on its way back (conntrack hit, reverse NAT), and a
/// frame to an ordinary address on a network that has VIPs.
fn vip(c: &mut Criterion) {
    let mut g = c.benchmark_group("vip");
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let mut table = VipTable::new(BalancerConfig::default()).unwrap();
    table.set_services(&[VipService {
        vip,
        backends: (1..=10)
            .map(|i| VipBackend {
                ip: Ipv4Addr::new(10, 0, 1, i),
                active: true,
            })
            .collect(),
    }]);
    // Ethernet + IPv4 + TCP ACK, 10.0.0.2:40000 -> VIP:80, checksums right.
    let mut frame = [0u8; 54];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    {
        let ip = &mut frame[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 2]);
        ip[16..20].copy_from_slice(&vip.octets());
        ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
        ip[22..24].copy_from_slice(&80u16.to_be_bytes());
        ip[32] = 5 << 4;
        ip[33] = 0x10;
    }
    let original = frame;
    let mut reply = vec![0u8; 256];
    let now = Duration::from_secs(1);
    // Track the flow and learn its backend.
    let backend = match table.from_endpoint(now, &mut frame, L4Checksum::Complete, &mut reply) {
        VipAction::Forward { backend } => backend,
        other => panic!("{other:?}"),
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_vip/established", |b| {
        b.iter(|| {
            frame = original;
            black_box(table.from_endpoint(
                now,
                black_box(&mut frame),
                L4Checksum::Complete,
                &mut reply,
            ))
        })
    });
    // The backend's answer: backend:80 -> 10.0.0.2:40000.
    let mut answer = original;
    answer[14 + 12..14 + 16].copy_from_slice(&backend.octets());
    answer[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
    answer[14 + 20..14 + 22].copy_from_slice(&80u16.to_be_bytes());
    answer[14 + 22..14 + 24].copy_from_slice(&40000u16.to_be_bytes());
    let answer0 = answer;
    assert!(table.to_endpoint(now, &mut answer, L4Checksum::Complete));
    g.bench_function("from_backend/reverse_nat", |b| {
        b.iter(|| {
            answer = answer0;
            black_box(table.to_endpoint(now, black_box(&mut answer), L4Checksum::Complete))
        })
    });
    let mut other = original;
    other[14 + 16..14 + 20].copy_from_slice(&[10, 0, 1, 1]);
    g.bench_function("not_for_vip", |b| {
        b.iter(|| {
            black_box(table.from_endpoint(
                now,
                black_box(&mut other),
                L4Checksum::Complete,
                &mut reply,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, plain, sealed, offload, maglev, vip);
criterion_main!(benches);
