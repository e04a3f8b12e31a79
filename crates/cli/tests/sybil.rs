//! A Sybil flood does not starve honest devices: fake 8× H100 devices over real sockets,
//! spread over many owners, never answering a challenge, while honest CPU workers (real
//! agents, real proofs) join. `herd bench sybil` runs the large version and prints figures;
//! this is the small one, asserting the bound.

use std::time::Duration;

use herd_cli::commands::bench::sybil::{flood, SybilArgs};

/// Honest devices are proven and ready within this of starting, whatever the fakes do
/// (measured here: see docs/BENCHMARKS.md).
const HONEST_READY_BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_devices_are_proven_while_a_thousand_fakes_flood_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let args = SybilArgs {
        fakes: 1000,
        owners: 20,
        honest: 5,
        proof_target_ms: 50,
        wait_s: 120,
        swarm_binary: Some(env!("CARGO_BIN_EXE_herd").into()),
    };
    let figures = flood(&args, dir.path()).await.unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&figures).unwrap());
    let flood = &figures.flood;
    assert_eq!(flood.fakes_connected, 1000, "every fake got in: the flood is real");
    assert!(flood.fake_challenges > 0, "the fakes were challenged");
    assert!(
        flood.honest_ready_ms <= HONEST_READY_BOUND.as_millis() as u64,
        "honest devices waited {} ms behind the flood",
        flood.honest_ready_ms
    );
    assert_eq!(flood.honest_ready_each_ms.len(), 5);
    assert_eq!(figures.baseline.honest_ready_each_ms.len(), 5);
}
