//! Authenticating an inbound webhook request: GitHub's `X-Hub-Signature-256`, Standard Webhooks'
//! `webhook-signature`, or a bearer token.
//!
//! Verification is a pure function of the headers, the raw body bytes (before any parsing, since a
//! re-serialized body would not match its signature) and `now`. It keeps no state: a replayed
//! request within the tolerance passes here and is dropped by the broker's deduplication on the
//! event id. Secrets and expected signatures are compared in constant time and never appear in
//! errors or `Debug` output.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use kinetic_outbound::signing::{self, KeyProblem, hmac_sha256};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Standard Webhooks' headers, as kinetic's own deliveries send them.
pub use kinetic_outbound::signing::{
    WEBHOOK_ID as WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE as WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP as WEBHOOK_TIMESTAMP_HEADER,
};

/// Why a request was not authenticated. Every variant is a 401 for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    #[error("the `{header}` header is malformed: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error(
        "the `webhook-timestamp` is {skew_seconds} s away from now, beyond the tolerance of {tolerance_seconds} s"
    )]
    StaleTimestamp {
        /// Timestamp minus now: negative for an old request, positive for one from the future.
        skew_seconds: i64,
        tolerance_seconds: u64,
    },
    #[error("the signature does not match the body")]
    SignatureMismatch,
    #[error("the bearer token is wrong")]
    TokenMismatch,
}

/// Why a configured secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a Standard Webhooks secret is not base64 after its `whsec_` prefix")]
    NotBase64,
    #[error("the secret is empty")]
    Empty,
}

/// A compiled verification with its secrets in hand.
#[derive(Clone, PartialEq, Eq)]
pub enum Verifier {
    Github {
        secret: Vec<u8>,
    },
    StandardWebhooks {
        /// Decoded keys; a signature made with any of them passes.
        keys: Vec<Vec<u8>>,
        tolerance: Duration,
    },
    Bearer {
        token: Vec<u8>,
    },
}

impl fmt::Debug for Verifier {
    /// Names the scheme only: secrets stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verifier::Github { .. } => f.write_str("Verifier::Github"),
            Verifier::StandardWebhooks { keys, tolerance } => f
                .debug_struct("Verifier::StandardWebhooks")
                .field("keys", &keys.len())
                .field("tolerance", tolerance)
                .finish(),
            Verifier::Bearer { .. } => f.write_str("Verifier::Bearer"),
        }
    }
}

