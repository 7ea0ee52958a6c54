//! The TCP transport's frame decoder, as a server reads a client (preamble, frames, messages)
//! and as a client reads a server, on arbitrary bytes. It must refuse or accept, never panic,
//! and never allocate more than the frame bound beyond its input: the fuzz step runs it with
//! libFuzzer's `-malloc_limit_mb` well under what an unchecked 4 GiB length field would take.
#![no_main]

use quorate::tcp::wire::{decode_inbound, decode_outbound};
use quorate::testing::TypeConfig;

/// The bound the target decodes with: 1 MiB.
const MAX_FRAME_BYTES: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_inbound::<TypeConfig>(data, MAX_FRAME_BYTES);
    let _ = decode_outbound::<TypeConfig>(data, MAX_FRAME_BYTES);
});
