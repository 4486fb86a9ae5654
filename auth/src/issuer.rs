//! kinetic as its own OIDC issuer: one ES256 key kept in the state directory, tokens signed for a
//! subject and an audience (`kinetic token create`, sources posting to brokers, deliveries to
//! destinations with an `audience`), and the discovery document and JWKS any OIDC library reads.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The file in the state directory that holds the signing key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "oidc-signing-key.pem";
/// How long the tokens kinetic signs for its own senders live.
const OWN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Such a token is signed again when it has less than this left.
const OWN_TOKEN_RENEW: Duration = Duration::from_secs(300);

/// Where the public listener serves the key set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the public listener serves the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold a P-256 private key in PKCS#8 PEM; delete it and kinetic makes a new one (tokens it signed before stop verifying)"
    )]
    BadKey { path: PathBuf },
    #[error("signing a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The claims kinetic puts in a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// kinetic's signing key and the URL it signs as.
pub struct Issuer {
    url: String,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    /// Tokens of kinetic's own senders, by (subject, audience), with their expiry.
    minted: Mutex<HashMap<(String, String), (String, u64)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("url", &self.url)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// The issuer `url` with the key of `{state_dir}/oidc-signing-key.pem`, made on first use.
    /// Creation is atomic, so processes sharing a state directory agree on one key.
    pub fn load_or_create(state_dir: &Path, url: &str) -> Result<Self, IssuerError> {
        let path = state_dir.join(KEY_FILE);
        let io = |source| IssuerError::Io {
            path: path.clone(),
            source,
        };
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(state_dir).map_err(io)?;
                let document = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| IssuerError::BadKey { path: path.clone() })?;
                let pem = pem_encode(document.as_ref());
                // NamedTempFile is created with mode 0600.
                let mut file = tempfile::NamedTempFile::new_in(state_dir).map_err(io)?;
                file.write_all(pem.as_bytes()).map_err(io)?;
                file.as_file().sync_all().map_err(io)?;
                match file.persist_noclobber(&path) {
                    Ok(_) => {}
                    Err(error) if error.error.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(error) => return Err(io(error.error)),
                }
                std::fs::read_to_string(&path).map_err(io)?
            }
            Err(error) => return Err(io(error)),
        };
        Self::from_pem(url, &pem).ok_or(IssuerError::BadKey { path })
    }

    fn from_pem(url: &str, pem: &str) -> Option<Self> {
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).ok()?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).ok()?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).ok()?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Self {
            url: url.trim_end_matches('/').to_owned(),
            kid,
            encoding,
            decoding,
            jwk,
            minted: Mutex::new(HashMap::new()),
        })
    }

    /// A token for one of kinetic's own senders (a source posting to a broker, a delivery to a
    /// destination with an `audience`): signed once and reused until it nears its expiry.
    pub fn token_for(&self, subject: &str, audience: &str) -> Option<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let key = (subject.to_owned(), audience.to_owned());
        if let Ok(minted) = self.minted.lock()
            && let Some((token, expires)) = minted.get(&key)
            && *expires > now + OWN_TOKEN_RENEW.as_secs()
        {
            return Some(token.clone());
        }
        let token = self
            .sign(subject, audience, OWN_TOKEN_TTL)
            .inspect_err(|error| tracing::error!(%error, "Signing a sender's token failed."))
            .ok()?;
        if let Ok(mut minted) = self.minted.lock() {
            // Bounded by the senders and audiences that exist; forget the expired ones now and then.
            if minted.len() > 10_000 {
                minted.retain(|_, (_, expires)| *expires > now);
            }
            minted.insert(key, (token.clone(), now + OWN_TOKEN_TTL.as_secs()));
        }
        Some(token)
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, for verifying this issuer's tokens in process.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A token for `subject` and `audience`, valid from now for `ttl`.
    pub fn sign(
        &self,
        subject: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, IssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: self.url.clone(),
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs().max(1),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(IssuerError::Sign)
    }

    /// `/.well-known/openid-configuration`.
    pub fn discovery(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.url,
            "jwks_uri": format!("{}{JWKS_PATH}", self.url),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/.well-known/jwks.json`: the public key only.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }
}

fn pem_encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_key_is_made_once_and_its_tokens_verify_against_the_published_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(dir.path(), "http://127.0.0.1:8080/").unwrap();
        let again = Issuer::load_or_create(dir.path(), "http://127.0.0.1:8080").unwrap();
        assert_eq!(issuer.kid(), again.kid());
        assert_eq!(issuer.url(), "http://127.0.0.1:8080");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let jwks = issuer.jwks();
        let text = jwks.to_string();
        assert!(!text.contains("\"d\""), "no private part: {text}");
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
        let key = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        let token = issuer
            .sign(
                "system:serviceaccount:default:app",
                "aud-1",
                Duration::from_secs(60),
            )
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["aud-1"]);
        validation.set_issuer(&["http://127.0.0.1:8080"]);
        let data = jsonwebtoken::decode::<Claims>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims.sub, "system:serviceaccount:default:app");
        assert_eq!(data.header.kid.as_deref(), Some(issuer.kid()));
        assert_eq!(
            issuer.discovery()["jwks_uri"],
            "http://127.0.0.1:8080/.well-known/jwks.json"
        );
    }

    #[test]
    fn a_damaged_key_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let error = Issuer::load_or_create(dir.path(), "http://x").unwrap_err();
        assert!(error.to_string().contains("delete it"), "{error}");
    }
}
