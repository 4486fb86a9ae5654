//! Verifying senders' JWTs: the signature (RS256, ES256, EdDSA) against the key set of a trusted
//! issuer (kinetic's own, or one given with `--oidc-issuer ISSUER=JWKS`), `iss`, `aud`, `exp` and
//! `nbf` with a small leeway. A key set read from a URL is fetched again when a token names a key
//! it does not hold (at most every few seconds). Verified tokens are remembered by their hash until
//! they expire, so a sender that reuses its token pays for one verification.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::issuer::Issuer;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// How often a URL's key set may be fetched again for an unknown key id.
const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Verified tokens remembered at most.
const CACHE_ENTRIES: usize = 10_000;

/// Why a token was not accepted; the message is for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS file, read again when a token names an unknown key.
    File(PathBuf),
    /// A JWKS URL (https, or http on loopback), fetched again when a token names an unknown key.
    Url(String),
}

/// `--oidc-issuer ISSUER=JWKS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    pub issuer: String,
    pub keys: KeySource,
}

impl std::str::FromStr for IssuerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Issuer URLs hold no `=`; a JWKS URL may (its query).
        let Some((issuer, keys)) = text.split_once('=') else {
            return Err(format!(
                "`{text}` is not ISSUER=JWKS; write e.g. --oidc-issuer https://token.example.com=https://token.example.com/jwks.json or ISSUER=/path/jwks.json"
            ));
        };
        if issuer.is_empty() || keys.is_empty() {
            return Err(format!(
                "`{text}` needs both an issuer and a JWKS (file or URL)"
            ));
        }
        let keys = if keys.starts_with("https://") {
            KeySource::Url(keys.to_owned())
        } else if let Some(rest) = keys.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "`{keys}`: a key set is fetched over https (http only from loopback), or read from a file"
                ));
            }
            KeySource::Url(keys.to_owned())
        } else {
            KeySource::File(PathBuf::from(keys))
        };
        Ok(Self {
            issuer: issuer.to_owned(),
            keys,
        })
    }
}

/// One key of an issuer.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// An issuer kinetic trusts, with its keys.
struct Trusted {
    issuer: String,
    source: Option<KeySource>,
    keys: RwLock<Arc<Vec<Key>>>,
    fetched: Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verified {
    pub iss: String,
    pub sub: String,
    pub exp: u64,
}

/// Verifies tokens against the trusted issuers.
pub struct Verifier {
    trusted: Vec<Trusted>,
    http: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], Verified>>,
}

impl Verifier {
    /// Trusts kinetic's own `issuer` (if any) and the `outside` ones. Key sets of files and URLs are
    /// read at the first token that needs them. Fails only when the HTTP client for key sets
    /// cannot be built: there is no fallback client, which would honour proxy variables.
    pub fn new(issuer: Option<&Issuer>, outside: &[IssuerSpec]) -> Result<Self, String> {
        let mut trusted = Vec::new();
        if let Some(issuer) = issuer {
            trusted.push(Trusted {
                issuer: issuer.url().to_owned(),
                source: None,
                keys: RwLock::new(Arc::new(vec![Key {
                    kid: Some(issuer.kid().to_owned()),
                    algorithm: Algorithm::ES256,
                    key: issuer.decoding_key().clone(),
                }])),
                fetched: Mutex::new(None),
            });
        }
        for spec in outside {
            trusted.push(Trusted {
                issuer: spec.issuer.clone(),
                source: Some(spec.keys.clone()),
                keys: RwLock::new(Arc::new(Vec::new())),
                fetched: Mutex::new(None),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|error| format!("the HTTP client for issuers' key sets: {error}"))?;
        Ok(Self {
            trusted,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Reads every file or URL key set now, so a mistake shows at start.
    pub async fn preload(&self) -> Result<(), String> {
        for trusted in &self.trusted {
            if trusted.source.is_some() {
                self.refresh(trusted, true).await?;
            }
        }
        Ok(())
    }

    /// Verifies `token` for `audience`; the subject and expiry of a good one.
    pub async fn verify(&self, token: &str, audience: &str) -> Result<Verified, Invalid> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let hash: [u8; 32] = {
            let mut hasher = Sha256::new();
            hasher.update(audience.as_bytes());
            hasher.update([0]);
            hasher.update(token.as_bytes());
            hasher.finalize().into()
        };
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&hash).cloned())
            && hit.exp + LEEWAY.as_secs() >= now
        {
            return Ok(hit);
        }
        let verified = self.verify_uncached(token, audience).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, v| v.exp + LEEWAY.as_secs() >= now);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(hash, verified.clone());
        }
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str, audience: &str) -> Result<Verified, Invalid> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Invalid("the bearer token is not a JWT".into()))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(Invalid(format!(
                "tokens signed with {:?} are not accepted; use RS256, ES256 or EdDSA",
                header.alg
            )));
        }
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Invalid("the token's claims are not JSON".into()))?;
        let issuer = unverified.iss.unwrap_or_default();
        let Some(trusted) = self.trusted.iter().find(|t| t.issuer == issuer) else {
            return Err(Invalid(format!(
                "the token's issuer `{issuer}` is not trusted; kinetic trusts {}",
                self.trusted
                    .iter()
                    .map(|t| format!("`{}`", t.issuer))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let key = match find(&trusted.keys(), header.kid.as_deref(), header.alg) {
            Some(key) => key,
            None => {
                // A key set that rotated: read it again (rate-limited), then look once more.
                if trusted.source.is_some() {
                    self.refresh(trusted, false)
                        .await
                        .map_err(|e| Invalid(format!("the issuer's keys are unavailable: {e}")))?;
                }
                find(&trusted.keys(), header.kid.as_deref(), header.alg).ok_or_else(|| {
                    Invalid(format!(
                        "issuer `{issuer}` has no {:?} key{}",
                        header.alg,
                        header
                            .kid
                            .as_deref()
                            .map(|k| format!(" with kid `{k}`"))
                            .unwrap_or_default()
                    ))
                })?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        let data = jsonwebtoken::decode::<Verified>(token, &key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            Invalid(match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidAudience => {
                    format!("the token's audience is not this broker's; ask for a token with aud `{audience}`")
                }
                ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("the token has no `{claim}` claim")
                }
                other => format!("the token does not verify: {other:?}"),
            })
        })?;
        Ok(data.claims)
    }

    /// Reads a key set again; `force` ignores the rate limit (at start).
    async fn refresh(&self, trusted: &Trusted, force: bool) -> Result<(), String> {
        {
            let mut fetched = trusted.fetched.lock().map_err(|_| "poisoned".to_owned())?;
            if !force && fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
                return Ok(());
            }
            *fetched = Some(Instant::now());
        }
        let text = match &trusted.source {
            Some(KeySource::File(path)) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
            Some(KeySource::Url(url)) => {
                let response = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("fetching {url}: HTTP {}", response.status()));
                }
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?;
                if bytes.len() > 1024 * 1024 {
                    return Err(format!("{url}: a key set over 1 MiB is refused"));
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => return Ok(()),
        };
        let keys = parse_jwks(&text)?;
        tracing::debug!(issuer = %trusted.issuer, keys = keys.len(), "Read the issuer's keys.");
        if let Ok(mut slot) = trusted.keys.write() {
            *slot = Arc::new(keys);
        }
        Ok(())
    }
}

