//! The records one task sees at 127.0.0.11, and the answers Docker gives from them.
//!
//! A [`Zone`] is built for ONE task from the endpoints of the networks that task is
//! attached to. It is immutable: the driver swaps a new one in (through a
//! `tokio::sync::watch`) whenever the service or task set changes, so a lookup never
//! sees half an update and needs no lock.
//!
//! Docker's answers, which this module keeps:
//! - `<service>` and each alias: the service's virtual IP when it has one and is not
//!   in `dnsrr` mode; otherwise (dnsrr, or no VIP allocated yet) the IPs of its
//!   healthy tasks.
//! - `tasks.<service>` and `tasks.<alias>`: the IPs of the healthy tasks, VIP or not.
//! - a task name (`<service>.<slot>.<task id>`, or `<service>.<node id>.<task id>`
//!   for a global service): that task's IP. The name stays resolvable while the task
//!   is unhealthy: it is the task's own identity, not a load-balancing entry (Docker
//!   keeps the container name record too). `<service>.<slot>` alone is not answered,
//!   as in Docker.
//! - `PTR` for a task IP: the task name; for a VIP: the service name.
//!
//! Choices where Docker is vague, written down here:
//! - A known name asked for another type (AAAA, MX, TXT, ...) gets NODATA (NOERROR,
//!   no answer) instead of being forwarded, so a resolver does not leak internal
//!   names to the host's upstreams. `ANY` is answered like `A`.
//! - A known service with no healthy task (and, for `<service>`, no VIP) also gets
//!   NODATA, not NXDOMAIN: the name exists, it just has no address right now, and
//!   NXDOMAIN would be cached negatively by clients for longer than the outage.
//! - When a task sees the same service on several networks, the answer is the union
//!   of that service's VIPs (one per network) or task IPs, each IP once. Docker
//!   answers from the first network that has the name; the union is a superset of
//!   that and every address in it is reachable from the task.
//! - Names are compared ASCII-case-insensitively; a trailing dot is optional.
//! - Unknown names, and PTR questions for addresses not in the zone, are forwarded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use hickory_proto::rr::RecordType;

/// Docker's TTL for the records of its embedded DNS server, in seconds.
pub const DEFAULT_TTL: u32 = 600;

/// One task of one service as seen on one network the asking task is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The network this endpoint is on (the caller has already filtered by network).
    pub network_id: String,
    /// The service's name, e.g. `web` or `stack_web`.
    pub service_name: String,
    /// The service's id.
    pub service_id: String,
    /// The task's name: `<service>.<slot>.<task id>` for a replicated service,
    /// `<service>.<node id>.<task id>` for a global one.
    pub task_name: String,
    /// The task's id.
    pub task_id: String,
    /// The task's address on this network.
    pub ip: Ipv4Addr,
    /// The service's virtual IP on this network, if one is allocated.
    pub vip: Option<Ipv4Addr>,
    /// The service uses DNS round robin (`--endpoint-mode dnsrr`): no VIP answers.
    pub dnsrr: bool,
    /// Extra names of the service on this network (network aliases, the stack-less
    /// service name).
    pub aliases: Vec<String>,
    /// The task passes its health check (or has none) and may receive traffic.
    pub healthy: bool,
}

/// What the zone answers for one name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A records, in canonical (sorted) order; the caller rotates them. Never empty.
    A(Vec<Ipv4Addr>),
    /// A PTR record pointing at this name (without a trailing dot).
    Ptr(String),
    /// The name is ours but has no record of this type (or no healthy task):
    /// NOERROR with an empty answer section.
    NoData,
    /// Not a name of ours: forward it to the upstream resolvers.
    Forward,
}

/// The addresses behind one service name (or alias).
#[derive(Clone, Debug, Default)]
struct ServiceAddrs {
    /// VIPs of the non-dnsrr endpoints that have one.
    vips: BTreeSet<Ipv4Addr>,
    /// IPs of healthy tasks.
    tasks: BTreeSet<Ipv4Addr>,
}

