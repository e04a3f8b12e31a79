//! Entry points for fuzzers: the cargo-fuzz targets in `fuzz/` and the bounded property
//! tests that run in CI call these same functions. Each decodes untrusted bytes the way the
//! coordinator or the worker does and must return (an error is fine), never panic.

use crate::proof::decode_hashes;
use crate::worker::{HelloPayload, ServerMessage, SignedHello, WorkerMessage};

/// A message off a worker's socket, and what the coordinator decodes inside it.
pub fn worker_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(message) = serde_json::from_str::<WorkerMessage>(text) else { return };
    match message {
        WorkerMessage::Hello(signed) => hello(signed.payload.as_bytes()),
        WorkerMessage::ProofCommitment { roots, .. } => drop(decode_hashes(&roots)),
        WorkerMessage::ProofOpening { opening, .. } => drop(opening.decode()),
        _ => {}
    }
}

/// A hello's payload, as the coordinator reads it before trusting any of it.
pub fn hello(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(payload) = serde_json::from_str::<HelloPayload>(text) else { return };
    if payload.spec.validate().is_ok() {
        let _ = payload.spec.gpu_offer();
        let _ = payload.spec.admission_claim(payload.simulated);
    }
    let _ = crate::signing::worker_hello_message(text);
}

/// A signed envelope: a hello as it arrives, checked against its own key.
pub fn signed_hello(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(signed) = serde_json::from_str::<SignedHello>(text) else { return };
    hello(signed.payload.as_bytes());
}

/// A message off the coordinator's socket, as the worker reads it.
pub fn server_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match serde_json::from_str::<ServerMessage>(text) {
        Ok(ServerMessage::ProofChallenge(challenge)) => {
            let _ = herd_core::hex::decode_array::<32>(&challenge.nonce);
            let _ = challenge.params().validate();
        }
        Ok(ServerMessage::VramChallenge(challenge)) => {
            let _ = herd_core::hex::decode_array::<32>(&challenge.nonce);
            let _ = challenge.params().validate();
        }
        Ok(ServerMessage::VramWalk { walk_nonce, .. }) => drop(herd_core::hex::decode_array::<32>(&walk_nonce)),
        _ => {}
    }
}
