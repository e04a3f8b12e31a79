//! The process runtime: each task is a child process in its own process group, with its own
//! working directory and a clean environment (the supplier's environment never leaks into
//! customer code). No isolation beyond that: for development and trusted machines; suppliers
//! running customers' code use the docker runtime. Stop is SIGTERM to the group, then SIGKILL
//! after a grace period. An agent killed outright leaves its tasks running; its next start
//! kills them (`kill_leftovers`), as the coordinator has counted them lost.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use herd_proto::api::Stream;
use herd_proto::worker::{TaskAssignment, TaskExit, WorkerMessage};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::output::{LineSplitter, OutputSink};
use super::{failed, task_env, OUTPUT_DRAIN_MAX, STOP_GRACE};

pub async fn run_task(
    events: &mpsc::Sender<WorkerMessage>,
    assignment: &TaskAssignment,
    dir: &Path,
    mut stop: watch::Receiver<bool>,
) -> TaskExit {
    let task = super::TaskKey::of(assignment);
    let mut command = Command::new(&assignment.command[0]);
    command
        .args(&assignment.command[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
        .env("HOME", dir)
        .env("LANG", "C.UTF-8")
        .envs(task_env(assignment))
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
    let started = WorkerMessage::TaskStarted { job_id: task.job_id.clone(), attempt: task.attempt };
    let _ = events.send(started).await;
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let stdout = OutputSink::new(events.clone(), task.clone(), Stream::Stdout);
    let stderr = OutputSink::new(events.clone(), task, Stream::Stderr);
    let stdout = tokio::spawn(forward(stdout, child.stdout.take()));
    let stderr = tokio::spawn(forward(stderr, child.stderr.take()));

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

/// Forwards a pipe's output; each read becomes (at most a few) messages.
async fn forward(sink: OutputSink, pipe: Option<impl AsyncRead + Unpin>) {
    let Some(mut pipe) = pipe else { return };
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = pipe.read(&mut buf).await.unwrap_or(0);
        let lines = if read == 0 { splitter.finish().into_iter().collect() } else { splitter.push(&buf[..read]) };
        if !sink.send(lines).await || read == 0 {
            return;
        }
    }
}

/// Kills the task processes an earlier run of this agent left behind when it was killed
/// without stopping them: every process whose `HOME` is a task directory under `jobs_dir`
/// (each task's is), with its process group. The coordinator counted those tasks as lost and
/// retries them where asked; left running they would compete with the retry for this machine
/// and write into its directories. Returns how many process groups were killed.
pub fn kill_leftovers(jobs_dir: &Path) -> usize {
    let marker = format!("HOME={}/", jobs_dir.display());
    let own_group = nix::unistd::getpgrp();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut groups = std::collections::BTreeSet::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        // Another user's processes (unreadable) cannot be ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if !environ.split(|b| *b == 0).any(|var| var.starts_with(marker.as_bytes())) {
            continue;
        }
        match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
            Ok(group) if group != own_group => {
                groups.insert(group);
            }
            _ => {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for group in &groups {
        let _ = killpg(*group, Signal::SIGKILL);
    }
    groups.len()
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    fn sleeper(home: &Path) -> std::process::Child {
        std::fs::create_dir_all(home).unwrap();
        std::process::Command::new("sleep").arg("300").env("HOME", home).process_group(0).spawn().unwrap()
    }

    #[test]
    fn task_processes_left_by_an_earlier_run_are_killed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        let mut left = sleeper(&jobs.join("job-1.1"));
        let mut other = sleeper(&dir.path().join("elsewhere"));
        // A grandchild in the task's group, with its own HOME, goes with its group.
        let mut grandchild = std::process::Command::new("sleep")
            .arg("300")
            .env("HOME", dir.path())
            .process_group(left.id() as i32)
            .spawn()
            .unwrap();
        assert_eq!(kill_leftovers(&jobs), 1);
        assert_eq!(left.wait().unwrap().signal(), Some(9));
        assert_eq!(grandchild.wait().unwrap().signal(), Some(9));
        assert!(other.try_wait().unwrap().is_none(), "a process outside the jobs directory is left alone");
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(kill_leftovers(&jobs), 0);
    }
}
