//! Bytes in, bytes (or a forward request) out: the pure answering core.
//!
//! [`handle_query`] is the one function that sees untrusted bytes. It never panics,
//! allocates only what the answer needs, and takes the round-robin counter as an
//! argument instead of reading a clock or a random source, so it is the fuzz
//! target and the driver only moves bytes.
//!
//! Order of checks (each is counted by the driver through [`ReplyKind`] or
//! [`DropReason`]):
//! 1. fewer than 12 bytes (no header, so no id to answer to): dropped;
//! 2. the QR bit set (a response, never answered, to avoid loops and reflection):
//!    dropped;
//! 3. an opcode other than QUERY: NOTIMP;
//! 4. a message hickory-proto cannot decode: FORMERR;
//! 5. not exactly one question: FORMERR;
//! 6. a class other than IN: forwarded (CHAOS and friends are the host's business);
//! 7. otherwise the [`Zone`] decides: answer, NODATA, or forward.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::zone::{rotate_records, Lookup, Zone};

/// The UDP payload size a client without EDNS can take (RFC 1035).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The largest UDP payload we send, whatever the client's EDNS says (the DNS flag
/// day 2020 value: avoids IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Why a datagram got no answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a DNS header: there is no id to answer to.
    TooShort,
    /// The QR bit is set: it is a response, not a query.
    NotAQuery,
}

/// What kind of reply [`handle_query`] produced, for the driver's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Answered from the zone (records or NODATA).
    Local,
    /// The message could not be decoded or had not exactly one question.
    FormErr,
    /// An opcode other than QUERY.
    NotImp,
    /// The forwarder could not get an answer (built by [`ForwardQuery::servfail`]).
    ServFail,
    /// An upstream's answer passed through.
    Forwarded,
}

/// A response ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The full response, for TCP (and for UDP when it fits).
    pub bytes: Vec<u8>,
    /// A truncated copy (TC set, question only) when `bytes` is larger than the
    /// client's UDP payload size.
    pub udp_truncated: Option<Vec<u8>>,
    /// What the reply is, for counting.
    pub kind: ReplyKind,
}

impl Reply {
    /// The bytes to send back over UDP.
    pub fn for_udp(&self) -> &[u8] {
        self.udp_truncated.as_deref().unwrap_or(&self.bytes)
    }

    /// The bytes to send back over TCP.
    pub fn for_tcp(&self) -> &[u8] {
        &self.bytes
    }
}

/// A question that is not ours, with what the forwarder needs to ask upstream and
/// to answer the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardQuery {
    /// The client's message, decoded.
    pub message: Message,
    /// The client's UDP payload size (EDNS, clamped), for truncating the answer.
    pub max_udp: u16,
}

impl ForwardQuery {
    /// The one question asked.
    pub fn query(&self) -> &Query {
        // handle_query only builds a ForwardQuery from a message with one question.
        &self.message.queries[0]
    }

    /// The client's message id.
    pub fn id(&self) -> u16 {
        self.message.metadata.id
    }

    /// The bytes to send upstream: the client's message unchanged but for `id`, so
    /// EDNS, the DO and CD bits and the question pass through as asked.
    pub fn upstream_bytes(&self, id: u16) -> Option<Vec<u8>> {
        let mut m = self.message.clone();
        m.metadata.id = id;
        m.to_vec().ok()
    }

    /// A SERVFAIL for the client (no upstream answered, or too many forwards).
    pub fn servfail(&self) -> Reply {
        let mut m = response_to(&self.message);
        m.metadata.response_code = ResponseCode::ServFail;
        m.metadata.authoritative = false;
        finish(m, self.max_udp, ReplyKind::ServFail)
    }

