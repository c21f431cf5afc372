use super::*;
use crate::lb::flow::{FlowKey, Proto};
use proptest::prelude::*;

fn ids(n: usize, salt: u32) -> Vec<BackendId> {
    (0..n as u32)
        .map(|i| {
            let ip =
                Ipv4Addr::from(0x0a00_0000 | (i.wrapping_mul(2654435761) ^ salt) & 0x00ff_ffff);
            BackendId::from(SocketAddrV4::new(ip, 8080))
        })
        .collect()
}

/// Slots whose backend differs between `a` and `b` (same size).
fn changed(a: &Maglev, b: &Maglev) -> usize {
    a.slots().zip(b.slots()).filter(|(x, y)| x != y).count()
}

/// (slots that moved although their backend stayed, slots of the removed one)
fn disruption(all: &[BackendId], removed: BackendId, size: TableSize) -> (usize, usize) {
    let before = Maglev::build(all, size);
    let rest: Vec<_> = all.iter().copied().filter(|&b| b != removed).collect();
    let after = Maglev::build(&rest, size);
    let own = before.slots().filter(|&b| b == removed).count();
    if after.is_empty() {
        return (0, own);
    }
    (changed(&before, &after) - own, own)
}

#[test]
fn sizes_must_be_prime() {
    assert!(TableSize::new(65537).is_ok());
    assert!(TableSize::new(655373).is_ok());
    assert!(TableSize::new(3).is_ok());
    for bad in [0, 1, 2, 4, 65536, 65535] {
        assert_eq!(TableSize::new(bad), Err(TableSizeError(bad)));
    }
    assert_eq!(TableSize::default().get(), 65537);
}

#[test]
fn backend_id_round_trips() {
    let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 7), 8080);
    assert_eq!(BackendId::from(a).addr(), a);
}

#[test]
fn empty_and_single() {
    let t = Maglev::build(&[], TableSize::DEFAULT);
    assert!(t.is_empty());
    assert_eq!(t.lookup(42), None);
    let one = ids(1, 0);
    let t = Maglev::build(&one, TableSize::DEFAULT);
    assert_eq!(t.len(), 65537);
    assert!((0..1000).all(|h| t.lookup(h) == Some(one[0])));
}

#[test]
fn order_and_duplicates_do_not_matter() {
    let a = ids(50, 7);
    let mut b = a.clone();
    b.reverse();
    b.extend_from_slice(&a[..10]);
    assert_eq!(
        Maglev::build(&a, TableSize::DEFAULT),
        Maglev::build(&b, TableSize::DEFAULT)
    );
}

#[test]
fn table_is_pinned() {
    // Every node must build the same table; a change here (hash, seeds, fill
    // order) breaks flow affinity in a cluster running mixed versions.
    let t = Maglev::build(&ids(3, 0), TableSize::new(13).unwrap());
    let owners: Vec<usize> = t
        .slots()
        .map(|b| t.backends().iter().position(|&x| x == b).unwrap())
        .collect();
    assert_eq!(owners, PINNED_13.to_vec(), "{owners:?}");
}

const PINNED_13: [usize; 13] = [1, 1, 0, 0, 2, 1, 0, 2, 1, 0, 0, 2, 2];

#[test]
fn more_backends_than_slots_fills_the_table() {
    let t = Maglev::build(&ids(20, 3), TableSize::new(7).unwrap());
    assert_eq!(t.len(), 7);
    assert_eq!(t.slot_counts().iter().sum::<usize>(), 7);
    assert!(t.slot_counts().iter().all(|&c| c <= 1));
}

/// Slot shares: the population loop hands out one slot per backend per round,
/// so every backend holds floor(M/n) or ceil(M/n) slots. Relative to M/n that
/// is within 1/floor(M/n): 0.02% at n = 10, 0.2% at n = 100, 1.5% at n = 1000.
#[test]
fn slot_shares_differ_by_at_most_one() {
    for n in [1, 2, 3, 10, 100, 1000] {
        let t = Maglev::build(&ids(n, 11), TableSize::DEFAULT);
        let c = t.slot_counts();
        let (lo, hi) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
        assert!(hi - lo <= 1, "n={n}: {lo}..{hi}");
        assert_eq!(c.iter().sum::<usize>(), 65537);
    }
}

