//! foca glue: our node identity and a codec for foca's packets.
//!
//! The identity's `Addr` is the gossip socket address, so a node can
//! announce itself to a seed it only knows by address. `generation`
//! orders identities that share an address: a restarted node (new
//! generation from the caller) or a node that foca declared down and that
//! renewed itself (`generation + 1`) wins over the old one.

use crate::wire::{Reader, WireError, Writer};
use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};
use std::net::SocketAddr;

/// A member's identity in SWIM.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity {
    /// Stable node id (the table owner name).
    pub node_id: String,
    /// Gossip address (UDP and TCP).
    pub addr: SocketAddr,
    /// Bumped on restart and on rejoin after being declared down.
    pub generation: u64,
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.node_id) > (adversary.generation, &adversary.node_id)
    }
}

/// foca codec over our [`Writer`]/[`Reader`] primitives.
#[derive(Debug, Default, Clone, Copy)]
pub struct SwimCodec;

fn put_id(w: &mut Writer, id: &NodeIdentity) {
    w.str(&id.node_id);
    w.sock(id.addr);
    w.var(id.generation);
}

fn get_id(r: &mut Reader<'_>) -> Result<NodeIdentity, WireError> {
    let node_id = r.str()?;
    let addr = r.sock()?;
    let generation = r.var()?;
    Ok(NodeIdentity {
        node_id,
        addr,
        generation,
    })
}

fn decode_with<T>(
    mut buf: impl Buf,
    f: impl FnOnce(&mut Reader<'_>) -> Result<T, WireError>,
) -> Result<T, WireError> {
    let chunk = buf.chunk();
    let mut r = Reader::new(chunk);
    let v = f(&mut r)?;
    let used = chunk.len() - r.b.len();
    buf.advance(used);
    Ok(v)
}

impl foca::Codec<NodeIdentity> for SwimCodec {
    type Error = WireError;

    fn encode_header(
        &mut self,
        h: &Header<NodeIdentity>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        let mut w = Writer::default();
        put_id(&mut w, &h.src);
        w.var(u64::from(h.src_incarnation));
        put_id(&mut w, &h.dst);
        match &h.message {
            Message::Ping(n) => {
                w.u8(0);
                w.u8(*n);
            }
            Message::Ack(n) => {
                w.u8(1);
                w.u8(*n);
            }
            Message::PingReq {
                target,
                probe_number,
            } => {
                w.u8(2);
                put_id(&mut w, target);
                w.u8(*probe_number);
            }
            Message::IndirectPing {
                origin,
                probe_number,
            } => {
                w.u8(3);
                put_id(&mut w, origin);
                w.u8(*probe_number);
            }
            Message::IndirectAck {
                target,
                probe_number,
            } => {
                w.u8(4);
                put_id(&mut w, target);
                w.u8(*probe_number);
            }
            Message::ForwardedAck {
                origin,
                probe_number,
            } => {
                w.u8(5);
                put_id(&mut w, origin);
                w.u8(*probe_number);
            }
            Message::Announce => w.u8(6),
            Message::Feed => w.u8(7),
            Message::Gossip => w.u8(8),
            Message::Broadcast => w.u8(9),
            Message::TurnUndead => w.u8(10),
        }
        if buf.remaining_mut() < w.buf.len() {
            return Err(WireError::Truncated);
        }
        buf.put_slice(&w.buf);
        Ok(())
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, WireError> {
        decode_with(buf, |r| {
            let src = get_id(r)?;
            let src_incarnation = r.u16()?;
            let dst = get_id(r)?;
            let message = match r.u8()? {
                0 => Message::Ping(r.u8()?),
                1 => Message::Ack(r.u8()?),
                2 => Message::PingReq {
                    target: get_id(r)?,
                    probe_number: r.u8()?,
                },
                3 => Message::IndirectPing {
                    origin: get_id(r)?,
                    probe_number: r.u8()?,
                },
                4 => Message::IndirectAck {
                    target: get_id(r)?,
                    probe_number: r.u8()?,
                },
                5 => Message::ForwardedAck {
                    origin: get_id(r)?,
                    probe_number: r.u8()?,
                },
                6 => Message::Announce,
                7 => Message::Feed,
                8 => Message::Gossip,
                9 => Message::Broadcast,
                10 => Message::TurnUndead,
                tag => return Err(WireError::UnknownTag { what: "swim", tag }),
            };
            Ok(Header {
                src,
                src_incarnation,
                dst,
                message,
            })
        })
    }

    fn encode_member(
        &mut self,
        m: &Member<NodeIdentity>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        let mut w = Writer::default();
        put_id(&mut w, m.id());
        w.var(u64::from(m.incarnation()));
        w.u8(match m.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        if buf.remaining_mut() < w.buf.len() {
            return Err(WireError::Truncated);
        }
        buf.put_slice(&w.buf);
        Ok(())
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, WireError> {
        decode_with(buf, |r| {
            let id = get_id(r)?;
            let inc = r.u16()?;
            let state = match r.u8()? {
                0 => State::Alive,
                1 => State::Suspect,
                2 => State::Down,
                tag => return Err(WireError::UnknownTag { what: "state", tag }),
            };
            Ok(Member::new(id, inc, state))
        })
    }
}
