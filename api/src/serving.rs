//! `serving.knative.dev/v1` Service and Revision, with Knative's field names and validation rules.
//!
//! A Service is what users write: a revision template and a traffic split. Every change of the
//! template creates a new immutable Revision (`{service}-00001`, `{service}-00002`, …, or the name
//! given in `spec.template.metadata.name`); traffic names revisions or follows the latest one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::meta::{ObjectMeta, validate_dns_label};
use crate::sources::SecretKeySelector;

pub const SERVING_API_VERSION: &str = "serving.knative.dev/v1";
/// Prefix of the annotations that tune a revision's autoscaling.
pub const AUTOSCALING_ANNOTATION_PREFIX: &str = "autoscaling.knative.dev/";
/// Label every Revision carries: the Service it belongs to.
pub const SERVICE_LABEL: &str = "serving.knative.dev/service";
/// Label every Revision carries: the Configuration (same name as the Service) it belongs to.
pub const CONFIGURATION_LABEL: &str = "serving.knative.dev/configuration";
/// Knative's default request timeout (`timeoutSeconds`), and its largest allowed value.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// A Service runs a function (a container's command) as revisions that scale from zero, reachable
/// through the gateway at `http://{name}.{namespace}.{domain}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// What each revision runs; a change here creates a new revision.
    pub template: RevisionTemplate,
    /// How requests are split between revisions; absent means 100 % to the latest revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `spec.template`: the metadata and spec of the revisions a Service creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    pub spec: RevisionSpec,
}

/// `spec.template.metadata`: an optional revision name, annotations (`autoscaling.knative.dev/*`)
/// and labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    /// Name of the revision this template creates; must start with `{service}-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
}

/// A revision's spec (Knative's `RevisionSpec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionSpec {
    /// Requests one instance handles at once; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_concurrency: Option<u32>,
    /// Longest a request may take, in seconds (default 300); past it the caller gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Exactly one container.
    pub containers: Vec<Container>,
    /// Accepted for compatibility with Kubernetes manifests; not used by the local runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_start_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
}

/// The one container of a revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Container image. With `command` the revision runs that program as a local process (the
    /// image only documents it); without, it runs this image on the local container engine, with
    /// `args` (if set) replacing the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Program and leading arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Further arguments, appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Directory the command runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The port the function listens on; the local runtime always passes a free port in `PORT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Accepted for compatibility with Kubernetes manifests; not used by the local runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<serde_json::Value>,
    /// `limits.memory` and `limits.cpu` are enforced by the local runtime where the machine lets it
    /// (a cgroup per instance); `requests` are accepted and have no local meaning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// `runAsUser`, `runAsGroup` and `runAsNonRoot` are honoured by the local runtime; the other
    /// fields are accepted, and a revision that sets them is marked as not enforcing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// `resources`: Kubernetes quantities by resource name (`memory: 256Mi`, `cpu: 500m`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, serde_json::Value>,
}

/// `securityContext` (Kubernetes' container SecurityContext, the fields Knative allows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// The uid the program runs as; honoured when kinetic runs as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    /// The gid the program runs as (default: `runAsUser`'s primary group, or kinetic's group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    /// `true` refuses to start an instance that would run as uid 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<serde_json::Value>,
}

impl SecurityContext {
    /// The fields set here that the local runtime does not enforce, by their YAML names.
    pub fn unenforced(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        // `false` asks for nothing the local runtime would have to do.
        if self.allow_privilege_escalation == Some(false) {
            fields.push("allowPrivilegeEscalation");
        }
        if self.read_only_root_filesystem == Some(true) {
            fields.push("readOnlyRootFilesystem");
        }
        if self.capabilities.is_some() {
            fields.push("capabilities");
        }
        if self.seccomp_profile.is_some() {
            fields.push("seccompProfile");
        }
        fields
    }

    /// The fields set here that a container engine does not enforce as kinetic maps them, by
    /// their YAML names: a custom `seccompProfile` (the engine's default profile applies).
    pub fn unenforced_in_containers(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.seccomp_profile.is_some() {
            fields.push("seccompProfile");
        }
        fields
    }

