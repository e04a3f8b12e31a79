//! `nebula` as a supervised child: started with its configuration file, killed with its
//! parent however the parent dies (`setpriv --pdeathsig KILL`: the TUN goes with the
//! process), restarted after it exits, reloaded with SIGHUP (new blocklist, renewed
//! certificate), and watched through its JSON log: when its interface is up, what failed,
//! and how each peer is reached — directly or through a relay.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// `util-linux`'s `setpriv` sets the parent-death signal and execs (the workspace forbids
/// the `unsafe` a `pre_exec` would need).
const SETPRIV: &str = "/usr/bin/setpriv";
/// Waits between restarts grow to this.
const RESTART_DELAY_MAX: Duration = Duration::from_secs(5);
/// SIGTERM lets nebula close its tunnels; past this it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How a peer's tunnel runs, from nebula's handshake log lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum PeerPath {
    /// Straight to the peer's underlay address (`HOST:PORT`), hole punched where needed.
    Direct { addr: String },
    /// Through a relay (its overlay address, where nebula's log names it).
    Relayed { relay: Option<Ipv4Addr> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NebulaStatus {
    /// The interface (or, tun disabled, the UDP listener) is up.
    pub up: bool,
    /// The last error nebula logged or why it exited, until it comes up again.
    pub error: Option<String>,
    /// Times it was started again after exiting.
    pub restarts: u32,
    /// Peers with a tunnel handshake seen, by overlay address.
    pub peers: BTreeMap<Ipv4Addr, PeerPath>,
}

/// A running, supervised nebula; dropping it kills the process.
pub struct Nebula {
    status: watch::Receiver<NebulaStatus>,
    stop: watch::Sender<bool>,
    pid: Arc<Mutex<Option<u32>>>,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl Nebula {
    /// Starts `program -config config` under supervision; `name` labels its log lines.
    pub fn start(program: &Path, config: &Path, name: &str) -> Nebula {
        let (status_tx, status) = watch::channel(NebulaStatus::default());
        let (stop, stop_rx) = watch::channel(false);
        let pid = Arc::new(Mutex::new(None));
        let run = Run {
            program: program.to_path_buf(),
            config: config.to_path_buf(),
            name: name.to_owned(),
            status: status_tx,
            pid: pid.clone(),
        };
        let supervisor = Some(tokio::spawn(run.supervise(stop_rx)));
        Nebula { status, stop, pid, supervisor }
    }

    pub fn status(&self) -> watch::Receiver<NebulaStatus> {
        self.status.clone()
    }

    /// Re-reads the configuration file (blocklist, certificate with the same address).
    pub fn reload(&self) {
        if let Some(pid) = *self.pid.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
        }
    }

    /// Waits until the interface is up, at most `timeout`; Err: the last error seen.
    pub async fn wait_up(&self, timeout: Duration) -> Result<(), String> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(timeout, status.wait_for(|s| s.up)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.status.borrow().error.clone().unwrap_or_else(|| "nebula did not come up".into())),
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.await;
        }
    }
}

