//! Standard Webhooks signatures on deliveries (<https://www.standardwebhooks.com/>), for triggers
//! whose `delivery.signing.standardWebhooks` names secrets.
//!
//! Every attempt carries `webhook-id` (the CloudEvent's id, the same on every retry, so a subscriber
//! can drop duplicates), `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`:
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per secret, separated by spaces.
//! The body signed is exactly the HTTP body sent: the event's data in binary mode, the JSON event in
//! structured mode.
//!
//! A secret is `whsec_<base64 key>`. As the reference libraries read it, the prefix is optional and
//! the rest is always base64 (padding optional): a secret without the prefix is the base64 of the
//! key, not the key's bytes. The same secret thus verifies here, in the reference libraries and in
//! kinetic's own WebhookSource. A key given as raw bytes is written `whsec_` + its base64.

use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::prelude::BASE64_STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use kinetic_api::sources::SecretRef;
use sha2::Sha256;

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// The prefix of Standard Webhooks secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 that accepts the key with or without its `=` padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a trigger's signing secrets cannot be used. The trigger is not ready until it is fixed.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing secret {index}: environment variable `{name}` is not set or not UTF-8")]
    MissingEnv { index: usize, name: String },
    #[error("signing secret {index}: the file `{}` cannot be read", path.display())]
    File {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "signing secret {index} ({origin}) is not base64 after its `whsec_` prefix; write `whsec_` followed by the base64 of the key"
    )]
    NotBase64 { index: usize, origin: String },
    #[error("signing secret {index} ({origin}) is empty")]
    Empty { index: usize, origin: String },
    #[error("signing secret {index}: {why}")]
    Outside { index: usize, why: String },
}

/// The signing keys of one trigger. Keys never appear in `Debug` output or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// Reads every secret (environment variables of this process, or files, surrounding white space
    /// removed) and decodes it. Cheap enough to run on every plan refresh, so a rotated file or a
    /// fixed variable is picked up within a second.
    pub fn read(secrets: &[SecretRef]) -> Result<Signer, SigningError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                use kinetic_api::secret::ReadError;
                let origin = secret.to_string();
                let text = kinetic_api::secret::read(secret).map_err(|error| match error {
                    ReadError::MissingEnv(name) => SigningError::MissingEnv { index, name },
                    ReadError::File { path, source } => SigningError::File {
                        index,
                        path,
                        source,
                    },
                    ReadError::Outside(why) => SigningError::Outside { index, why },
                })?;
                decode_secret(&text).map_err(|problem| match problem {
                    KeyProblem::NotBase64 => SigningError::NotBase64 { index, origin },
                    KeyProblem::Empty => SigningError::Empty { index, origin },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys })
    }

    /// A signer with the given secrets as written (`whsec_…`).
    pub fn from_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Option<Signer> {
        let keys = secrets
            .iter()
            .map(|secret| decode_secret(secret.as_ref()).ok())
            .collect::<Option<Vec<_>>>()?;
        (!keys.is_empty()).then_some(Signer { keys })
    }

    /// The `webhook-signature` value: `v1,<base64>` per key, space-separated, in the secrets' order.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let mut value = String::with_capacity(self.keys.len() * 48);
        for key in &self.keys {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str("v1,");
            BASE64_STANDARD.encode_string(hmac(key, id, &timestamp, body), &mut value);
        }
        value
    }

    /// The three headers of one attempt: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            (WEBHOOK_ID, id.to_owned()),
            (WEBHOOK_TIMESTAMP, timestamp.to_string()),
            (WEBHOOK_SIGNATURE, self.signature(id, timestamp, body)),
        ]
    }
}

/// The `v1` signature of a message under one key: HMAC-SHA256 of `{id}.{timestamp}.{body}`,
/// `timestamp` as it is written in the `webhook-timestamp` header.
pub fn hmac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    hmac_sha256(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    )
}

/// HMAC-SHA256 of the concatenated `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Why a secret as written is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    NotBase64,
    Empty,
}

