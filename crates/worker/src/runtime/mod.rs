//! The tasks this agent runs, whatever runs them: `process` (a local process group) or
//! `docker` (an isolated container). The table here is the runtime-independent part: it
//! makes starting idempotent, remembers exits for reconnect reports and cleans up leases.

pub mod docker;
mod output;
pub(crate) mod process;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_core::{ClusterId, JobId};
use herd_proto::worker::{TaskAssignment, TaskExit, TaskReport, WorkerMessage};
use tokio::sync::{mpsc, watch};

pub use docker::DockerRuntime;

/// What runs tasks.
#[derive(Clone)]
pub enum Runtime {
    Process,
    Docker(Arc<DockerRuntime>),
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Docker(_) => "docker",
        }
    }
}

pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// After the main process exits, how long its output may still drain.
pub(crate) const OUTPUT_DRAIN_MAX: Duration = Duration::from_secs(2);
/// Finished tasks remembered for reconnect reports; older ones are forgotten.
const FINISHED_KEPT_MAX: usize = 256;

/// A task is one attempt of a job on this device: a job retried after a lost node comes
/// back as a new attempt, which may briefly overlap the old one being stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskKey {
    pub job_id: JobId,
    pub attempt: u32,
}

impl TaskKey {
    pub fn of(assignment: &TaskAssignment) -> TaskKey {
        TaskKey { job_id: assignment.job_id.clone(), attempt: assignment.attempt }
    }

    /// The working directory's name: the job id, with the attempt after the first.
    fn dir_name(&self) -> String {
        if self.attempt <= 1 {
            self.job_id.to_string()
        } else {
            format!("{}.{}", self.job_id, self.attempt)
        }
    }
}

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
    entries: HashMap<TaskKey, Entry>,
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
    runtime: Runtime,
}

impl Tasks {
    pub fn new(jobs_dir: PathBuf, events: mpsc::Sender<WorkerMessage>, runtime: Runtime) -> Tasks {
        Tasks { table: Arc::default(), jobs_dir, events, runtime }
    }

    /// Takes over what a docker runtime found of its own at start: running containers are
    /// followed as tasks (the coordinator then keeps or stops them), exited ones are
    /// remembered so the hello reports how they ended.
    pub fn adopt(&self, found: Vec<docker::Found>) {
        let Runtime::Docker(docker) = &self.runtime else { return };
        for found in found {
            let (stop, stop_rx) = watch::channel(false);
            let running = found.exit.is_none();
            {
                let mut table = self.lock();
                table.finished_count += 1;
                let entry = Entry {
                    cluster_id: found.cluster_id.clone(),
                    exited: found.exit,
                    stop,
                    dir: self.jobs_dir.join(found.key.dir_name()),
                    cleanup: false,
                    finished_order: table.finished_count,
                };
                table.entries.insert(found.key.clone(), entry);
            }
            if !running {
                continue;
            }
            tracing::info!(job = %found.key.job_id, attempt = found.key.attempt, container = found.container,
                "adopted a running container");
            let (tasks, docker) = (self.clone(), docker.clone());
            tokio::spawn(async move {
                let since = docker::Since::Now;
                let exit = docker.follow(&tasks.events, &found.key, &found.container, since, stop_rx).await;
                // Adopted containers held their lease's network until they exited.
                docker.release_network(&found.cluster_id).await;
                tasks.finish(&found.key, exit).await;
            });
        }
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
            .map(|(key, e)| TaskReport { job_id: key.job_id.clone(), attempt: key.attempt, exited: e.exited.clone() })
            .collect()
    }

    pub fn running_count(&self) -> u32 {
        self.lock().entries.values().filter(|e| e.exited.is_none()).count() as u32
    }

    /// Starts a task unless this agent already holds it (assignments are re-sent after
    /// reconnects, so starting must be idempotent). An earlier attempt of the same job that
    /// still runs is no longer wanted and is stopped.
    pub fn start(&self, assignment: TaskAssignment) {
        let key = TaskKey::of(&assignment);
        let dir = self.jobs_dir.join(key.dir_name());
        let (stop, stop_rx) = watch::channel(false);
        {
            let mut table = self.lock();
            if table.entries.contains_key(&key) {
                return;
            }
            for (old, entry) in table.entries.iter().filter(|(k, e)| k.job_id == key.job_id && e.exited.is_none()) {
                tracing::info!(job = %old.job_id, attempt = old.attempt, "stopping an earlier attempt");
                let _ = entry.stop.send(true);
            }
            let entry = Entry {
                cluster_id: assignment.cluster_id.clone(),
                exited: None,
                stop,
                dir: dir.clone(),
                cleanup: false,
                finished_order: 0,
            };
            table.entries.insert(key.clone(), entry);
        }
        let tasks = self.clone();
        tokio::spawn(async move {
            let exit = tasks.run(&assignment, &dir, stop_rx).await;
            tasks.finish(&key, exit).await;
        });
    }

