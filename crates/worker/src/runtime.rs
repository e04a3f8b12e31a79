//! The process runtime: each task is a child process in its own process group, with its own
//! working directory and a clean environment (the supplier's environment never leaks into
//! customer code). Output is forwarded line by line; stop is SIGTERM to the group, then
//! SIGKILL after a grace period.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::{ClusterId, JobId};
use herd_proto::api::Stream;
use herd_proto::worker::{TaskAssignment, TaskExit, TaskReport, WorkerMessage, OUTPUT_LINES_PER_MESSAGE_MAX};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

const STOP_GRACE: Duration = Duration::from_secs(5);
/// After the main process exits, how long its output may still drain.
const OUTPUT_DRAIN_MAX: Duration = Duration::from_secs(2);
/// Finished tasks remembered for reconnect reports; older ones are forgotten.
const FINISHED_KEPT_MAX: usize = 256;

struct Entry {
    cluster_id: ClusterId,
    exited: Option<TaskExit>,
    stop: watch::Sender<bool>,
    dir: PathBuf,
    /// The lease ended: remove the working directory once the task has exited.
    cleanup: bool,
    finished_order: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<JobId, Entry>,
    finished_count: u64,
}

/// Every task this agent holds. Task events go to `events`, a bounded queue that outlives
/// connections, so output produced while the coordinator is unreachable is delivered after
/// reconnecting (and a full queue pauses the task's output rather than growing memory).
#[derive(Clone)]
pub struct Tasks {
    table: Arc<Mutex<Table>>,
    jobs_dir: PathBuf,
    events: mpsc::Sender<WorkerMessage>,
}

impl Tasks {
    pub fn new(jobs_dir: PathBuf, events: mpsc::Sender<WorkerMessage>) -> Tasks {
        Tasks { table: Arc::default(), jobs_dir, events }
    }