/// Flows (random 5-tuples) follow the slots: with 200k flows on 10 backends
/// each gets within 3% of its fair share.
#[test]
fn flows_spread_like_slots() {
    let backends = ids(10, 5);
    let t = Maglev::build(&backends, TableSize::DEFAULT);
    let mut count = std::collections::HashMap::new();
    let flows = 200_000u32;
    for i in 0..flows {
        let k = FlowKey {
            proto: Proto::Tcp,
            src: SocketAddrV4::new(
                Ipv4Addr::from(0x0a00_0000 + (i >> 12)),
                30000 + (i & 0xfff) as u16,
            ),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 9), 80),
        };
        *count.entry(t.lookup(k.hash()).unwrap()).or_insert(0u32) += 1;
    }
    let fair = f64::from(flows) / 10.0;
    for (&b, &c) in &count {
        let dev = (f64::from(c) - fair).abs() / fair;
        assert!(dev < 0.03, "{b:?}: {c} flows, {:.2}% off", dev * 100.0);
    }
}

/// Minimal disruption: removing one backend of n moves its own slots plus
/// few others, as long as the table has at least ~100 slots per backend (the
/// paper's advice). Measured (`maglev_figures`): 0.03x the removed share at
/// n = 10 and 0.6x at n = 100 with M = 65537; 4.5x at n = 500 and 5.7x at
/// n = 1000 (still only 0.5% of all slots), and 3.3x at n = 1000 with
/// M = 655373. The assertion allows 2x up to n = 100 and 7x above.
#[test]
fn removal_disrupts_little() {
    let big = TableSize::new(655373).unwrap();
    for (n, size) in [
        (2, TableSize::DEFAULT),
        (5, TableSize::DEFAULT),
        (10, TableSize::DEFAULT),
        (100, TableSize::DEFAULT),
        (650, TableSize::DEFAULT),
        (1000, big),
    ] {
        let all = ids(n, 99);
        let (extra, own) = disruption(&all, all[n / 2], size);
        let limit = if n <= 100 { 2 * own } else { 7 * own };
        assert!(
            extra <= limit,
            "n={n}: {extra} extra moves for {own} own slots"
        );
    }
}

/// Prints the measured figures quoted in the module and the hand-off notes.
/// `cargo test -p shoal-overlay --release maglev_figures -- --ignored --nocapture`
#[test]
#[ignore]
fn maglev_figures() {
    let big = TableSize::new(655373).unwrap();
    for (n, size) in [
        (10, TableSize::DEFAULT),
        (100, TableSize::DEFAULT),
        (500, TableSize::DEFAULT),
        (1000, TableSize::DEFAULT),
        (1000, big),
    ] {
        let all = ids(n, 99);
        let t = Maglev::build(&all, size);
        let c = t.slot_counts();
        let fair = f64::from(size.get()) / n as f64;
        let lo = *c.iter().min().unwrap() as f64 / fair - 1.0;
        let hi = *c.iter().max().unwrap() as f64 / fair - 1.0;
        let mut worst = 0.0f64;
        let mut sum = 0.0;
        let trials = 20.min(n);
        for k in 0..trials {
            let (extra, own) = disruption(&all, all[k * n / trials], size);
            let r = extra as f64 / own as f64;
            worst = worst.max(r);
            sum += r;
        }
        println!(
            "n={n} M={}: slot share {:+.3}%..{:+.3}%, extra moves on removal: mean {:.2}x worst {:.2}x of the removed share ({trials} removals)",
            size.get(),
            lo * 100.0,
            hi * 100.0,
            sum / trials as f64,
            worst
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Same input, same table; balance within one slot; removing any one
    /// backend moves at most 2x its share of other slots.
    #[test]
    fn invariants(raw in proptest::collection::vec(any::<u64>(), 1..120), pick in any::<prop::sample::Index>()) {
        let all: Vec<BackendId> = raw.iter().map(|&r| BackendId(r & 0xffff_ffff_ffff)).collect();
        let t = Maglev::build(&all, TableSize::DEFAULT);
        prop_assert_eq!(&t, &Maglev::build(&all, TableSize::DEFAULT));
        let c = t.slot_counts();
        prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        let removed = t.backends()[pick.index(t.backends().len())];
        let (extra, own) = disruption(&all, removed, TableSize::DEFAULT);
        prop_assert!(extra <= 2 * own, "{} extra for {} own", extra, own);
        // Flows that were not on the removed backend mostly stay.
        let rest: Vec<_> = all.iter().copied().filter(|&b| b != removed).collect();
        let after = Maglev::build(&rest, TableSize::DEFAULT);
        for h in 0..64u64 {
            if let Some(b) = after.lookup(h) {
                prop_assert!(b != removed);
            }
        }
    }
}
