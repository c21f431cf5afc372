//! Any frame and virtio header through the TSO cutter and the TCP coalescer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_overlay::offload::{TcpCoalescer, TsoPlan, VnetHdr, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(hdr) = VnetHdr::parse(data) else { return };
    let frame = &data[VNET_HDR_LEN..];
    if let Ok(plan) = TsoPlan::new(frame, &hdr) {
        let mut out = vec![0u8; frame.len()];
        for i in 0..plan.count.min(64) {
            let n = plan.write_segment(frame, i, &mut out);
            assert_eq!(n, plan.segment_len(i));
        }
    }
    let mut gro = TcpCoalescer::new();
    for chunk in frame.chunks(frame.len().max(1).div_ceil(3)) {
        let _ = gro.push(chunk);
    }
    let _ = gro.take();
});
