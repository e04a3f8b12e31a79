//! The decoders of everything a stranger can send, under bounded property tests (the same
//! entry points the cargo-fuzz targets in `fuzz/` drive without a bound): random bytes, and
//! valid messages with random edits, must decode or be refused — never panic.

use herd_proto::fuzzing;
use proptest::prelude::*;

/// Valid messages of each kind, as the real peers send them: edits of these reach deeper
/// than random bytes do.
const SAMPLES: &[&str] = &[
    r#"{"type":"heartbeat","utilization":{}}"#,
    r#"{"type":"proof_commitment","challenge_id":"poc-1","roots":["00000000000000000000000000000000000000000000000000000000000000ff"]}"#,
    r#"{"type":"proof_opening","challenge_id":"poc-1","opening":{"checkpoint":2,"row":3,"start":[1,-2,3],"start_path":["ab"],"links":[[1,2,3]],"end_path":[]}}"#,
    r#"{"type":"speedtest_wanted"}"#,
    r#"{"type":"tunnel_end","stream":7,"error":null}"#,
    r#"{"type":"challenge","nonce":"n","server_time":1}"#,
    r#"{"type":"proof_challenge","challenge_id":"poc-2","nonce":"00","n":64,"rows":64,"steps":2,"stride":1,"openings":1,"deadline_ms":5}"#,
    r#"{"payload":"{\"protocol_version\":3}","signature":"abc"}"#,
];

fn edited() -> impl Strategy<Value = Vec<u8>> {
    (0..SAMPLES.len(), prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8)).prop_map(|(i, edits)| {
        let mut bytes = SAMPLES[i].as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => drop(bytes.remove(at)),
                _ => {}
            }
        }
        bytes
    })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), edited()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn worker_messages_never_panic(data in any_input()) {
        fuzzing::worker_message(&data);
    }

    #[test]
    fn server_messages_never_panic(data in any_input()) {
        fuzzing::server_message(&data);
    }

    #[test]
    fn signed_envelopes_and_hellos_never_panic(data in any_input()) {
        fuzzing::signed_hello(&data);
        fuzzing::hello(&data);
    }
}

#[test]
fn the_samples_decode_so_edits_start_from_real_messages() {
    let decoded = SAMPLES
        .iter()
        .filter(|s| {
            serde_json::from_str::<herd_proto::worker::WorkerMessage>(s).is_ok()
                || serde_json::from_str::<herd_proto::worker::ServerMessage>(s).is_ok()
        })
        .count();
    assert!(decoded >= 5, "most samples must be valid messages ({decoded} are)");
}