    /// `capabilities.add` and `capabilities.drop`, as written (`ALL`, `NET_BIND_SERVICE`, …).
    pub fn capabilities(&self) -> (Vec<String>, Vec<String>) {
        let list = |key: &str| -> Vec<String> {
            self.capabilities
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(serde_json::Value::as_array)
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        (list("add"), list("drop"))
    }
}

/// A container's `resources.limits` in the units the runtime applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
    /// Where the value comes from instead: a `secretKeyRef`, read when each instance starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// `env[].valueFrom`, as Kubernetes writes it. kinetic reads `secretKeyRef`: the file
/// `{name}/{key}` in its secrets directory (`--secrets-dir`), the layout of a mounted Kubernetes
/// secret. The other sources are refused when applied, with a hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<serde_json::Value>,
}

impl EnvVarSource {
    fn validate(&self) -> Result<&SecretKeySelector, Error> {
        let unsupported = [
            ("configMapKeyRef", self.config_map_key_ref.is_some()),
            ("fieldRef", self.field_ref.is_some()),
            ("resourceFieldRef", self.resource_field_ref.is_some()),
        ];
        let set = unsupported.iter().filter(|(_, set)| *set).count()
            + usize::from(self.secret_key_ref.is_some());
        if set != 1 {
            return Err(Error::new("", format!("sets {set} sources")).with_hint(
                "give exactly one, e.g. `valueFrom: {secretKeyRef: {name: db, key: password}}`",
            ));
        }
        if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Error::new(*field, "is not read by kinetic").with_hint(
                "give the value inline with `value:`, or keep it in a secret: `valueFrom: {secretKeyRef: {name: NAME, key: KEY}}` reads the file NAME/KEY in the secrets directory",
            ));
        }
        let selector = self
            .secret_key_ref
            .as_ref()
            .ok_or_else(|| Error::new("secretKeyRef", "is missing"))?;
        selector.validate().map_err(|e| e.under("secretKeyRef"))?;
        Ok(selector)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `readinessProbe`: an instance takes requests once `httpGet.path` answers 2xx (or, without
/// `httpGet`, once its port accepts a connection).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default = "root_path")]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<serde_json::Value>,
}

fn root_path() -> String {
    "/".to_owned()
}

/// One entry of `spec.traffic`: a share of requests for a named revision or the latest one, and an
/// optional tag that gets its own address `{tag}-{service}.{namespace}.{domain}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A Revision: an immutable snapshot of a Service's template, created by kinetic when the template
/// changes. Users read revisions (`kinetic get revisions`); they do not write them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revision {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: RevisionSpec,
    #[serde(default, skip_serializing)]
    pub status: Option<serde_json::Value>,
}

impl Revision {
    /// The Service this revision belongs to.
    pub fn service(&self) -> &str {
        self.metadata
            .labels
            .get(SERVICE_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Template annotations (autoscaling settings) of this revision.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.metadata.annotations
    }
}

impl RevisionSpec {
    pub fn container(&self) -> &Container {
        // Validation guarantees exactly one container.
        &self.containers[0]
    }

    pub fn container_concurrency(&self) -> u32 {
        self.container_concurrency.unwrap_or(0)
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS))
    }

    pub fn validate(&self) -> Result<(), Error> {
        if let Some(cc) = self.container_concurrency
            && cc > 1000
        {
            return Err(
                Error::new("containerConcurrency", format!("{cc} is more than 1000"))
                    .with_hint("use 0 for no limit, or a value from 1 to 1000"),
            );
        }
        if let Some(timeout) = self.timeout_seconds
            && !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout)
        {
            return Err(Error::new(
                "timeoutSeconds",
                format!("{timeout} is outside 1..={MAX_TIMEOUT_SECONDS}"),
            )
            .with_hint("give the longest a request may take, in seconds (default 300)"));
        }
        match self.containers.len() {
            1 => {}
            0 => {
                return Err(Error::new("containers", "needs one container").with_hint(
                    "add `containers: [{command: [python3, app.py]}]` (the local runtime runs `command`/`args`)",
                ));
            }
            n => {
                return Err(Error::new("containers", format!("has {n} containers"))
                    .with_hint("kinetic runs exactly one container per revision"));
            }
        }
        self.containers[0]
            .validate()
            .map_err(|e| e.under("containers[0]"))
    }
}

