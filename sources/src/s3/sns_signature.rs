//! SNS message signatures: proof that a message POSTed to a pushed S3Source came from AWS SNS, and
//! from one of the source's topics.
//!
//! As AWS documents it: the message's `SigningCertURL` must be an HTTPS URL on
//! `sns.{region}.amazonaws.com` (or `.amazonaws.com.cn`) ending in `.pem`; the certificate it
//! serves holds the RSA key that signed the message's canonical string (its fields, each as
//! `Name\nvalue\n`, in a fixed order per `Type`), with SHA-1 for `SignatureVersion` 1 and SHA-256
//! for 2. Certificates are fetched once per URL and kept. Checking the topic is the caller's
//! business only in the sense that [`SnsVerifier`] does it too: a valid signature alone proves that
//! AWS sent the message, not that the topic is the bucket's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

/// Most certificates kept; past it the cache starts over (AWS rotates them rarely).
const CACHED_CERTIFICATES: usize = 64;
/// How long fetching a certificate may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest certificate read.
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// Why a message is not accepted as SNS's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsSignatureError {
    #[error("the body is not an SNS message: {0}")]
    NotSns(String),
    #[error("the SNS message lacks `{0}`")]
    Missing(&'static str),
    #[error("the SNS message's topic `{0}` is not one of the source's `sns.topicArns`")]
    Topic(String),
    #[error("`SignatureVersion` {0} is not 1 or 2")]
    Version(String),
    #[error(
        "`SigningCertURL` {0} is not an SNS certificate URL (https://sns.REGION.amazonaws.com/….pem)"
    )]
    CertificateUrl(String),
    #[error(
        "`SubscribeURL` {0} is not an SNS URL (https://sns.REGION.amazonaws.com/…); the subscription is not confirmed"
    )]
    SubscribeUrl(String),
    #[error(
        "the SNS message's `Timestamp` {0} is more than 23 hours old, in the future, or not a time: a message is not accepted long after it was sent"
    )]
    Stale(String),
    #[error("fetching the signing certificate {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the signing certificate {0} is not a PEM X.509 certificate with an RSA key")]
    Certificate(String),
    #[error("the SNS signature does not match the message")]
    Signature,
}

impl SnsSignatureError {
    /// Whether the sender should try again later (the certificate could not be fetched) rather
    /// than be refused.
    pub fn is_transient(&self) -> bool {
        matches!(self, SnsSignatureError::Fetch { .. })
    }
}

fn field<'a>(message: &'a Value, name: &'static str) -> Result<&'a str, SnsSignatureError> {
    message
        .get(name)
        .and_then(Value::as_str)
        .ok_or(SnsSignatureError::Missing(name))
}

/// The string SNS signs for `message`.
pub fn string_to_sign(message: &Value) -> Result<String, SnsSignatureError> {
    let fields: &[&'static str] = match field(message, "Type")? {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        other => return Err(SnsSignatureError::NotSns(format!("`Type` is `{other}`"))),
    };
    let mut text = String::new();
    for &name in fields {
        match field(message, name) {
            Ok(value) => {
                text.push_str(name);
                text.push('\n');
                text.push_str(value);
                text.push('\n');
            }
            // Only a notification's subject is optional.
            Err(_) if name == "Subject" => {}
            Err(missing) => return Err(missing),
        }
    }
    Ok(text)
}

/// `url` parsed, if it is an HTTPS URL of SNS itself: `https://sns.REGION.amazonaws.com[.cn]/…`
/// on the default port, without credentials.
fn sns_url(url: &str) -> Option<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str().unwrap_or_default();
    let region = host
        .strip_prefix("sns.")
        .and_then(|rest| {
            rest.strip_suffix(".amazonaws.com")
                .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        })
        .unwrap_or_default();
    let valid = parsed.scheme() == "https"
        && parsed.port().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some(parsed)
}

