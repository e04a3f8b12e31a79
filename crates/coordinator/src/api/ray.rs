//! Ray clusters from the customer's side: the dashboard and Ray's job API relayed to the head
//! (`/ray/{cluster}/{secret}/…`), and Ray jobs submitted through herd (`kind: ray` on
//! `/v1/jobs`), whose state, logs and stop go to Ray's job API through the same tunnel.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use herd_core::{Address, ClusterId, ClusterKind, JobId, JobKind, JobState, RayNodeState};
use herd_proto::api::{Cluster, CreateJob, Job, LogEvent, LogLine, RayRuntimeEnv, Stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::parse_id;
use crate::app::{now, App};
use crate::auth::{ray_access_secret, same_secret};
use crate::error::{ApiError, ApiResult};
use crate::store::{NewJob, RayJobUpdate};
use crate::tunnel::{self, Relay};

/// Request headers passed on to the dashboard; everything else (the customer's herd API key
/// above all) stays at the coordinator.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-type",
    "if-modified-since",
    "if-none-match",
    "range",
    "user-agent",
];
/// The handshake's headers, passed on for an upgrade to a WebSocket.
const WEBSOCKET_HEADERS: &[&str] =
    &["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"];
/// Ray job API answers herd reads whole (status, logs).
const ANSWER_BYTES_MAX: usize = 16 << 20;
const LOG_POLL: Duration = Duration::from_secs(1);
/// How long a submission waits for a just-started head's job agent.
const JOB_AGENT_WAIT_MAX: Duration = Duration::from_secs(30);
const PIP_REQUIREMENTS_MAX: usize = 64;
const PIP_REQUIREMENT_LEN_MAX: usize = 200;

// ---- the relay ----

/// `/ray/{cluster}/{secret}`: the dashboard wants a trailing slash for its relative links.
pub async fn root(Path((cluster, secret)): Path<(String, String)>) -> Redirect {
    Redirect::permanent(&format!("/ray/{cluster}/{secret}/"))
}

pub async fn index(
    State(app): State<App>,
    Path((cluster, secret)): Path<(String, String)>,
    request: Request,
) -> Response {
    relay_request(app, cluster, secret, String::new(), request).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn proxy(
    State(app): State<App>,
    Path((cluster, secret, rest)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    relay_request(app, cluster, secret, rest, request).await.unwrap_or_else(IntoResponse::into_response)
}

async fn relay_request(
    app: App,
    cluster: String,
    secret: String,
    rest: String,
    request: Request,
) -> ApiResult<Response> {
    // Unknown cluster and wrong secret read the same, so the path reveals nothing.
    let not_found = || ApiError::not_found("no Ray cluster endpoint here (check the path `herd cluster show` prints)");
    let cluster: ClusterId = parse_id(&cluster).map_err(|_| not_found())?;
    if !same_secret(&secret, &ray_access_secret(&app, &cluster)) {
        return Err(not_found());
    }
    let device = running_head(&app, &cluster).await?;
    let mut path = format!("/{rest}");
    if let Some(query) = request.uri().query() {
        path.push('?');
        path.push_str(query);
    }
    let upgrade = websocket_upgrade(request.headers());
    let headers = forwarded(request.headers(), upgrade.is_some());
    let method = request.method().as_str().to_owned();
    let relay = Relay { device, cluster, method, path, headers, upgrade: upgrade.clone() };
    let answer = match upgrade {
        Some(_) => {
            let mut request = request;
            let on_upgrade = hyper::upgrade::on(&mut request);
            tunnel::relay_upgrade(&app, relay, on_upgrade).await?
        }
        None => tunnel::relay(&app, relay, request.into_body().into_data_stream()).await?,
    };
    let mut response = Response::new(answer.body);
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn forwarded(headers: &HeaderMap, upgrading: bool) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            FORWARDED_HEADERS.contains(&name.as_str()) || (upgrading && WEBSOCKET_HEADERS.contains(&name.as_str()))
        })
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}