    async fn run(&self, assignment: &TaskAssignment, dir: &std::path::Path, stop: watch::Receiver<bool>) -> TaskExit {
        if let Err(error) = tokio::fs::create_dir_all(dir).await {
            return failed(format!("cannot create the working directory {}: {error}", dir.display()));
        }
        match &self.runtime {
            Runtime::Process => process::run_task(&self.events, assignment, dir, stop).await,
            Runtime::Docker(docker) => docker.run_task(&self.events, assignment, dir, stop).await,
        }
    }

    async fn finish(&self, key: &TaskKey, exit: TaskExit) {
        let remove_dir = {
            let mut table = self.lock();
            table.finished_count += 1;
            let order = table.finished_count;
            let entry = table.entries.get_mut(key).expect("a running task has an entry");
            entry.exited = Some(exit.clone());
            entry.finished_order = order;
            let remove = entry.cleanup.then(|| entry.dir.clone());
            forget_oldest_finished(&mut table);
            remove
        };
        let message = WorkerMessage::TaskExited {
            job_id: key.job_id.clone(),
            attempt: key.attempt,
            exit_code: exit.exit_code,
            error: exit.error,
        };
        let _ = self.events.send(message).await;
        if let Some(dir) = remove_dir {
            remove_job_dir(dir).await;
        }
    }

    /// Stops the job's task: that attempt, or (None) whichever runs.
    pub fn stop(&self, job_id: &JobId, attempt: Option<u32>) {
        for (key, entry) in self.lock().entries.iter() {
            if &key.job_id == job_id && attempt.is_none_or(|a| a == key.attempt) {
                let _ = entry.stop.send(true);
            }
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
        if let Runtime::Docker(docker) = &self.runtime {
            docker.end_lease(cluster_id).await;
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
        if let Runtime::Docker(docker) = &self.runtime {
            // Leave nothing behind: the networks kept between jobs go too.
            docker.remove_idle_networks().await;
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

/// The environment every task gets, whatever runs it.
fn task_env(assignment: &TaskAssignment) -> impl Iterator<Item = (String, String)> + '_ {
    let herd = [
        ("HERD_JOB_ID", assignment.job_id.to_string()),
        ("HERD_CLUSTER_ID", assignment.cluster_id.to_string()),
        ("HERD_NODE_RANK", assignment.rank.to_string()),
        ("HERD_NODE_COUNT", assignment.node_count.to_string()),
        ("HERD_HEAD_ADDR", assignment.head_addr.clone()),
    ];
    let ray = assignment.ray_address.clone().map(|address| ("RAY_ADDRESS".to_owned(), address));
    // The job's own variables cannot shadow herd's (the coordinator refuses HERD_* names).
    assignment.env.iter().map(|(k, v)| (k.clone(), v.clone())).chain(herd.map(|(k, v)| (k.to_owned(), v))).chain(ray)
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
            image: None,
            limits: Default::default(),
            attempt: 1,
            ray_address: None,
        }
    }

    #[test]
    fn a_ray_clusters_tasks_are_told_their_own_clusters_address() {
        let plain: Vec<_> = task_env(&assignment(&["true"])).collect();
        assert!(plain.iter().all(|(k, _)| k != "RAY_ADDRESS"));
        let mut ray = assignment(&["true"]);
        ray.ray_address = Some("10.0.0.1:26432".into());
        ray.env.insert("RAY_ADDRESS".into(), "10.9.9.9:6379".into());
        let env: Vec<_> = task_env(&ray).collect();
        let last = env.iter().rev().find(|(k, _)| k == "RAY_ADDRESS").unwrap();
        assert_eq!(last.1, "10.0.0.1:26432", "herd's comes last and wins: {env:?}");
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
        let tasks = Tasks::new(dir.path().to_path_buf(), events, Runtime::Process);
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
        let tasks = Tasks::new(dir.path().to_path_buf(), events, Runtime::Process);
        let job = assignment(&["sh", "-c", "sleep 60 & sleep 60; echo never"]);
        let job_id = job.job_id.clone();
        tasks.start(job);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        tasks.stop(&job_id, None);
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
        let tasks = Tasks::new(dir.path().to_path_buf(), events, Runtime::Process);
        tasks.start(assignment(&["/nonexistent/program"]));
        let (_, code, error) = collect(receiver).await;
        assert_eq!(code, None);
        assert!(error.unwrap().contains("cannot start"));
    }
}
