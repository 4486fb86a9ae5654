//! The CustomResourceDefinitions of the kinds kinetic implements: Knative's Broker, Trigger,
//! EventPolicy, Service, Configuration, Revision, Route, PingSource and KafkaSource in their own
//! groups and versions, and kinetic's S3Source and WebhookSource.
//!
//! Each `spec` schema is generated from the Rust type kinetic reads the kind with (schemars,
//! rewritten to Kubernetes' structural-schema rules as kube's derive does), so the API server
//! refuses what kinetic could not read; what a schema cannot say (a CESQL expression, a revision
//! name's prefix) is left to kinetic's own validation. `status` follows Knative's duck type
//! (`observedGeneration`, `conditions` with `Ready` and the per-kind types), keeping the per-kind
//! fields (`address`, `url`, `traffic`, …) as they are. Printer columns follow Knative's.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kinetic_api::eventing::{BrokerSpec, TriggerSpec};
use kinetic_api::policy::EventPolicySpec;
use kinetic_api::serving::{RevisionSpec, RevisionTemplate, ServiceSpec, TrafficTarget};
use kinetic_api::sources::{KafkaSourceSpec, PingSourceSpec, S3SourceSpec, WebhookSourceSpec};
use schemars::JsonSchema;
use serde_json::{Value, json};

/// A Configuration's spec (Knative's): the template its revisions are made from.
#[derive(JsonSchema)]
#[allow(dead_code)] // Only its schema is used.
struct ConfigurationSpec {
    /// What each revision runs; a change here creates a new revision.
    template: RevisionTemplate,
}

/// A Route's spec (Knative's): how requests are split between revisions.
#[derive(JsonSchema)]
#[allow(dead_code)] // Only its schema is used.
struct RouteSpec {
    traffic: Vec<TrafficTarget>,
}

/// What one CRD says beyond its spec's schema.
struct Definition {
    kind: &'static str,
    api_version: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    /// Whether a resource without `spec` is valid (a Broker's is optional).
    spec_required: bool,
    spec: fn() -> Value,
    /// `(name, type, JSONPath)` beside Ready, Reason and Age, which every kind has.
    columns: &'static [(&'static str, &'static str, &'static str)],
}

fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    structural(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
    }
    schema
}