/// Checks that `url` is where SNS keeps its signing certificates.
pub fn check_certificate_url(url: &str) -> Result<(), SnsSignatureError> {
    match sns_url(url) {
        Some(parsed) if parsed.path().ends_with(".pem") => Ok(()),
        _ => Err(SnsSignatureError::CertificateUrl(url.to_owned())),
    }
}

/// Checks that a subscription's `SubscribeURL` is SNS's own, so that confirming it fetches nothing
/// else.
pub fn check_subscribe_url(url: &str) -> Result<(), SnsSignatureError> {
    match sns_url(url) {
        Some(_) => Ok(()),
        None => Err(SnsSignatureError::SubscribeUrl(url.to_owned())),
    }
}

/// How old a signed SNS message may be: below kinetic's default dedupe window (24 hours), so that a
/// captured message sent again is either dropped as a duplicate or refused.
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(23);
/// How far in the future a `Timestamp` may be (clock skew).
const SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Checks a message's `Timestamp` against `now`.
fn check_timestamp(message: &Value, now: DateTime<Utc>) -> Result<(), SnsSignatureError> {
    let text = field(message, "Timestamp")?;
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| SnsSignatureError::Stale(text.to_owned()))?
        .with_timezone(&Utc);
    if at < now - MAX_AGE || at > now + SKEW {
        return Err(SnsSignatureError::Stale(text.to_owned()));
    }
    Ok(())
}

/// Checks `message`'s signature with the PEM certificate `certificate`.
pub fn verify_with(
    message: &Value,
    certificate: &[u8],
    url: &str,
) -> Result<(), SnsSignatureError> {
    use rustls_pki_types::pem::PemObject as _;
    let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
        match field(message, "SignatureVersion")? {
            "1" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(SnsSignatureError::Version(other.to_owned())),
        };
    let signature = base64::prelude::BASE64_STANDARD
        .decode(field(message, "Signature")?)
        .map_err(|_| SnsSignatureError::Signature)?;
    let text = string_to_sign(message)?;
    let bad_certificate = || SnsSignatureError::Certificate(url.to_owned());
    let der = rustls_pki_types::CertificateDer::from_pem_slice(certificate)
        .map_err(|_| bad_certificate())?;
    let parsed = webpki::EndEntityCert::try_from(&der).map_err(|_| bad_certificate())?;
    let key = parsed.subject_public_key_info();
    aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(text.as_bytes(), &signature)
        .map_err(|_| SnsSignatureError::Signature)
}

/// Fetches a certificate: the body of an HTTPS GET, or why not.
pub type FetchCertificate =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// GETs certificates with `client`, built by the caller not to follow redirects or proxies.
pub fn fetch_with(client: reqwest::Client) -> FetchCertificate {
    Arc::new(move |url: String| {
        let client = client.clone();
        Box::pin(async move {
            let response = client
                .get(&url)
                .timeout(FETCH_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status().as_u16()));
            }
            // Read no further than the largest certificate accepted.
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_CERTIFICATE_BYTES {
                    return Err(format!("larger than {MAX_CERTIFICATE_BYTES} bytes"));
                }
            }
            Ok(body)
        })
    })
}

