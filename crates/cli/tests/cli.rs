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

/// Kills the background coordinator when the test ends, however it ends.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn settings_come_from_the_config_file_where_flags_and_environment_are_silent() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    // The default file: config.toml in the config directory.
    let db = dir.path().join("herd.db");
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "[global]\ncoordinator = \"http://127.0.0.1:{port}\"\n\n[coordinator]\ndb = \"sqlite://{}\"\nlisten = \"127.0.0.1:{port}\"\nfaucet = true\n",
            db.display()
        ),
    )
    .unwrap();
    let coordinator = Background(
        Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg("coordinator")
            .env("HERD_CONFIG_DIR", &config_dir)
            .env_remove("HERD_COORDINATOR")
            .env_remove("HERD_DB")
            .env_remove("HERD_LISTEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // No --coordinator: the [global] table names it; the faucet is on from [coordinator].
    let started = std::time::Instant::now();
    loop {
        let health = herd(dir.path(), &["account", "create"]);
        if health.status.success() {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{}", text(&health.stderr));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let deposit = herd(dir.path(), &["wallet", "deposit", "--amount", "5"]);
    assert!(deposit.status.success(), "the file's faucet = true took effect: {}", text(&deposit.stderr));
    assert!(db.exists(), "the file's db was used");
    // A flag wins over the file.
    let elsewhere = herd(dir.path(), &["--coordinator", "http://127.0.0.1:9", "market", "prices"]);
    assert!(text(&elsewhere.stderr).contains("cannot reach the coordinator at http://127.0.0.1:9"));
    drop(coordinator);

    // A typo is an error naming the allowed settings, not silently ignored.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[coordinator]\nlisen = \"0.0.0.0:1\"\n").unwrap();
    let refused = herd(dir.path(), &["coordinator", "--config", typo.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.starts_with("error: unknown setting `lisen` in [coordinator] of "), "{stderr}");
    assert!(stderr.contains("allowed: ") && stderr.contains("listen"), "{stderr}");
}

/// A `herd up` process whose stdout is read until it says it is up.
struct UpProcess {
    child: std::process::Child,
    url: String,
}

impl UpProcess {
    fn start(dir: &std::path::Path, data_dir: &std::path::Path) -> UpProcess {
        use std::io::BufRead;
        let child = Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["up", "--listen", "127.0.0.1:0", "--sim-workers", "2", "--data-dir"])
            .arg(data_dir)
            .env("HERD_CONFIG_DIR", dir.join("config"))
            .env_remove("HERD_COORDINATOR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("herd up runs");
        // Owned at once, so that a failure below still kills it.
        let mut process = UpProcess { child, url: String::new() };
        let stdout = std::io::BufReader::new(process.child.stdout.take().unwrap());
        // The pipe is read to its end for as long as herd up runs: a closed pipe would make
        // its next line of output fail (EPIPE) and end it.
        let (found, url) = std::sync::mpsc::sync_channel(2);
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("herd is up at ") {
                    let _ = found.send(Ok(url.trim().to_owned()));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = found.send(Err(seen));
        });
        match url.recv().expect("the reader reports") {
            Ok(url) => {
                process.url = url;
                process
            }
            Err(seen) => panic!("herd up ended without saying it was up:\n{seen}"),
        }
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_second_network_on_a_live_data_dir_is_refused_and_the_first_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("net");
    let first = UpProcess::start(dir.path(), &data);
    let devices = |url: &str| {
        let output = herd(dir.path(), &["--coordinator", url, "--json", "market", "devices"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let devices: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        devices.as_array().unwrap().iter().map(|d| d["state"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(devices(&first.url).len(), 3, "this machine and two simulated devices");

    for second in [
        vec!["up", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()],
        vec!["demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()],
        vec!["coordinator", "--listen", "127.0.0.1:0", "--db", &format!("sqlite://{}", data.join("herd.db").display())],
    ] {
        let output = herd(dir.path(), &second);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{second:?} must be refused: {stderr}");
        assert!(stderr.contains("is in use by another herd process"), "{second:?}: {stderr}");
        assert!(stderr.contains(&format!("pid {}", first.child.id())), "names the holder: {stderr}");
    }
    // A device is named by a unique prefix of its id, as tables show it, in every command.
    let listed = herd(dir.path(), &["--coordinator", &first.url, "--json", "market", "devices"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    for args in [
        vec!["market", "proofs", &id[..8]],
        vec!["stake", "status", &id[..8]],
        vec!["stake", "status", "--device", &id],
    ] {
        let mut full = vec!["--coordinator", first.url.as_str()];
        full.extend(&args);
        let output = herd(dir.path(), &full);
        assert!(output.status.success(), "{args:?}: {}", text(&output.stderr));
    }
    let unknown = herd(dir.path(), &["--coordinator", &first.url, "market", "proofs", "zzzzzzzz"]);
    assert!(text(&unknown.stderr).contains("no device id starts with \"zzzzzzzz\""), "{}", text(&unknown.stderr));
    // A GPU name that is not one is an error, not an empty table.
    let typo = herd(dir.path(), &["--coordinator", &first.url, "market", "devices", "--gpu", "H200X"]);
    assert!(!typo.status.success() && text(&typo.stderr).contains("did you mean H200?"), "{}", text(&typo.stderr));

    // Nothing of the live network was touched: its devices stay online (a second network on
    // the same database used to mark them offline for good).
    std::thread::sleep(std::time::Duration::from_secs(1));
    let states = devices(&first.url);
    assert!(states.iter().all(|s| s == "ready"), "{states:?}");
    assert!(data.join("herd.db").exists(), "the demo did not reset a live network's data dir");
}

#[test]
fn a_new_users_session_reads_true_in_words_and_money() {
    let dir = tempfile::tempdir().unwrap();
    let network = UpProcess::start(dir.path(), &dir.path().join("net"));
    let run = |args: &[&str]| {
        let mut full = vec!["--coordinator", network.url.as_str()];
        full.extend_from_slice(args);
        let output = herd(dir.path(), &full);
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    };
    assert!(run(&["account", "create"]).0);
    let (ok, out, err) = run(&["wallet", "deposit", "--amount", "1.5"]);
    assert!(ok && out.contains("deposited 1.50 USDC"), "{out}{err}");

    // More than the balance: the error says it in the asset's units.
    let (ok, _, err) = run(&["cluster", "create", "--cpu", "--nodes", "1", "--hours", "720", "--no-wait"]);
    assert!(
        !ok && err.contains("insufficient funds: this needs ") && err.contains(" USDC, 1.50 USDC available"),
        "{err}"
    );

    let (ok, out, err) =
        run(&["--json", "cluster", "create", "--cpu", "--nodes", "1", "--type", "plain", "--hours", "1"]);
    assert!(ok, "{err}");
    let cluster: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = cluster["id"].as_str().unwrap();
    let (ok, out, err) = run(&["--json", "job", "run", "--cluster", id, "--", "true"]);
    assert!(ok, "{out}{err}");
    let (_, listed, _) = run(&["--json", "job", "list"]);
    let jobs: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let job = jobs[0]["id"].as_str().unwrap();
    let (ok, out, _) = run(&["job", "stop", job]);
    assert!(ok && out.contains("already ended (succeeded); nothing to stop"), "{out}");

    let (ok, out, _) = run(&["cluster", "delete", id]);
    assert!(ok && out.contains("terminated; 1 device(s) released"), "{out}");
    let (ok, out, _) = run(&["cluster", "delete", id]);
    assert!(ok && out.contains("was already terminated") && out.contains("nothing to release"), "{out}");

    // The hold is shown with what became of it, amounts as money.
    let (_, history, _) = run(&["wallet", "history"]);
    assert!(history.contains("(hold)") && history.contains("posted"), "{history}");
    assert!(!history.contains(".000000"), "no six-decimal zeros: {history}");

    let spec = dir.path().join("broken.yaml");
    std::fs::write(&spec, "{not yaml at all\n").unwrap();
    let (ok, _, err) = run(&["cluster", "create", "-f", spec.to_str().unwrap()]);
    assert!(!ok && err.contains("not valid YAML") && err.contains("line"), "{err}");
    let (ok, _, err) = run(&["cluster", "create", "--cpu", "--nodes", "1", "--connectivity", "superfast"]);
    assert!(!ok && err.contains("unknown connectivity \"superfast\": expected one of none, low"), "{err}");
}
