//! The bucket: read an original, write a thumbnail. A thin wrapper over the AWS SDK's S3 client
//! that turns its errors into [`Failure`]s, deciding there whether a failure is worth retrying.
//!
//! Endpoint, region and credentials come from the SDK's standard environment (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, …); path-style addressing
//! from `THUMBNAIL_FORCE_PATH_STYLE`. Every request is bounded in time, so a hung store answers
//! kinetic with 503 (retried) well before the trigger's delivery timeout.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;

use crate::failure::Failure;

/// The region when the environment names none; S3-compatible stores accept it.
const FALLBACK_REGION: &str = "us-east-1";

/// Reads and writes objects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    client: aws_sdk_s3::Client,
}

impl Storage {
    /// Loads the SDK's configuration from the environment. Nothing is contacted yet.
    pub async fn from_env(force_path_style: bool) -> Storage {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(25))
            .build();
        let mut config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        if config.region().is_none() {
            config = config
                .into_builder()
                .region(Region::new(FALLBACK_REGION))
                .build();
        }
        Storage::new(&config, force_path_style)
    }

    pub fn new(config: &aws_config::SdkConfig, force_path_style: bool) -> Storage {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(force_path_style)
            .build();
        Storage {
            client: aws_sdk_s3::Client::from_conf(s3),
        }
    }

    /// The object's bytes, refused without reading them when it is larger than `max_bytes`.
    pub async fn read(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, Failure> {
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| {
                if let SdkError::ServiceError(context) = &error
                    && (matches!(context.err(), GetObjectError::NoSuchKey(_))
                        || context.raw().status().as_u16() == 404)
                {
                    return Failure::Missing;
                }
                classify("read", bucket, key, error)
            })?;
        let announced = object.content_length().and_then(|n| u64::try_from(n).ok());
        if let Some(size) = announced
            && size > max_bytes
        {
            return Err(Failure::ObjectTooLarge {
                size,
                limit: max_bytes,
            });
        }
        let mut body = object.body;
        let capacity = announced.unwrap_or(0).min(max_bytes);
        let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        // The length header can be absent or wrong: the limit holds on what actually arrives.
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|error| Failure::Unavailable {
                operation: "read",
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                cause: Box::new(error),
            })?
        {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(Failure::ObjectTooLarge {
                    size: (bytes.len() + chunk.len()) as u64,
                    limit: max_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Writes (or overwrites: a redelivered event writes the same thumbnail again) an object.
    pub async fn write(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), Failure> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| classify("write", bucket, key, error))?;
        Ok(())
    }
}

/// Whether an answer of S3 with this status may succeed when asked again: timeouts, throttling,
/// conflicts and the store's own failures.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

fn classify<E>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (bucket, key) = (bucket.to_owned(), key.to_owned());
    match &error {
        SdkError::ServiceError(context) if !retryable_status(context.raw().status().as_u16()) => {
            Failure::Refused {
                operation,
                bucket,
                key,
                status: context.raw().status().as_u16(),
                cause: Box::new(error),
            }
        }
        // Unreachable, timed out, an answer that is no S3 answer, or a retryable status.
        _ => Failure::Unavailable {
            operation,
            bucket,
            key,
            cause: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::Credentials;

    #[test]
    fn only_passing_troubles_of_the_store_are_retried() {
        for status in [408, 409, 429, 500, 502, 503, 504] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 404, 405, 411, 412, 416] {
            assert!(!retryable_status(status), "{status}");
        }
    }

    /// A store nobody answers at: the event must be retried, not dead-lettered.
    #[tokio::test]
    async fn an_unreachable_store_is_unavailable() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(FALLBACK_REGION))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .endpoint_url(format!("http://{closed}"))
            .load()
            .await;
        let storage = Storage::new(&config, true);
        let read = storage
            .read("photos", "uploads/a.jpg", 1024)
            .await
            .unwrap_err();
        let write = storage
            .write("photos", "thumbnails/128/a.jpg", vec![1], "image/jpeg")
            .await
            .unwrap_err();
        for failure in [read, write] {
            assert!(
                matches!(failure, Failure::Unavailable { .. }),
                "{failure:?}"
            );
            assert_eq!(failure.status().as_u16(), 503);
            assert!(
                failure.message().contains("s3://photos/"),
                "{}",
                failure.message()
            );
        }
    }
}