/// SNS's signing certificates, fetched once per URL and shared by every source of a process.
pub struct Certificates {
    fetch: FetchCertificate,
    kept: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl Certificates {
    pub fn new(fetch: FetchCertificate) -> Certificates {
        Certificates {
            fetch,
            kept: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, url: &str) -> Result<Arc<Vec<u8>>, SnsSignatureError> {
        let kept = || self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = kept().get(url) {
            return Ok(found.clone());
        }
        let fetched =
            (self.fetch)(url.to_owned())
                .await
                .map_err(|reason| SnsSignatureError::Fetch {
                    url: url.to_owned(),
                    reason,
                })?;
        let fetched = Arc::new(fetched);
        let mut kept = kept();
        if kept.len() >= CACHED_CERTIFICATES {
            kept.clear();
        }
        kept.insert(url.to_owned(), fetched.clone());
        Ok(fetched)
    }
}

/// Accepts SNS messages signed by AWS and published to one of `topics`.
pub struct SnsVerifier {
    topics: Vec<String>,
    certificates: Arc<Certificates>,
}

impl std::fmt::Debug for SnsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsVerifier")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl SnsVerifier {
    pub fn new(topics: Vec<String>, certificates: Arc<Certificates>) -> SnsVerifier {
        SnsVerifier {
            topics,
            certificates,
        }
    }

    /// Checks the raw request `body`, arrived at `now`: a recent SNS message of one of the
    /// topics, signed by AWS.
    pub async fn verify(&self, body: &[u8], now: DateTime<Utc>) -> Result<(), SnsSignatureError> {
        let message: Value =
            serde_json::from_slice(body).map_err(|e| SnsSignatureError::NotSns(e.to_string()))?;
        let topic = field(&message, "TopicArn")?;
        if !self.topics.iter().any(|t| t == topic) {
            return Err(SnsSignatureError::Topic(topic.to_owned()));
        }
        check_timestamp(&message, now)?;
        // The signature covers SubscribeURL: once it verifies, that URL is AWS's own.
        let url = field(&message, "SigningCertURL")?;
        check_certificate_url(url)?;
        let certificate = self.certificates.get(url).await?;
        verify_with(&message, &certificate, url)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const CERTIFICATE: &[u8] = include_bytes!("testdata/sns/cert.pem");
    const NOTIFICATION: &str = include_str!("testdata/sns/notification.json");
    const CONFIRMATION: &str = include_str!("testdata/sns/confirmation.json");
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:photos";

    /// A verifier whose certificate "fetch" serves the test certificate for SNS's URL, counting
    /// fetches.
    fn verifier(topics: &[&str]) -> (SnsVerifier, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = fetches.clone();
        let fetch: FetchCertificate = Arc::new(move |url: String| {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if url.starts_with("https://sns.us-east-1.amazonaws.com/") {
                    Ok(CERTIFICATE.to_vec())
                } else {
                    Err("HTTP 404".to_owned())
                }
            })
        });
        let topics = topics.iter().map(|t| (*t).to_owned()).collect();
        let certificates = Arc::new(Certificates::new(fetch));
        (SnsVerifier::new(topics, certificates), fetches)
    }

    /// A moment after the test vectors were sent.
    fn sent() -> DateTime<Utc> {
        "2026-11-27T10:05:00Z".parse().unwrap()
    }

    fn edited(text: &str, name: &str, value: &str) -> Vec<u8> {
        let mut message: Value = serde_json::from_str(text).expect("test vector");
        message[name] = Value::String(value.to_owned());
        serde_json::to_vec(&message).expect("JSON")
    }