impl Container {
    pub fn validate(&self) -> Result<(), Error> {
        if self.command.is_empty() {
            // An image alone (with `args` replacing its command, if set) runs as a container.
            if self.image.is_none() {
                let what = if self.args.is_empty() {
                    "needs `command` or `image`"
                } else {
                    "is required when `args` is set without `image`"
                };
                return Err(Error::new("command", what).with_hint(
                    "name the program to run as a process in `command` (then `args`), or the container image to run in `image`",
                ));
            }
        } else if self.command[0].trim().is_empty() {
            return Err(Error::new("command[0]", "is empty")
                .with_hint("name the program to run, e.g. `python3` or `./target/release/fn`"));
        }
        if let Some(policy) = &self.image_pull_policy
            && !matches!(policy.as_str(), "Always" | "IfNotPresent" | "Never")
        {
            return Err(Error::new(
                "imagePullPolicy",
                format!("`{policy}` is not a pull policy"),
            )
            .with_hint("use `IfNotPresent` (the default), `Always` or `Never`"));
        }
        for (index, var) in self.env.iter().enumerate() {
            let path = format!("env[{index}]");
            let valid = !var.name.is_empty()
                && !var.name.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
            if !valid {
                return Err(Error::new(
                    format!("{path}.name"),
                    format!("`{}` is not a valid variable name", var.name),
                )
                .with_hint("use letters, digits and `_`, not starting with a digit"));
            }
            if ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"].contains(&var.name.as_str()) {
                return Err(Error::new(
                    format!("{path}.name"),
                    format!("`{}` is set by kinetic", var.name),
                )
                .with_hint("remove it; every instance gets PORT, K_SERVICE, K_REVISION and K_CONFIGURATION"));
            }
            if let Some(source) = &var.value_from {
                if !var.value.is_empty() {
                    return Err(Error::new(
                        format!("{path}.valueFrom"),
                        "is set together with `value`",
                    )
                    .with_hint("keep one: `value` for a literal, `valueFrom` to read a secret"));
                }
                source
                    .validate()
                    .map_err(|e| e.under(&format!("{path}.valueFrom")))?;
            }
        }
        if let Some(resources) = &self.resources {
            resources.validate().map_err(|e| e.under("resources"))?;
        }
        if let Some(security) = &self.security_context {
            for (field, value) in [
                ("runAsUser", security.run_as_user),
                ("runAsGroup", security.run_as_group),
            ] {
                if let Some(id) = value
                    && !(0..=i64::from(u32::MAX - 1)).contains(&id)
                {
                    return Err(Error::new(
                        format!("securityContext.{field}"),
                        format!("{id} is not a valid id"),
                    )
                    .with_hint("give a numeric id from 0 to 4294967294, e.g. 65534"));
                }
            }
        }
        if self.ports.len() > 1 {
            return Err(Error::new("ports", "lists more than one port")
                .with_hint("a revision serves on one port; keep only the HTTP port"));
        }
        if let Some(probe) = &self.readiness_probe
            && let Some(get) = &probe.http_get
            && !get.path.starts_with('/')
        {
            return Err(Error::new(
                "readinessProbe.httpGet.path",
                format!("`{}` must start with `/`", get.path),
            )
            .with_hint("e.g. `path: /healthz`"));
        }
        Ok(())
    }

    /// The image this container runs on the container engine: its `image` when it names no
    /// `command` (with a `command`, the program runs as a local process).
    pub fn container_image(&self) -> Option<&str> {
        self.command
            .is_empty()
            .then_some(self.image.as_deref())
            .flatten()
    }

    /// Program and arguments: `command` then `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }

    /// `resources.limits` in bytes and millicores (validated: every value present parses).
    pub fn limits(&self) -> Limits {
        let limit = |name: &str| {
            self.resources
                .as_ref()
                .and_then(|r| r.limits.get(name))
                .and_then(crate::quantity::text_of)
        };
        Limits {
            memory_bytes: limit("memory").and_then(|t| crate::quantity::memory_bytes(&t)),
            cpu_millis: limit("cpu").and_then(|t| crate::quantity::cpu_millis(&t)),
        }
    }

    pub fn readiness_path(&self) -> Option<&str> {
        self.readiness_probe
            .as_ref()?
            .http_get
            .as_ref()
            .map(|g| g.path.as_str())
    }
}

