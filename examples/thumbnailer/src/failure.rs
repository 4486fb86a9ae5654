//! Why an event produced no thumbnails, and the answer kinetic gets for it.
//!
//! The status decides what kinetic's dispatcher does with the event, so the classification is the
//! function's whole retry policy:
//! - a failure that would fail again (not an image, a format it does not read, a missing object,
//!   too large, a malformed event) answers 4xx: 400, 413 or 422, which kinetic dead-letters at
//!   once, without retries. Never 404, 408, 409 or 429: kinetic retries those;
//! - a failure that may pass (S3 unreachable, timing out, answering 5xx or throttling) answers
//!   503, which kinetic retries with the trigger's backoff.
//!
//! The body is JSON, `{"error", "code", "bucket", "key"}`; kinetic keeps it with the dead letter
//! (`kinetic dlq list`, `lastResponse`).

use axum::http::StatusCode;

/// An error with everything that caused it, for messages that leave the process.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The request is not an S3 object-created CloudEvent the function understands.
    #[error("not an S3 object-created event: {0}")]
    BadEvent(String),
    #[error(
        "{key} is a thumbnail (under {prefix}); thumbnails of thumbnails would feed back through \
         the bucket's notifications forever: filter them out in the trigger"
    )]
    IsThumbnail { key: String, prefix: String },
    #[error("the object does not exist (it may have been deleted after the upload)")]
    Missing,
    #[error(
        "the object is {size} bytes, more than the {limit} bytes allowed (THUMBNAIL_MAX_OBJECT_BYTES)"
    )]
    ObjectTooLarge { size: u64, limit: u64 },
    #[error(
        "the image is {width}x{height} ({} pixels), more than the {limit} allowed (THUMBNAIL_MAX_PIXELS)",
        u64::from(*width) * u64::from(*height)
    )]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image needs more memory to decode than allowed (THUMBNAIL_MAX_PIXELS): {0}")]
    DecoderLimit(#[source] image::ImageError),
    #[error("the object is not an image: its content is none of JPEG, PNG or WebP")]
    NotAnImage,
    #[error("{format} images are not supported: the thumbnailer reads JPEG, PNG and WebP")]
    Unsupported { format: String },
    #[error("the {format} image cannot be decoded: {source}")]
    Corrupt {
        format: &'static str,
        #[source]
        source: image::ImageError,
    },
    #[error("the {format} thumbnail could not be encoded: {source}")]
    Encode {
        format: &'static str,
        #[source]
        source: image::ImageError,
    },
    /// S3 answered a request with a status that retrying will not change (403, 400, …).
    #[error("S3 refused to {operation} s3://{bucket}/{key} (HTTP {status}): {cause}")]
    Refused {
        operation: &'static str,
        bucket: String,
        key: String,
        status: u16,
        #[source]
        cause: Cause,
    },
    /// S3 could not be reached, timed out, throttled or failed on its side.
    #[error("S3 is unavailable to {operation} s3://{bucket}/{key}: {cause}")]
    Unavailable {
        operation: &'static str,
        bucket: String,
        key: String,
        #[source]
        cause: Cause,
    },
}

impl Failure {
    /// The HTTP status kinetic gets: see the module's documentation.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::BadEvent(_) => StatusCode::BAD_REQUEST,
            Failure::ObjectTooLarge { .. }
            | Failure::TooManyPixels { .. }
            | Failure::DecoderLimit(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::IsThumbnail { .. }
            | Failure::Missing
            | Failure::NotAnImage
            | Failure::Unsupported { .. }
            | Failure::Corrupt { .. }
            | Failure::Encode { .. }
            | Failure::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Failure::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable name for the body's `code`, for whoever reads dead letters with a program.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::BadEvent(_) => "bad_event",
            Failure::IsThumbnail { .. } => "is_thumbnail",
            Failure::Missing => "object_missing",
            Failure::ObjectTooLarge { .. } => "object_too_large",
            Failure::TooManyPixels { .. } | Failure::DecoderLimit(_) => "image_too_large",
            Failure::NotAnImage => "not_an_image",
            Failure::Unsupported { .. } => "unsupported_format",
            Failure::Corrupt { .. } => "corrupt_image",
            Failure::Encode { .. } => "encode_failed",
            Failure::Refused { .. } => "storage_refused",
            Failure::Unavailable { .. } => "storage_unavailable",
        }
    }

    /// The message with every cause below it (`a: b: c`), once each.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kinetic retries 404, 408, 409, 429 and 5xx, and dead-letters every other non-2xx at once.
    fn kinetic_retries(status: StatusCode) -> bool {
        matches!(status.as_u16(), 404 | 408 | 409 | 429) || status.is_server_error()
    }

    fn every_kind() -> Vec<Failure> {
        let cause = || -> Cause { "connection refused".into() };
        vec![
            Failure::BadEvent("no bucket".into()),
            Failure::IsThumbnail {
                key: "thumbnails/128/a.jpg".into(),
                prefix: "thumbnails/".into(),
            },
            Failure::Missing,
            Failure::ObjectTooLarge { size: 10, limit: 5 },
            Failure::TooManyPixels {
                width: 10_000,
                height: 10_000,
                limit: 40_000_000,
            },
            Failure::DecoderLimit(image::ImageError::Limits(
                image::error::LimitError::from_kind(
                    image::error::LimitErrorKind::InsufficientMemory,
                ),
            )),
            Failure::NotAnImage,
            Failure::Unsupported {
                format: "Gif".into(),
            },
            Failure::Corrupt {
                format: "JPEG",
                source: image::ImageError::IoError(std::io::ErrorKind::UnexpectedEof.into()),
            },
            Failure::Encode {
                format: "PNG",
                source: image::ImageError::IoError(std::io::ErrorKind::WriteZero.into()),
            },
            Failure::Refused {
                operation: "read",
                bucket: "b".into(),
                key: "k".into(),
                status: 403,
                cause: cause(),
            },
            Failure::Unavailable {
                operation: "read",
                bucket: "b".into(),
                key: "k".into(),
                cause: cause(),
            },
        ]
    }

    #[test]
    fn only_storage_outages_are_retried_by_kinetic() {
        for failure in every_kind() {
            let retried = kinetic_retries(failure.status());
            let transient = matches!(failure, Failure::Unavailable { .. });
            assert_eq!(
                retried,
                transient,
                "{failure:?} answers {}",
                failure.status()
            );
            assert!(failure.status().is_client_error() || transient);
        }
    }

    #[test]
    fn messages_carry_their_causes_once() {
        let failure = Failure::Unavailable {
            operation: "read",
            bucket: "photos".into(),
            key: "uploads/a.jpg".into(),
            cause: "dispatch failure".into(),
        };
        assert_eq!(
            failure.message(),
            "S3 is unavailable to read s3://photos/uploads/a.jpg: dispatch failure"
        );
        let pixels = Failure::TooManyPixels {
            width: 8000,
            height: 6000,
            limit: 40_000_000,
        };
        assert_eq!(
            pixels.message(),
            "the image is 8000x6000 (48000000 pixels), more than the 40000000 allowed (THUMBNAIL_MAX_PIXELS)"
        );
        let codes: std::collections::BTreeSet<_> = every_kind().iter().map(Failure::code).collect();
        assert_eq!(
            codes.len(),
            every_kind().len() - 1,
            "codes tell kinds apart"
        );
    }
}
