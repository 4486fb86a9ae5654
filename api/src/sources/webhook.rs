//! `WebhookSource`: inbound HTTP POSTs as CloudEvents, with how they are verified and the
//! templates naming each event's `type`, `source` and `id`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CloudEventOverrides, SecretRef, Template, validate_common};
use crate::duration;
use crate::error::Error;
use crate::meta::{Destination, ObjectMeta};

/// A WebhookSource accepts HTTP POSTs at `/webhooks/{namespace}/{name}` and turns each into a
/// CloudEvent whose data is the request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSource {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: WebhookSourceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSourceSpec {
    /// How requests are authenticated. Required unless `insecure` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<WebhookVerify>,
    /// Accept every request without verification (anyone who can reach the URL can send events).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Template of the event's `type`, e.g. `com.github.{header:X-GitHub-Event}`;
    /// `dev.kinetic.webhook` when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Template of the event's `source`; `/apis/v1/namespaces/{namespace}/webhooksources/{name}`
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Template of the event's `id`; when absent the `webhook-id` or `X-GitHub-Delivery` header,
    /// else a new id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
}

/// Exactly one of `github`, `standardWebhooks` or `bearer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookVerify {
    /// GitHub's `X-Hub-Signature-256` HMAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubVerify>,
    /// The Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_webhooks: Option<StandardWebhooksVerify>,
    /// An `Authorization: Bearer TOKEN` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerVerify>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubVerify {
    pub secret: SecretRef,
}

/// Standard Webhooks' default tolerance between the signed timestamp and now.
pub const DEFAULT_WEBHOOK_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StandardWebhooksVerify {
    /// Signing secrets (`whsec_…`); a request signed with any of them passes, so a secret can be
    /// rotated by adding the new one before removing the old.
    pub secrets: Vec<SecretRef>,
    /// ISO-8601 allowed difference between `webhook-timestamp` and now; `PT5M` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

impl StandardWebhooksVerify {
    /// The tolerance; call after validation (an invalid one falls back to the default).
    pub fn tolerance(&self) -> Duration {
        self.tolerance
            .as_deref()
            .and_then(|text| duration::parse(text).ok())
            .unwrap_or(DEFAULT_WEBHOOK_TOLERANCE)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BearerVerify {
    pub token: SecretRef,
}

impl WebhookVerify {
    pub fn validate(&self) -> Result<(), Error> {
        let set: Vec<&str> = [
            ("github", self.github.is_some()),
            ("standardWebhooks", self.standard_webhooks.is_some()),
            ("bearer", self.bearer.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        let hint = "set exactly one of `github: {secret: {env: NAME}}`, `standardWebhooks: {secrets: [{env: NAME}]}` or `bearer: {token: {env: NAME}}`, or remove `verify`";
        match set.len() {
            0 => return Err(Error::new("", "names no verification").with_hint(hint)),
            1 => {}
            _ => {
                return Err(Error::new(
                    "",
                    format!("several verifications are set: {}", set.join(", ")),
                )
                .with_hint(hint));
            }
        }
        if let Some(github) = &self.github {
            github
                .secret
                .validate()
                .map_err(|e| e.under("github.secret"))?;
        }
        if let Some(bearer) = &self.bearer {
            bearer
                .token
                .validate()
                .map_err(|e| e.under("bearer.token"))?;
        }
        if let Some(standard) = &self.standard_webhooks {
            if standard.secrets.is_empty() {
                return Err(Error::new("standardWebhooks.secrets", "is empty")
                    .with_hint("add the signing secret, e.g. `secrets: [{env: WEBHOOK_SECRET}]`"));
            }
            for (index, secret) in standard.secrets.iter().enumerate() {
                secret
                    .validate()
                    .map_err(|e| e.under(&format!("standardWebhooks.secrets[{index}]")))?;
            }
            if let Some(tolerance) = &standard.tolerance {
                let parsed = duration::parse(tolerance).map_err(|message| {
                    Error::new("standardWebhooks.tolerance", message).with_hint("write e.g. `PT5M`")
                })?;
                if parsed < Duration::from_secs(1) {
                    return Err(Error::new(
                        "standardWebhooks.tolerance",
                        format!("`{tolerance}` is shorter than one second"),
                    )
                    .with_hint("clocks drift; allow at least a few seconds, e.g. `PT5M`"));
                }
            }
        }
        Ok(())
    }
}

impl WebhookSource {
    pub fn validate(&self) -> Result<(), Error> {
        let spec = &self.spec;
        validate_common(&self.metadata, &spec.sink, spec.ce_overrides.as_ref())?;
        match (&spec.verify, spec.insecure) {
            (Some(verify), false) => verify.validate().map_err(|e| e.under("spec.verify"))?,
            (Some(_), true) => {
                return Err(Error::new("spec.insecure", "is set together with `verify`")
                    .with_hint("remove `insecure: true`: requests are verified"));
            }
            (None, false) => {
                return Err(Error::new("spec.verify", "is required: without it, anyone who can reach the webhook URL can send events")
                    .with_hint("set `verify` (`github: {secret: {env: NAME}}`, `standardWebhooks: {secrets: [{env: NAME}]}` or `bearer: {token: {env: NAME}}`), or `insecure: true` to accept every request"));
            }
            (None, true) => {}
        }
        for (name, text) in [
            ("type", &spec.event_type),
            ("source", &spec.source),
            ("id", &spec.id),
        ] {
            let Some(text) = text else { continue };
            let path = format!("spec.{name}");
            let template = Template::parse(text).map_err(|message| {
                Error::new(path.as_str(), message)
                    .with_hint("placeholders are `{header:NAME}` and `{json:/pointer}`; `{{` and `}}` are literal braces")
            })?;
            if template.parts().is_empty() {
                return Err(Error::new(path, "is empty")
                    .with_hint("remove the field for the default, or write a template"));
            }
        }
        Ok(())
    }
}
