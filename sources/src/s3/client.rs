//! The AWS SDK clients an S3Source pulls with: SQS for queued notifications, S3 for listings.
//! Built from the source's spec: region, endpoint and path style for S3-compatible stores, and
//! credentials from the spec's secret references or, when absent, the default AWS chain.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use kinetic_api::sources::S3SourceSpec;

use crate::webhook::{self, SetupError};

/// The region when neither the spec nor the environment names one; S3-compatible stores accept it.
const FALLBACK_REGION: &str = "us-east-1";

/// Why clients could not be built: a credential could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("credentials.{field}: {source}")]
    Credential {
        field: &'static str,
        #[source]
        source: SetupError,
    },
    #[error("credentials.{field} is not UTF-8")]
    NotUtf8 { field: &'static str },
}

/// Shared AWS configuration of one S3Source. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Clients {
    config: aws_config::SdkConfig,
    endpoint: Option<String>,
    force_path_style: bool,
}

impl Clients {
    /// Reads the spec's credentials (once: a rotated secret needs a new generation of the source)
    /// and loads the rest of the configuration from the environment.
    pub async fn new(spec: &S3SourceSpec) -> Result<Clients, ClientError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &spec.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = &spec.credentials {
            let access = secret("accessKeyId", &credentials.access_key_id)?;
            let key = secret("secretAccessKey", &credentials.secret_access_key)?;
            let token = credentials
                .session_token
                .as_ref()
                .map(|token| secret("sessionToken", token))
                .transpose()?;
            loader = loader.credentials_provider(Credentials::new(
                access,
                key,
                token,
                None,
                "kinetic-spec",
            ));
        }
        let mut config = loader.load().await;
        if config.region().is_none() {
            config = config
                .into_builder()
                .region(Region::new(FALLBACK_REGION))
                .build();
        }
        Ok(Clients {
            config,
            endpoint: spec.endpoint.clone(),
            force_path_style: spec.force_path_style,
        })
    }

    /// An S3 client for the spec's endpoint (AWS when absent).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut builder =
            aws_sdk_s3::config::Builder::from(&self.config).force_path_style(self.force_path_style);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        aws_sdk_s3::Client::from_conf(builder.build())
    }

    /// An SQS client for `queue_url`. A queue outside AWS (an S3-compatible store's own queue, a
    /// local emulator) is reached at the queue URL's origin, since the SDK would otherwise send
    /// to AWS's regional endpoint.
    pub fn sqs(&self, queue_url: &str) -> aws_sdk_sqs::Client {
        let mut builder = aws_sdk_sqs::config::Builder::from(&self.config);
        if let Some(origin) = non_aws_origin(queue_url) {
            builder = builder.endpoint_url(origin);
        }
        aws_sdk_sqs::Client::from_conf(builder.build())
    }
}

fn secret(
    field: &'static str,
    reference: &kinetic_api::sources::SecretRef,
) -> Result<String, ClientError> {
    let bytes = webhook::read_secret(reference)
        .map_err(|source| ClientError::Credential { field, source })?;
    String::from_utf8(bytes).map_err(|_| ClientError::NotUtf8 { field })
}

/// `scheme://host[:port]` of a queue URL whose host is not AWS's, or `None`.
pub fn non_aws_origin(queue_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(queue_url).ok()?;
    let host = url.host_str()?;
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    let mut origin = format!("{}://{}", url.scheme(), host);
    if let Some(port) = url.port() {
        origin.push_str(&format!(":{port}"));
    }
    Some(origin)
}

#[cfg(test)]
mod tests {
    use super::non_aws_origin;

    #[test]
    fn a_queue_outside_aws_is_reached_at_its_origin() {
        for (url, origin) in [
            (
                "http://127.0.0.1:9000/123456789012/photos",
                Some("http://127.0.0.1:9000"),
            ),
            ("https://mq.example/1/q", Some("https://mq.example")),
            (
                "https://sqs.us-east-1.amazonaws.com/123456789012/photos",
                None,
            ),
            ("not a url", None),
        ] {
            assert_eq!(non_aws_origin(url).as_deref(), origin, "{url}");
        }
    }
}
