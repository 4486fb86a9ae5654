//! The webhook's TLS certificate on Kubernetes, kept as Knative's webhook keeps its own: a CA and a
//! serving certificate for the webhook's Service names, made by the first replica that finds none
//! (or finds them within [`RENEW_BEFORE`] of expiry), stored in a Secret the replicas share, and
//! the CA written into the webhook configurations' `caBundle` so the API server trusts
//! the webhook. Two replicas racing to write the Secret meet a 409; the loser reads and uses the
//! winner's.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A certificate this close to expiry is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a new certificate is valid.
pub const VALID_FOR: Duration = Duration::from_secs(365 * 24 * 3600);
/// The Secret annotation that says when the certificate expires (RFC 3339).
pub const NOT_AFTER: &str = "kinetic.dev/not-after";

/// Where the certificate lives and whom it names.
#[derive(Debug, Clone)]
pub struct Names {
    pub namespace: String,
    /// The Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    pub secret: String,
    /// The webhook's Service: the certificate's names.
    pub service: String,
    /// The ValidatingWebhookConfiguration whose webhooks get the CA.
    pub configuration: String,
}

/// A serving certificate and key, and the CA that signed it, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API refused: {0}")]
    Kube(#[from] kube::Error),
    #[error("making the webhook's certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("another replica rewrote the certificate Secret without a usable certificate")]
    Unusable,
    #[error("the ValidatingWebhookConfiguration `{0}` does not exist; apply deploy/ first")]
    NoConfiguration(String),
}

/// The certificate in the Secret, made (or renewed) first when it is missing or expires within
/// [`RENEW_BEFORE`] of `now`.
pub async fn ensure(
    client: &kube::Client,
    names: &Names,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Certificate, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let existing = secrets.get_opt(&names.secret).await?;
    if let Some(certificate) = existing.as_ref().and_then(|secret| usable(secret, now)) {
        return Ok(certificate);
    }
    let (certificate, not_after) = generate(names, now)?;
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.secret.clone()),
            namespace: Some(names.namespace.clone()),
            annotations: Some([(NOT_AFTER.to_owned(), not_after.to_rfc3339())].into()),
            labels: Some([("app.kubernetes.io/part-of".to_owned(), "kinetic".to_owned())].into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            [
                ("tls.crt", &certificate.cert),
                ("tls.key", &certificate.key),
                ("ca.crt", &certificate.ca),
            ]
            .into_iter()
            .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
            .collect(),
        ),
        ..Secret::default()
    };
    let written = match existing {
        Some(existing) => {
            // Replaced only as it was read: a replica that renewed it meanwhile wins.
            secret.metadata.resource_version = existing.metadata.resource_version;
            secrets
                .replace(&names.secret, &PostParams::default(), &secret)
                .await
        }
        None => secrets.create(&PostParams::default(), &secret).await,
    };
    match written {
        Ok(_) => Ok(certificate),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let winner = secrets.get(&names.secret).await?;
            usable(&winner, now).ok_or(Error::Unusable)
        }
        Err(error) => Err(error.into()),
    }
}

/// Puts `ca` into every webhook of the ValidatingWebhookConfiguration and of the
/// MutatingWebhookConfiguration of that name (when there is one); no write where it is there
/// already.
pub async fn publish_ca(client: &kube::Client, names: &Names, ca: &str) -> Result<(), Error> {
    let bundle = ByteString(ca.as_bytes().to_vec());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mut configuration) = validating.get_opt(&names.configuration).await? else {
        return Err(Error::NoConfiguration(names.configuration.clone()));
    };
    let configs = configuration
        .webhooks
        .iter_mut()
        .flatten()
        .map(|w| &mut w.client_config);
    if with_bundle(configs, &bundle) {
        validating
            .replace(&names.configuration, &PostParams::default(), &configuration)
            .await?;
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(mut configuration) = mutating.get_opt(&names.configuration).await? {
        let configs = configuration
            .webhooks
            .iter_mut()
            .flatten()
            .map(|w| &mut w.client_config);
        if with_bundle(configs, &bundle) {
            mutating
                .replace(&names.configuration, &PostParams::default(), &configuration)
                .await?;
        }
    }
    Ok(())
}

/// Sets `bundle` in each client config; whether any changed.
fn with_bundle<'a>(
    configs: impl Iterator<Item = &'a mut WebhookClientConfig>,
    bundle: &ByteString,
) -> bool {
    let mut changed = false;
    for config in configs {
        if config.ca_bundle.as_ref() != Some(bundle) {
            config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    changed
}

/// The Secret's certificate, when it is complete and not due for renewal.
fn usable(secret: &Secret, now: chrono::DateTime<chrono::Utc>) -> Option<Certificate> {
    let not_after = secret.metadata.annotations.as_ref()?.get(NOT_AFTER)?;
    let not_after = chrono::DateTime::parse_from_rfc3339(not_after).ok()?;
    let renew_before = chrono::Duration::from_std(RENEW_BEFORE).ok()?;
    if not_after.with_timezone(&chrono::Utc) - renew_before <= now {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    Some(Certificate {
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        ca: text("ca.crt")?,
    })
}

/// A new CA and a certificate it signs for the Service's names, valid from an hour before `now`
/// (clock skew) for [`VALID_FOR`]; and when that ends.
pub fn generate(
    names: &Names,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Certificate, chrono::DateTime<chrono::Utc>), Error> {
    let not_before = now - chrono::Duration::hours(1);
    let not_after = now + chrono::Duration::from_std(VALID_FOR).unwrap_or_default();
    let time = |at: chrono::DateTime<chrono::Utc>| {
        rcgen::date_time_ymd(
            chrono::Datelike::year(&at),
            chrono::Datelike::month(&at) as u8,
            chrono::Datelike::day(&at) as u8,
        )
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kinetic webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = time(not_before);
    ca_params.not_after = time(not_after);
    let ca = ca_params.self_signed(&ca_key)?;
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);

    let service = &names.service;
    let namespace = &names.namespace;
    let dns = vec![
        service.clone(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, dns[2].clone());
    params.not_before = time(not_before);
    params.not_after = time(not_after);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca_issuer)?;
    // The expiry as the certificate says it (whole days), for the Secret's annotation.
    let not_after = chrono::NaiveDate::from_ymd_opt(
        chrono::Datelike::year(&not_after),
        chrono::Datelike::month(&not_after),
        chrono::Datelike::day(&not_after),
    )
    .and_then(|day| day.and_hms_opt(0, 0, 0))
    .map(|at| at.and_utc())
    .unwrap_or(not_after);
    Ok((
        Certificate {
            cert: cert.pem(),
            key: key.serialize_pem(),
            ca: ca.pem(),
        },
        not_after,
    ))
}
