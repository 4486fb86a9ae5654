//! thumbnailer: a kinetic function that makes thumbnails of uploaded images.
//!
//! Run as a `serving.knative.dev/v1` Service behind a Trigger that selects an S3Source's
//! `com.amazonaws.s3.ObjectCreated:*` events (see `examples/image-pipeline/`). For each event it
//! reads the object from S3, decodes it (JPEG, PNG or WebP, by content), and writes one thumbnail
//! per size of `THUMBNAIL_SIZES` (default `128,512`: the longest side, aspect ratio kept, never
//! upscaled) to `thumbnails/{size}/{key without uploads/}` in the same bucket and format. It answers
//! `200` with a `dev.kinetic.thumbnail.created` reply event listing them; `400`/`413`/`422` (kinetic
//! dead-letters them at once) when the event or the object can never make a thumbnail; `503`
//! (kinetic retries) when S3 cannot be reached. `GET /healthz` answers 200 (readiness).
//!
//! # Layout
//! - [`settings`]: environment variables, validated before listening;
//! - [`event`]: the incoming CloudEvent (binary or structured mode) → bucket and key;
//! - [`layout`]: thumbnail sizes and keys (pure);
//! - [`render`]: decode, orient, resize, encode (pure, CPU-bound);
//! - [`storage`]: S3 reads and writes, and which of their failures are worth retrying;
//! - [`failure`]: every reason an event fails, and the status kinetic gets for it;
//! - [`handler`]: one event from request to reply.

mod event;
mod failure;
mod handler;
mod layout;
mod render;
mod settings;
mod storage;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::handler::Function;
use crate::settings::Settings;
use crate::storage::Storage;

#[tokio::main]
async fn main() {
    let settings = match Settings::from_env(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("thumbnailer: {error}");
            std::process::exit(2);
        }
    };
    let storage = Storage::from_env(settings.force_path_style).await;
    let address = std::net::SocketAddr::from((settings.bind, settings.port));
    println!(
        "thumbnailer: sizes {:?}, {} → {}{{size}}/, at most {} pixels and {} bytes, {} workers",
        settings.sizes,
        settings.layout.source_prefix,
        settings.layout.target_prefix,
        settings.max_pixels,
        settings.max_object_bytes,
        settings.workers
    );
    let function = Arc::new(Function {
        workers: Semaphore::new(settings.workers),
        settings,
        storage,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", post(handler::thumbnail))
        .fallback(handler::thumbnail)
        .with_state(function);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("thumbnailer: cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    println!("thumbnailer: listening on {address}");
    // kinetic drains an instance before SIGTERM; events still in flight finish their thumbnails.
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        term.recv().await;
        println!("thumbnailer: SIGTERM, finishing events in flight");
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("thumbnailer: {error}");
        std::process::exit(1);
    }
}