    /// Checks an upstream response against this question and turns it into the
    /// client's reply: the upstream's bytes unchanged but for the client's id, so
    /// records hickory-proto would not round-trip pass through untouched. Only the
    /// header and the question are decoded. `None` when `bytes` is not an answer
    /// to our question (wrong id, wrong question, not a response); the forwarder
    /// then keeps waiting or tries the next upstream.
    pub fn accept_upstream(&self, bytes: &[u8], upstream_id: u16) -> Option<Reply> {
        let mut decoder = BinDecoder::new(bytes);
        let header = Header::read(&mut decoder).ok()?;
        if header.metadata.id != upstream_id
            || header.metadata.message_type != MessageType::Response
            || header.counts.queries != 1
        {
            return None;
        }
        let queries = Message::read_queries(&mut decoder, 1).ok()?;
        let ours = self.query();
        let theirs = queries.first()?;
        let same = theirs.query_type() == ours.query_type()
            && theirs.query_class() == ours.query_class()
            && theirs.name().eq_ignore_root(ours.name());
        if !same {
            return None;
        }
        let mut out = bytes.to_vec();
        out[..2].copy_from_slice(&self.id().to_be_bytes());
        let udp_truncated = (out.len() > usize::from(self.max_udp)).then(|| {
            let mut m = Message::new(self.id(), MessageType::Response, header.metadata.op_code);
            m.metadata = header.metadata;
            m.metadata.id = self.id();
            m.metadata.truncation = true;
            m.queries = queries;
            m.to_vec().unwrap_or_else(|_| {
                // Header only: TC set, every count zero.
                let mut h = out[..12].to_vec();
                h[2] |= 0b0000_0010;
                h[4..].fill(0);
                h
            })
        });
        Some(Reply {
            bytes: out,
            udp_truncated,
            kind: ReplyKind::Forwarded,
        })
    }

    /// Whether an upstream UDP answer was truncated (then ask again over TCP).
    pub fn is_truncated(bytes: &[u8]) -> bool {
        bytes.len() > 2 && bytes[2] & 0b0000_0010 != 0
    }
}

/// What to do with one datagram or TCP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Send this back.
    Reply(Reply),
    /// Ask the upstream resolvers.
    Forward(Box<ForwardQuery>),
    /// Send nothing.
    Drop(DropReason),
}

/// Answers one DNS message from `zone`. `rotate` picks the round-robin order of
/// multiple A records (pass a per-server counter). Never panics.
pub fn handle_query(zone: &Zone, query_bytes: &[u8], rotate: u64) -> QueryOutcome {
    let header = match Header::read(&mut BinDecoder::new(query_bytes)) {
        Ok(h) => h,
        Err(_) => return QueryOutcome::Drop(DropReason::TooShort),
    };
    let meta = header.metadata;
    if meta.message_type != MessageType::Query {
        return QueryOutcome::Drop(DropReason::NotAQuery);
    }
    let bare_error = |rcode: ResponseCode, kind: ReplyKind| {
        let mut m = Message::error_msg(meta.id, meta.op_code, rcode);
        m.metadata.recursion_desired = meta.recursion_desired;
        m.metadata.recursion_available = true;
        QueryOutcome::Reply(finish(m, MIN_UDP_PAYLOAD, kind))
    };
    if meta.op_code != OpCode::Query {
        return bare_error(ResponseCode::NotImp, ReplyKind::NotImp);
    }
    let message = match Message::from_vec(query_bytes) {
        Ok(m) => m,
        Err(_) => return bare_error(ResponseCode::FormErr, ReplyKind::FormErr),
    };
    if message.queries.len() != 1 {
        return bare_error(ResponseCode::FormErr, ReplyKind::FormErr);
    }
    let max_udp = message.edns.as_ref().map_or(MIN_UDP_PAYLOAD, |e| {
        e.max_payload().clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    });
    let query = &message.queries[0];
    if query.query_class() != DNSClass::IN {
        return QueryOutcome::Forward(Box::new(ForwardQuery { message, max_udp }));
    }
    let lookup = zone.lookup(&query.name().to_ascii(), query.query_type());
    let mut m = response_to(&message);
    let name = query.name().clone();
    match lookup {
        Lookup::Forward => {
            return QueryOutcome::Forward(Box::new(ForwardQuery { message, max_udp }));
        }
        Lookup::NoData => {}
        Lookup::A(mut ips) => {
            rotate_records(&mut ips, rotate);
            m.answers = ips
                .into_iter()
                .map(|ip: Ipv4Addr| Record::from_rdata(name.clone(), zone.ttl(), RData::A(A(ip))))
                .collect();
        }
        Lookup::Ptr(target) => {
            // A task name that is not a valid DNS name gets NODATA.
            if let Ok(mut target) = Name::from_ascii(&target) {
                target.set_fqdn(true);
                m.answers.push(Record::from_rdata(
                    name,
                    zone.ttl(),
                    RData::PTR(PTR(target)),
                ));
            }
        }
    }
    QueryOutcome::Reply(finish(m, max_udp, ReplyKind::Local))
}

