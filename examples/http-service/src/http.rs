//! The HTTP side: routes, and the translation between HTTP and the WIT
//! records. Every request gets a response: a plugin's error, crash or
//! invalid answer becomes a 5xx with a message, never a dropped connection.
//!
//! * `GET /metrics`: Prometheus text format.
//! * `GET /healthz`: 200, and the current version of every plugin.
//! * `/NAME` and `/NAME/...`: plugin `NAME` (its identity's name), which
//!   sees the path below its mount point. No such plugin: 404.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::{Response, StatusCode};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::types::{ErrorKind, HttpRequest, HttpResponse, Outcome};
use crate::Backend;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<Backend>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(plugin)
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response<Body> {
    let text = state.metrics.render();
    state.metrics.response(200);
    Response::builder()
        .header(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        .body(Body::from(text))
        .expect("a static header is valid")
}

async fn healthz(State(state): State<AppState>) -> Response<Body> {
    let mut body = String::from("ok\n");
    for v in state.backend.versions().iter().filter(|v| v.current) {
        body.push_str(&format!("{}@{}\n", v.name, v.version));
    }
    state.metrics.response(200);
    text(StatusCode::OK, body)
}

/// Everything else: a plugin's.
async fn plugin(State(state): State<AppState>, req: Request) -> Response<Body> {
    let _in_flight = state.metrics.in_flight();
    let response = dispatch(&state, req).await;
    state.metrics.response(response.status().as_u16());
    response
}

async fn dispatch(state: &AppState, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let full_path = parts.uri.path();
    let (name, path) = split_mount(full_path);
    if name.is_empty() {
        let names: Vec<String> = state
            .backend
            .versions()
            .into_iter()
            .filter(|v| v.current)
            .map(|v| format!("/{}/", v.name))
            .collect();
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "name a plugin in the path; loaded: {}\n",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(" ")
                }
            ),
        );
    }
    let name = name.to_string();
    let body = match axum::body::to_bytes(body, state.max_body).await {
        Ok(body) => body,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body too large or unreadable (limit {} bytes)\n",
                    state.max_body
                ),
            )
        }
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        path: path.to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::from(body),
    };

    // wasmplug counts the call itself (wasmplug::telemetry).
    match state.backend.call(&name, request).await {
        // Not a plugin's call: no metrics series for an unknown name.
        Outcome::NotLoaded => text(
            StatusCode::NOT_FOUND,
            format!("no plugin `{name}` is loaded\n"),
        ),
        Outcome::Answered(answer) => to_http(answer).unwrap_or_else(|why| {
            let message = format!("plugin `{name}` answered with an invalid response: {why}");
            tracing::warn!(target: "http_service", "{message}");
            state.metrics.bad_response(&name);
            failure(ErrorKind::BadResponse, &message)
        }),
        Outcome::Failed { kind, message } => {
            // Counted in `/metrics`; each one's cause, with its time, only
            // when asked for (`RUST_LOG=http_service=debug`): under
            // overload every request may fail.
            tracing::debug!(target: "http_service", "{name}: {}: {message}", kind.as_str());
            failure(kind, &message)
        }
    }
}

/// `/echo/a/b` → (`echo`, `/a/b`); `/echo` → (`echo`, `/`); `/` → (``, `/`).
fn split_mount(path: &str) -> (&str, &str) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    }
}

/// Headers a plugin may not set: the server frames the message itself.
const FRAMING: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
];

/// A plugin's answer as HTTP, or why it is not valid HTTP.
fn to_http(answer: HttpResponse) -> Result<Response<Body>, String> {
    let status = StatusCode::from_u16(answer.status)
        .map_err(|_| format!("status {} is not 100-999", answer.status))?;
    let mut builder = Response::builder().status(status);
    for (name, value) in answer.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        if FRAMING.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("header `{name}` has an invalid value"))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Body::from(Bytes::from(answer.body)))
        .map_err(|e| e.to_string())
}

/// The response to a failed call: its status, the kind in `x-plugin-error`,
/// the message in the body.
fn failure(kind: ErrorKind, message: &str) -> Response<Body> {
    let mut response = text(
        StatusCode::from_u16(kind.status()).expect("a valid status"),
        format!("{message}\n"),
    );
    response.headers_mut().insert(
        HeaderName::from_static("x-plugin-error"),
        HeaderValue::from_static(kind.as_str()),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .expect("a static header is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_segment_is_the_mount_point() {
        assert_eq!(split_mount("/echo/a/b"), ("echo", "/a/b"));
        assert_eq!(split_mount("/echo/"), ("echo", "/"));
        assert_eq!(split_mount("/echo"), ("echo", "/"));
        assert_eq!(split_mount("/"), ("", "/"));
    }

    #[test]
    fn an_invalid_answer_is_refused_not_sent() {
        let answer = |status, name: &str, value: &str| HttpResponse {
            status,
            headers: vec![(name.into(), value.into())],
            body: b"x".to_vec(),
        };
        assert!(to_http(answer(200, "x-ok", "fine")).is_ok());
        assert!(to_http(answer(42, "x-ok", "fine")).is_err());
        assert!(to_http(answer(200, "bad name", "fine")).is_err());
        assert!(to_http(answer(200, "x-ok", "line\nbreak")).is_err());
        // Framing is the server's: a plugin's content-length is dropped.
        let framed = to_http(answer(200, "content-length", "999")).unwrap();
        assert!(framed.headers().get("content-length").is_none());
    }
}