impl ResourceRequirements {
    fn validate(&self) -> Result<(), Error> {
        for (section, map) in [("limits", &self.limits), ("requests", &self.requests)] {
            for (name, value) in map {
                let path = format!("{section}.{name}");
                let text = crate::quantity::text_of(value).ok_or_else(|| {
                    Error::new(&path, format!("`{value}` is not a quantity"))
                        .with_hint("write a quantity such as `256Mi` or `500m`")
                })?;
                let valid = match name.as_str() {
                    "memory" => crate::quantity::memory_bytes(&text).is_some(),
                    "cpu" => crate::quantity::cpu_millis(&text).is_some(),
                    _ => true,
                };
                if !valid {
                    let hint = if name == "memory" {
                        "write bytes with a suffix: Ki, Mi, Gi (binary) or k, M, G (decimal), e.g. `256Mi`"
                    } else {
                        "write cores (`1`, `0.5`) or millicores (`500m`), at least `1m`"
                    };
                    return Err(Error::new(
                        &path,
                        format!("`{text}` is not a positive {name} quantity"),
                    )
                    .with_hint(hint));
                }
            }
        }
        Ok(())
    }
}

impl Service {
    /// The effective traffic split: as written, or 100 % to the latest revision.
    pub fn traffic(&self) -> Vec<TrafficTarget> {
        if self.spec.traffic.is_empty() {
            vec![TrafficTarget {
                latest_revision: Some(true),
                percent: Some(100),
                ..TrafficTarget::default()
            }]
        } else {
            self.spec.traffic.clone()
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.metadata.validate()?;
        if self.metadata.name.len() > 49 {
            // Revision names append `-00001` and must stay a DNS label.
            return Err(Error::new(
                "metadata.name",
                format!("`{}` is longer than 49 characters", self.metadata.name),
            )
            .with_hint("revision names append `-00001` and must fit in 63 characters"));
        }
        let template = &self.spec.template;
        if let Some(name) = &template.metadata.name {
            validate_dns_label(name).map_err(|e| e.under("spec.template.metadata.name"))?;
            let prefix = format!("{}-", self.metadata.name);
            if !name.starts_with(&prefix) {
                return Err(Error::new(
                    "spec.template.metadata.name",
                    format!("`{name}` does not start with `{prefix}`"),
                )
                .with_hint(format!(
                    "name revisions `{prefix}SUFFIX`, or remove the name to get `{prefix}00001`, …"
                )));
            }
        }
        template
            .spec
            .validate()
            .map_err(|e| e.under("spec.template.spec"))?;
        validate_traffic(&self.spec.traffic, &self.metadata.name)
            .map_err(|e| e.under("spec.traffic"))
    }
}

fn validate_traffic(traffic: &[TrafficTarget], service: &str) -> Result<(), Error> {
    if traffic.is_empty() {
        return Ok(());
    }
    let mut sum = 0u32;
    let mut tags = std::collections::BTreeSet::new();
    for (index, target) in traffic.iter().enumerate() {
        let at = |field: &str| format!("[{index}].{field}");
        let latest = target.latest_revision.unwrap_or(false);
        match (&target.revision_name, latest) {
            (Some(_), true) => {
                return Err(Error::new(
                    format!("[{index}]"),
                    "sets both `revisionName` and `latestRevision: true`",
                )
                .with_hint("name a revision, or follow the latest one, not both"));
            }
            (None, false) => {
                return Err(Error::new(
                    format!("[{index}]"),
                    "needs `revisionName` or `latestRevision: true`",
                )
                .with_hint(format!(
                    "e.g. `revisionName: {service}-00001` or `latestRevision: true`"
                )));
            }
            (Some(name), false) => {
                validate_dns_label(name).map_err(|e| e.under(&at("revisionName")))?
            }
            (None, true) => {}
        }
        if target.configuration_name.is_some() {
            return Err(
                Error::new(at("configurationName"), "is not supported in a Service")
                    .with_hint("use `latestRevision: true`"),
            );
        }
        if target.url.is_some() {
            return Err(
                Error::new(at("url"), "is set by kinetic, not by users").with_hint("remove it")
            );
        }
        let percent = target.percent.unwrap_or(0);
        if percent > 100 {
            return Err(
                Error::new(at("percent"), format!("{percent} is more than 100"))
                    .with_hint("percentages are whole numbers from 0 to 100"),
            );
        }
        sum += percent;
        if let Some(tag) = &target.tag {
            validate_dns_label(tag).map_err(|e| e.under(&at("tag")))?;
            if !tags.insert(tag.clone()) {
                return Err(Error::new(at("tag"), format!("tag `{tag}` is used twice"))
                    .with_hint("give every tag once"));
            }
        }
    }
    if sum != 100 {
        return Err(
            Error::new("", format!("percentages add up to {sum}, not 100"))
                .with_hint("make the `percent` values of all targets add up to exactly 100"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SecurityContext;
    use crate::resource::{Resource, parse_documents};

    #[test]
    fn containers_enforce_all_but_a_custom_seccomp_profile() {
        let context: SecurityContext = serde_json::from_value(serde_json::json!({
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }))
        .unwrap();
        assert_eq!(
            context.unenforced(),
            [
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "capabilities",
                "seccompProfile"
            ]
        );
        assert_eq!(context.unenforced_in_containers(), ["seccompProfile"]);
        assert_eq!(
            context.capabilities(),
            (vec!["NET_BIND_SERVICE".to_owned()], vec!["ALL".to_owned()])
        );
        assert_eq!(SecurityContext::default().capabilities(), (vec![], vec![]));
    }

    const HEAD: &str =
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\n";

    #[test]
    fn parses_a_knative_service() {
        let yaml = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
  namespace: fns
spec:
  template:
    metadata:
      name: hello-v2
      annotations:
        autoscaling.knative.dev/min-scale: "1"
    spec:
      containerConcurrency: 1
      timeoutSeconds: 30
      containers:
        - image: ghcr.io/example/hello
          command: [python3]
          args: [hello.py]
          env: [{name: GREETING, value: hi}]
          workingDir: /srv
          ports: [{containerPort: 8080, name: http1}]
          readinessProbe: {httpGet: {path: /healthz}}
          resources: {limits: {cpu: "1"}}
  traffic:
    - latestRevision: true
      percent: 80
    - revisionName: hello-00001
      percent: 20
      tag: old
"#;
        let resources = parse_documents("svc.yaml", yaml).expect("valid");
        let Resource::Service(service) = &resources[0] else {
            panic!("not a service")
        };
        let spec = &service.spec.template.spec;
        assert_eq!(spec.container().argv(), ["python3", "hello.py"]);
        assert_eq!(spec.container().readiness_path(), Some("/healthz"));
        assert_eq!(spec.container_concurrency(), 1);
        assert_eq!(spec.timeout().as_secs(), 30);
        assert_eq!(service.traffic().len(), 2);
        let limits = spec.container().limits();
        assert_eq!((limits.memory_bytes, limits.cpu_millis), (None, Some(1000)));
        let again = Resource::from_value(resources[0].to_json()).expect("round trip");
        assert_eq!(again, resources[0]);
    }

    #[test]
    fn env_reads_a_secret_key() {
        let yaml = format!(
            "{HEAD}spec: {{template: {{spec: {{containers: [{{command: [x], env: [{{name: DB_PASSWORD, valueFrom: {{secretKeyRef: {{name: db, key: password, optional: true}}}}}}]}}]}}}}}}\n"
        );
        let resources = parse_documents("f", &yaml).unwrap();
        let Resource::Service(service) = &resources[0] else {
            panic!()
        };
        let var = &service.spec.template.spec.container().env[0];
        let selector = var
            .value_from
            .as_ref()
            .and_then(|s| s.secret_key_ref.as_ref())
            .unwrap();
        assert_eq!(
            (
                selector.name.as_str(),
                selector.key.as_str(),
                selector.optional
            ),
            ("db", "password", Some(true))
        );
        let again = Resource::from_value(resources[0].to_json()).expect("round trip");
        assert_eq!(again, resources[0]);
    }

    #[test]
    fn default_traffic_follows_the_latest_revision() {
        let yaml =
            format!("{HEAD}spec: {{template: {{spec: {{containers: [{{command: [x]}}]}}}}}}\n");
        let resources = parse_documents("f", &yaml).unwrap();
        let Resource::Service(service) = &resources[0] else {
            panic!()
        };
        let traffic = service.traffic();
        assert_eq!(traffic[0].latest_revision, Some(true));
        assert_eq!(traffic[0].percent, Some(100));
    }

    #[test]
    fn refuses_mistakes_with_location_and_hint() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "spec: {template: {spec: {containers: [{env: [{name: A, value: b}]}]}}}",
                "spec.template.spec.containers[0].command",
                "needs `command` or `image`",
            ),
            (
                "spec: {template: {spec: {containers: [{image: hello, imagePullPolicy: always}]}}}",
                "spec.template.spec.containers[0].imagePullPolicy",
                "`always` is not a pull policy",
            ),
            (
                "spec: {template: {spec: {containers: [{args: [--port, '8080']}]}}}",
                "spec.template.spec.containers[0].command",
                "is required when `args` is set without `image`",
            ),
            (
                "spec: {template: {spec: {containers: []}}}",
                "spec.template.spec.containers",
                "needs one container",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a]}, {command: [b]}]}}}",
                "spec.template.spec.containers",
                "2 containers",
            ),
            (
                "spec: {template: {spec: {containerConcurrency: 5000, containers: [{command: [a]}]}}}",
                "spec.template.spec.containerConcurrency",
                "more than 1000",
            ),
            (
                "spec: {template: {spec: {timeoutSeconds: 0, containers: [{command: [a]}]}}}",
                "spec.template.spec.timeoutSeconds",
                "outside",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: PORT, value: '1'}]}]}}}",
                "spec.template.spec.containers[0].env[0].name",
                "set by kinetic",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: X, valueFrom: {configMapKeyRef: {name: s, key: k}}}]}]}}}",
                "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef",
                "not read by kinetic",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: X, valueFrom: {}}]}]}}}",
                "spec.template.spec.containers[0].env[0].valueFrom",
                "sets 0 sources",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: X, value: v, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]}}}",
                "spec.template.spec.containers[0].env[0].valueFrom",
                "together with `value`",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: ../k}}}]}]}}}",
                "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key",
                "not a secret key",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], env: [{name: X, valueFrom: {secretKeyRef: {name: s}}}]}]}}}",
                "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef",
                "missing field `key`",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], cmd: [b]}]}}}",
                "spec.template.spec.containers[0].cmd",
                "unknown field `cmd`",
            ),
            (
                "spec: {template: {metadata: {name: other-1}, spec: {containers: [{command: [a]}]}}}",
                "spec.template.metadata.name",
                "does not start with `hello-`",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a]}]}}, traffic: [{latestRevision: true, percent: 80}]}",
                "spec.traffic",
                "add up to 80",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a]}]}}, traffic: [{percent: 100}]}",
                "spec.traffic[0]",
                "needs `revisionName`",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a]}]}}, traffic: [{latestRevision: true, percent: 50, tag: a}, {revisionName: hello-00001, percent: 50, tag: a}]}",
                "spec.traffic[1].tag",
                "used twice",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], readinessProbe: {httpGet: {path: healthz}}}]}}}",
                "spec.template.spec.containers[0].readinessProbe.httpGet.path",
                "must start with `/`",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], resources: {limits: {memory: 12MB}}}]}}}",
                "spec.template.spec.containers[0].resources.limits.memory",
                "`12MB` is not a positive memory quantity",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], resources: {limits: {cpu: 0}}}]}}}",
                "spec.template.spec.containers[0].resources.limits.cpu",
                "`0` is not a positive cpu quantity",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], securityContext: {runAsUser: -1}}]}}}",
                "spec.template.spec.containers[0].securityContext.runAsUser",
                "not a valid id",
            ),
            (
                "spec: {template: {spec: {containers: [{command: [a], securityContext: {runAsUsr: 1}}]}}}",
                "spec.template.spec.containers[0].securityContext.runAsUsr",
                "unknown field `runAsUsr`",
            ),
        ];
        for (spec, path, message) in cases {
            let error = parse_documents("bad.yaml", &format!("{HEAD}{spec}\n"))
                .expect_err("must be refused");
            assert_eq!(error.path, *path, "{spec}: {error}");
            assert!(error.message.contains(message), "{spec}: {error}");
            assert!(error.hint.is_some(), "{spec}: {error}");
            assert_eq!(error.resource.as_deref(), Some("Service default/hello"));
        }
    }
}