impl Drop for Nebula {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Stopped without `stop().await`: kill at once rather than leave it running.
        if self.supervisor.is_some() {
            if let Some(pid) = *self.pid.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

struct Run {
    program: PathBuf,
    config: PathBuf,
    name: String,
    status: watch::Sender<NebulaStatus>,
    pid: Arc<Mutex<Option<u32>>>,
}

impl Run {
    async fn supervise(self, mut stop: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(250);
        loop {
            let exit = match self.spawn() {
                Ok(child) => self.watch(child, &mut stop).await,
                Err(error) => Some(error),
            };
            *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let Some(why) = exit else { return };
            tracing::warn!(nebula = %self.name, %why, "nebula exited; restarting");
            self.status.send_modify(|s| {
                s.up = false;
                s.peers.clear();
                s.error = Some(why);
                s.restarts += 1;
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            delay = (delay * 2).min(RESTART_DELAY_MAX);
        }
    }

    fn spawn(&self) -> Result<Child, String> {
        let mut command = if Path::new(SETPRIV).exists() {
            let mut command = Command::new(SETPRIV);
            command.args(["--pdeathsig", "KILL", "--"]).arg(&self.program);
            command
        } else {
            Command::new(&self.program)
        };
        command
            .arg("-config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{} not found: {}", self.program.display(), crate::INSTALL_HINT),
            _ => format!("cannot start {}: {e}", self.program.display()),
        })?;
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = child.id();
        Ok(child)
    }

    /// Follows the child until it exits (Some: why) or a stop is asked (None).
    async fn watch(&self, mut child: Child, stop: &mut watch::Receiver<bool>) -> Option<String> {
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
        let (mut out_open, mut err_open) = (true, true);
        loop {
            tokio::select! {
                line = stdout.next_line(), if out_open => match line {
                    Ok(Some(line)) => self.observe(&line),
                    _ => out_open = false,
                },
                line = stderr.next_line(), if err_open => match line {
                    Ok(Some(line)) => self.observe(&line),
                    _ => err_open = false,
                },
                status = child.wait(), if !out_open && !err_open => {
                    let last = self.status.borrow().error.clone();
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return Some(match last {
                        Some(error) => format!("{error} (nebula exited: {status})"),
                        None => format!("nebula exited: {status}"),
                    });
                }
                _ = stopped(stop) => {
                    if let Some(pid) = child.id() {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                    }
                    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    return None;
                }
            }
        }
    }

    fn observe(&self, line: &str) {
        let Some(event) = parse_log_line(line) else {
            tracing::debug!(nebula = %self.name, line, "nebula");
            return;
        };
        match &event {
            LogEvent::Up => tracing::info!(nebula = %self.name, "nebula is up"),
            LogEvent::Error(error) => tracing::warn!(nebula = %self.name, %error, "nebula"),
            LogEvent::Peer(ip, path) => tracing::debug!(nebula = %self.name, %ip, ?path, "nebula peer"),
        }
        // Watchers (the agent's reports to the coordinator) wake only on a real change:
        // nebula logs a handshake for every re-key of a tunnel that did not move.
        self.status.send_if_modified(|status| match event {
            LogEvent::Up => {
                let changed = !status.up || status.error.is_some();
                status.up = true;
                status.error = None;
                changed
            }
            // Before it is up an error is why it fails to start; once up, errors are passing
            // (a peer's stale address unreachable) and only logged.
            LogEvent::Error(error) if !status.up => {
                let changed = status.error.as_ref() != Some(&error);
                status.error = Some(error);
                changed
            }
            LogEvent::Error(_) => false,
            LogEvent::Peer(ip, path) => status.peers.insert(ip, path.clone()).as_ref() != Some(&path),
        });
    }
}

/// Resolves once a stop is asked for (without holding the watch's lock across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[derive(Debug, PartialEq, Eq)]
enum LogEvent {
    Up,
    Error(String),
    Peer(Ipv4Addr, PeerPath),
}

/// What one line of nebula's JSON log (logrus) says that herd tracks.
fn parse_log_line(line: &str) -> Option<LogEvent> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str());
    let msg = field("msg")?;
    match field("level")? {
        "error" | "fatal" => {
            let detail = field("error").map(|e| format!("{msg}: {e}")).unwrap_or_else(|| msg.to_owned());
            return Some(LogEvent::Error(detail));
        }
        "info" => {}
        _ => return None,
    }
    if msg == "Nebula interface is active" {
        return Some(LogEvent::Up);
    }
    if !msg.starts_with("Handshake message") {
        return None;
    }
    let peer: Ipv4Addr = field("vpnIp")?.parse().ok()?;
    if let Some(relay) = field("relay").and_then(|r| r.parse().ok()) {
        return Some(LogEvent::Peer(peer, PeerPath::Relayed { relay: Some(relay) }));
    }
    // Only a received handshake names the address the peer really answered from (a sent one
    // lists every address tried); JSON logs write it as {"ip", "port"}, text logs as a string.
    if msg != "Handshake message received" {
        return None;
    }
    let addr = match value.get("udpAddr")? {
        serde_json::Value::Object(a) => format!("{}:{}", a.get("ip")?.as_str()?, a.get("port")?.as_u64()?),
        serde_json::Value::String(a) if !a.is_empty() && a != "<nil>" => a.clone(),
        // No address: the handshake came through a relay.
        serde_json::Value::Null => return Some(LogEvent::Peer(peer, PeerPath::Relayed { relay: None })),
        _ => return None,
    };
    Some(LogEvent::Peer(peer, PeerPath::Direct { addr }))
}

