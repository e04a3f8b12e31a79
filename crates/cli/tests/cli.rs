//! The `herd` binary as a user runs it: the demo end to end, and one-line errors.

use std::process::{Command, Output};

fn herd(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .env("HERD_CONFIG_DIR", config.join("config"))
        .env("HERD_DATA_DIR", config.join("data"))
        // Shared with the other tests, so Ray is installed once per build directory.
        .env("HERD_RAY_ENVS_DIR", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ray-envs"))
        .env_remove("HERD_COORDINATOR")
        .output()
        .expect("herd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_demo_runs_batch_inference_on_a_two_node_ray_cluster_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let output = herd(dir.path(), &["demo", "--exit", "--listen", "127.0.0.1:0", "--sim-workers", "3"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", text(&output.stderr));
    for expected in [
        "1. network up at http://127.0.0.1:",
        "3. Ray cluster cl-",
        "Ray head",
        "Ray worker",
        "4. Ray ready on both nodes",
        "cluster: 2 nodes",
        r#"RESULT {"rows": 200000, "accuracy": 0.99"#,
        r#""replica_nodes": 2}"#,
        "succeeded",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    let key = dir.path().join("config/account.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let credentials = dir.path().join("config/credentials.json");
    assert_eq!(std::fs::metadata(&credentials).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn bad_input_gets_one_precise_line_and_a_failure_code() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = herd(dir.path(), &["--coordinator", "http://127.0.0.1:9", "market", "devices"]);
    assert!(!unreachable.status.success());
    let stderr = text(&unreachable.stderr);
    assert!(stderr.starts_with("error: cannot reach the coordinator at http://127.0.0.1:9"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let no_key = herd(dir.path(), &["--coordinator", "http://127.0.0.1:9", "cluster", "list"]);
    assert!(text(&no_key.stderr).contains("run `herd account create`"));

    let no_account = herd(dir.path(), &["--coordinator", "http://127.0.0.1:9", "account", "login", "--browser"]);
    assert!(!no_account.status.success());
    let stderr = text(&no_account.stderr);
    assert!(stderr.starts_with("error: no account key at ") && stderr.contains("herd account create"), "{stderr}");

    let bad_nodes = herd(dir.path(), &["cluster", "create", "--cpu", "--nodes", "0"]);
    assert!(!bad_nodes.status.success());
    assert!(text(&bad_nodes.stderr).contains("0 is not in 1..=512"), "{}", text(&bad_nodes.stderr));

    let bad_country = herd(dir.path(), &["cluster", "create", "--cpu", "--nodes", "1", "--country", "Germany"]);
    assert!(text(&bad_country.stderr).contains("two-letter ISO 3166-1"), "{}", text(&bad_country.stderr));

    let no_hardware = herd(dir.path(), &["cluster", "create", "--nodes", "1"]);
    assert!(text(&no_hardware.stderr).contains("say what hardware: --gpu MODEL"), "{}", text(&no_hardware.stderr));

    let bad_id = herd(dir.path(), &["job", "run", "--cluster", "nope", "--", "true"]);
    assert!(!bad_id.status.success());
    assert!(!text(&bad_id.stderr).contains("panicked"));
}
