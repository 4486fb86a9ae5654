//! One event, start to finish: read the event, fetch the object, render the thumbnails (on a
//! blocking thread, at most `THUMBNAIL_WORKERS` images at once, which bounds memory), write them,
//! and answer kinetic, with one log line on stdout either way.
//!
//! The answer to a success is a reply CloudEvent in binary mode, which kinetic appends to the
//! broker the event came from:
//!
//! ```text
//! ce-type: dev.kinetic.thumbnail.created
//! ce-source: /services/thumbnailer
//! ce-id: {the S3 event's id}.thumbnails
//! ce-subject: uploads/cat.jpg
//! {"bucket": "photos", "key": "uploads/cat.jpg", "format": "JPEG", "contentType": "image/jpeg",
//!  "width": 1600, "height": 900,
//!  "thumbnails": [{"size": 128, "key": "thumbnails/128/cat.jpg", "width": 128, "height": 72,
//!                  "bytes": 4312}, …]}
//! ```
//!
//! The id is derived from the S3 event's, so a redelivered event (kinetic delivers at least once)
//! rewrites the same objects and replies an event the broker drops as a duplicate. A failure
//! answers as [`Failure::status`] says, with a JSON body.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::event::{self, Upload};
use crate::failure::Failure;
use crate::render::{self, Format, Options, Rendering};
use crate::settings::Settings;
use crate::storage::Storage;

/// The reply's type.
pub const CREATED_TYPE: &str = "dev.kinetic.thumbnail.created";

pub struct Function {
    pub settings: Settings,
    pub storage: Storage,
    /// Images being decoded or resized.
    pub workers: Semaphore,
}

/// `POST /` (any path): one S3 object-created CloudEvent.
pub async fn thumbnail(
    State(function): State<Arc<Function>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let upload = match event::parse(&headers, &body) {
        Ok(upload) => upload,
        Err(failure) => {
            let id = headers
                .get("ce-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            println!(
                "thumbnailer: event {id}: {} {} ({} ms)",
                failure.status().as_u16(),
                failure.message(),
                started.elapsed().as_millis()
            );
            return failed(None, &failure);
        }
    };
    match make(&function, &upload).await {
        Ok(made) => {
            let sizes: Vec<String> = made
                .thumbnails
                .iter()
                .map(|t| format!("{}x{} {} B", t.width, t.height, t.bytes))
                .collect();
            println!(
                "thumbnailer: event {}: 200 s3://{}/{} {} {}x{} -> {} ({} ms)",
                upload.id,
                upload.bucket,
                upload.key,
                made.format.name(),
                made.width,
                made.height,
                sizes.join(", "),
                started.elapsed().as_millis()
            );
            reply(&function.settings, &upload, &made)
        }
        Err(failure) => {
            println!(
                "thumbnailer: event {}: {} s3://{}/{}: {} ({} ms)",
                upload.id,
                failure.status().as_u16(),
                upload.bucket,
                upload.key,
                failure.message(),
                started.elapsed().as_millis()
            );
            failed(Some(&upload), &failure)
        }
    }
}

/// What one upload became.
struct Made {
    format: Format,
    width: u32,
    height: u32,
    thumbnails: Vec<Written>,
}

/// A thumbnail in the bucket.
struct Written {
    size: u32,
    key: String,
    width: u32,
    height: u32,
    bytes: usize,
}

async fn make(function: &Function, upload: &Upload) -> Result<Made, Failure> {
    let settings = &function.settings;
    if settings.layout.is_thumbnail(&upload.key) {
        return Err(Failure::IsThumbnail {
            key: upload.key.clone(),
            prefix: settings.layout.target_prefix.clone(),
        });
    }
    // The event's own size spares a download that would be refused anyway.
    if let Some(size) = upload.size
        && size > settings.max_object_bytes
    {
        return Err(Failure::ObjectTooLarge {
            size,
            limit: settings.max_object_bytes,
        });
    }
    let bytes = function
        .storage
        .read(&upload.bucket, &upload.key, settings.max_object_bytes)
        .await?;
    let rendering = {
        let _worker = function
            .workers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let sizes = settings.sizes.clone();
        let options = Options {
            max_pixels: settings.max_pixels,
            jpeg_quality: settings.jpeg_quality,
        };
        tokio::task::spawn_blocking(move || render::render(&bytes, &sizes, options))
            .await
            .expect("rendering does not panic")?
    };
    let Rendering {
        format,
        width,
        height,
        thumbnails,
    } = rendering;
    let mut written = Vec::with_capacity(thumbnails.len());
    for thumbnail in thumbnails {
        let key = settings.layout.thumbnail_key(thumbnail.size, &upload.key);
        let bytes = thumbnail.bytes.len();
        function
            .storage
            .write(&upload.bucket, &key, thumbnail.bytes, format.content_type())
            .await?;
        written.push(Written {
            size: thumbnail.size,
            key,
            width: thumbnail.width,
            height: thumbnail.height,
            bytes,
        });
    }
    Ok(Made {
        format,
        width,
        height,
        thumbnails: written,
    })
}

fn reply(settings: &Settings, upload: &Upload, made: &Made) -> Response {
    let thumbnails: Vec<_> = made
        .thumbnails
        .iter()
        .map(|thumbnail| {
            json!({
                "size": thumbnail.size,
                "key": thumbnail.key,
                "width": thumbnail.width,
                "height": thumbnail.height,
                "bytes": thumbnail.bytes,
            })
        })
        .collect();
    let data = json!({
        "bucket": upload.bucket,
        "key": upload.key,
        "format": made.format.name(),
        "contentType": made.format.content_type(),
        "width": made.width,
        "height": made.height,
        "thumbnails": thumbnails,
    });
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(
            name,
            HeaderValue::from_str(&percent_encode(value))
                .expect("%-encoded text is a header value"),
        );
    };
    set("ce-specversion", "1.0");
    set("ce-id", &format!("{}.thumbnails", upload.id));
    set("ce-type", CREATED_TYPE);
    set("ce-source", &format!("/services/{}", settings.service));
    set("ce-subject", &upload.key);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, data.to_string()).into_response()
}

fn failed(upload: Option<&Upload>, failure: &Failure) -> Response {
    let body = json!({
        "error": failure.message(),
        "code": failure.code(),
        "bucket": upload.map(|u| &u.bucket),
        "key": upload.map(|u| &u.key),
    });
    (
        failure.status(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `%XX` encoding of a binary-mode attribute value: space, `"`, `%` and everything outside
/// printable ASCII (CloudEvents HTTP binding, 3.1.3.2).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_round_trip_through_headers() {
        for text in ["uploads/cat.jpg", "uploads/Été 2024/\"100%\".png", "a+b"] {
            let encoded = percent_encode(text);
            assert!(HeaderValue::from_str(&encoded).is_ok());
            assert!(!encoded.contains(' '));
            assert_eq!(event::percent_decode(&encoded), text);
        }
        assert_eq!(percent_encode("uploads/a b.jpg"), "uploads/a%20b.jpg");
    }
}