impl Verifier {
    pub fn github(secret: Vec<u8>) -> Result<Verifier, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Verifier::Github { secret })
    }

    pub fn bearer(token: Vec<u8>) -> Result<Verifier, KeyError> {
        if token.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Verifier::Bearer { token })
    }

    /// Standard Webhooks secrets as written (`whsec_<base64>`), read as kinetic's signed
    /// deliveries read them ([`signing::decode_secret`]).
    pub fn standard_webhooks<S: AsRef<[u8]>>(
        secrets: &[S],
        tolerance: Duration,
    ) -> Result<Verifier, KeyError> {
        let keys = secrets
            .iter()
            .map(|secret| {
                signing::decode_secret(secret.as_ref()).map_err(|problem| match problem {
                    KeyProblem::NotBase64 => KeyError::NotBase64,
                    KeyProblem::Empty => KeyError::Empty,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Verifier::StandardWebhooks { keys, tolerance })
    }

    /// Checks one request. `body` is the raw request body.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), VerifyError> {
        match self {
            Verifier::Github { secret } => verify_github(secret, headers, body),
            Verifier::StandardWebhooks { keys, tolerance } => {
                verify_standard(keys, *tolerance, headers, body, now)
            }
            Verifier::Bearer { token } => verify_bearer(token, headers),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let value = headers.get(name).ok_or(VerifyError::MissingHeader(name))?;
    value.to_str().map_err(|_| VerifyError::Malformed {
        header: name,
        reason: "it is not ASCII text",
    })
}

fn verify_github(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let malformed = |reason| VerifyError::Malformed {
        header: GITHUB_SIGNATURE_HEADER,
        reason,
    };
    let value = header(headers, GITHUB_SIGNATURE_HEADER)?;
    let hex_digest = value
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed("it does not start with `sha256=`"))?;
    let given = hex::decode(hex_digest).map_err(|_| malformed("the digest is not hexadecimal"))?;
    let expected = hmac_sha256(secret, &[body]);
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

fn verify_standard(
    keys: &[Vec<u8>],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), VerifyError> {
    let id = header(headers, WEBHOOK_ID_HEADER)?;
    let timestamp = header(headers, WEBHOOK_TIMESTAMP_HEADER)?;
    let signatures = header(headers, WEBHOOK_SIGNATURE_HEADER)?;
    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed {
            header: WEBHOOK_TIMESTAMP_HEADER,
            reason: "it is not a number of Unix seconds",
        })?;
    let skew = seconds.saturating_sub(now.timestamp());
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::StaleTimestamp {
            skew_seconds: skew,
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    // Signatures of other versions (e.g. `v1a`, asymmetric) are skipped, as the spec asks.
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64_STANDARD.decode(encoded).ok())
        .collect();
    if given.is_empty() {
        return Err(VerifyError::Malformed {
            header: WEBHOOK_SIGNATURE_HEADER,
            reason: "it has no `v1,<base64>` signature",
        });
    }
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        let expected = signing::hmac(key, id, timestamp, body);
        for signature in &given {
            matched |= expected.as_slice().ct_eq(signature);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

fn verify_bearer(token: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = header(headers, "authorization")?;
    let (scheme, given) = value.trim().split_once(' ').ok_or(VerifyError::Malformed {
        header: "authorization",
        reason: "it is not `Bearer <token>`",
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(VerifyError::Malformed {
            header: "authorization",
            reason: "its scheme is not `Bearer`",
        });
    }
    // Hashing both sides first makes the comparison independent of the token's length too.
    let expected = Sha256::digest(token);
    let given = Sha256::digest(given.trim().as_bytes());
    if bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        Ok(())
    } else {
        Err(VerifyError::TokenMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    /// Request headers of a test case.
    type Pairs = &'static [(&'static str, &'static str)];
    /// (name, headers, body, now, expected error)
    type Case = (
        &'static str,
        HeaderMap,
        &'static [u8],
        DateTime<Utc>,
        VerifyError,
    );

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    // GitHub's documented example ("Validating webhook deliveries").
    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_test_vector_and_failures() {
        let verifier = Verifier::github(GITHUB_SECRET.to_vec()).unwrap();
        let now = at(0);
        let signed = headers(&[("X-Hub-Signature-256", GITHUB_SIGNATURE)]);
        assert_eq!(verifier.verify(&signed, GITHUB_BODY, now), Ok(()));
        let cases: &[(Pairs, &[u8], VerifyError)] = &[
            (
                &[("X-Hub-Signature-256", GITHUB_SIGNATURE)],
                b"Hello, World?",
                VerifyError::SignatureMismatch,
            ),
            (
                &[],
                GITHUB_BODY,
                VerifyError::MissingHeader(GITHUB_SIGNATURE_HEADER),
            ),
            (
                &[("X-Hub-Signature", "sha1=0a")],
                GITHUB_BODY,
                VerifyError::MissingHeader(GITHUB_SIGNATURE_HEADER),
            ),
            (
                &[("X-Hub-Signature-256", "757107ea0eb2509fc211221cce984b8a")],
                GITHUB_BODY,
                VerifyError::Malformed {
                    header: GITHUB_SIGNATURE_HEADER,
                    reason: "it does not start with `sha256=`",
                },
            ),
            (
                &[("X-Hub-Signature-256", "sha256=zz")],
                GITHUB_BODY,
                VerifyError::Malformed {
                    header: GITHUB_SIGNATURE_HEADER,
                    reason: "the digest is not hexadecimal",
                },
            ),
            (
                &[("X-Hub-Signature-256", "sha256=757107ea")],
                GITHUB_BODY,
                VerifyError::SignatureMismatch,
            ),
        ];
        for (pairs, body, want) in cases {
            assert_eq!(
                verifier.verify(&headers(pairs), body, now).as_ref(),
                Err(want),
                "{pairs:?}"
            );
        }
        let wrong = Verifier::github(b"another secret".to_vec()).unwrap();
        assert_eq!(
            wrong.verify(&signed, GITHUB_BODY, now),
            Err(VerifyError::SignatureMismatch)
        );
    }

    // The Standard Webhooks reference libraries' test vector.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn standard(signature: &str, timestamp: i64) -> HeaderMap {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &timestamp.to_string()),
            ("webhook-signature", signature),
        ])
    }

    #[test]
    fn standard_webhooks_test_vector() {
        let verifier = Verifier::standard_webhooks(&[SW_SECRET], Duration::from_secs(300)).unwrap();
        let signed = standard(SW_SIGNATURE, SW_TIMESTAMP);
        assert_eq!(verifier.verify(&signed, SW_BODY, at(SW_TIMESTAMP)), Ok(()));
        // The secret without its prefix is the same key.
        let bare = Verifier::standard_webhooks(
            &[SW_SECRET.trim_start_matches("whsec_")],
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(bare, verifier);
        // Any one of several signatures may match; other versions are skipped.
        let listed = standard(
            &format!("v1a,AAAA v1,bm90IHRoaXM= {SW_SIGNATURE}"),
            SW_TIMESTAMP,
        );
        assert_eq!(verifier.verify(&listed, SW_BODY, at(SW_TIMESTAMP)), Ok(()));
    }

    #[test]
    fn standard_webhooks_refusals() {
        let verifier = Verifier::standard_webhooks(&[SW_SECRET], Duration::from_secs(300)).unwrap();
        let now = at(SW_TIMESTAMP);
        let signed = standard(SW_SIGNATURE, SW_TIMESTAMP);
        let mut no_id = signed.clone();
        no_id.remove("webhook-id");
        let mut no_signature = signed.clone();
        no_signature.remove("webhook-signature");
        let mut other_id = signed.clone();
        other_id.insert("webhook-id", "msg_other".parse().unwrap());
        let cases: Vec<Case> = vec![
            (
                "tampered body",
                signed.clone(),
                br#"{"test": 2432232315}"#,
                now,
                VerifyError::SignatureMismatch,
            ),
            (
                "id is signed",
                other_id,
                SW_BODY,
                now,
                VerifyError::SignatureMismatch,
            ),
            (
                "timestamp is signed",
                standard(SW_SIGNATURE, SW_TIMESTAMP + 1),
                SW_BODY,
                now,
                VerifyError::SignatureMismatch,
            ),
            (
                "stale",
                signed.clone(),
                SW_BODY,
                at(SW_TIMESTAMP + 301),
                VerifyError::StaleTimestamp {
                    skew_seconds: -301,
                    tolerance_seconds: 300,
                },
            ),
            (
                "from the future",
                signed.clone(),
                SW_BODY,
                at(SW_TIMESTAMP - 301),
                VerifyError::StaleTimestamp {
                    skew_seconds: 301,
                    tolerance_seconds: 300,
                },
            ),
            (
                "missing id",
                no_id,
                SW_BODY,
                now,
                VerifyError::MissingHeader(WEBHOOK_ID_HEADER),
            ),
            (
                "missing signature",
                no_signature,
                SW_BODY,
                now,
                VerifyError::MissingHeader(WEBHOOK_SIGNATURE_HEADER),
            ),
            (
                "no v1 signature",
                standard("v1a,AAAA", SW_TIMESTAMP),
                SW_BODY,
                now,
                VerifyError::Malformed {
                    header: WEBHOOK_SIGNATURE_HEADER,
                    reason: "it has no `v1,<base64>` signature",
                },
            ),
            (
                "timestamp not a number",
                headers(&[
                    ("webhook-id", SW_ID),
                    ("webhook-timestamp", "yesterday"),
                    ("webhook-signature", SW_SIGNATURE),
                ]),
                SW_BODY,
                now,
                VerifyError::Malformed {
                    header: WEBHOOK_TIMESTAMP_HEADER,
                    reason: "it is not a number of Unix seconds",
                },
            ),
        ];
        for (name, headers, body, now, want) in cases {
            assert_eq!(verifier.verify(&headers, body, now), Err(want), "{name}");
        }
        // Within the tolerance on both sides.
        for offset in [-300, 300] {
            assert_eq!(
                verifier.verify(&signed, SW_BODY, at(SW_TIMESTAMP + offset)),
                Ok(())
            );
        }
    }

    #[test]
    fn standard_webhooks_rotation() {
        let other = format!("whsec_{}", BASE64_STANDARD.encode(b"a newer signing key"));
        let tolerance = Duration::from_secs(300);
        let signed = standard(SW_SIGNATURE, SW_TIMESTAMP);
        let now = at(SW_TIMESTAMP);
        let rotated = Verifier::standard_webhooks(&[other.as_str(), SW_SECRET], tolerance).unwrap();
        assert_eq!(rotated.verify(&signed, SW_BODY, now), Ok(()));
        let only_new = Verifier::standard_webhooks(&[other.as_str()], tolerance).unwrap();
        assert_eq!(
            only_new.verify(&signed, SW_BODY, now),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            Verifier::standard_webhooks(&["whsec_!!!"], tolerance),
            Err(KeyError::NotBase64)
        );
        assert_eq!(
            Verifier::standard_webhooks::<&str>(&[], tolerance),
            Err(KeyError::Empty)
        );
    }

    /// A secret without base64 padding signs kinetic's deliveries, so it verifies here too: both
    /// read secrets with `kinetic_outbound::signing::decode_secret`.
    #[test]
    fn a_secret_kinetic_signs_with_verifies_here() {
        let padded = BASE64_STANDARD.encode(b"sixteen byte key");
        assert!(padded.ends_with("=="), "{padded}");
        let unpadded = format!("whsec_{}", padded.trim_end_matches('='));
        let signer = kinetic_outbound::signing::Signer::from_secrets(&[unpadded.as_str()]).unwrap();
        let signature = signer.signature(SW_ID, SW_TIMESTAMP, SW_BODY);
        let verifier =
            Verifier::standard_webhooks(&[unpadded.as_str()], Duration::from_secs(300)).unwrap();
        assert_eq!(
            verifier.verify(
                &standard(&signature, SW_TIMESTAMP),
                SW_BODY,
                at(SW_TIMESTAMP)
            ),
            Ok(())
        );
    }

    #[test]
    fn bearer_tokens() {
        let verifier = Verifier::bearer(b"t0ken".to_vec()).unwrap();
        let now = at(0);
        let cases: &[(Pairs, Result<(), VerifyError>)] = &[
            (&[("Authorization", "Bearer t0ken")], Ok(())),
            (&[("authorization", "bearer t0ken")], Ok(())),
            (
                &[("Authorization", "Bearer t0ke")],
                Err(VerifyError::TokenMismatch),
            ),
            (
                &[("Authorization", "Bearer t0ken2")],
                Err(VerifyError::TokenMismatch),
            ),
            (
                &[("Authorization", "Basic dDA6a2Vu")],
                Err(VerifyError::Malformed {
                    header: "authorization",
                    reason: "its scheme is not `Bearer`",
                }),
            ),
            (
                &[("Authorization", "t0ken")],
                Err(VerifyError::Malformed {
                    header: "authorization",
                    reason: "it is not `Bearer <token>`",
                }),
            ),
            (&[], Err(VerifyError::MissingHeader("authorization"))),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                &verifier.verify(&headers(pairs), b"", now),
                want,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_messages() {
        let verifier = Verifier::bearer(b"super-secret".to_vec()).unwrap();
        assert!(!format!("{verifier:?}").contains("super-secret"));
        let error = verifier
            .verify(&headers(&[("Authorization", "Bearer nope")]), b"", at(0))
            .unwrap_err();
        assert!(!error.to_string().contains("super-secret"));
        let github = Verifier::github(GITHUB_SECRET.to_vec()).unwrap();
        assert!(!format!("{github:?}").contains("Secret"));
    }
}
