//! The OpenAPI document against the router it describes: every `/v1` route is documented
//! with its methods, every documented operation is served, and every parameter is where the
//! document says (path parameters are exactly the path's `{…}` segments; all others are
//! query parameters). Generated clients and fuzzers trust the document; this keeps it true.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use tower::ServiceExt;
use utoipa::openapi::path::ParameterIn;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::test_support::{temp_store, test_app};

/// Routes outside the document, and why.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("/v1/openapi.json", "the document itself"),
    ("/v1/worker/connect", "the worker protocol (a WebSocket; herd_proto::worker)"),
    ("/v1/worker/speedtest/{token}/download", "the worker protocol (single-use tokens over the worker socket)"),
    ("/v1/worker/speedtest/{token}/upload", "the worker protocol (single-use tokens over the worker socket)"),
];

/// (path, method) of every `/v1` route the router declares, read from its source.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("mod.rs");
    let body = &source[source.find("pub fn router(").expect("the router")..];
    let mut routes = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let open = rest.find('"').expect("a path literal");
        let close = open + 1 + rest[open + 1..].find('"').expect("its end");
        let path = &rest[open + 1..close];
        // The route's method router runs to the next `.route(` (or the end of the chain).
        let end = rest.find(".route(").or_else(|| rest.find(".route_layer(")).unwrap_or(rest.len());
        let methods = &rest[close..end];
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in ["get", "post", "put", "delete", "patch"] {
            let called = |prefix: &str| methods.contains(&format!("{prefix}{method}("));
            if called("(") || called(".") || called(" ") {
                routes.insert((path.to_owned(), method.to_owned()));
            }
        }
    }
    routes
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = ApiDoc::openapi();
    let mut operations = BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("get", item.get.is_some()),
            ("post", item.post.is_some()),
            ("put", item.put.is_some()),
            ("delete", item.delete.is_some()),
            ("patch", item.patch.is_some()),
        ];
        for (method, present) in methods {
            if present {
                operations.insert((path.clone(), method.to_owned()));
            }
        }
    }
    operations
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let skipped: BTreeSet<&str> = UNDOCUMENTED.iter().map(|(path, _)| *path).collect();
    let routed: BTreeSet<_> = routed().into_iter().filter(|(path, _)| !skipped.contains(path.as_str())).collect();
    assert!(routed.len() > 30, "the router's source was not read: {routed:?}");
    let documented = documented();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(missing.is_empty(), "routes the OpenAPI document lacks: {missing:?}");
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(stale.is_empty(), "documented operations no route serves: {stale:?}");
}

#[test]
fn parameters_are_where_the_document_says() {
    let doc = ApiDoc::openapi();
    let mut wrong = Vec::new();
    for (path, item) in &doc.paths.paths {
        let segments: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let operations = [&item.get, &item.post, &item.put, &item.delete, &item.patch];
        for operation in operations.into_iter().flatten() {
            let parameters = operation.parameters.iter().flatten();
            let mut in_path = BTreeSet::new();
            for parameter in parameters {
                match parameter.parameter_in {
                    ParameterIn::Path => {
                        if !segments.contains(&parameter.name) {
                            wrong.push(format!(
                                "{path}: {} is declared in the path but is not a segment",
                                parameter.name
                            ));
                        }
                        in_path.insert(parameter.name.clone());
                    }
                    ParameterIn::Query if segments.contains(&parameter.name) => {
                        wrong.push(format!("{path}: {} is a path segment declared as a query", parameter.name));
                    }
                    ParameterIn::Query => {}
                    _ => wrong.push(format!("{path}: {} is neither in the path nor the query", parameter.name)),
                }
            }
            if in_path != segments {
                wrong.push(format!("{path}: path parameters {in_path:?}, segments {segments:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Each documented operation, called with placeholder ids, reaches a handler: not the
/// router's fallback (unknown path) nor its method-not-allowed answer.
#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let (_dir, store, url) = temp_store().await;
    let (app, _stop) = test_app(&store, url).await;
    let router = super::router(app);
    for (path, method) in documented() {
        let concrete: Vec<String> =
            path.split('/').map(|s| if s.starts_with('{') { "x".to_owned() } else { s.to_owned() }).collect();
        let request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(concrete.join("/"))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(status != 405 && !text.contains("no such endpoint"), "{method} {path}: {status} {text}");
    }
}

#[test]
fn every_operation_documents_429_with_retry_after() {
    let doc = ApiDoc::openapi();
    for (path, item) in &doc.paths.paths {
        let operations = [&item.get, &item.post, &item.put, &item.delete, &item.patch];
        for operation in operations.into_iter().flatten() {
            let Some(utoipa::openapi::RefOr::T(response)) = operation.responses.responses.get("429") else {
                panic!("{path}: no 429 response documented");
            };
            assert!(response.headers.contains_key("Retry-After"), "{path}: 429 without Retry-After");
        }
    }
}