impl Trusted {
    fn keys(&self) -> Arc<Vec<Key>> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|_| Arc::new(Vec::new()))
    }
}

fn find(keys: &[Key], kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
    let mut usable = keys.iter().filter(|k| k.algorithm == algorithm);
    match kid {
        Some(kid) => usable
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.key.clone()),
        // No kid: only when the choice is unambiguous.
        None => {
            let first = usable.next()?;
            usable.next().is_none().then(|| first.key.clone())
        }
    }
}

/// The signature keys of a JWKS document; keys of other kinds are skipped.
fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err("the key set holds no RS256, ES256 or EdDSA key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_tokens_verify_and_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(dir.path(), "http://127.0.0.1:1").unwrap();
        let verifier = Verifier::new(Some(&issuer), &[]).unwrap();
        let token = issuer
            .sign("system:serviceaccount:a:b", "aud", Duration::from_secs(60))
            .unwrap();
        let verified = verifier.verify(&token, "aud").await.unwrap();
        assert_eq!(verified.sub, "system:serviceaccount:a:b");
        // Cached per audience: the same token is not good for another one.
        let error = verifier.verify(&token, "other").await.unwrap_err();
        assert!(error.0.contains("aud `other`"), "{error}");
        let error = verifier.verify("nope", "aud").await.unwrap_err();
        assert!(error.0.contains("not a JWT"), "{error}");
        let stranger = tempfile::tempdir().unwrap();
        let stranger = Issuer::load_or_create(stranger.path(), "http://stranger").unwrap();
        let token = stranger.sign("s", "aud", Duration::from_secs(60)).unwrap();
        let error = verifier.verify(&token, "aud").await.unwrap_err();
        assert!(
            error.0.contains("`http://stranger` is not trusted"),
            "{error}"
        );
        // Another key under the trusted issuer's name: the signature fails.
        let impostor = tempfile::tempdir().unwrap();
        let impostor = Issuer::load_or_create(impostor.path(), "http://127.0.0.1:1").unwrap();
        let token = impostor.sign("s", "aud", Duration::from_secs(60)).unwrap();
        let error = verifier.verify(&token, "aud").await.unwrap_err();
        assert!(error.0.contains("has no ES256 key with kid"), "{error}");
    }

    #[test]
    fn issuer_flags_parse() {
        let spec: IssuerSpec = "https://issuer.example=https://issuer.example/keys"
            .parse()
            .unwrap();
        assert_eq!(spec.issuer, "https://issuer.example");
        assert_eq!(
            spec.keys,
            KeySource::Url("https://issuer.example/keys".into())
        );
        let spec: IssuerSpec = "https://kubernetes.default.svc=/etc/jwks.json"
            .parse()
            .unwrap();
        assert_eq!(spec.keys, KeySource::File("/etc/jwks.json".into()));
        assert!("x".parse::<IssuerSpec>().is_err());
        assert!(
            "https://i=http://keys.example/jwks"
                .parse::<IssuerSpec>()
                .unwrap_err()
                .contains("https")
        );
        assert!(
            "https://i=http://127.0.0.1:9/jwks"
                .parse::<IssuerSpec>()
                .is_ok()
        );
    }
}
