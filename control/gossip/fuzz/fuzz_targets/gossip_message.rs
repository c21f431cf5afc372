//! Arbitrary bytes into the message decoder, the sealer's open path and the
//! core's datagram and stream inputs: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_gossip::core::{CoreConfig, Gossip, Timings};
use shoal_gossip::seal::KeyRing;
use shoal_gossip::wire;
use std::net::SocketAddr;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    let Ok(ring) = KeyRing::new(&[(1, [7; 32])], 1) else { return };
    let _ = ring.open(data);
    // Authentic envelope around arbitrary plaintext: reaches the decoder and
    // the core's handlers behind authentication.
    let sealed = ring.seal([0; 12], data);
    let now = Instant::now();
    let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap_or_else(|_| unreachable!());
    let cfg = CoreConfig {
        node_id: "fuzz".into(),
        advertise: addr,
        generation: 1,
        timings: Timings::default(),
        rng_seed: 1,
        os_nonces: false,
    };
    let Ok(mut core) = Gossip::new(now, cfg, ring) else { return };
    let _ = core.handle_datagram(now, addr, &sealed);
    let _ = core.handle_stream_frame(now, addr, &sealed);
    let _ = core.handle_datagram(now, addr, data);
});