/// Can this machine run a lease node (a TUN)? Err: what is missing and how to provide it.
pub fn probe_node_support(program: &Path) -> Result<(), String> {
    find_program(program).ok_or_else(|| format!("{} not found: {}", program.display(), crate::INSTALL_HINT))?;
    if let Err(error) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun") {
        return Err(format!(
            "cannot open /dev/net/tun ({error}): the overlay needs the TUN device (in a container: \
             `--device /dev/net/tun --cap-add NET_ADMIN`; on a host: `modprobe tun`)"
        ));
    }
    if !has_net_admin() {
        return Err("the agent lacks CAP_NET_ADMIN, which nebula needs to create its interface: run the \
                    agent as root, or grant it (systemd: `AmbientCapabilities=CAP_NET_ADMIN`; docker: \
                    `--cap-add NET_ADMIN`)"
            .into());
    }
    Ok(())
}

/// `program` itself if it is a path, else its first match on `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// CAP_NET_ADMIN (bit 12) in this process's effective set.
fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nebula_log_lines_tell_up_errors_and_peer_paths() {
        let up = r#"{"build":"1.6.1","interface":"herd1","level":"info","msg":"Nebula interface is active","network":"100.64.1.1/10","time":"x","udpAddr":"0.0.0.0:4242"}"#;
        assert_eq!(parse_log_line(up), Some(LogEvent::Up));
        let relayed = r#"{"level":"info","msg":"Handshake message sent","relay":"100.64.0.1","vpnIp":"100.64.1.2"}"#;
        assert_eq!(
            parse_log_line(relayed),
            Some(LogEvent::Peer(
                "100.64.1.2".parse().unwrap(),
                PeerPath::Relayed { relay: Some("100.64.0.1".parse().unwrap()) }
            ))
        );
        let direct = r#"{"level":"info","msg":"Handshake message received","udpAddr":{"ip":"10.1.0.2","port":4242},"vpnIp":"100.64.1.3"}"#;
        assert_eq!(
            parse_log_line(direct),
            Some(LogEvent::Peer("100.64.1.3".parse().unwrap(), PeerPath::Direct { addr: "10.1.0.2:4242".into() }))
        );
        let nil = r#"{"level":"info","msg":"Handshake message received","udpAddr":null,"vpnIp":"100.64.1.3"}"#;
        assert_eq!(
            parse_log_line(nil),
            Some(LogEvent::Peer("100.64.1.3".parse().unwrap(), PeerPath::Relayed { relay: None }))
        );
        let tried = r#"{"level":"info","msg":"Handshake message sent","udpAddrs":[{"ip":"10.0.0.1","port":4242}],"vpnIp":"100.64.0.1"}"#;
        assert_eq!(parse_log_line(tried), None, "a sent handshake proves no path");
        let fatal = r#"{"level":"fatal","msg":"Failed to get a tun/tap device","error":"operation not permitted"}"#;
        assert_eq!(
            parse_log_line(fatal),
            Some(LogEvent::Error("Failed to get a tun/tap device: operation not permitted".into()))
        );
        assert_eq!(parse_log_line("not json"), None);
    }
}