/// `Some("websocket")` when the request asks to upgrade its connection to a WebSocket (RFC
/// 6455 §4.1: `Connection: Upgrade` and `Upgrade: websocket`), the one upgrade relayed: Ray's
/// CLI tails job logs over one. Other upgrades are relayed as plain requests (and refused by
/// the head).
fn websocket_upgrade(headers: &HeaderMap) -> Option<String> {
    let has_token = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    (has_token("connection", "upgrade") && has_token("upgrade", "websocket")).then(|| "websocket".to_owned())
}

/// The device of the cluster's head, if the head runs.
async fn running_head(app: &App, cluster: &ClusterId) -> ApiResult<Address> {
    let (device, state) = app
        .store
        .ray_head(cluster)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("cluster {cluster} is not a running Ray cluster")))?;
    if state != RayNodeState::Running {
        return Err(ApiError::unavailable(format!("the Ray head of cluster {cluster} is {state}; retry when it runs")));
    }
    Ok(device)
}

/// One call to the head's Ray job API, answered whole.
async fn ray_api(
    app: &App,
    cluster: &ClusterId,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> ApiResult<(u16, Bytes)> {
    let device = running_head(app, cluster).await?;
    let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
    let body = match body {
        Some(value) => {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
            serde_json::to_vec(&value).expect("json serialises")
        }
        None => Vec::new(),
    };
    let relay = Relay {
        device,
        cluster: cluster.clone(),
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        upgrade: None,
    };
    tunnel::call(app, relay, body, ANSWER_BYTES_MAX).await
}

fn ray_refusal(status: u16, body: &[u8]) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
    ApiError::unprocessable(format!("Ray refused the request ({status}): {last}"))
}

// ---- Ray jobs ----

/// Checks a Ray job request before anything is sent to Ray.
pub fn validate(request: &CreateJob) -> ApiResult<()> {
    if request.image.is_some() || request.limits != Default::default() {
        return Err(ApiError::bad_request(
            "image and limits apply to command jobs; a Ray job runs inside the cluster's Ray nodes",
        ));
    }
    let Some(env) = &request.runtime_env else { return Ok(()) };
    if let Some(dir) = &env.working_dir {
        let valid = dir
            .strip_prefix("gcs://_ray_pkg_")
            .and_then(|rest| rest.strip_suffix(".zip"))
            .is_some_and(|hash| (16..=64).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        if !valid {
            return Err(ApiError::bad_request(format!(
                "working_dir {dir:?} is not an uploaded package: expected gcs://_ray_pkg_<hex>.zip"
            )));
        }
    }
    if env.pip.len() > PIP_REQUIREMENTS_MAX {
        return Err(ApiError::bad_request(format!("at most {PIP_REQUIREMENTS_MAX} pip requirements")));
    }
    for requirement in &env.pip {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-[],<>=!~ ".contains(c);
        if requirement.is_empty()
            || requirement.len() > PIP_REQUIREMENT_LEN_MAX
            || !requirement.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !requirement.chars().all(allowed)
        {
            return Err(ApiError::bad_request(format!(
                "invalid pip requirement {requirement:?}: a package name with optional extras and version \
                 (e.g. \"scikit-learn==1.5.2\"), at most {PIP_REQUIREMENT_LEN_MAX} characters; pip options are not allowed"
            )));
        }
    }
    Ok(())
}

/// A shell word for Ray's entrypoint (a shell command line): plain words stay as they are.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Submits the Ray job to the head first, then records it: a job Ray refused leaves nothing.
pub async fn create(app: &App, owner: &Address, request: &CreateJob, cluster: &Cluster) -> ApiResult<Job> {
    if cluster.kind != ClusterKind::Ray {
        return Err(ApiError::conflict(format!(
            "cluster {} is a plain cluster; Ray jobs need a Ray cluster (create one with --type ray)",
            cluster.id
        )));
    }
    let id = JobId::from_entropy(crate::auth::random_entropy());
    let runtime_env = request.runtime_env.clone().unwrap_or_default();
    let submission = Submission { job: &id, attempt: 1, owner, command: &request.command, env: &request.env };
    submit(app, &cluster.id, &submission, &runtime_env).await?;
    let runtime_env = serde_json::to_string(&runtime_env).expect("runtime envs serialise");
    let new = NewJob {
        id: &id,
        cluster_id: &cluster.id,
        owner,
        command: &request.command,
        env: &request.env,
        image: None,
        limits: &request.limits,
        nodes: &[],
        now: now(),
        kind: JobKind::Ray,
        max_retries: request.max_retries,
        runtime_env: Some(&runtime_env),
    };
    app.store.create_job(&new).await?;
    tracing::info!(job = %id, cluster = %cluster.id, "Ray job submitted");
    refreshed(app, app.store.job(&id).await?.ok_or_else(|| ApiError::not_found("job vanished"))?).await
}

/// Ray's submission id of a job's attempt: the job id first, a new one per retry (Ray keeps
/// finished submissions, and a re-formed cluster may be the same GCS after a node restart).
pub fn submission_id(job: &JobId, attempt: u32) -> String {
    if attempt <= 1 {
        job.to_string()
    } else {
        format!("{job}-attempt-{attempt}")
    }
}

/// One attempt of a Ray job, as Ray's job API takes it.
struct Submission<'a> {
    job: &'a JobId,
    attempt: u32,
    owner: &'a Address,
    command: &'a [String],
    env: &'a std::collections::BTreeMap<String, String>,
}

