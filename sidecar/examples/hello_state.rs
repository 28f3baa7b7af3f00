//! A tiny app that keeps its state through daprd's HTTP API, the way any Dapr app does,
//! printing each step. Run it next to `daprd` (see `examples/hello-state/run.sh`):
//!
//! ```text
//! DAPR_HTTP_PORT=3500 cargo run -p daprs-sidecar --example hello_state
//! ```

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const STORE: &str = "statestore";

#[tokio::main]
async fn main() -> Result<()> {
    let port = std::env::var("DAPR_HTTP_PORT").unwrap_or_else(|_| "3500".into());
    let dapr = format!("http://127.0.0.1:{port}/v1.0");
    let http = reqwest::Client::new();

    let status = http
        .get(format!("{dapr}/healthz/outbound"))
        .send()
        .await?
        .status();
    println!("daprd outbound health: {status}");

    let order = json!({"id": 42, "item": "coffee", "quantity": 2});
    let r = http
        .post(format!("{dapr}/state/{STORE}"))
        .json(&json!([{"key": "order-42", "value": order}]))
        .send()
        .await?;
    println!("saved order-42 -> {}", r.status());

    let r = http
        .get(format!("{dapr}/state/{STORE}/order-42"))
        .send()
        .await?;
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("daprd returned no ETag")?
        .to_owned();
    let body: Value = r.json().await?;
    println!("read order-42 = {body} (etag {etag})");

    let update = json!([{"key": "order-42", "value": {"id": 42, "item": "coffee", "quantity": 3}, "etag": etag}]);
    let r = http
        .post(format!("{dapr}/state/{STORE}"))
        .json(&update)
        .send()
        .await?;
    println!("updated order-42 with its etag -> {}", r.status());
    let r = http
        .post(format!("{dapr}/state/{STORE}"))
        .json(&update)
        .send()
        .await?;
    let conflict: Value = r.json().await.unwrap_or_default();
    println!(
        "updating again with the old etag is refused -> {} {}",
        conflict["errorCode"].as_str().unwrap_or("?"),
        conflict["message"].as_str().unwrap_or("")
    );

    let tx = json!({"operations": [
        {"operation": "upsert", "request": {"key": "order-43", "value": {"id": 43, "item": "tea"}}},
        {"operation": "delete", "request": {"key": "order-42"}}
    ]});
    let r = http
        .post(format!("{dapr}/state/{STORE}/transaction"))
        .json(&tx)
        .send()
        .await?;
    println!(
        "transaction (add order-43, delete order-42) -> {}",
        r.status()
    );

    let bulk: Value = http
        .post(format!("{dapr}/state/{STORE}/bulk"))
        .json(&json!({"keys": ["order-42", "order-43"]}))
        .send()
        .await?
        .json()
        .await?;
    for item in bulk.as_array().into_iter().flatten() {
        match item.get("data") {
            Some(data) => println!("bulk: {} = {data}", item["key"].as_str().unwrap_or("?")),
            None => println!("bulk: {} is gone", item["key"].as_str().unwrap_or("?")),
        }
    }
    if bulk[1]["data"]["item"] != "tea" || bulk[0].get("data").is_some() {
        bail!("unexpected state after the transaction: {bulk}");
    }
    println!("done: state saved, read, guarded by ETags and changed atomically through daprd");
    Ok(())
}
