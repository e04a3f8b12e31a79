//! A schema-driven fuzz of the whole API: schemathesis (from PyPI) generates requests for
//! every operation in `/v1/openapi.json` — valid ones and near misses — with an
//! authenticated account against a live network, and checks that none answers 5xx, none
//! answers off its documented status codes, content type or response schema, and none
//! breaks the connection (a panic would). Bounded: a fixed number of examples per operation
//! and a fixed seed, so it takes seconds and a failure reproduces.

mod common;

use std::process::Command;

use common::install::pip_tool;
use common::*;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const EXAMPLES_PER_OPERATION: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_holds_to_its_documented_contract_under_a_fuzz() {
    let bin = pip_tool("schemathesis", SCHEMATHESIS, "schemathesis").expect("schemathesis installs from PyPI");
    let network = TestNetwork::start(2).await;
    let (_, customer) = new_account(&network.url).await;
    let key = customer.api_key().unwrap().to_owned();
    let url = network.url.clone();
    let report = tempfile::tempdir().unwrap();
    let report_dir = report.path().display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(bin.join("schemathesis"))
            .args(["run", &format!("{url}/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance"])
            .args(["--checks", "response_schema_conformance,response_headers_conformance"])
            .args(["--max-examples", EXAMPLES_PER_OPERATION, "--seed", "17", "--workers", "1"])
            .args(["--phases", "examples,coverage,fuzzing", "--no-shrink", "--generation-database", "none"])
            .args(["--report", "junit", "--report-dir", &report_dir])
            .env("NO_COLOR", "1")
            // Its caches go beside the report, not into the source tree.
            .current_dir(&report_dir)
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("generated") || l.contains("Tested:")).collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
    assert!(
        output.status.success(),
        "the fuzz found failures:\n{}\n{}",
        stdout.lines().rev().take(120).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Tested:"), "schemathesis ran no operation:\n{stdout}");
    network.stop().await;
}