/// Submits an attempt; Ok once Ray accepted it (or already had it: a resubmission that
/// crashed before it was recorded is not submitted twice).
async fn submit(app: &App, cluster: &ClusterId, submission: &Submission<'_>, env: &RayRuntimeEnv) -> ApiResult<()> {
    let id = submission_id(submission.job, submission.attempt);
    let entrypoint: Vec<String> = submission.command.iter().map(|w| shell_quote(w)).collect();
    let mut runtime_env = serde_json::Map::new();
    if let Some(dir) = &env.working_dir {
        runtime_env.insert("working_dir".into(), dir.clone().into());
    }
    if !env.pip.is_empty() {
        runtime_env.insert("pip".into(), env.pip.clone().into());
    }
    if !submission.env.is_empty() {
        runtime_env.insert("env_vars".into(), json!(submission.env));
    }
    let body = json!({
        "entrypoint": entrypoint.join(" "),
        "submission_id": id,
        "runtime_env": runtime_env,
        "metadata": {"herd_job": submission.job.as_str(), "herd_owner": submission.owner.as_str(),
                     "herd_attempt": submission.attempt.to_string()},
    });
    // Right after a head starts, its job agent may not have registered yet: Ray answers 500
    // without having accepted anything, so asking again is safe (the submission id is fixed).
    let deadline = tokio::time::Instant::now() + JOB_AGENT_WAIT_MAX;
    loop {
        let (status, answer) = ray_api(app, cluster, "POST", "/api/jobs/", Some(body.clone())).await?;
        if status == 200 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&answer);
        if submission.attempt > 1 && text.contains("already exists") {
            return Ok(());
        }
        let agent_missing = text.contains("submit_job_internal") || text.contains("No available agent");
        if !(status == 500 && agent_missing && tokio::time::Instant::now() < deadline) {
            return Err(ray_refusal(status, &answer));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resubmits a Ray job that lost its node (or head) to the healed cluster, once its head
/// runs; until then the retry waits.
pub async fn resubmit(app: &App, retry: &crate::store::Retry) -> crate::store::StoreResult<()> {
    if !matches!(app.store.ray_head(&retry.cluster).await?, Some((_, RayNodeState::Running))) {
        return Ok(());
    }
    let Some(job) = app.store.job(&retry.job).await? else { return Ok(()) };
    let runtime_env = app.store.job_runtime_env(&job.id).await?.unwrap_or_default();
    let env = app.store.job_env(&job.id).await?;
    let submission =
        Submission { job: &job.id, attempt: retry.attempt, owner: &job.owner, command: &job.command, env: &env };
    match submit(app, &retry.cluster, &submission, &runtime_env).await {
        Ok(()) => {
            if app.store.ray_retry_submitted(retry).await? {
                tracing::info!(job = %job.id, attempt = retry.attempt, "Ray job resubmitted after a lost node");
                app.notify_job(&job.id);
            }
        }
        Err(error) => {
            tracing::warn!(job = %job.id, attempt = retry.attempt, error = %error.message, "resubmission failed; retrying next tick");
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct RayJobInfo {
    status: String,
    #[serde(default)]
    message: Option<String>,
}

/// A Ray job with Ray's current state (stored when it changed); other jobs as they are. If
/// the head cannot be asked, the stored state is returned.
pub async fn refreshed(app: &App, job: Job) -> ApiResult<Job> {
    if job.kind != JobKind::Ray || job.state.is_terminal() {
        return Ok(job);
    }
    let path = format!("/api/jobs/{}", submission_id(&job.id, job.attempt));
    let info = match ray_api(app, &job.cluster_id, "GET", &path, None).await {
        Ok((200, body)) => serde_json::from_slice::<RayJobInfo>(&body).ok(),
        Ok((404, _)) => {
            // The head restarted (or moved) since: Ray's state went with it. Retried if the
            // job may be, else it fails saying so.
            let what = "Ray no longer knows this job (its head restarted)";
            if app.store.ray_job_lost_node(&job.id, what, now()).await? {
                tracing::info!(job = %job.id, "Ray job lost with its head; it will be resubmitted");
            }
            app.notify_job(&job.id);
            return Ok(app.store.job(&job.id).await?.unwrap_or(job));
        }
        Ok(_) | Err(_) => None,
    };
    let Some(info) = info else { return Ok(job) };
    let state = match info.status.as_str() {
        "PENDING" => JobState::Pending,
        "RUNNING" => JobState::Running,
        "SUCCEEDED" => JobState::Succeeded,
        "STOPPED" => JobState::Stopped,
        _ => JobState::Failed,
    };
    // A failure while a node was lost is the node's, not the job's: retried if it may be.
    if state == JobState::Failed && app.store.node_lost_since(&job.cluster_id, job.created_at).await? {
        let what = format!(
            "Ray reports the job failed after a node was lost ({})",
            info.message.as_deref().unwrap_or("no detail")
        );
        if app.store.ray_job_lost_node(&job.id, &what, now()).await? {
            app.notify_job(&job.id);
            return Ok(app.store.job(&job.id).await?.unwrap_or(job));
        }
    }
    if state != job.state || info.message != job.message {
        app.store.update_ray_job(&job.id, &RayJobUpdate { state, message: info.message.as_deref() }, now()).await?;
        if state.is_terminal() {
            app.notify_job(&job.id);
        }
        return Ok(app.store.job(&job.id).await?.unwrap_or(job));
    }
    Ok(job)
}

pub async fn stop(app: &App, job: &Job) -> ApiResult<()> {
    if app.store.stop_waiting_retry(&job.id, now()).await? {
        return Ok(());
    }
    let path = format!("/api/jobs/{}/stop", submission_id(&job.id, job.attempt));
    let (status, body) = ray_api(app, &job.cluster_id, "POST", &path, None).await?;
    if status != 200 {
        return Err(ray_refusal(status, &body));
    }
    Ok(())
}

#[derive(Deserialize)]
struct RayLogs {
    logs: String,
}

/// Streams a Ray job's log as `LogEvent`s (one `seq` per line, from 1), then `end`. Ray
/// gives the whole log each time; what was sent is skipped.
/// The current attempt's output as Ray keeps it (empty when Ray cannot be asked).
pub async fn output(app: &App, job: &Job) -> String {
    let path = format!("/api/jobs/{}/logs", submission_id(&job.id, job.attempt));
    match ray_api(app, &job.cluster_id, "GET", &path, None).await {
        Ok((200, body)) => serde_json::from_slice::<RayLogs>(&body).map(|l| l.logs).unwrap_or_default(),
        _ => String::new(),
    }
}

pub async fn follow_logs(app: App, job: JobId, after: i64, follow: bool, sender: mpsc::Sender<Bytes>) {
    let mut sent = after.max(0);
    // Each attempt's log starts at line 1 in Ray; herd numbers them on: (attempt, first seq).
    let mut numbering: Option<(u32, i64)> = None;
    loop {
        let Ok(Some(current)) = app.store.job(&job).await else { return };
        let Ok(current) = refreshed(&app, current).await else { return };
        let ended = current.state.is_terminal();
        let base = match numbering {
            Some((attempt, base)) if attempt == current.attempt => base,
            // Resuming mid-way through a later attempt restarts its numbering after `after`.
            _ => {
                let base = if current.attempt <= 1 { 0 } else { sent };
                numbering = Some((current.attempt, base));
                base
            }
        };
        let logs = output(&app, &current).await;
        // A line still being written is sent once it is complete (or the job ended).
        let complete = if ended { logs.as_str() } else { logs.rsplit_once('\n').map_or("", |(done, _)| done) };
        for (index, text) in complete.lines().enumerate() {
            let seq = base + index as i64 + 1;
            if seq <= sent {
                continue;
            }
            sent = seq;
            let line = LogLine { seq, rank: 0, stream: Stream::Stdout, text: text.to_owned(), at: now() };
            if sender.send(super::jobs::ndjson(&LogEvent::Line(line))).await.is_err() {
                return;
            }
        }
        if ended || !follow {
            if let Ok(Some(job)) = app.store.job(&job).await {
                let _ = sender.send(super::jobs::ndjson(&LogEvent::End { job })).await;
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL) => {}
            _ = sender.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoints_quote_what_the_shell_would_split() {
        let words = ["python", "train.py", "--lr", "0.1", "it's here", "$(rm -rf /)", ""];
        let quoted: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
        assert_eq!(quoted.join(" "), r#"python train.py --lr 0.1 'it'\''s here' '$(rm -rf /)' ''"#);
    }

    #[test]
    fn runtime_envs_take_only_uploaded_packages_and_plain_requirements() {
        let job = |env: RayRuntimeEnv| CreateJob {
            kind: JobKind::Ray,
            runtime_env: Some(env),
            ..CreateJob::new(ClusterId::from_entropy([0; 8]), vec!["python".into()])
        };
        let ok = RayRuntimeEnv {
            working_dir: Some("gcs://_ray_pkg_0123456789abcdef0123456789abcdef.zip".into()),
            pip: vec!["scikit-learn==1.5.2".into(), "ray[tune]>=2.40".into()],
        };
        assert!(validate(&job(ok)).is_ok());
        for dir in ["/etc", "gcs://_ray_pkg_../x.zip", "https://evil/x.zip", "gcs://_ray_pkg_abc.zip"] {
            let env = RayRuntimeEnv { working_dir: Some(dir.into()), pip: vec![] };
            assert!(validate(&job(env)).is_err(), "{dir}");
        }
        for pip in ["--index-url=http://evil", "-e .", "pkg; rm", "git+https://x", ""] {
            let env = RayRuntimeEnv { working_dir: None, pip: vec![pip.into()] };
            assert!(validate(&job(env)).is_err(), "{pip}");
        }
    }
}