/// What schemars writes that a structural schema may not hold: `additionalProperties: false` beside
/// `properties` (the API server prunes unknown fields anyway), `default`s (kinetic applies its
/// own when it reads a resource), open schemas (`true`, `{}`: any JSON, e.g. a CloudEvent's data
/// template), which Kubernetes spells `x-kubernetes-preserve-unknown-fields`.
fn structural(schema: &mut Value) {
    if schema == &Value::Bool(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
        *schema = json!({"x-kubernetes-preserve-unknown-fields": true});
        return;
    }
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("default");
    object.remove("$schema");
    object.remove("$defs");
    // A type that contains itself (a Trigger filter's `all`, `any`, `not`) cannot be inlined:
    // Kubernetes keeps such nesting as it is, as Knative's own CRDs do.
    if object.remove("$ref").is_some() {
        object.insert("type".into(), json!("object"));
        object.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        return;
    }
    let described = [
        "type",
        "properties",
        "items",
        "anyOf",
        "oneOf",
        "allOf",
        "enum",
    ]
    .iter()
    .any(|key| object.contains_key(*key));
    if !described {
        // Any JSON (`serde_json::Value`), maybe with a description or `nullable`.
        object.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        return;
    }
    if object.contains_key("properties")
        && object.get("additionalProperties") == Some(&Value::Bool(false))
    {
        object.remove("additionalProperties");
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for property in properties.values_mut() {
            structural(property);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(inner) = object.get_mut(key)
            && inner.is_object()
        {
            structural(inner);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = object.get_mut(key) {
            for branch in branches {
                structural(branch);
            }
        }
    }
}

/// Knative's status duck type: `observedGeneration` and `conditions`, with what else each kind
/// reports kept as it is.
fn status_schema() -> Value {
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "observedGeneration": {
                "description": "The generation of the spec this status describes.",
                "type": "integer",
                "format": "int64"
            },
            "conditions": {
                "description": "`Ready` and the kind's own condition types, as Knative's.",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "severity": {"type": "string"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "lastTransitionTime": {"type": "string"}
                    }
                }
            },
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

const EVENTING: &[&str] = &["all", "knative", "eventing"];
const SERVING: &[&str] = &["all", "knative", "serving"];
const SOURCES: &[&str] = &["all", "knative", "sources"];

fn definitions() -> Vec<Definition> {
    vec![
        Definition {
            kind: "Broker",
            api_version: "eventing.knative.dev/v1",
            plural: "brokers",
            short_names: &[],
            categories: EVENTING,
            spec_required: false,
            spec: schema_of::<BrokerSpec>,
            columns: &[("URL", "string", ".status.address.url")],
        },
        Definition {
            kind: "Trigger",
            api_version: "eventing.knative.dev/v1",
            plural: "triggers",
            short_names: &[],
            categories: EVENTING,
            spec_required: true,
            spec: schema_of::<TriggerSpec>,
            columns: &[
                ("Broker", "string", ".spec.broker"),
                ("Subscriber_URI", "string", ".status.subscriberUri"),
            ],
        },
        Definition {
            kind: "EventPolicy",
            api_version: "eventing.knative.dev/v1alpha1",
            plural: "eventpolicies",
            short_names: &[],
            categories: EVENTING,
            spec_required: true,
            spec: schema_of::<EventPolicySpec>,
            columns: &[],
        },
        Definition {
            kind: "Service",
            api_version: "serving.knative.dev/v1",
            plural: "services",
            short_names: &["kservice", "ksvc"],
            categories: SERVING,
            spec_required: true,
            spec: schema_of::<ServiceSpec>,
            columns: &[
                ("URL", "string", ".status.url"),
                (
                    "LatestCreated",
                    "string",
                    ".status.latestCreatedRevisionName",
                ),
                ("LatestReady", "string", ".status.latestReadyRevisionName"),
            ],
        },
        Definition {
            kind: "Configuration",
            api_version: "serving.knative.dev/v1",
            plural: "configurations",
            short_names: &["config", "cfg"],
            categories: SERVING,
            spec_required: true,
            spec: schema_of::<ConfigurationSpec>,
            columns: &[
                (
                    "LatestCreated",
                    "string",
                    ".status.latestCreatedRevisionName",
                ),
                ("LatestReady", "string", ".status.latestReadyRevisionName"),
            ],
        },
        Definition {
            kind: "Revision",
            api_version: "serving.knative.dev/v1",
            plural: "revisions",
            short_names: &["rev"],
            categories: SERVING,
            spec_required: true,
            spec: schema_of::<RevisionSpec>,
            columns: &[
                (
                    "Config Name",
                    "string",
                    ".metadata.labels['serving\\.knative\\.dev/configuration']",
                ),
                ("Actual Replicas", "integer", ".status.actualReplicas"),
                ("Desired Replicas", "integer", ".status.desiredReplicas"),
            ],
        },
        Definition {
            kind: "Route",
            api_version: "serving.knative.dev/v1",
            plural: "routes",
            short_names: &["rt"],
            categories: SERVING,
            spec_required: false,
            spec: schema_of::<RouteSpec>,
            columns: &[("URL", "string", ".status.url")],
        },
        Definition {
            kind: "PingSource",
            api_version: "sources.knative.dev/v1",
            plural: "pingsources",
            short_names: &[],
            categories: SOURCES,
            spec_required: true,
            spec: schema_of::<PingSourceSpec>,
            columns: &[
                ("Sink", "string", ".status.sinkUri"),
                ("Schedule", "string", ".spec.schedule"),
            ],
        },
        Definition {
            kind: "KafkaSource",
            api_version: "sources.knative.dev/v1beta1",
            plural: "kafkasources",
            short_names: &[],
            categories: SOURCES,
            spec_required: true,
            spec: schema_of::<KafkaSourceSpec>,
            columns: &[
                ("Topics", "string", ".spec.topics"),
                ("BootstrapServers", "string", ".spec.bootstrapServers"),
            ],
        },
        Definition {
            kind: "S3Source",
            api_version: "sources.kinetic.dev/v1alpha1",
            plural: "s3sources",
            short_names: &[],
            categories: SOURCES,
            spec_required: true,
            spec: schema_of::<S3SourceSpec>,
            columns: &[
                ("Bucket", "string", ".spec.bucket"),
                ("Sink", "string", ".status.sinkUri"),
            ],
        },
        Definition {
            kind: "WebhookSource",
            api_version: "sources.kinetic.dev/v1alpha1",
            plural: "webhooksources",
            short_names: &[],
            categories: SOURCES,
            spec_required: true,
            spec: schema_of::<WebhookSourceSpec>,
            columns: &[("Sink", "string", ".status.sinkUri")],
        },
    ]
}

fn crd(definition: &Definition) -> CustomResourceDefinition {
    let (group, version) = definition
        .api_version
        .split_once('/')
        .expect("a CRD's apiVersion has a group");
    let mut properties = json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": (definition.spec)(),
        "status": status_schema(),
    });
    if let Some(spec) = properties["spec"].as_object_mut() {
        spec.entry("type").or_insert(json!("object"));
    }
    // As Knative's webhook: a Trigger keeps its Broker (the controller binds its cursor to that
    // Broker's log once). Checked by the API server itself, with or without an admission webhook.
    if definition.kind == "Trigger"
        && let Some(broker) = properties.pointer_mut("/spec/properties/broker")
    {
        broker["x-kubernetes-validations"] = json!([{
            "rule": "self == oldSelf",
            "message": "spec.broker is immutable: to move a Trigger to another Broker, delete it and create it again",
        }]);
    }
    let mut schema = json!({"type": "object", "properties": properties.take()});
    if definition.spec_required {
        schema["required"] = json!(["spec"]);
    }
    let schema: JSONSchemaProps =
        serde_json::from_value(schema).expect("the generated schema is a JSONSchemaProps");
    let mut columns: Vec<CustomResourceColumnDefinition> = definition
        .columns
        .iter()
        .map(|(name, kind, path)| column(name, kind, path))
        .collect();
    columns.push(column(
        "Ready",
        "string",
        ".status.conditions[?(@.type==\"Ready\")].status",
    ));
    columns.push(column(
        "Reason",
        "string",
        ".status.conditions[?(@.type==\"Ready\")].reason",
    ));
    columns.push(column("Age", "date", ".metadata.creationTimestamp"));
    let singular = definition.kind.to_ascii_lowercase();
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{group}", definition.plural)),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "kinetic".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: group.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: definition.kind.to_owned(),
                list_kind: Some(format!("{}List", definition.kind)),
                plural: definition.plural.to_owned(),
                singular: Some(singular),
                short_names: (!definition.short_names.is_empty()).then(|| {
                    definition
                        .short_names
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                }),
                categories: Some(
                    definition
                        .categories
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect(),
                ),
            },
            scope: "Namespaced".to_owned(),
            versions: vec![CustomResourceDefinitionVersion {
                name: version.to_owned(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(columns),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

fn column(name: &str, kind: &str, path: &str) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.to_owned(),
        type_: kind.to_owned(),
        json_path: path.to_owned(),
        ..CustomResourceColumnDefinition::default()
    }
}

/// Every CRD, in a stable order (eventing, serving, sources).
pub fn all() -> Vec<CustomResourceDefinition> {
    definitions().iter().map(crd).collect()
}

/// Every CRD as JSON objects with `apiVersion` and `kind`, ready to be written as YAML documents.
pub fn documents() -> Vec<Value> {
    all()
        .into_iter()
        .map(|crd| {
            let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
            if let Some(object) = value.as_object_mut() {
                let mut with_type = serde_json::Map::new();
                with_type.insert("apiVersion".into(), json!("apiextensions.k8s.io/v1"));
                with_type.insert("kind".into(), json!("CustomResourceDefinition"));
                with_type.extend(std::mem::take(object));
                *object = with_type;
            }
            value
        })
        .collect()
}

/// Every CRD as one multi-document YAML text: what `kinetic crds` prints and
/// `deploy/base/crds.yaml` holds.
pub fn yaml() -> String {
    let documents = documents();
    let text = serde_saphyr::to_string_multiple(&documents).expect("CRDs serialize as YAML");
    format!(
        "# kinetic's CustomResourceDefinitions, generated by `kinetic crds` from the Rust types\n# kinetic reads these kinds with. Do not edit: run `kinetic crds > deploy/base/crds.yaml`.\n{text}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triggers_broker_is_immutable_on_the_api_server() {
        let trigger = all()
            .into_iter()
            .find(|crd| crd.spec.names.kind == "Trigger")
            .unwrap();
        let schema = serde_json::to_value(&trigger.spec.versions[0].schema).unwrap();
        let rules = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["broker"]["x-kubernetes-validations"];
        assert_eq!(rules[0]["rule"], "self == oldSelf", "{schema}");
    }

    /// The YAML reads back as the same objects, and the shipped file is what `kinetic crds`
    /// prints now.
    #[test]
    fn the_yaml_reads_back_and_deploy_holds_it() {
        let text = yaml();
        let read: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(read, documents());
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/base/crds.yaml"
        ))
        .unwrap_or_default();
        assert!(
            shipped == text,
            "deploy/base/crds.yaml is not what `kinetic crds` prints; run `kinetic crds > deploy/base/crds.yaml`"
        );
    }

    /// Every kind kinetic reads has a CRD, under the apiVersion kinetic reads it with.
    #[test]
    fn every_kind_kinetic_reads_has_its_crd() {
        let crds = all();
        for &kind in kinetic_api::Kind::ALL {
            if kind == kinetic_api::Kind::ConfigMap {
                continue;
            }
            let (group, version) = kind.api_version().split_once('/').unwrap();
            let found = crds
                .iter()
                .find(|crd| crd.spec.names.kind == kind.as_str())
                .unwrap_or_else(|| panic!("no CRD for {kind}"));
            assert_eq!(found.spec.group, group);
            assert_eq!(found.spec.versions[0].name, version);
            assert_eq!(found.spec.names.plural, kind.plural());
            assert_eq!(
                found.metadata.name.as_deref(),
                Some(format!("{}.{group}", kind.plural()).as_str())
            );
        }
    }

    /// What Kubernetes requires of a structural schema, checked on every generated one: every
    /// node says its type (or keeps unknown fields), nothing is a `$ref`, and no `properties` sit
    /// beside `additionalProperties`.
    #[test]
    fn schemas_are_structural() {
        fn check(path: &str, schema: &Value, problems: &mut Vec<String>) {
            let Some(object) = schema.as_object() else {
                problems.push(format!("{path}: not an object"));
                return;
            };
            if object.contains_key("$ref") {
                problems.push(format!("{path}: $ref"));
            }
            let preserves =
                object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            let typed =
                object.contains_key("type") || object.contains_key("x-kubernetes-int-or-string");
            let composed = ["anyOf", "oneOf", "allOf"]
                .iter()
                .any(|k| object.contains_key(*k));
            if !typed && !preserves && !composed {
                problems.push(format!("{path}: no type"));
            }
            if object.contains_key("properties") && object.contains_key("additionalProperties") {
                problems.push(format!("{path}: properties beside additionalProperties"));
            }
            if let Some(Value::Object(properties)) = object.get("properties") {
                for (name, property) in properties {
                    check(&format!("{path}.{name}"), property, problems);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(inner) = object.get(key).filter(|v| v.is_object()) {
                    check(&format!("{path}[{key}]"), inner, problems);
                }
            }
        }
        let mut problems = Vec::new();
        for crd in documents() {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            check(&kind, schema, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn field_docs_become_descriptions_and_columns_follow_knative() {
        let crds = documents();
        let trigger = crds
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == "Trigger")
            .unwrap();
        let spec =
            &trigger["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["broker"]["type"], "string");
        assert!(
            spec["required"]
                .as_array()
                .unwrap()
                .contains(&json!("broker"))
        );
        let columns: Vec<&str> = trigger["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Broker", "Subscriber_URI", "Ready", "Reason", "Age"]
        );
        let service = crds
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == "Service")
            .unwrap();
        assert_eq!(
            service["spec"]["names"]["shortNames"],
            json!(["kservice", "ksvc"])
        );
        assert_eq!(
            service["spec"]["versions"][0]["subresources"]["status"],
            json!({})
        );
    }
}