    /// The queue task events go to (shared with other reports, like throughput).
    pub fn events(&self) -> mpsc::Sender<WorkerMessage> {
        self.events.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn reports(&self) -> Vec<TaskReport> {
        self.lock()
            .entries
            .iter()
            .map(|(job_id, e)| TaskReport { job_id: job_id.clone(), exited: e.exited.clone() })
            .collect()
    }

    pub fn running_count(&self) -> u32 {
        self.lock().entries.values().filter(|e| e.exited.is_none()).count() as u32
    }

    /// Starts a task unless this agent already holds it (assignments are re-sent after
    /// reconnects, so starting must be idempotent).
    pub fn start(&self, assignment: TaskAssignment) {
        let dir = self.jobs_dir.join(assignment.job_id.as_str());
        let (stop, stop_rx) = watch::channel(false);
        {
            let mut table = self.lock();
            if table.entries.contains_key(&assignment.job_id) {
                return;
            }
            let entry = Entry {
                cluster_id: assignment.cluster_id.clone(),
                exited: None,
                stop,
                dir: dir.clone(),
                cleanup: false,
                finished_order: 0,
            };
            table.entries.insert(assignment.job_id.clone(), entry);
        }
        let tasks = self.clone();
        tokio::spawn(async move {
            let job_id = assignment.job_id.clone();
            let exit = run_task(&tasks.events, assignment, dir, stop_rx).await;
            tasks.finish(&job_id, exit).await;
        });
    }

    async fn finish(&self, job_id: &JobId, exit: TaskExit) {
        let remove_dir = {
            let mut table = self.lock();
            table.finished_count += 1;
            let order = table.finished_count;
            let entry = table.entries.get_mut(job_id).expect("a running task has an entry");
            entry.exited = Some(exit.clone());
            entry.finished_order = order;
            let remove = entry.cleanup.then(|| entry.dir.clone());
            forget_oldest_finished(&mut table);
            remove
        };
        let message =
            WorkerMessage::TaskExited { job_id: job_id.clone(), exit_code: exit.exit_code, error: exit.error };
        let _ = self.events.send(message).await;
        if let Some(dir) = remove_dir {
            remove_job_dir(dir).await;
        }
    }

    pub fn stop(&self, job_id: &JobId) {
        if let Some(entry) = self.lock().entries.get(job_id) {
            let _ = entry.stop.send(true);
        }
    }

    /// The lease ended: stop its tasks and remove their working directories.
    pub async fn stop_cluster(&self, cluster_id: &ClusterId) {
        let finished_dirs: Vec<PathBuf> = {
            let mut table = self.lock();
            let mut dirs = Vec::new();
            table.entries.retain(|_, entry| {
                if &entry.cluster_id != cluster_id {
                    return true;
                }
                if entry.exited.is_some() {
                    dirs.push(entry.dir.clone());
                    return false;
                }
                entry.cleanup = true;
                let _ = entry.stop.send(true);
                true
            });
            dirs
        };
        for dir in finished_dirs {
            remove_job_dir(dir).await;
        }
    }

    /// Stops everything and waits (bounded) for the tasks to exit; used at agent shutdown.
    pub async fn stop_all(&self) {
        for entry in self.lock().entries.values() {
            let _ = entry.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE + Duration::from_secs(1);
        while self.running_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn forget_oldest_finished(table: &mut Table) {
    let finished = table.entries.values().filter(|e| e.exited.is_some()).count();
    if finished <= FINISHED_KEPT_MAX {
        return;
    }
    if let Some(oldest) = table
        .entries
        .iter()
        .filter(|(_, e)| e.exited.is_some())
        .min_by_key(|(_, e)| e.finished_order)
        .map(|(id, _)| id.clone())
    {
        table.entries.remove(&oldest);
    }
}

async fn remove_job_dir(dir: PathBuf) {
    if let Err(error) = tokio::fs::remove_dir_all(&dir).await {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %error, "could not remove a job directory");
        }
    }
}

fn failed(error: String) -> TaskExit {
    TaskExit { exit_code: None, error: Some(error) }
}

async fn run_task(
    events: &mpsc::Sender<WorkerMessage>,
    assignment: TaskAssignment,
    dir: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> TaskExit {
    let job_id = assignment.job_id.clone();
    if let Err(error) = tokio::fs::create_dir_all(&dir).await {
        return failed(format!("cannot create the working directory {}: {error}", dir.display()));
    }
    let mut command = Command::new(&assignment.command[0]);
    command
        .args(&assignment.command[1..])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", &dir)
        .env("LANG", "C.UTF-8")
        .envs(&assignment.env)
        .env("HERD_JOB_ID", assignment.job_id.as_str())
        .env("HERD_CLUSTER_ID", assignment.cluster_id.as_str())
        .env("HERD_NODE_RANK", assignment.rank.to_string())
        .env("HERD_NODE_COUNT", assignment.node_count.to_string())
        .env("HERD_HEAD_ADDR", &assignment.head_addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so stop reaches everything the task spawned.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot start {:?}: {error}", assignment.command[0])),
    };
    let _ = events.send(WorkerMessage::TaskStarted { job_id: job_id.clone() }).await;
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let stdout = tokio::spawn(forward(events.clone(), job_id.clone(), Stream::Stdout, child.stdout.take()));
    let stderr = tokio::spawn(forward(events.clone(), job_id.clone(), Stream::Stderr, child.stderr.take()));

    let status = tokio::select! {
        status = child.wait() => status,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            signal_group(group, Signal::SIGTERM);
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(group, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // Children the task left behind may hold its pipes open; give output a moment, then end
    // the whole group so nothing outlives the task.
    let drained = tokio::time::timeout(OUTPUT_DRAIN_MAX, async {
        let _ = stdout.await;
        let _ = stderr.await;
    })
    .await;
    if drained.is_err() {
        signal_group(group, Signal::SIGKILL);
    }
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => TaskExit { exit_code: Some(code), error: None },
            (None, Some(signal)) => failed(format!("killed by signal {signal}")),
            (None, None) => failed("ended without an exit code".into()),
        },
        Err(error) => failed(format!("lost track of the process: {error}")),
    }
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (already gone) is the expected outcome of a race with a normal exit.
        let _ = killpg(group, signal);
    }
}

/// Sends output lines, batching whatever is already buffered into one message.
async fn forward(
    events: mpsc::Sender<WorkerMessage>,
    job_id: JobId,
    stream: Stream,
    pipe: Option<impl AsyncRead + Unpin>,
) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        let mut lines = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    lines.push(text.trim_end_matches(['\n', '\r']).to_owned());
                }
            }
            if reader.buffer().is_empty() || lines.len() >= OUTPUT_LINES_PER_MESSAGE_MAX {
                break;
            }
        }
        if lines.is_empty() {
            return;
        }
        if events.send(WorkerMessage::TaskOutput { job_id: job_id.clone(), stream, lines }).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn assignment(command: &[&str]) -> TaskAssignment {
        TaskAssignment {
            job_id: JobId::from_entropy(rand::random()),
            cluster_id: ClusterId::from_entropy([1; 8]),
            rank: 1,
            node_count: 2,
            head_addr: "10.0.0.1".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        }
    }

    async fn collect(mut events: mpsc::Receiver<WorkerMessage>) -> (Vec<String>, Option<i32>, Option<String>) {
        let mut lines = Vec::new();
        while let Some(event) = events.recv().await {
            match event {
                WorkerMessage::TaskOutput { lines: l, .. } => lines.extend(l),
                WorkerMessage::TaskExited { exit_code, error, .. } => return (lines, exit_code, error),
                _ => {}
            }
        }
        panic!("no exit event")
    }

    #[tokio::test]
    async fn a_task_gets_its_environment_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let (events, receiver) = mpsc::channel(64);
        let tasks = Tasks::new(dir.path().to_path_buf(), events);
        let script = "echo rank=$HERD_NODE_RANK/$HERD_NODE_COUNT head=$HERD_HEAD_ADDR $GREETING; \
                      echo home=${HOME##*/} secret=${SECRET:-none}; exit 3";
        let job = assignment(&["sh", "-c", script]);
        let job_id = job.job_id.clone();
        tasks.start(job);
        let (lines, code, error) = collect(receiver).await;
        assert_eq!(lines, ["rank=1/2 head=10.0.0.1 hi".to_string(), format!("home={job_id} secret=none")]);
        assert_eq!((code, error), (Some(3), None));
        assert_eq!(tasks.reports()[0].exited.as_ref().unwrap().exit_code, Some(3));
    }

    #[tokio::test]
    async fn stop_ends_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let (events, receiver) = mpsc::channel(64);
        let tasks = Tasks::new(dir.path().to_path_buf(), events);
        let job = assignment(&["sh", "-c", "sleep 60 & sleep 60; echo never"]);
        let job_id = job.job_id.clone();
        tasks.start(job);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        tasks.stop(&job_id);
        let (lines, code, error) = collect(receiver).await;
        assert!(lines.is_empty());
        assert_eq!(code, None);
        assert!(error.unwrap().contains("signal"));
        assert!(started.elapsed() < STOP_GRACE, "SIGTERM is enough for sh and sleep");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let (events, receiver) = mpsc::channel(64);
        let tasks = Tasks::new(dir.path().to_path_buf(), events);
        tasks.start(assignment(&["/nonexistent/program"]));
        let (_, code, error) = collect(receiver).await;
        assert_eq!(code, None);
        assert!(error.unwrap().contains("cannot start"));
    }
}
