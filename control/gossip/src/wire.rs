//! The gossip wire format: one versioned [`Message`] enum, hand-encoded.
//!
//! Encoding is compact and explicit: LEB128 varints for integers and
//! lengths, length-prefixed UTF-8 strings, one tag byte per enum. The
//! decoder never panics: every read is bounds-checked, every count is
//! bounded both by [`MAX_COUNT`] and by the bytes left (each element takes
//! at least one byte), and trailing bytes are an error. TCP carries the
//! same messages (sealed) in `u32` big-endian length-prefixed frames of at
//! most [`MAX_FRAME`] bytes.

use crate::record::{EndpointRecord, PublishedPort};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// First plaintext byte of every message.
pub const WIRE_VERSION: u8 = 1;
/// Largest TCP frame accepted or sent.
pub const MAX_FRAME: usize = 8 << 20;
/// Largest element count accepted in any list.
pub const MAX_COUNT: usize = 1 << 20;
/// Largest string accepted.
pub const MAX_STR: usize = 64 << 10;

/// Why bytes were not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Ran out of bytes.
    #[error("message truncated")]
    Truncated,
    /// Unknown message version.
    #[error("message version {0} is not supported (this node speaks {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// Unknown enum tag.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which enum.
        what: &'static str,
        /// The tag byte.
        tag: u8,
    },
    /// A varint longer than 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A count above the limit or above the bytes left.
    #[error("list of {count} elements exceeds the limit or the message size")]
    CountTooLarge {
        /// Claimed count.
        count: u64,
    },
    /// A string longer than [`MAX_STR`] or than the bytes left.
    #[error("string of {len} bytes exceeds the limit or the message size")]
    StringTooLong {
        /// Claimed length.
        len: u64,
    },
    /// String bytes not UTF-8.
    #[error("string is not UTF-8")]
    BadUtf8,
    /// An integer out of its field's range.
    #[error("integer out of range for {0}")]
    OutOfRange(&'static str),
    /// Bytes after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A TCP frame above [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds MAX_FRAME ({max} bytes)")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Which replicated table a group belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Node-level network membership: owner = node, key = network id.
    Networks,
    /// Endpoint table of one network: owner = node, key = task id.
    Endpoints(String),
}

/// One table entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    /// Task id (endpoints) or network id (network membership).
    pub key: String,
    /// Owner's Lamport clock at the write.
    pub clock: u64,
    /// Tombstone.
    pub deleted: bool,
    /// The record, for live endpoint entries only.
    pub record: Option<EndpointRecord>,
}

/// Entries of one owner in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Table.
    pub scope: Scope,
    /// Owning node id.
    pub owner: String,
    /// Entries.
    pub entries: Vec<WireEntry>,
}

/// Summary of one owner's entries in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerDigest {
    /// Owning node.
    pub owner: String,
    /// Number of entries (tombstones included).
    pub count: u64,
    /// Highest clock.
    pub max_clock: u64,
    /// Hash over `(key, clock, deleted)` in key order.
    pub hash: u64,
}

/// Digests of all owners in one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDigest {
    /// Table.
    pub scope: Scope,
    /// Per owner.
    pub owners: Vec<OwnerDigest>,
}

/// Everything nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A foca SWIM packet (UDP only).
    Swim(Vec<u8>),
    /// Fast dissemination of fresh writes (UDP, or TCP when too large).
    Update(Vec<Group>),
    /// Anti-entropy, step 1 (TCP): the initiator's digests.
    SyncRequest {
        /// Initiator's node id.
        from: String,
        /// Its digests for the scopes it takes part in.
        digests: Vec<ScopeDigest>,
    },
    /// Step 2: the responder's entries for differing owners, and which
    /// owners it wants from the initiator.
    SyncReply {
        /// Responder's entries.
        groups: Vec<Group>,
        /// `(scope, owner)` pairs the initiator should send.
        want: Vec<(Scope, String)>,
    },
    /// Step 3: the initiator's entries for the wanted owners.
    SyncPush(Vec<Group>),
}

// ---------------------------------------------------------------- encoding

/// Appends primitives to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.var(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.buf.extend_from_slice(b);
    }
    pub(crate) fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.buf.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.buf.extend_from_slice(&a.octets());
            }
        }
    }
    pub(crate) fn sock(&mut self, a: SocketAddr) {
        self.ip(a.ip());
        self.buf.extend_from_slice(&a.port().to_be_bytes());
    }
}

