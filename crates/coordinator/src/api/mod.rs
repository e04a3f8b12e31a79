//! The `/v1` JSON API, `/metrics`, and the index page.

mod accounts;
pub(crate) mod clusters;
#[cfg(test)]
mod contract;
mod devices;
pub(crate) mod jobs;
pub(crate) mod market;
mod operator;
pub(crate) mod ray;
mod speedtest;
mod stake;
mod system;
pub(crate) mod wallet;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use utoipa::OpenApi;

use crate::app::App;
use crate::error::{not_found_fallback, ApiError};
use crate::metrics::labels;
use crate::worker_socket;
use herd_proto::worker::SPEEDTEST_UPLOAD_BYTES;

#[derive(OpenApi)]
#[openapi(
    info(title = "herd coordinator API", description = "Accounts, devices, clusters and jobs of a herd network."),
    paths(
        system::health,
        accounts::challenge,
        accounts::register,
        accounts::login,
        accounts::browser_link,
        accounts::me,
        accounts::pairing_code,
        devices::list,
        devices::show,
        devices::verifications,
        market::quote,
        market::prices,
        clusters::create,
        clusters::list,
        clusters::show,
        clusters::delete,
        clusters::extend,
        jobs::create,
        jobs::list,
        jobs::show,
        jobs::stop,
        jobs::logs,
        wallet::balance,
        wallet::deposit,
        wallet::history,
        wallet::withdraw,
        wallet::mint_credits,
        wallet::payouts,
        wallet::confirm,
        stake::show,
        stake::add,
        stake::remove,
        stake::slash,
        wallet::head,
        wallet::blocks,
        wallet::journal,
        operator::list,
        operator::block,
        operator::unblock,
    ),
    components(schemas(herd_proto::api::ErrorBody, herd_proto::api::LogEvent)),
    modifiers(&BearerAuth, &RateLimited, &StandardErrors)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("herd_…").build()),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "X-Herd-Operator",
                    "<at_ms>.<id>.<signature>: the ledger key's signature over the request \
                     (herd_proto::signing::operator_request_message); each id once, within 2 minutes",
                ),
            )),
        );
    }
}

/// Every operation may answer 429 (`crate::rate_limit::limit_api`), with `Retry-After`.
struct RateLimited;

impl utoipa::Modify for RateLimited {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
        let response = ResponseBuilder::new()
            .description("Too many requests from this API key or address; retry after the header's seconds.")
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("Seconds to wait before the next request."))
                    .build(),
            )
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                operation.responses.responses.insert("429".into(), response.clone().into());
            }
        }
    }
}

/// The errors every operation of a kind can answer, documented where a handler's own list
/// leaves them out: 400 (a malformed path, query or body), 401 (an operation that needs a
/// key, called without a valid one), 404 (an id that names nothing), 422 (a body that is JSON
/// but not the request's shape). Fuzzers and generated clients rely on the full list.
struct StandardErrors;

impl utoipa::Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                let in_path = parameters.iter().any(|p| matches!(p.parameter_in, ParameterIn::Path));
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = operation.request_body.is_some();
                let mut add = |status: &str, why: &str, applies: bool| {
                    if applies {
                        operation.responses.responses.entry(status.into()).or_insert_with(|| error(why).into());
                    }
                };
                add("400", "The path, query or body is malformed; the message says what is allowed.", true);
                add("401", "A valid credential is required.", secured);
                add("404", "Nothing has this id.", in_path);
                add("422", "The body is JSON but not this request's shape.", body);
            }
        }
    }
}

pub fn router(app: App) -> Router {
    Router::new()
        .merge(crate::web::router())
        .route("/metrics", get(system::metrics))
        .route("/v1/health", get(system::health))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/v1/auth/challenge", post(accounts::challenge))
        .route("/v1/accounts", post(accounts::register))
        .route("/v1/auth/api-keys", post(accounts::login))
        .route("/v1/auth/browser-links", post(accounts::browser_link))
        .route("/v1/account", get(accounts::me))
        .route("/v1/pairing-codes", post(accounts::pairing_code))
        .route("/v1/wallet", get(wallet::balance))
        .route("/v1/wallet/deposit", post(wallet::deposit))
        .route("/v1/wallet/history", get(wallet::history))
        .route("/v1/wallet/withdraw", post(wallet::withdraw))
        .route("/v1/wallet/credits", post(wallet::mint_credits))
        .route("/v1/wallet/payouts", get(wallet::payouts))
        .route("/v1/payouts/{id}/confirm", post(wallet::confirm))
        .route("/v1/stake/{device}", get(stake::show).post(stake::add))
        .route("/v1/stake/{device}/remove", post(stake::remove))
        .route("/v1/stake/{device}/slash", post(stake::slash))
        .route("/v1/audit", get(operator::list))
        .route("/v1/operator/devices/{id}/block", post(operator::block))
        .route("/v1/operator/devices/{id}/unblock", post(operator::unblock))
        .route("/v1/ledger/head", get(wallet::head))
        .route("/v1/rewards/blocks", get(wallet::blocks))
        .route("/v1/ledger/journal", get(wallet::journal))
        .route("/v1/market/quote", post(market::quote))
        .route("/v1/market/prices", get(market::prices))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{id}", get(devices::show))
        .route("/v1/devices/{id}/verifications", get(devices::verifications))
        .route("/v1/clusters", post(clusters::create).get(clusters::list))
        .route("/v1/clusters/{id}", get(clusters::show).delete(clusters::delete))
        .route("/v1/clusters/{id}/extend", post(clusters::extend))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/stop", post(jobs::stop))
        .route("/v1/jobs/{id}/logs", get(jobs::logs))
        .route("/v1/worker/connect", get(worker_socket::connect))
        .route("/ray/{cluster}/{secret}", any(ray::root))
        .route("/ray/{cluster}/{secret}/", any(ray::index))
        .route("/ray/{cluster}/{secret}/{*rest}", any(ray::proxy))
        .route("/v1/worker/speedtest/{token}/download", get(speedtest::download))
        .route(
            "/v1/worker/speedtest/{token}/upload",
            post(speedtest::upload).layer(axum::extract::DefaultBodyLimit::max(SPEEDTEST_UPLOAD_BYTES as usize)),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), crate::rate_limit::limit_api))
        .route_layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed on this path".into(),
    }
}

async fn count_requests(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    app.metrics
        .http_requests
        .get_or_create(&labels(&[("method", &method), ("route", &route), ("status", &status)]))
        .inc();
    response
}

/// ISO 3166-1 alpha-2, upper case: two ASCII letters.
pub fn validate_country(country: &str) -> Result<(), ApiError> {
    if country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid country {country:?}: expected an ISO 3166-1 alpha-2 code in upper case, such as US or DE"
        )))
    }
}

/// Parses a path segment into a typed id; a malformed id is a 400 that says the format.
fn parse_id<T: std::str::FromStr>(text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| ApiError::bad_request(e.to_string()))
}
