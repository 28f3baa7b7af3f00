//! An HTTP app for invocation tests (included by the tests that use it, with
//! `#[path = "support/echo.rs"] mod echo;`): it answers every request with what it received,
//! as JSON (`app`, `method`, `path`, `query`, `headers`, `body`) and an `x-app` header naming
//! it, and records each request's path and headers.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use serde_json::{Value, json};

/// Requests an app received: (path, headers).
pub type Seen = Arc<Mutex<Vec<(String, serde_json::Map<String, Value>)>>>;

/// An HTTP app that answers with what it received, as JSON, and records it.
pub async fn echo_app(name: &'static str, seen: Seen) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |request: Request| {
        let seen = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let headers: serde_json::Map<String, Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            seen.lock()
                .unwrap()
                .push((parts.uri.path().to_owned(), headers.clone()));
            (
                [("x-app", name), ("content-type", "application/json")],
                json!({
                    "app": name,
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                })
                .to_string(),
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}
