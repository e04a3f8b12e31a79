//! Jobs: a command run on every node of a cluster, with output streamed as NDJSON.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herd_core::{Address, ClusterState, JobId, JobKind, TaskLimits};
use herd_proto::api::{CreateJob, ErrorBody, Job, LogEvent, JOB_RETRIES_MAX};
use herd_proto::worker::ServerMessage;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::clusters::owned_cluster;
use super::parse_id;
use crate::actions;
use crate::app::{now, App};
use crate::auth::{random_entropy, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::store::NewJob;

const ARGS_MAX: usize = 256;
const COMMAND_BYTES_MAX: usize = 64 * 1024;
const ENV_VARS_MAX: usize = 64;
const ENV_VALUE_BYTES_MAX: usize = 4096;
const IMAGE_LEN_MAX: usize = 255;
const LOG_PAGE: u32 = 500;
/// Unfinished Ray jobs whose state a listing asks Ray for.
const RAY_REFRESHES_MAX: usize = 20;
/// Followers re-check the database at least this often even without a wake-up.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

fn validate(request: &CreateJob) -> ApiResult<()> {
    if request.command.is_empty() || request.command[0].is_empty() {
        return Err(ApiError::bad_request("command is empty: give a program and its arguments"));
    }
    if request.command.len() > ARGS_MAX {
        return Err(ApiError::bad_request(format!("at most {ARGS_MAX} command arguments")));
    }
    if request.command.iter().map(String::len).sum::<usize>() > COMMAND_BYTES_MAX {
        return Err(ApiError::bad_request(format!("the command is longer than {COMMAND_BYTES_MAX} bytes")));
    }
    if request.env.len() > ENV_VARS_MAX {
        return Err(ApiError::bad_request(format!("at most {ENV_VARS_MAX} environment variables")));
    }
    for (name, value) in &request.env {
        let valid = name.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid || name.starts_with("HERD_") {
            return Err(ApiError::bad_request(format!(
                "invalid environment variable name {name:?}: use [A-Z_][A-Z0-9_]* and not the reserved HERD_ prefix"
            )));
        }
        if value.len() > ENV_VALUE_BYTES_MAX || value.contains('\0') {
            return Err(ApiError::bad_request(format!("environment variable {name} is too long or contains NUL")));
        }
    }
    if let Some(image) = &request.image {
        validate_image(image)?;
    }
    if request.max_retries > JOB_RETRIES_MAX {
        return Err(ApiError::bad_request(format!(
            "max_retries must be 0..={JOB_RETRIES_MAX}, got {}",
            request.max_retries
        )));
    }
    request.limits.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(())
}

/// A Docker image reference: `[registry/]name[:tag][@digest]` in the characters Docker allows.
fn validate_image(image: &str) -> ApiResult<()> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:@".contains(&b);
    let upper_ok = |b: u8| b.is_ascii_uppercase(); // tags may hold capitals
    if image.is_empty()
        || image.len() > IMAGE_LEN_MAX
        || !image.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        || !image.bytes().all(|b| allowed(b) || upper_ok(b))
    {
        return Err(ApiError::bad_request(format!(
            "invalid image {image:?}: expected [registry/]name[:tag] (letters, digits, . _ - / : @; at most \
             {IMAGE_LEN_MAX} characters)"
        )));
    }
    Ok(())
}