/// What a (lowercased) name resolves to.
#[derive(Clone, Debug)]
enum Entry {
    /// `<service>` or an alias.
    Service(ServiceAddrs),
    /// `tasks.<service>` or `tasks.<alias>`.
    Tasks(BTreeSet<Ipv4Addr>),
    /// A task name; a set in case two endpoints share a name (they should not).
    Task(BTreeSet<Ipv4Addr>),
}

/// The records one task can resolve, immutable once built.
#[derive(Clone, Debug)]
pub struct Zone {
    names: HashMap<String, Entry>,
    ptr: HashMap<Ipv4Addr, String>,
    ttl: u32,
}

impl Default for Zone {
    fn default() -> Self {
        Self::new(std::iter::empty(), DEFAULT_TTL)
    }
}

/// Lowercases `name` and strips one trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Zone {
    /// Builds the zone of one task from the endpoints of the networks it is
    /// attached to. `ttl` is the TTL of every record ([`DEFAULT_TTL`] is Docker's).
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>, ttl: u32) -> Self {
        let mut services: BTreeMap<String, ServiceAddrs> = BTreeMap::new();
        let mut tasks: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        // Candidate PTR targets per IP; the smallest name wins so that the answer
        // does not depend on the order endpoints came in. Task names beat service
        // names (an IP is either a task's or a VIP, not both, unless misconfigured).
        let mut ptr_tasks: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
        let mut ptr_vips: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();

        for ep in endpoints {
            let names = std::iter::once(ep.service_name.as_str())
                .chain(ep.aliases.iter().map(String::as_str))
                .map(normalize)
                .filter(|n| !n.is_empty())
                .collect::<BTreeSet<_>>();
            for name in names {
                let addrs = services.entry(name).or_default();
                if let (Some(vip), false) = (ep.vip, ep.dnsrr) {
                    addrs.vips.insert(vip);
                }
                if ep.healthy {
                    addrs.tasks.insert(ep.ip);
                }
            }
            if let (Some(vip), false) = (ep.vip, ep.dnsrr) {
                ptr_vips
                    .entry(vip)
                    .or_default()
                    .insert(ep.service_name.trim_end_matches('.').to_owned());
            }
            let task = normalize(&ep.task_name);
            if !task.is_empty() {
                tasks.entry(task).or_default().insert(ep.ip);
                ptr_tasks
                    .entry(ep.ip)
                    .or_default()
                    .insert(ep.task_name.trim_end_matches('.').to_owned());
            }
        }

        let mut names = HashMap::new();
        // Task names first, then services, then tasks.<service>: a service name wins
        // over a task name that happens to equal it, as `tasks.x` is only ever ours.
        for (name, ips) in tasks {
            names.insert(name, Entry::Task(ips));
        }
        for (name, addrs) in services {
            names.insert(format!("tasks.{name}"), Entry::Tasks(addrs.tasks.clone()));
            names.insert(name, Entry::Service(addrs));
        }
        let mut ptr = HashMap::new();
        for (ip, mut candidates) in ptr_vips {
            if let Some(first) = candidates.pop_first() {
                ptr.insert(ip, first);
            }
        }
        for (ip, mut candidates) in ptr_tasks {
            if let Some(first) = candidates.pop_first() {
                ptr.insert(ip, first);
            }
        }
        Self { names, ptr, ttl }
    }

    /// The TTL of every record in this zone.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Whether the zone holds no name at all.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Answers `name` (any case, trailing dot optional) for `qtype`.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Lookup {
        let name = normalize(name);
        if qtype == RecordType::PTR {
            return match parse_reverse_v4(&name) {
                Some(ip) => match self.ptr.get(&ip) {
                    Some(target) => Lookup::Ptr(target.clone()),
                    None => Lookup::Forward,
                },
                // A PTR for one of our forward names: the name is ours, no PTR.
                None if self.names.contains_key(&name) => Lookup::NoData,
                None => Lookup::Forward,
            };
        }
        let Some(entry) = self.names.get(&name) else {
            // A reverse name we hold, asked for another type, is ours as well.
            if parse_reverse_v4(&name).is_some_and(|ip| self.ptr.contains_key(&ip)) {
                return Lookup::NoData;
            }
            return Lookup::Forward;
        };
        if !matches!(qtype, RecordType::A | RecordType::ANY) {
            return Lookup::NoData;
        }
        let ips = match entry {
            Entry::Service(addrs) if !addrs.vips.is_empty() => &addrs.vips,
            Entry::Service(addrs) => &addrs.tasks,
            Entry::Tasks(ips) | Entry::Task(ips) => ips,
        };
        if ips.is_empty() {
            Lookup::NoData
        } else {
            Lookup::A(ips.iter().copied().collect())
        }
    }
}