/// Bounds-checked reads.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn var(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = self.u8()?;
            let part = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(WireError::VarintOverflow);
            }
            v |= part << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::VarintOverflow)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        u16::try_from(self.var()?).map_err(|_| WireError::OutOfRange("u16"))
    }
    /// A list length: bounded by MAX_COUNT and by the bytes left.
    pub(crate) fn count(&mut self) -> Result<usize, WireError> {
        let n = self.var()?;
        if n > MAX_COUNT as u64 || n > self.b.len() as u64 {
            return Err(WireError::CountTooLarge { count: n });
        }
        Ok(n as usize)
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.var()?;
        if n > self.b.len() as u64 {
            return Err(WireError::StringTooLong { len: n });
        }
        self.take(n as usize)
    }
    pub(crate) fn str(&mut self) -> Result<String, WireError> {
        let n = self.var()?;
        if n > MAX_STR as u64 || n > self.b.len() as u64 {
            return Err(WireError::StringTooLong { len: n });
        }
        let raw = self.take(n as usize)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8)
    }
    pub(crate) fn ip(&mut self) -> Result<IpAddr, WireError> {
        match self.u8()? {
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().map_err(|_| WireError::Truncated)?;
                Ok(IpAddr::V4(Ipv4Addr::from(o)))
            }
            6 => {
                let o: [u8; 16] = self
                    .take(16)?
                    .try_into()
                    .map_err(|_| WireError::Truncated)?;
                Ok(IpAddr::V6(Ipv6Addr::from(o)))
            }
            tag => Err(WireError::UnknownTag { what: "ip", tag }),
        }
    }
    pub(crate) fn ipv4(&mut self) -> Result<Ipv4Addr, WireError> {
        let o: [u8; 4] = self.take(4)?.try_into().map_err(|_| WireError::Truncated)?;
        Ok(Ipv4Addr::from(o))
    }
    pub(crate) fn sock(&mut self) -> Result<SocketAddr, WireError> {
        let ip = self.ip()?;
        let p = self.take(2)?;
        Ok(SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])))
    }
    pub(crate) fn end(&self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes(self.b.len()))
        }
    }
}

fn put_scope(w: &mut Writer, s: &Scope) {
    match s {
        Scope::Networks => w.u8(0),
        Scope::Endpoints(n) => {
            w.u8(1);
            w.str(n);
        }
    }
}

fn get_scope(r: &mut Reader<'_>) -> Result<Scope, WireError> {
    match r.u8()? {
        0 => Ok(Scope::Networks),
        1 => Ok(Scope::Endpoints(r.str()?)),
        tag => Err(WireError::UnknownTag { what: "scope", tag }),
    }
}

fn put_record(w: &mut Writer, e: &EndpointRecord) {
    w.str(&e.task_id);
    w.str(&e.task_name);
    w.str(&e.service_name);
    w.str(&e.service_id);
    match e.vip {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            w.buf.extend_from_slice(&v.octets());
        }
    }
    w.buf.extend_from_slice(&e.ip.octets());
    w.buf.extend_from_slice(&e.mac);
    w.str(&e.node_id);
    w.ip(e.node_addr);
    w.var(e.ports.len() as u64);
    for p in &e.ports {
        w.str(&p.protocol);
        w.var(u64::from(p.target));
        w.var(u64::from(p.published));
    }
    w.var(e.aliases.len() as u64);
    for a in &e.aliases {
        w.str(a);
    }
    w.u8(u8::from(e.dnsrr) | (u8::from(e.disabled) << 1));
}

fn get_record(r: &mut Reader<'_>) -> Result<EndpointRecord, WireError> {
    let task_id = r.str()?;
    let task_name = r.str()?;
    let service_name = r.str()?;
    let service_id = r.str()?;
    let vip = match r.u8()? {
        0 => None,
        1 => Some(r.ipv4()?),
        tag => return Err(WireError::UnknownTag { what: "vip", tag }),
    };
    let ip = r.ipv4()?;
    let mac: [u8; 6] = r.take(6)?.try_into().map_err(|_| WireError::Truncated)?;
    let node_id = r.str()?;
    let node_addr = r.ip()?;
    let n = r.count()?;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        ports.push(PublishedPort {
            protocol: r.str()?,
            target: r.u16()?,
            published: r.u16()?,
        });
    }
    let n = r.count()?;
    let mut aliases = Vec::with_capacity(n);
    for _ in 0..n {
        aliases.push(r.str()?);
    }
    let flags = r.u8()?;
    if flags > 3 {
        return Err(WireError::UnknownTag {
            what: "flags",
            tag: flags,
        });
    }
    Ok(EndpointRecord {
        task_id,
        task_name,
        service_name,
        service_id,
        vip,
        ip,
        mac,
        node_id,
        node_addr,
        ports,
        aliases,
        dnsrr: flags & 1 != 0,
        disabled: flags & 2 != 0,
    })
}