/// Runs a command on every node of one of the caller's clusters.
#[utoipa::path(post, path = "/v1/jobs", request_body = CreateJob, security(("api_key" = [])),
    responses((status = 201, body = Job), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiJson(request): ApiJson<CreateJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    validate(&request)?;
    let cluster = owned_cluster(&app, &owner, request.cluster_id.as_str()).await?;
    if request.kind == JobKind::Ray {
        super::ray::validate(&request)?;
        if cluster.state != ClusterState::Running {
            return Err(ApiError::conflict(format!(
                "cluster {} is {}; jobs need a running cluster",
                cluster.id, cluster.state
            )));
        }
        let job = super::ray::create(&app, &owner, &request, &cluster).await?;
        return Ok((StatusCode::CREATED, Json(job)));
    }
    for node in &cluster.nodes {
        let spec = app.store.device_spec(&node.device_id).await?.ok_or_else(|| ApiError::not_found("node vanished"))?;
        TaskLimits::of_lease(&spec)
            .narrowed(&request.limits)
            .map_err(|e| ApiError::unprocessable(format!("node {} (rank {}): {e}", node.device_id, node.rank)))?;
    }
    if cluster.state != ClusterState::Running {
        return Err(ApiError::conflict(format!(
            "cluster {} is {}; jobs need a running cluster",
            cluster.id, cluster.state
        )));
    }
    let id = JobId::from_entropy(random_entropy());
    // A cluster short of a node (healing) runs the job on the nodes it has, each at its rank.
    let nodes: Vec<(u32, Address)> = cluster.nodes.iter().map(|n| (n.rank, n.device_id.clone())).collect();
    let new = NewJob {
        id: &id,
        cluster_id: &cluster.id,
        owner: &owner,
        command: &request.command,
        env: &request.env,
        image: request.image.as_deref(),
        limits: &request.limits,
        nodes: &nodes,
        now: now(),
        kind: JobKind::Command,
        max_retries: request.max_retries,
        runtime_env: None,
    };
    app.store.create_job(&new).await?;
    for node in &cluster.nodes {
        for task in app.store.device_assignments(&node.device_id, Some(&id)).await? {
            actions::dispatch(&app, &node.device_id, task.assignment);
        }
    }
    tracing::info!(job = %id, cluster = %cluster.id, nodes = nodes.len(), "job created");
    let job = app.store.job(&id).await?.ok_or_else(|| ApiError::not_found("job vanished"))?;
    Ok((StatusCode::CREATED, Json(job)))
}