    #[tokio::test]
    async fn signed_messages_of_the_topics_pass_once_the_certificate_is_fetched() {
        let (verifier, fetches) = verifier(&[TOPIC]);
        verifier
            .verify(NOTIFICATION.as_bytes(), sent())
            .await
            .expect("version 1 (SHA-1)");
        verifier
            .verify(CONFIRMATION.as_bytes(), sent())
            .await
            .expect("version 2 (SHA-256)");
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "the certificate is kept");
    }

    #[tokio::test]
    async fn anything_changed_or_foreign_is_refused_saying_why() {
        let (ours, _) = verifier(&[TOPIC]);
        let cases: Vec<(Vec<u8>, SnsSignatureError)> = vec![
            (
                edited(NOTIFICATION, "Message", "{\"Records\": []}"),
                SnsSignatureError::Signature,
            ),
            (
                edited(
                    CONFIRMATION,
                    "SubscribeURL",
                    "http://169.254.169.254/latest",
                ),
                SnsSignatureError::Signature,
            ),
            (
                edited(NOTIFICATION, "Subject", "changed"),
                SnsSignatureError::Signature,
            ),
            (
                edited(NOTIFICATION, "SignatureVersion", "2"),
                SnsSignatureError::Signature,
            ),
            (
                edited(NOTIFICATION, "SignatureVersion", "3"),
                SnsSignatureError::Version("3".into()),
            ),
            (
                edited(
                    NOTIFICATION,
                    "TopicArn",
                    "arn:aws:sns:us-east-1:999999999999:mine",
                ),
                SnsSignatureError::Topic("arn:aws:sns:us-east-1:999999999999:mine".into()),
            ),
            (
                edited(
                    NOTIFICATION,
                    "SigningCertURL",
                    "https://attacker.example/sns.pem",
                ),
                SnsSignatureError::CertificateUrl("https://attacker.example/sns.pem".into()),
            ),
            (
                b"{\"Records\": []}".to_vec(),
                SnsSignatureError::Missing("TopicArn"),
            ),
            (
                b"not json".to_vec(),
                SnsSignatureError::NotSns("expected ident at line 1 column 2".into()),
            ),
        ];
        for (body, expected) in cases {
            let got = ours.verify(&body, sent()).await;
            assert_eq!(got, Err(expected), "{}", String::from_utf8_lossy(&body));
        }
        let (other_topic, _) = verifier(&["arn:aws:sns:us-east-1:123456789012:other"]);
        assert_eq!(
            other_topic.verify(NOTIFICATION.as_bytes(), sent()).await,
            Err(SnsSignatureError::Topic(TOPIC.into()))
        );
    }

    #[tokio::test]
    async fn old_or_future_messages_are_refused() {
        let (verifier, fetches) = verifier(&[TOPIC]);
        let day_later = sent() + chrono::TimeDelta::hours(24);
        assert_eq!(
            verifier.verify(NOTIFICATION.as_bytes(), day_later).await,
            Err(SnsSignatureError::Stale("2026-11-27T10:00:01.000Z".into()))
        );
        let long_before = sent() - chrono::TimeDelta::hours(1);
        assert!(matches!(
            verifier.verify(NOTIFICATION.as_bytes(), long_before).await,
            Err(SnsSignatureError::Stale(_))
        ));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            0,
            "refused before any fetch"
        );
        verifier
            .verify(
                NOTIFICATION.as_bytes(),
                sent() + chrono::TimeDelta::hours(22),
            )
            .await
            .expect("within 23 hours");
    }

    #[test]
    fn subscribe_urls_must_be_snss() {
        assert_eq!(
            check_subscribe_url(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=x"
            ),
            Ok(())
        );
        for bad in [
            "http://127.0.0.1:8070/api/v1/apply",
            "https://sns.us-east-1.amazonaws.com.evil.example/",
            "http://sns.us-east-1.amazonaws.com/",
        ] {
            assert!(check_subscribe_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_certificate_is_transient() {
        let (verifier, _) = verifier(&[TOPIC]);
        let body = edited(
            NOTIFICATION,
            "SigningCertURL",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        );
        let error = verifier
            .verify(&body, sent())
            .await
            .expect_err("not fetched");
        assert!(error.is_transient(), "{error}");
    }

    #[test]
    fn certificate_urls_must_be_snss() {
        for good in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert_eq!(check_certificate_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://sns..amazonaws.com/x.pem",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(check_certificate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_string_to_sign_follows_the_type() {
        let message: Value = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "hi",
            "Timestamp": "2026-01-01T00:00:00Z"
        });
        assert_eq!(
            string_to_sign(&message).expect("complete"),
            "Message\nhi\nMessageId\nm\nTimestamp\n2026-01-01T00:00:00Z\nTopicArn\nt\nType\nNotification\n"
        );
        let confirmation = serde_json::json!({"Type": "SubscriptionConfirmation", "Message": "m"});
        assert_eq!(
            string_to_sign(&confirmation),
            Err(SnsSignatureError::Missing("MessageId"))
        );
    }
}