pub(crate) fn put_entry(w: &mut Writer, e: &WireEntry) {
    w.str(&e.key);
    w.var(e.clock);
    match (&e.record, e.deleted) {
        (_, true) => w.u8(2),
        (None, false) => w.u8(0),
        (Some(rec), false) => {
            w.u8(1);
            put_record(w, rec);
        }
    }
}

fn get_entry(r: &mut Reader<'_>) -> Result<WireEntry, WireError> {
    let key = r.str()?;
    let clock = r.var()?;
    let (deleted, record) = match r.u8()? {
        0 => (false, None),
        1 => (false, Some(get_record(r)?)),
        2 => (true, None),
        tag => return Err(WireError::UnknownTag { what: "entry", tag }),
    };
    Ok(WireEntry {
        key,
        clock,
        deleted,
        record,
    })
}

pub(crate) fn put_group_head(w: &mut Writer, g: &Group) {
    put_scope(w, &g.scope);
    w.str(&g.owner);
    w.var(g.entries.len() as u64);
}

fn put_groups(w: &mut Writer, gs: &[Group]) {
    w.var(gs.len() as u64);
    for g in gs {
        put_group_head(w, g);
        for e in &g.entries {
            put_entry(w, e);
        }
    }
}

fn get_groups(r: &mut Reader<'_>) -> Result<Vec<Group>, WireError> {
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let scope = get_scope(r)?;
        let owner = r.str()?;
        let m = r.count()?;
        let mut entries = Vec::with_capacity(m);
        for _ in 0..m {
            entries.push(get_entry(r)?);
        }
        out.push(Group {
            scope,
            owner,
            entries,
        });
    }
    Ok(out)
}

/// Encode a message (plaintext, before sealing).
pub fn encode(m: &Message) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(WIRE_VERSION);
    match m {
        Message::Swim(b) => {
            w.u8(0);
            w.bytes(b);
        }
        Message::Update(gs) => {
            w.u8(1);
            put_groups(&mut w, gs);
        }
        Message::SyncRequest { from, digests } => {
            w.u8(2);
            w.str(from);
            w.var(digests.len() as u64);
            for d in digests {
                put_scope(&mut w, &d.scope);
                w.var(d.owners.len() as u64);
                for o in &d.owners {
                    w.str(&o.owner);
                    w.var(o.count);
                    w.var(o.max_clock);
                    w.buf.extend_from_slice(&o.hash.to_be_bytes());
                }
            }
        }
        Message::SyncReply { groups, want } => {
            w.u8(3);
            put_groups(&mut w, groups);
            w.var(want.len() as u64);
            for (s, o) in want {
                put_scope(&mut w, s);
                w.str(o);
            }
        }
        Message::SyncPush(gs) => {
            w.u8(4);
            put_groups(&mut w, gs);
        }
    }
    w.buf
}

/// Decode a message. Never panics; rejects trailing bytes and oversize counts.
pub fn decode(b: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader::new(b);
    let v = r.u8()?;
    if v != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(v));
    }
    let m = match r.u8()? {
        0 => Message::Swim(r.bytes()?.to_vec()),
        1 => Message::Update(get_groups(&mut r)?),
        2 => {
            let from = r.str()?;
            let n = r.count()?;
            let mut digests = Vec::with_capacity(n);
            for _ in 0..n {
                let scope = get_scope(&mut r)?;
                let m = r.count()?;
                let mut owners = Vec::with_capacity(m);
                for _ in 0..m {
                    let owner = r.str()?;
                    let count = r.var()?;
                    let max_clock = r.var()?;
                    let h: [u8; 8] = r.take(8)?.try_into().map_err(|_| WireError::Truncated)?;
                    owners.push(OwnerDigest {
                        owner,
                        count,
                        max_clock,
                        hash: u64::from_be_bytes(h),
                    });
                }
                digests.push(ScopeDigest { scope, owners });
            }
            Message::SyncRequest { from, digests }
        }
        3 => {
            let groups = get_groups(&mut r)?;
            let n = r.count()?;
            let mut want = Vec::with_capacity(n);
            for _ in 0..n {
                let s = get_scope(&mut r)?;
                want.push((s, r.str()?));
            }
            Message::SyncReply { groups, want }
        }
        4 => Message::SyncPush(get_groups(&mut r)?),
        tag => {
            return Err(WireError::UnknownTag {
                what: "message",
                tag,
            })
        }
    };
    r.end()?;
    Ok(m)
}

