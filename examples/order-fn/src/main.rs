//! An order-processing function for kinetic's queue-consumer example. It listens on `$PORT` and
//! takes binary-mode CloudEvents whose data is an order:
//! `{"order": "o-17", "customer": "c-3", "seq": 5, "sku": "widget", "amount": 250}`.
//!
//! - A valid order is "processed" (`PROCESS_MS` of work, default 5) and answered `200` with a reply
//!   CloudEvent `dev.kinetic.order.processed` that keeps the order's `partitionkey`, so the reply
//!   stays in its customer's ordered lane.
//! - An order it cannot process is refused for good with `422` and a JSON error: kinetic
//!   dead-letters it at once instead of retrying. Orders for the SKU `discontinued` are refused
//!   that way until the function is redeployed with `ACCEPT_DISCONTINUED=true` (the fix); then
//!   `kinetic dlq replay` sends them again.
//! - Malformed data (not JSON, a field missing) is refused with `422` too.
//!
//! It logs one line per order to stdout (`kinetic logs order-fn`). It listens on 127.0.0.1, or on
//! `BIND_ADDRESS` when set (`0.0.0.0` in its container image).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
struct Order {
    order: String,
    customer: String,
    seq: u64,
    sku: String,
    amount: u64,
}

#[derive(Debug, Serialize)]
struct Processed<'a> {
    order: &'a str,
    customer: &'a str,
    seq: u64,
    amount: u64,
}

#[derive(Clone)]
struct Settings {
    process: Duration,
    accept_discontinued: bool,
}

fn refuse(message: String) -> Response {
    println!("refused: {message}");
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(settings: Settings, headers: HeaderMap, body: Bytes) -> Response {
    let id = header(&headers, "ce-id").unwrap_or("?").to_owned();
    let order: Order = match serde_json::from_slice(&body) {
        Ok(order) => order,
        Err(error) => return refuse(format!("event {id}: the data is not an order: {error}")),
    };
    if order.sku == "discontinued" && !settings.accept_discontinued {
        return refuse(format!(
            "order {} (event {id}): SKU `discontinued` cannot be processed",
            order.order
        ));
    }
    tokio::time::sleep(settings.process).await;
    println!(
        "processed order {} of {} (#{}, {} × {})",
        order.order, order.customer, order.seq, order.amount, order.sku
    );
    let reply = Processed {
        order: &order.order,
        customer: &order.customer,
        seq: order.seq,
        amount: order.amount,
    };
    let mut response = axum::Json(reply).into_response();
    let out = response.headers_mut();
    let set = |out: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set(out, "ce-specversion", "1.0".to_owned());
    set(out, "ce-id", format!("processed-{}", order.order));
    set(out, "ce-source", "/order-fn".to_owned());
    set(out, "ce-type", "dev.kinetic.order.processed".to_owned());
    set(out, "ce-subject", order.order.clone());
    if let Some(key) = header(&headers, "ce-partitionkey") {
        set(out, "ce-partitionkey", key.to_owned());
    }
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let settings = Settings {
        process: Duration::from_millis(
            std::env::var("PROCESS_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
        ),
        accept_discontinued: std::env::var("ACCEPT_DISCONTINUED").is_ok_and(|v| v == "true"),
    };
    let app = Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| handle(settings.clone(), headers, body))
            .get(|| async { "order-fn is ready\n" }),
    );
    // Loopback by default; `0.0.0.0` in the function's container image, where requests come
    // through the engine's published port.
    let host = std::env::var("BIND_ADDRESS").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    axum::serve(listener, app).await
}