pub(crate) async fn owned_job(app: &App, caller: &Address, id: &str) -> ApiResult<Job> {
    let id: JobId = parse_id(id)?;
    let job = app.store.job(&id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if &job.owner != caller {
        return Err(ApiError::forbidden(format!("job {id} belongs to another account")));
    }
    super::ray::refreshed(app, job).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this cluster's jobs.
    cluster: Option<String>,
}

/// The caller's jobs, newest first (at most 200).
#[utoipa::path(get, path = "/v1/jobs", params(ListQuery), security(("api_key" = [])),
    responses((status = 200, body = Vec<Job>), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    Caller(owner): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Job>>> {
    let cluster = match &query.cluster {
        Some(id) => Some(owned_cluster(&app, &owner, id).await?.id),
        None => None,
    };
    let mut jobs = app.store.jobs_of(&owner, cluster.as_ref(), 200).await?;
    // Unfinished Ray jobs are asked about (a bounded number per listing).
    for job in jobs.iter_mut().filter(|j| j.kind == JobKind::Ray && !j.state.is_terminal()).take(RAY_REFRESHES_MAX) {
        *job = super::ray::refreshed(&app, job.clone()).await?;
    }
    Ok(Json(jobs))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(State(app): State<App>, Caller(owner): Caller, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    Ok(Json(owned_job(&app, &owner, &id).await?))
}

/// Stops the job on every node (SIGTERM, then SIGKILL after a grace period).
#[utoipa::path(post, path = "/v1/jobs/{id}/stop", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = Job), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stop(State(app): State<App>, Caller(owner): Caller, Path(id): Path<String>) -> ApiResult<Json<Job>> {
    let job = owned_job(&app, &owner, &id).await?;
    if job.kind == JobKind::Ray && !job.state.is_terminal() {
        super::ray::stop(&app, &job).await?;
        let job = app.store.job(&job.id).await?.ok_or_else(|| ApiError::not_found("job vanished"))?;
        return Ok(Json(super::ray::refreshed(&app, job).await?));
    }
    if app.store.stop_waiting_retry(&job.id, now()).await? {
        app.notify_job(&job.id);
    } else if !job.state.is_terminal() {
        for device in app.store.request_stop(&job.id, now()).await? {
            app.hub.send(&device, ServerMessage::StopTask { job_id: job.id.clone(), attempt: None });
        }
        app.notify_job(&job.id);
    }
    Ok(Json(app.store.job(&job.id).await?.ok_or_else(|| ApiError::not_found("job vanished"))?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Keep streaming until the job ends.
    follow: Option<bool>,
    /// Only lines after this sequence number (to resume).
    after: Option<i64>,
}

/// The job's output as NDJSON `LogEvent`s: lines, then `end` with the job once it is
/// finished (or, without `follow`, once the stored lines are sent).
#[utoipa::path(get, path = "/v1/jobs/{id}/logs", params(("id" = String, Path), LogQuery), security(("api_key" = [])),
    responses((status = 200, content_type = "application/x-ndjson", body = LogEvent), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(app): State<App>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let job = owned_job(&app, &owner, &id).await?;
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let (after, follow) = (query.after.unwrap_or(0), query.follow.unwrap_or(false));
    if job.kind == JobKind::Ray {
        tokio::spawn(super::ray::follow_logs(app, job.id, after, follow, sender));
    } else {
        let events = app.job_events.subscribe();
        tokio::spawn(follow_logs(app, job.id, after, follow, sender, events));
    }
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

pub(super) fn ndjson(event: &LogEvent) -> Bytes {
    let mut line = serde_json::to_vec(event).expect("log events serialise");
    line.push(b'\n');
    Bytes::from(line)
}

/// Sends stored lines from `cursor` on, then (when following) waits for more until the job
/// ends. Ends early when the client goes away.
async fn follow_logs(
    app: App,
    job: JobId,
    mut cursor: i64,
    follow: bool,
    sender: mpsc::Sender<Bytes>,
    mut events: broadcast::Receiver<JobId>,
) {
    loop {
        // Read the state before the lines: if the job had ended, every line is already stored.
        let ended = match app.store.job_state(&job).await {
            Ok(state) => state.is_none_or(|s| s.is_terminal()),
            Err(_) => return,
        };
        loop {
            let Ok(lines) = app.store.logs_after(&job, cursor, LOG_PAGE).await else { return };
            let full_page = lines.len() == LOG_PAGE as usize;
            for line in lines {
                cursor = line.seq;
                if sender.send(ndjson(&LogEvent::Line(line))).await.is_err() {
                    return;
                }
            }
            if !full_page {
                break;
            }
        }
        if ended || !follow {
            if let Ok(Some(job)) = app.store.job(&job).await {
                let _ = sender.send(ndjson(&LogEvent::End { job })).await;
            }
            return;
        }
        let deadline = tokio::time::sleep(FOLLOW_POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(changed) if changed == job => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = &mut deadline => break,
                _ = sender.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(command: &[&str], env: &[(&str, &str)]) -> CreateJob {
        CreateJob {
            cluster_id: herd_core::ClusterId::from_entropy([0; 8]),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            image: None,
            limits: Default::default(),
            kind: JobKind::Command,
            runtime_env: None,
            max_retries: 0,
        }
    }

    #[test]
    fn job_requests_are_bounded_and_checked() {
        assert!(validate(&job(&["echo", "hi"], &[("MY_VAR", "1")])).is_ok());
        let retries = CreateJob { max_retries: JOB_RETRIES_MAX + 1, ..job(&["x"], &[]) };
        assert!(validate(&retries).unwrap_err().message.contains("max_retries must be 0..=10"));
        assert!(validate(&job(&[], &[])).is_err());
        assert!(validate(&job(&[""], &[])).is_err());
        assert!(validate(&job(&["x"], &[("HERD_NODE_RANK", "5")])).unwrap_err().message.contains("reserved"));
        assert!(validate(&job(&["x"], &[("lower", "1")])).is_err());
        assert!(validate(&job(&["x"], &[("1ABC", "1")])).is_err());
        let many: Vec<&str> = vec!["a"; ARGS_MAX + 1];
        assert!(validate(&job(&many, &[])).is_err());
        for (image, ok) in [
            ("herd/base:bookworm", true),
            ("registry.example:5000/team/ray:2.40-gpu", true),
            ("debian@sha256:abc123", true),
            ("", false),
            ("-rm", false),
            ("a b", false),
            ("x;rm -rf /", false),
        ] {
            let request = CreateJob { image: Some(image.into()), ..job(&["x"], &[]) };
            assert_eq!(validate(&request).is_ok(), ok, "{image:?}");
        }
        let tiny =
            CreateJob { limits: herd_core::JobLimits { pids_max: Some(1), ..Default::default() }, ..job(&["x"], &[]) };
        assert!(validate(&tiny).unwrap_err().message.contains("pids"));
    }
}