/// Parses `d.c.b.a.in-addr.arpa` (already lowercased, no trailing dot) into
/// `a.b.c.d`. Anything else, including partial reverse names, is `None`.
pub fn parse_reverse_v4(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = rest.split('.');
    for slot in octets.iter_mut().rev() {
        let part = parts.next()?;
        // Refuse leading '+', empty labels and leading zeros ("01"): not canonical.
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if part.len() > 1 && part.starts_with('0') {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Rotates `ips` left by `rotate % len`: round robin across queries without any
/// randomness in the core (the driver passes a counter).
pub fn rotate_records(ips: &mut [Ipv4Addr], rotate: u64) {
    if ips.len() > 1 {
        let by = (rotate % ips.len() as u64) as usize;
        ips.rotate_left(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ep(service: &str, slot: u32, ip: [u8; 4], vip: Option<[u8; 4]>) -> Endpoint {
        Endpoint {
            network_id: "net1".into(),
            service_name: service.into(),
            service_id: format!("{service}-id"),
            task_name: format!("{service}.{slot}.task{slot}{service}"),
            task_id: format!("task{slot}{service}"),
            ip: Ipv4Addr::from(ip),
            vip: vip.map(Ipv4Addr::from),
            dnsrr: false,
            aliases: vec![],
            healthy: true,
        }
    }

    fn a(ips: &[[u8; 4]]) -> Lookup {
        Lookup::A(ips.iter().map(|o| Ipv4Addr::from(*o)).collect())
    }

    #[test]
    fn service_with_vip_answers_vip_and_tasks_answers_tasks() {
        let vip = Some([10, 0, 0, 2]);
        let z = Zone::new(
            [
                ep("web", 1, [10, 0, 0, 5], vip),
                ep("web", 2, [10, 0, 0, 4], vip),
            ],
            DEFAULT_TTL,
        );
        assert_eq!(z.lookup("web", RecordType::A), a(&[[10, 0, 0, 2]]));
        assert_eq!(z.lookup("WEB.", RecordType::A), a(&[[10, 0, 0, 2]]));
        assert_eq!(
            z.lookup("tasks.web", RecordType::A),
            a(&[[10, 0, 0, 4], [10, 0, 0, 5]])
        );
        assert_eq!(
            z.lookup("web.1.task1web", RecordType::A),
            a(&[[10, 0, 0, 5]])
        );
        assert_eq!(z.lookup("web.1", RecordType::A), Lookup::Forward);
        assert_eq!(z.lookup("web", RecordType::AAAA), Lookup::NoData);
        assert_eq!(z.lookup("tasks.web", RecordType::MX), Lookup::NoData);
        assert_eq!(z.lookup("example.com", RecordType::A), Lookup::Forward);
        assert_eq!(z.lookup("", RecordType::A), Lookup::Forward);
    }

    #[test]
    fn dnsrr_and_vipless_services_answer_healthy_tasks() {
        let mut rr1 = ep("rr", 1, [10, 0, 0, 7], Some([10, 0, 0, 3]));
        rr1.dnsrr = true;
        let mut rr2 = ep("rr", 2, [10, 0, 0, 8], Some([10, 0, 0, 3]));
        rr2.dnsrr = true;
        let mut sick = ep("rr", 3, [10, 0, 0, 9], None);
        sick.dnsrr = true;
        sick.healthy = false;
        let novip = ep("novip", 1, [10, 0, 0, 20], None);
        let z = Zone::new([rr1, rr2, sick, novip], 30);
        assert_eq!(
            z.lookup("rr", RecordType::A),
            a(&[[10, 0, 0, 7], [10, 0, 0, 8]])
        );
        assert_eq!(z.lookup("novip", RecordType::A), a(&[[10, 0, 0, 20]]));
        // The unhealthy task keeps its own name.
        assert_eq!(z.lookup("rr.3.task3rr", RecordType::A), a(&[[10, 0, 0, 9]]));
        // dnsrr: no PTR for the (unused) VIP.
        assert_eq!(
            z.lookup("3.0.0.10.in-addr.arpa", RecordType::PTR),
            Lookup::Forward
        );
        assert_eq!(z.ttl(), 30);
    }

    #[test]
    fn all_unhealthy_is_nodata() {
        let mut t = ep("down", 1, [10, 0, 0, 5], None);
        t.healthy = false;
        let z = Zone::new([t], DEFAULT_TTL);
        assert_eq!(z.lookup("down", RecordType::A), Lookup::NoData);
        assert_eq!(z.lookup("tasks.down", RecordType::A), Lookup::NoData);
    }

    #[test]
    fn aliases_and_ptr() {
        let mut t = ep("stack_web", 1, [10, 0, 0, 5], Some([10, 0, 0, 2]));
        t.aliases = vec!["web".into(), "Front".into()];
        let z = Zone::new([t], DEFAULT_TTL);
        for n in ["web", "front", "stack_web"] {
            assert_eq!(z.lookup(n, RecordType::A), a(&[[10, 0, 0, 2]]), "{n}");
            assert_eq!(
                z.lookup(&format!("tasks.{n}"), RecordType::A),
                a(&[[10, 0, 0, 5]]),
                "{n}"
            );
        }
        assert_eq!(
            z.lookup("5.0.0.10.in-addr.arpa.", RecordType::PTR),
            Lookup::Ptr("stack_web.1.task1stack_web".into())
        );
        assert_eq!(
            z.lookup("2.0.0.10.IN-ADDR.ARPA", RecordType::PTR),
            Lookup::Ptr("stack_web".into())
        );
        assert_eq!(
            z.lookup("2.0.0.10.in-addr.arpa", RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup("9.0.0.10.in-addr.arpa", RecordType::PTR),
            Lookup::Forward
        );
        assert_eq!(z.lookup("web", RecordType::PTR), Lookup::NoData);
    }

    #[test]
    fn same_service_on_two_networks_is_deduplicated() {
        let t1 = ep("web", 1, [10, 0, 0, 5], Some([10, 0, 0, 2]));
        let mut t1b = t1.clone();
        t1b.network_id = "net2".into();
        t1b.ip = Ipv4Addr::new(10, 1, 0, 5);
        t1b.vip = Some(Ipv4Addr::new(10, 1, 0, 2));
        let z = Zone::new([t1.clone(), t1.clone(), t1b], DEFAULT_TTL);
        assert_eq!(
            z.lookup("web", RecordType::A),
            a(&[[10, 0, 0, 2], [10, 1, 0, 2]])
        );
        assert_eq!(
            z.lookup("tasks.web", RecordType::A),
            a(&[[10, 0, 0, 5], [10, 1, 0, 5]])
        );
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            parse_reverse_v4("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "256.3.2.1.in-addr.arpa",
            "04.3.2.1.in-addr.arpa",
            "+4.3.2.1.in-addr.arpa",
            "4..2.1.in-addr.arpa",
            "in-addr.arpa",
            "4.3.2.1.ip6.arpa",
        ] {
            assert_eq!(parse_reverse_v4(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_is_round_robin() {
        let base: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let mut firsts = BTreeSet::new();
        for r in 0..3 {
            let mut v = base.clone();
            rotate_records(&mut v, r);
            firsts.insert(v[0]);
            let mut sorted = v.clone();
            sorted.sort();
            assert_eq!(sorted, base);
        }
        assert_eq!(firsts.len(), 3);
        rotate_records(&mut [], 5);
    }
}
