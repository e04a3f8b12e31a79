use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use herd_core::{ClusterId, JobState};
use herd_proto::api::{CreateJob, Job, LogEvent, Stream};

use super::Context;
use crate::client::{Client, ClientError};
use crate::output::{print_json, spinner, table};

/// Reconnect attempts when the log stream breaks (e.g. the coordinator restarts).
const STREAM_RETRIES_MAX: u32 = 60;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a command on every node of a cluster and stream its output (Ctrl-C stops it).
    Run {
        #[arg(long)]
        cluster: String,
        /// Extra environment, NAME=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A job's output.
    Logs {
        id: String,
        /// Keep streaming until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// Your jobs.
    List {
        #[arg(long)]
        cluster: Option<String>,
    },
    /// One job and its tasks.
    Show { id: String },
    /// Stop a job on every node.
    Stop { id: String },
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn print_event(event: &LogEvent, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string(event).expect("events serialise"));
        return;
    }
    if let LogEvent::Line(line) = event {
        match line.stream {
            Stream::Stdout => crate::outln!("[{}] {}", line.rank, line.text),
            Stream::Stderr => eprintln!("[{}] {}", line.rank, line.text),
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
    crate::outln!("job {} {}", job.id, job.state);
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
            print_event(event, json);
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
        JobCommand::Run { cluster, env, command } => {
            let cluster_id = ClusterId::parse(&cluster)?;
            let request = CreateJob { cluster_id, command, env: env.into_iter().collect::<BTreeMap<_, _>>() };
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
        JobCommand::Logs { id, follow } => {
            let job = client.job(&id).await?;
            if follow {
                follow_to_end(&client, &job, context.json, false).await?;
            } else {
                client.stream_logs(job.id.as_str(), false, 0, |event| print_event(event, context.json)).await?;
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
                            j.tasks.len().to_string(),
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
            let job = client.stop_job(&job.id).await?;
            if context.json {
                print_json(&job);
            } else {
                crate::outln!("job {} is {}; stop sent to every node", job.id, job.state);
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