/// The HMAC key of a secret as written (`whsec_<base64>`): as the reference libraries read it,
/// the prefix is optional and the rest is base64, its padding optional.
pub fn decode_secret(secret: &[u8]) -> Result<Vec<u8>, KeyProblem> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX.as_bytes())
        .unwrap_or(secret);
    let key = LENIENT_BASE64
        .decode(encoded)
        .map_err(|_| KeyProblem::NotBase64)?;
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_reference_test_vector() {
        let signer = Signer::from_secrets(&[SECRET]).unwrap();
        assert_eq!(signer.signature(ID, TIMESTAMP, BODY), SIGNATURE);
        // Without the prefix the rest is still the base64 of the key; padding is optional.
        let bare = Signer::from_secrets(&[SECRET.trim_start_matches(SECRET_PREFIX)]).unwrap();
        assert_eq!(bare, signer);
        let key = b"a key whose base64 needs padding";
        let padded = format!("whsec_{}", BASE64_STANDARD.encode(key));
        assert!(padded.ends_with('='));
        assert_eq!(
            Signer::from_secrets(&[padded.trim_end_matches('=')]),
            Signer::from_secrets(&[padded.as_str()])
        );
        assert!(Signer::from_secrets(&["whsec_"]).is_none());
        assert!(Signer::from_secrets(&["whsec_!!!"]).is_none());
        let headers = signer.headers(ID, TIMESTAMP, BODY);
        assert_eq!(headers[0], (WEBHOOK_ID, ID.to_owned()));
        assert_eq!(headers[1], (WEBHOOK_TIMESTAMP, "1614265330".to_owned()));
        assert_eq!(headers[2], (WEBHOOK_SIGNATURE, SIGNATURE.to_owned()));
    }

    #[test]
    fn one_signature_per_secret_in_order() {
        let newer = format!("whsec_{}", BASE64_STANDARD.encode(b"a newer signing key"));
        let signer = Signer::from_secrets(&[newer.as_str(), SECRET]).unwrap();
        let value = signer.signature(ID, TIMESTAMP, BODY);
        let parts: Vec<&str> = value.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], SIGNATURE);
        assert_eq!(
            parts[0],
            Signer::from_secrets(&[newer])
                .unwrap()
                .signature(ID, TIMESTAMP, BODY)
        );
        assert_ne!(parts[0], parts[1]);
        // Any change to what is signed changes the signature.
        for (id, timestamp, body) in [
            ("msg_other", TIMESTAMP, BODY),
            (ID, TIMESTAMP + 1, BODY),
            (ID, TIMESTAMP, &br#"{"test": 2432232315}"#[..]),
        ] {
            assert_ne!(signer.signature(id, timestamp, body), value);
        }
    }

    #[test]
    fn secrets_are_read_and_checked_without_showing_them() {
        let dir = std::env::temp_dir().join(format!("kinetic-signing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        let path = file.display().to_string();
        let signer = Signer::read(&[SecretRef::File(path.clone())]).unwrap();
        assert_eq!(signer, Signer::from_secrets(&[SECRET]).unwrap());
        assert_eq!(format!("{signer:?}"), "Signer { keys: 1 }");

        let missing = Signer::read(&[
            SecretRef::File(path.clone()),
            SecretRef::Env("KINETIC_TEST_SURELY_UNSET_SECRET".into()),
        ])
        .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "signing secret 1: environment variable `KINETIC_TEST_SURELY_UNSET_SECRET` is not set or not UTF-8"
        );
        let gone = dir.join("gone");
        let unreadable = Signer::read(&[SecretRef::File(gone.display().to_string())]).unwrap_err();
        assert!(
            unreadable.to_string().contains("cannot be read"),
            "{unreadable}"
        );
        assert!(std::error::Error::source(&unreadable).is_some());

        std::fs::write(&file, "whsec_not base64!").unwrap();
        let garbled = Signer::read(&[SecretRef::File(path.clone())]).unwrap_err();
        assert!(garbled.to_string().contains("is not base64"), "{garbled}");
        assert!(!garbled.to_string().contains("not base64!"), "{garbled}");
        std::fs::write(&file, "whsec_\n").unwrap();
        let empty = Signer::read(&[SecretRef::File(path)]).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