/// An authoritative NOERROR response to `query` with its question echoed, flags
/// set like Docker's server (AA, RD copied, RA), and EDNS when the query had it.
fn response_to(query: &Message) -> Message {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = query.metadata.checking_disabled;
    m.queries = query.queries.clone();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        m.set_edns(edns);
    }
    m
}

/// Encodes `m`, with a truncated copy when it is too big for the client's UDP.
/// An unencodable message becomes a bare SERVFAIL (which always encodes).
fn finish(m: Message, max_udp: u16, kind: ReplyKind) -> Reply {
    match m.to_vec() {
        Ok(bytes) => {
            let udp_truncated = (bytes.len() > usize::from(max_udp))
                .then(|| m.truncate().to_vec().ok())
                .flatten();
            Reply {
                bytes,
                udp_truncated,
                kind,
            }
        }
        Err(_) => {
            let mut fail = Message::error_msg(m.metadata.id, OpCode::Query, ResponseCode::ServFail);
            fail.metadata.recursion_available = true;
            Reply {
                bytes: fail.to_vec().unwrap_or_default(),
                udp_truncated: None,
                kind: ReplyKind::ServFail,
            }
        }
    }
}

/// Builds a query message for `name`/`qtype` (tests, the benchmark, clients).
pub fn build_query(id: u16, name: &str, qtype: RecordType) -> Option<Vec<u8>> {
    let name = Name::from_ascii(name).ok()?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, qtype));
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::{Endpoint, DEFAULT_TTL};

    fn zone() -> Zone {
        let mk = |slot: u8, vip: Option<Ipv4Addr>| Endpoint {
            network_id: "n".into(),
            service_name: "web".into(),
            service_id: "s".into(),
            task_name: format!("web.{slot}.t{slot}"),
            task_id: format!("t{slot}"),
            ip: Ipv4Addr::new(10, 0, 0, 10 + slot),
            vip,
            dnsrr: false,
            aliases: vec![],
            healthy: true,
        };
        let vip = Some(Ipv4Addr::new(10, 0, 0, 2));
        Zone::new([mk(1, vip), mk(2, vip), mk(3, vip)], DEFAULT_TTL)
    }

    fn reply(outcome: QueryOutcome) -> (Message, ReplyKind) {
        match outcome {
            QueryOutcome::Reply(r) => (Message::from_vec(&r.bytes).expect("decodes"), r.kind),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn a_answers(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answers_a_with_flags_and_rotation() {
        let z = zone();
        let q = build_query(7, "tasks.web.", RecordType::A).unwrap();
        let (m, kind) = reply(handle_query(&z, &q, 0));
        assert_eq!(kind, ReplyKind::Local);
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert!(m.metadata.recursion_available);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        let first = a_answers(&m);
        assert_eq!(first.len(), 3);
        assert!(m.answers.iter().all(|r| r.ttl == DEFAULT_TTL));
        let (m2, _) = reply(handle_query(&z, &q, 1));
        assert_ne!(a_answers(&m2)[0], first[0]);
    }

    #[test]
    fn ptr_nodata_and_forward() {
        let z = zone();
        let q = build_query(1, "11.0.0.10.in-addr.arpa.", RecordType::PTR).unwrap();
        let (m, _) = reply(handle_query(&z, &q, 0));
        match &m.answers[0].data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.1.t1."),
            other => panic!("{other:?}"),
        }
        let q = build_query(2, "web.", RecordType::AAAA).unwrap();
        let (m, kind) = reply(handle_query(&z, &q, 0));
        assert_eq!(kind, ReplyKind::Local);
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let q = build_query(3, "example.org.", RecordType::A).unwrap();
        match handle_query(&z, &q, 0) {
            QueryOutcome::Forward(f) => {
                assert_eq!(f.id(), 3);
                assert_eq!(f.max_udp, MIN_UDP_PAYLOAD);
                let sf = Message::from_vec(&f.servfail().bytes).unwrap();
                assert_eq!(sf.metadata.response_code, ResponseCode::ServFail);
                assert_eq!(sf.metadata.id, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_and_drops() {
        let z = zone();
        assert_eq!(
            handle_query(&z, &[1, 2, 3], 0),
            QueryOutcome::Drop(DropReason::TooShort)
        );
        let mut q = build_query(9, "web.", RecordType::A).unwrap();
        q[2] |= 0x80;
        assert_eq!(
            handle_query(&z, &q, 0),
            QueryOutcome::Drop(DropReason::NotAQuery)
        );
        // Header claims one question, none follows.
        let garbage = [0, 5, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let (m, kind) = reply(handle_query(&z, &garbage, 0));
        assert_eq!((m.metadata.id, kind), (5, ReplyKind::FormErr));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // No question.
        let empty = [0, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(reply(handle_query(&z, &empty, 0)).1, ReplyKind::FormErr);
        // Opcode STATUS (2).
        let mut status = build_query(8, "web.", RecordType::A).unwrap();
        status[2] = (status[2] & 0x87) | (2 << 3);
        let (m, kind) = reply(handle_query(&z, &status, 0));
        assert_eq!(kind, ReplyKind::NotImp);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn large_answers_are_truncated_for_udp() {
        let eps = (0..100u8).map(|i| Endpoint {
            network_id: "n".into(),
            service_name: "big".into(),
            service_id: "b".into(),
            task_name: format!("big.{i}.t{i}"),
            task_id: format!("t{i}"),
            ip: Ipv4Addr::new(10, 1, 0, i),
            vip: None,
            dnsrr: true,
            aliases: vec![],
            healthy: true,
        });
        let z = Zone::new(eps, DEFAULT_TTL);
        let q = build_query(4, "tasks.big", RecordType::A).unwrap();
        match handle_query(&z, &q, 0) {
            QueryOutcome::Reply(r) => {
                assert_eq!(
                    a_answers(&Message::from_vec(r.for_tcp()).unwrap()).len(),
                    100
                );
                let udp = Message::from_vec(r.for_udp()).unwrap();
                assert!(udp.metadata.truncation && udp.answers.is_empty());
                assert!(r.for_udp().len() <= 512);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn upstream_answers_are_matched() {
        let z = zone();
        let q = build_query(3, "Example.org.", RecordType::A).unwrap();
        let QueryOutcome::Forward(f) = handle_query(&z, &q, 0) else {
            panic!("not forwarded")
        };
        let up = f.upstream_bytes(999).unwrap();
        let mut resp = Message::from_vec(&up).unwrap();
        resp.metadata.message_type = MessageType::Response;
        resp.metadata.response_code = ResponseCode::NXDomain;
        let bytes = resp.to_vec().unwrap();
        assert!(f.accept_upstream(&bytes, 998).is_none());
        let r = f.accept_upstream(&bytes, 999).unwrap();
        let m = Message::from_vec(&r.bytes).unwrap();
        assert_eq!(m.metadata.id, 3);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let other = build_query(999, "other.org.", RecordType::A).unwrap();
        assert!(f.accept_upstream(&other, 999).is_none());
    }
}
