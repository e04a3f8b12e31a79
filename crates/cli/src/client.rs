//! A typed client for the coordinator's `/v1` API.

use futures_util::StreamExt;
use herd_core::{Address, ClusterId, JobId};
use herd_proto::api::{
    Account, AddStake, ApiKeyIssued, BrowserLink, Challenge, ChallengeRequest, Cluster, ConfirmPayout, CreateCluster,
    CreateJob, CreditsMinted, Deposit, Device, DeviceDetail, ErrorBody, Health, Job, JournalEntry, LedgerHead,
    LogEvent, MarketPrice, MintCredits, PairingCode, Payout, Quote, RewardBlock, SignedChallenge, StakeStatus,
    WalletBalance, Withdraw,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {url} ({reason}); is it running? set --coordinator or HERD_COORDINATOR")]
    Unreachable { url: String, reason: String },
    #[error("{message}")]
    Api { status: StatusCode, code: String, message: String },
    #[error("unexpected response from the coordinator: {0}")]
    Protocol(String),
    #[error("{0}")]
    Tls(#[from] herd_worker::tls::TlsError),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    /// Err when TLS cannot be set up (a bad `HERD_CA_CERT`): every call says so.
    http: Result<reqwest::Client, herd_worker::tls::TlsError>,
    api_key: Option<String>,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>) -> Client {
        let http = herd_worker::tls::http_client(reqwest::Client::builder());
        Client { base: base.trim_end_matches('/').to_owned(), http, api_key }
    }

    fn http(&self) -> Result<&reqwest::Client, ClientError> {
        self.http.as_ref().map_err(|e| ClientError::Tls(e.clone()))
    }

    /// The coordinator's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uploads a working-directory package to a Ray cluster through its access path, unless
    /// the cluster has it already; true if it was uploaded. The path carries the cluster's
    /// secret, so no API key is sent.
    pub async fn upload_ray_package(&self, access_path: &str, name: &str, bytes: Vec<u8>) -> Result<bool, ClientError> {
        let url = format!("{}{access_path}/api/packages/gcs/{name}", self.base);
        let unreachable =
            |e: reqwest::Error| ClientError::Unreachable { url: self.base.clone(), reason: error_chain(&e) };
        let exists = self.http()?.get(&url).send().await.map_err(unreachable)?;
        if exists.status().is_success() {
            return Ok(false);
        }
        self.send(self.http()?.put(&url).body(bytes)).await?;
        Ok(true)
    }

    /// The API key this client sends, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    pub fn with_api_key(&self, api_key: String) -> Client {
        Client { api_key: Some(api_key), ..self.clone() }
    }

    fn builder(&self, method: Method, path: &str) -> Result<reqwest::RequestBuilder, ClientError> {
        let request = self.http()?.request(method, format!("{}{path}", self.base));
        Ok(match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), reason: error_chain(&e) })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api { status, code: body.error.code, message: body.error.message },
            Err(_) => ClientError::Api { status, code: "http".into(), message: not_herd(&self.base, status, &text) },
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let mut request = self.builder(method, path)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        response.json::<T>().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// A request signed with the ledger key (`signing::operator_request_message`): for the
    /// operator's endpoints. Each carries a fresh random id, so none can be replayed.
    async fn operator_call<T: DeserializeOwned>(
        &self,
        key: &ed25519_dalek::SigningKey,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        use sha2::Digest;
        let bytes = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let at_ms = crate::output::now_ms();
        let id = format!("op-{}", herd_core::hex::encode(&rand::random::<[u8; 12]>()));
        let digest = herd_core::hex::encode(&sha2::Sha256::digest(&bytes));
        let message = herd_proto::signing::operator_request_message(method.as_str(), path, &digest, at_ms, &id);
        let signature = bs58::encode(ed25519_dalek::Signer::sign(key, &message).to_bytes()).into_string();
        let mut request = self
            .http()?
            .request(method, format!("{}{path}", self.base))
            .header(herd_proto::signing::OPERATOR_HEADER, format!("{at_ms}.{id}.{signature}"));
        if body.is_some() {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes);
        }
        let response = self.send(request).await?;
        response.json::<T>().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The audit log (operator only), oldest first after `after`.
    pub async fn audit(
        &self,
        key: &ed25519_dalek::SigningKey,
        after: i64,
        limit: u32,
        target: Option<&str>,
    ) -> Result<Vec<herd_proto::api::AuditEntry>, ClientError> {
        let mut path = format!("/v1/audit?after={after}&limit={limit}");
        if let Some(target) = target {
            path.push_str(&format!("&target={}", encode(target)));
        }
        self.operator_call(key, Method::GET, &path, None::<&()>).await
    }

    /// Blocks (`block: true`) or unblocks a device (operator only).
    pub async fn set_blocked(
        &self,
        key: &ed25519_dalek::SigningKey,
        device: &str,
        block: bool,
        reason: &str,
    ) -> Result<Device, ClientError> {
        let verb = if block { "block" } else { "unblock" };
        let body = herd_proto::api::DeviceBlock { reason: reason.into() };
        self.operator_call(key, Method::POST, &format!("/v1/operator/devices/{}/{verb}", encode(device)), Some(&body))
            .await
    }

    /// Slashes a device's stake (operator only), once per `slash.id`.
    pub async fn slash(&self, device: &str, slash: &herd_proto::api::Slash) -> Result<StakeStatus, ClientError> {
        self.call(Method::POST, &format!("/v1/stake/{}/slash", encode(device)), Some(slash)).await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.get("/v1/health").await
    }

    pub async fn challenge(&self, address: &Address, purpose: &str) -> Result<Challenge, ClientError> {
        let body = ChallengeRequest { address: address.clone(), purpose: purpose.into() };
        self.call(Method::POST, "/v1/auth/challenge", Some(&body)).await
    }

    pub async fn register(&self, signed: &SignedChallenge) -> Result<ApiKeyIssued, ClientError> {
        self.call(Method::POST, "/v1/accounts", Some(signed)).await
    }

    pub async fn login(&self, signed: &SignedChallenge) -> Result<ApiKeyIssued, ClientError> {
        self.call(Method::POST, "/v1/auth/api-keys", Some(signed)).await
    }

    pub async fn browser_link(&self, signed: &SignedChallenge) -> Result<BrowserLink, ClientError> {
        self.call(Method::POST, "/v1/auth/browser-links", Some(signed)).await
    }

    pub async fn pairing_code(&self) -> Result<PairingCode, ClientError> {
        self.call(Method::POST, "/v1/pairing-codes", None::<&()>).await
    }

    pub async fn account(&self) -> Result<Account, ClientError> {
        self.get("/v1/account").await
    }

    /// `query` is a URL query string without the `?` (built with `query_string`).
    pub async fn devices(&self, query: &str) -> Result<Vec<Device>, ClientError> {
        self.get(&format!("/v1/devices?{query}")).await
    }

    pub async fn device(&self, id: &str) -> Result<DeviceDetail, ClientError> {
        self.get(&format!("/v1/devices/{}", encode(id))).await
    }

    /// The device's proofs of compute, most recent first.
    pub async fn verifications(&self, id: &str) -> Result<Vec<herd_proto::proof::Verification>, ClientError> {
        self.get(&format!("/v1/devices/{}/verifications", encode(id))).await
    }

    pub async fn quote(&self, request: &CreateCluster) -> Result<Quote, ClientError> {
        self.call(Method::POST, "/v1/market/quote", Some(request)).await
    }

    pub async fn market_prices(&self) -> Result<Vec<MarketPrice>, ClientError> {
        self.get("/v1/market/prices").await
    }

    pub async fn wallet(&self) -> Result<Vec<WalletBalance>, ClientError> {
        self.get("/v1/wallet").await
    }

    pub async fn deposit(&self, deposit: &Deposit) -> Result<JournalEntry, ClientError> {
        self.call(Method::POST, "/v1/wallet/deposit", Some(deposit)).await
    }

    pub async fn withdraw(&self, withdraw: &Withdraw) -> Result<Payout, ClientError> {
        self.call(Method::POST, "/v1/wallet/withdraw", Some(withdraw)).await
    }

    pub async fn mint_credits(&self, io: &str) -> Result<CreditsMinted, ClientError> {
        self.call(Method::POST, "/v1/wallet/credits", Some(&MintCredits { io: io.into() })).await
    }

    pub async fn payouts(&self) -> Result<Vec<Payout>, ClientError> {
        self.get("/v1/wallet/payouts").await
    }

    pub async fn confirm_payout(&self, id: &str, confirm: &ConfirmPayout) -> Result<Payout, ClientError> {
        self.call(Method::POST, &format!("/v1/payouts/{}/confirm", encode(id)), Some(confirm)).await
    }

    pub async fn stake(&self, device: &str) -> Result<StakeStatus, ClientError> {
        self.get(&format!("/v1/stake/{}", encode(device))).await
    }

    pub async fn add_stake(&self, device: &str, amount: &str) -> Result<StakeStatus, ClientError> {
        let body = AddStake { amount: amount.into() };
        self.call(Method::POST, &format!("/v1/stake/{}", encode(device)), Some(&body)).await
    }

    pub async fn remove_stake(&self, device: &str) -> Result<StakeStatus, ClientError> {
        self.call(Method::POST, &format!("/v1/stake/{}/remove", encode(device)), None::<&()>).await
    }

    pub async fn wallet_history(&self) -> Result<Vec<JournalEntry>, ClientError> {
        self.get("/v1/wallet/history").await
    }

    pub async fn reward_blocks(&self) -> Result<Vec<RewardBlock>, ClientError> {
        self.get("/v1/rewards/blocks").await
    }

    pub async fn ledger_head(&self) -> Result<LedgerHead, ClientError> {
        self.get("/v1/ledger/head").await
    }

    pub async fn journal(&self, after: u64, limit: u32) -> Result<Vec<JournalEntry>, ClientError> {
        self.get(&format!("/v1/ledger/journal?after={after}&limit={limit}")).await
    }

    pub async fn create_cluster(&self, request: &CreateCluster) -> Result<Cluster, ClientError> {
        self.call(Method::POST, "/v1/clusters", Some(request)).await
    }

    pub async fn clusters(&self, all: bool) -> Result<Vec<Cluster>, ClientError> {
        self.get(&format!("/v1/clusters?all={all}")).await
    }

    pub async fn cluster(&self, id: &str) -> Result<Cluster, ClientError> {
        self.get(&format!("/v1/clusters/{}", encode(id))).await
    }

    pub async fn delete_cluster(&self, id: &str) -> Result<Cluster, ClientError> {
        self.call(Method::DELETE, &format!("/v1/clusters/{}", encode(id)), None::<&()>).await
    }

    /// Deletes a cluster, refunding the unused hold as credits instead of the lease's asset.
    pub async fn delete_cluster_refunding_credits(&self, id: &str) -> Result<Cluster, ClientError> {
        self.call(Method::DELETE, &format!("/v1/clusters/{}?refund=credits", encode(id)), None::<&()>).await
    }

    pub async fn extend_cluster(&self, id: &str, hours: u32) -> Result<Cluster, ClientError> {
        let body = serde_json::json!({ "hours": hours });
        self.call(Method::POST, &format!("/v1/clusters/{}/extend", encode(id)), Some(&body)).await
    }

    pub async fn create_job(&self, request: &CreateJob) -> Result<Job, ClientError> {
        self.call(Method::POST, "/v1/jobs", Some(request)).await
    }

    pub async fn jobs(&self, cluster: Option<&ClusterId>) -> Result<Vec<Job>, ClientError> {
        match cluster {
            Some(cluster) => self.get(&format!("/v1/jobs?cluster={cluster}")).await,
            None => self.get("/v1/jobs").await,
        }
    }

    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.get(&format!("/v1/jobs/{}", encode(id))).await
    }

    pub async fn stop_job(&self, id: &JobId) -> Result<Job, ClientError> {
        self.call(Method::POST, &format!("/v1/jobs/{id}/stop"), None::<&()>).await
    }

    /// Streams the job's log events to `on_event` until the stream ends. Returns the job if
    /// the stream ended with it (a broken stream returns None: resume with `after`).
    pub async fn stream_logs(
        &self,
        id: &str,
        follow: bool,
        after: i64,
        mut on_event: impl FnMut(&LogEvent),
    ) -> Result<Option<Job>, ClientError> {
        let path = format!("/v1/jobs/{}/logs?follow={follow}&after={after}", encode(id));
        let response = self.send(self.builder(Method::GET, &path)?).await?;
        let mut body = response.bytes_stream();
        let mut pending = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return Ok(None) };
            pending.extend_from_slice(&chunk);
            while let Some(newline) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=newline).collect();
                let event: LogEvent =
                    serde_json::from_slice(&line).map_err(|e| ClientError::Protocol(format!("bad log event: {e}")))?;
                on_event(&event);
                if let LogEvent::End { job } = event {
                    return Ok(Some(job));
                }
            }
        }
        Ok(None)
    }
}

/// Percent-encodes a path segment typed by a user (ids are plain, but input is input).
fn encode(segment: &str) -> String {
    herd_core::url::percent_encode(segment)
}

/// `key=value&…` for the pairs whose value is present.
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect::<Vec<_>>().join("&")
}

/// The innermost cause ("Connection refused (os error 111)"): the outer layers repeat the URL.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut innermost = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}

/// An answer without herd's error body: a proxy's or another server's page. Its HTML is no
/// help; say what it means, with the first line of a plain-text answer at most.
fn not_herd(base: &str, status: reqwest::StatusCode, text: &str) -> String {
    let looks_like_html = text.trim_start().starts_with('<');
    let first_line = text.lines().next().unwrap_or_default().trim();
    if looks_like_html || first_line.is_empty() || status == reqwest::StatusCode::NOT_FOUND {
        return format!("{base} answered HTTP {status} without a herd error: is it a herd coordinator? (check --coordinator or HERD_COORDINATOR)");
    }
    let mut line = first_line.to_owned();
    line.truncate(200);
    format!("HTTP {status} from {base}: {line}")
}