/// Prefix a (sealed) payload with its `u32` big-endian length.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() > MAX_FRAME {
        return Err(WireError::FrameTooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Check a frame's length prefix before reading the body.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = EndpointRecord> {
        (
            "[a-z0-9]{0,12}",
            "[a-z.0-9]{0,20}",
            any::<Option<[u8; 4]>>(),
            any::<[u8; 4]>(),
            any::<[u8; 6]>(),
            any::<(bool, bool)>(),
            proptest::collection::vec(("tcp|udp", any::<u16>(), any::<u16>()), 0..3),
            proptest::collection::vec("[a-z]{1,8}", 0..3),
            any::<[u8; 16]>(),
        )
            .prop_map(
                |(id, name, vip, ip, mac, (dnsrr, disabled), ports, aliases, v6)| EndpointRecord {
                    task_id: id.clone(),
                    task_name: name.clone(),
                    service_name: name,
                    service_id: id,
                    vip: vip.map(Ipv4Addr::from),
                    ip: Ipv4Addr::from(ip),
                    mac,
                    node_id: "n1".into(),
                    node_addr: IpAddr::V6(Ipv6Addr::from(v6)),
                    ports: ports
                        .into_iter()
                        .map(|(protocol, target, published)| PublishedPort {
                            protocol,
                            target,
                            published,
                        })
                        .collect(),
                    aliases,
                    dnsrr,
                    disabled,
                },
            )
    }

    fn entry() -> impl Strategy<Value = WireEntry> {
        (
            "[a-z0-9]{1,10}",
            any::<u64>(),
            any::<bool>(),
            proptest::option::of(record()),
        )
            .prop_map(|(key, clock, deleted, record)| WireEntry {
                key,
                clock,
                deleted,
                record: if deleted { None } else { record },
            })
    }

    fn group() -> impl Strategy<Value = Group> {
        (
            proptest::option::of("[a-z]{1,6}"),
            "[a-z]{1,6}",
            proptest::collection::vec(entry(), 0..4),
        )
            .prop_map(|(net, owner, entries)| Group {
                scope: net.map_or(Scope::Networks, Scope::Endpoints),
                owner,
                entries,
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Message::Swim),
            proptest::collection::vec(group(), 0..3).prop_map(Message::Update),
            proptest::collection::vec(group(), 0..3).prop_map(Message::SyncPush),
            (
                proptest::collection::vec(group(), 0..3),
                proptest::collection::vec((proptest::option::of("[a-z]{1,4}"), "[a-z]{1,4}"), 0..3)
            )
                .prop_map(|(groups, want)| Message::SyncReply {
                    groups,
                    want: want
                        .into_iter()
                        .map(|(n, o)| (n.map_or(Scope::Networks, Scope::Endpoints), o))
                        .collect(),
                }),
            (
                "[a-z]{1,5}",
                proptest::collection::vec(("[a-z]{1,4}", any::<(u64, u64, u64)>()), 0..4)
            )
                .prop_map(|(from, owners)| Message::SyncRequest {
                    from,
                    digests: vec![ScopeDigest {
                        scope: Scope::Networks,
                        owners: owners
                            .into_iter()
                            .map(|(owner, (count, max_clock, hash))| OwnerDigest {
                                owner,
                                count,
                                max_clock,
                                hash,
                            })
                            .collect(),
                    }],
                }),
        ]
    }

    proptest! {
        #[test]
        fn decode_encode_roundtrip(m in message()) {
            let bytes = encode(&m);
            prop_assert_eq!(decode(&bytes).unwrap(), m);
        }

        #[test]
        fn decode_arbitrary_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }

        #[test]
        fn truncation_is_an_error(m in message(), cut in 1usize..20) {
            let bytes = encode(&m);
            let cut = cut.min(bytes.len());
            prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn trailing_and_oversize_refused() {
        let mut b = encode(&Message::Update(vec![]));
        b.push(0);
        assert_eq!(decode(&b), Err(WireError::TrailingBytes(1)));
        // Update with a claimed 2^40 groups.
        let mut w = Writer::default();
        w.u8(WIRE_VERSION);
        w.u8(1);
        w.var(1 << 40);
        assert!(matches!(
            decode(&w.buf),
            Err(WireError::CountTooLarge { .. })
        ));
        assert!(matches!(
            frame_len((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(WireError::FrameTooLarge { .. })
        ));
        let err = frame_len(u32::MAX.to_be_bytes()).unwrap_err().to_string();
        assert!(err.contains("MAX_FRAME"), "{err}");
    }
}
