use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use std::path::PathBuf;

use herd_core::{ClusterId, JobKind, JobLimits, JobState};
use herd_proto::api::{CreateJob, Job, LogEvent, RayClusterState, RayRuntimeEnv, Stream};

use super::cluster::wait_for_ray;
use super::Context;
use crate::client::{Client, ClientError};
use crate::output::{print_json, spinner, table};
use crate::package::package_dir;

/// Reconnect attempts when the log stream breaks (e.g. the coordinator restarts).
const STREAM_RETRIES_MAX: u32 = 60;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a command on every node of a cluster and stream its output (Ctrl-C stops it).
    Run {
        /// The cluster to run on (its ID, as `herd cluster list` shows it).
        #[arg(long)]
        cluster: String,
        /// Extra environment, NAME=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Container image on docker-runtime workers (default: the worker's base image).
        #[arg(long)]
        image: Option<String>,
        /// Memory per node, less than the lease gives (e.g. 512MiB, 2GiB); over it the task
        /// is killed and the job fails with "out of memory".
        #[arg(long, value_parser = parse_bytes)]
        memory: Option<u64>,
        /// CPU cores per node, less than the lease gives (e.g. 0.5).
        #[arg(long, value_parser = parse_cpus)]
        cpus: Option<u32>,
        /// Processes and threads per node, fewer than the lease gives.
        #[arg(long)]
        pids: Option<u32>,
        /// Run the job again (on every node) up to N times when a node it runs on is lost,
        /// once the cluster has a replacement. A job that fails by itself is not retried.
        #[arg(long, default_value_t = 0)]
        max_retries: u32,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Submit a Ray job to a Ray cluster: the working directory is uploaded, the output
    /// streamed, and herd exits with the job's status (Ctrl-C stops it).
    Submit {
        /// The Ray cluster to submit to (its ID, as `herd cluster list` shows it).
        #[arg(long)]
        cluster: String,
        /// Uploaded and made the job's working directory on every node that runs it.
        #[arg(long)]
        working_dir: Option<PathBuf>,
        /// A pip requirement installed for the job (repeatable), e.g. --pip scikit-learn==1.5.2.
        #[arg(long = "pip")]
        pip: Vec<String>,
        /// Extra environment, NAME=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Print the job's id and return without following it.
        #[arg(long)]
        no_wait: bool,
        /// Resubmit the job up to N times when the cluster loses its head, or a node while
        /// the job fails, once the cluster has healed.
        #[arg(long, default_value_t = 0)]
        max_retries: u32,
        /// The entrypoint, after `--` (e.g. `-- python main.py`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A job's output.
    Logs {
        /// The job's ID.
        id: String,
        /// Keep streaming until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Your jobs.
    List {
        /// Only this cluster's jobs.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// One job and its tasks.
    Show {
        /// The job's ID.
        id: String,
    },
    /// Stop a job on every node.
    Stop {
        /// The job's ID.
        id: String,
    },
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// `512MiB`, `2GiB`, `1G`, `300M`, `4096K` or plain bytes; units are binary (Docker's reading).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use B, KiB, MiB, GiB or TiB")),
    };
    let value: u64 = digits.parse().map_err(|_| format!("expected a size like 512MiB, got {text:?}"))?;
    value.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

/// Cores as a decimal (`1.5`), kept in thousandths.
fn parse_cpus(text: &str) -> Result<u32, String> {
    let cores: f64 = text.parse().map_err(|_| format!("expected a number of cores like 1.5, got {text:?}"))?;
    if !(0.001..=4_096.0).contains(&cores) {
        return Err(format!("cpus must be between 0.001 and 4096, got {text}"));
    }
    Ok((cores * 1000.0).round() as u32)
}

/// A line as output: command jobs' lines carry their node's rank; a Ray job has one log.
fn print_event(event: &LogEvent, json: bool, kind: JobKind) {
    if json {
        crate::outln!("{}", serde_json::to_string(event).expect("events serialise"));
        return;
    }
    if let LogEvent::Line(line) = event {
        match (line.stream, kind) {
            (_, JobKind::Ray) => crate::outln!("{}", line.text),
            (Stream::Stdout, _) => crate::outln!("[{}] {}", line.rank, line.text),
            (Stream::Stderr, _) => eprintln!("[{}] {}", line.rank, line.text),
        }
    }
}

fn print_summary(job: &Job) {
    let rows: Vec<Vec<String>> = job
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.rank.to_string(),
                t.device_id.short().to_owned(),
                t.state.to_string(),
                t.exit_code.map_or("-".into(), |c| c.to_string()),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let attempt = if job.max_retries > 0 || job.attempt > 1 {
        format!(" (attempt {} of at most {})", job.attempt, job.max_retries + 1)
    } else {
        String::new()
    };
    crate::outln!("job {} {}{attempt}", job.id, job.state);
    if job.kind == JobKind::Ray {
        crate::outln!("ray job: {}", shell_words(&job.command));
    }
    if let Some(message) = &job.message {
        crate::outln!("{message}");
    }
    if job.kind == JobKind::Ray {
        return;
    }
    if let Some(image) = &job.image {
        crate::outln!("image {image}");
    }
    crate::outln!("{}", table(&["RANK", "DEVICE", "STATE", "EXIT", "ERROR"], &rows));
}

/// Follows a job's output to its end, resuming after broken streams. The first Ctrl-C
/// stops the job (and keeps streaming until it has stopped); a second one exits at once.
async fn follow_to_end(client: &Client, job: &Job, json: bool, stop_on_interrupt: bool) -> anyhow::Result<Job> {
    let mut after = 0i64;
    let mut stop_sent = false;
    let mut retries = 0u32;
    let wait = spinner("waiting for output", json);
    loop {
        let stream = client.stream_logs(job.id.as_str(), true, after, |event| {
            wait.finish_and_clear();
            if let LogEvent::Line(line) = event {
                after = line.seq;
            }
            print_event(event, json, job.kind);
        });
        let result = tokio::select! {
            result = stream => result,
            _ = tokio::signal::ctrl_c() => {
                if !stop_on_interrupt || stop_sent {
                    anyhow::bail!("interrupted; job {} keeps running (stop it with `herd job stop {}`)", job.id, job.id);
                }
                stop_sent = true;
                eprintln!("stopping job {} on every node (Ctrl-C again to leave it)…", job.id);
                client.stop_job(&job.id).await?;
                continue;
            }
        };
        match result {
            Ok(Some(job)) => {
                wait.finish_and_clear();
                return Ok(job);
            }
            Ok(None) | Err(ClientError::Unreachable { .. }) if retries < STREAM_RETRIES_MAX => {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(None) => anyhow::bail!("the log stream kept breaking; see `herd job show {}`", job.id),
            Err(error) => return Err(error.into()),
        }
    }
}

pub async fn run(context: &Context, command: JobCommand) -> anyhow::Result<i32> {
    let client = context.client()?;
    match command {
        JobCommand::Run { cluster, env, image, memory, cpus, pids, max_retries, command } => {
            let cluster_id = ClusterId::parse(&cluster)?;
            let request = CreateJob {
                cluster_id,
                command,
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                image,
                limits: JobLimits { cpu_millis: cpus, memory_bytes: memory, pids_max: pids },
                kind: JobKind::Command,
                runtime_env: None,
                max_retries,
            };
            let job = client.create_job(&request).await?;
            if !context.json {
                eprintln!("job {} started on {} node(s) of {}", job.id, job.tasks.len(), job.cluster_id);
            }
            let job = follow_to_end(&client, &job, context.json, true).await?;
            if !context.json {
                std::io::stdout().flush().context("stdout")?;
                print_summary(&job);
            }
            Ok(if job.state == JobState::Succeeded { 0 } else { 1 })
        }
        JobCommand::Submit { cluster, working_dir, pip, env, no_wait, max_retries, command } => {
            let cluster = client.cluster(&cluster).await?;
            let Some(ray) = &cluster.ray else {
                anyhow::bail!(
                    "cluster {} is a plain cluster; `herd job submit` needs a Ray cluster (use `herd job run` here)",
                    cluster.id
                );
            };
            if ray.state != RayClusterState::Ready {
                wait_for_ray(&client, cluster.clone(), context.json).await?;
            }
            let access = ray.path.clone();
            let working_dir = match working_dir {
                Some(dir) => {
                    let package = package_dir(&dir)?;
                    let size = package.bytes.len();
                    let uploaded = client.upload_ray_package(&access, &package.name, package.bytes.clone()).await?;
                    if !context.json {
                        let what = if uploaded { "uploaded" } else { "already on the cluster" };
                        eprintln!(
                            "working dir {}: {} file(s), {} KiB, {what}",
                            dir.display(),
                            package.files,
                            size / 1024
                        );
                    }
                    Some(package.uri())
                }
                None => None,
            };
            let request = CreateJob {
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                kind: JobKind::Ray,
                runtime_env: Some(RayRuntimeEnv { working_dir, pip }),
                max_retries,
                ..CreateJob::new(cluster.id.clone(), command)
            };
            let job = client.create_job(&request).await?;
            if no_wait {
                if context.json {
                    print_json(&job);
                } else {
                    crate::outln!("{}", job.id);
                }
                return Ok(0);
            }
            if !context.json {
                eprintln!("ray job {} submitted to {}", job.id, job.cluster_id);
            }
            let job = follow_to_end(&client, &job, context.json, true).await?;
            if !context.json {
                std::io::stdout().flush().context("stdout")?;
                eprintln!(
                    "job {} {}{}",
                    job.id,
                    job.state,
                    job.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                );
            }
            Ok(if job.state == JobState::Succeeded { 0 } else { 1 })
        }
        JobCommand::Logs { id, follow } => {
            let job = client.job(&id).await?;
            if follow {
                follow_to_end(&client, &job, context.json, false).await?;
            } else {
                client
                    .stream_logs(job.id.as_str(), false, 0, |event| print_event(event, context.json, job.kind))
                    .await?;
            }
            Ok(0)
        }
        JobCommand::List { cluster } => {
            let cluster = cluster.as_deref().map(ClusterId::parse).transpose()?;
            let jobs = client.jobs(cluster.as_ref()).await?;
            if context.json {
                print_json(&jobs);
            } else {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.to_string(),
                            j.cluster_id.to_string(),
                            j.state.to_string(),
                            if j.kind == JobKind::Ray { "ray".into() } else { j.tasks.len().to_string() },
                            j.created_at.to_string(),
                            shell_words(&j.command),
                        ]
                    })
                    .collect();
                crate::outln!("{}", table(&["ID", "CLUSTER", "STATE", "NODES", "CREATED", "COMMAND"], &rows));
            }
            Ok(0)
        }
        JobCommand::Show { id } => {
            let job = client.job(&id).await?;
            if context.json {
                print_json(&job);
            } else {
                print_summary(&job);
            }
            Ok(0)
        }
        JobCommand::Stop { id } => {
            let job = client.job(&id).await?;
            if job.state.is_terminal() {
                if context.json {
                    print_json(&job);
                } else {
                    crate::outln!("job {} already ended ({}); nothing to stop", job.id, job.state);
                }
                return Ok(0);
            }
            let job = client.stop_job(&job.id).await?;
            if context.json {
                print_json(&job);
            } else {
                let whom = if job.kind == JobKind::Ray { "Ray" } else { "every node" };
                crate::outln!("job {} is {}; stop sent to {whom}", job.id, job.state);
            }
            Ok(0)
        }
    }
}

/// The command as a user would type it (for tables).
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|w| if w.contains(char::is_whitespace) || w.is_empty() { format!("{w:?}") } else { w.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_cores_parse_like_docker() {
        assert_eq!(super::parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(super::parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(super::parse_bytes("4096"), Ok(4096));
        assert!(super::parse_bytes("12 parsecs").is_err());
        assert!(super::parse_bytes("MiB").is_err());
        assert_eq!(super::parse_cpus("1.5"), Ok(1500));
        assert!(super::parse_cpus("0").is_err());
    }
}
