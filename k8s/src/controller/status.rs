//! The status each kind shows on Kubernetes, as Knative writes it: `observedGeneration`,
//! `conditions` (the kind's own types, and `Ready` as their conjunction) and the kind's fields
//! (a Broker's address, a Trigger's subscriber URI, a source's sink URI, a Service's latest
//! revision, URL and traffic). Pure: a resource and the snapshot in, the status out.

use kinetic_api::policy::{EventPolicy, POLICY_API_VERSION, broker_audience};
use kinetic_api::{Broker, Destination, Resource, Service, Trigger};
use kinetic_outbound::destination::Resolver;
use kinetic_resources::Snapshot;
use serde_json::{Value, json};

/// One of Knative's status conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Condition {
    pub fn ready(type_: &'static str) -> Condition {
        Condition {
            type_,
            status: "True",
            reason: None,
            message: None,
        }
    }

    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            type_,
            status: "False",
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }
    }

    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            type_,
            status: "Unknown",
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }
    }
}

/// A status in the making: the kind's conditions and fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub conditions: Vec<Condition>,
    pub fields: serde_json::Map<String, Value>,
}

impl Status {
    fn field(mut self, name: &str, value: Value) -> Status {
        self.fields.insert(name.to_owned(), value);
        self
    }

    /// `Ready`: `False` with the first failed condition's reason when one failed, else `Unknown`
    /// with the first unknown one's, else `True`.
    pub fn ready(&self) -> Condition {
        let first = |status: &str| self.conditions.iter().find(|c| c.status == status);
        match first("False").or_else(|| first("Unknown")) {
            Some(condition) => Condition {
                type_: "Ready",
                ..condition.clone()
            },
            None => Condition::ready("Ready"),
        }
    }

    /// The status as the API server keeps it. A condition whose status did not change keeps the
    /// `lastTransitionTime` of `previous`; one that changed gets `now`.
    pub fn to_json(&self, generation: i64, previous: Option<&Value>, now: &str) -> Value {
        let previous_time = |type_: &str, status: &str| -> Option<Value> {
            previous?
                .get("conditions")?
                .as_array()?
                .iter()
                .find(|c| c["type"] == type_ && c["status"] == status)?
                .get("lastTransitionTime")
                .cloned()
        };
        let mut conditions: Vec<Condition> = vec![self.ready()];
        conditions.extend(self.conditions.iter().cloned());
        conditions.sort_by_key(|c| c.type_);
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|c| {
                let mut condition = json!({
                    "type": c.type_,
                    "status": c.status,
                    "lastTransitionTime": previous_time(c.type_, c.status).unwrap_or_else(|| json!(now)),
                });
                if let Some(reason) = &c.reason {
                    condition["reason"] = json!(reason);
                }
                if let Some(message) = &c.message {
                    condition["message"] = json!(message);
                }
                condition
            })
            .collect();
        let mut status = self.fields.clone();
        status.insert("observedGeneration".into(), json!(generation));
        status.insert("conditions".into(), Value::Array(conditions));
        Value::Object(status)
    }
}

/// A resource kinetic's own checks refuse (the admission webhook, when installed, stops these
/// before they are stored).
pub fn invalid(error: &kinetic_api::Error) -> Status {
    Status {
        conditions: vec![Condition::failed("Valid", "Invalid", error.to_string())],
        fields: Default::default(),
    }
}

/// The status of a readable resource.
pub fn of(resource: &Resource, snapshot: &Snapshot, resolver: &Resolver) -> Status {
    match resource {
        Resource::Broker(broker) => broker_status(broker, snapshot, resolver),
        Resource::Trigger(trigger) => trigger_status(trigger, snapshot, resolver),
        Resource::EventPolicy(policy) => Status::default().field("from", json!(policy.subjects())),
        Resource::Service(service) => service_status(
            service,
            &revisions(snapshot, &service.metadata.namespace),
            &std::collections::HashMap::new(),
        ),
        Resource::S3Source(source) => {
            sink_status(&source.spec.sink, &source.metadata.namespace, resolver)
        }
        Resource::WebhookSource(source) => {
            sink_status(&source.spec.sink, &source.metadata.namespace, resolver)
        }
        Resource::PingSource(source) => {
            sink_status(&source.spec.sink, &source.metadata.namespace, resolver)
        }
        Resource::KafkaSource(source) => {
            sink_status(&source.spec.sink, &source.metadata.namespace, resolver)
        }
        Resource::ConfigMap(_) => Status::default(),
    }
}

fn broker_status(broker: &Broker, snapshot: &Snapshot, resolver: &Resolver) -> Status {
    let namespace = &broker.metadata.namespace;
    let name = &broker.metadata.name;
    let policies: Vec<EventPolicy> = snapshot
        .typed::<EventPolicy>()
        .filter(|(stored, _)| &stored.namespace == namespace)
        .map(|(_, policy)| policy.clone())
        .collect();
    let applying: Vec<Value> =
        kinetic_auth::policy::Snapshot::build(&policies, std::slice::from_ref(broker))
            .applying(namespace, name)
            .iter()
            .map(|policy| json!({"apiVersion": POLICY_API_VERSION, "name": policy.name}))
            .collect();
    let url = format!(
        "{}/{namespace}/{name}",
        resolver.ingress_url.trim_end_matches('/')
    );
    let audience = broker_audience(namespace, name);
    Status {
        conditions: vec![Condition::ready("Addressable")],
        fields: Default::default(),
    }
    .field(
        "address",
        json!({"name": "http", "url": url, "audience": audience}),
    )
    .field("policies", Value::Array(applying))
}

fn trigger_status(trigger: &Trigger, snapshot: &Snapshot, resolver: &Resolver) -> Status {
    let namespace = &trigger.metadata.namespace;
    let mut status = Status::default();
    let broker = snapshot.get::<Broker>(namespace, &trigger.spec.broker);
    status.conditions.push(match broker {
        Some(_) => Condition::ready("BrokerReady"),
        None => Condition::failed(
            "BrokerReady",
            "BrokerDoesNotExist",
            format!("Broker \"{}\" does not exist", trigger.spec.broker),
        ),
    });
    match resolver.resolve(&trigger.spec.subscriber, namespace) {
        Ok(uri) => {
            status
                .conditions
                .push(Condition::ready("SubscriberResolved"));
            status.fields.insert("subscriberUri".into(), json!(uri));
        }
        Err(why) => status.conditions.push(Condition::failed(
            "SubscriberResolved",
            "Unable to get the Subscriber's URI",
            why,
        )),
    }
    let dead_letter_sink = trigger
        .spec
        .delivery
        .as_ref()
        .and_then(|delivery| delivery.dead_letter_sink.as_ref())
        .or_else(|| {
            broker?
                .1
                .spec
                .delivery
                .as_ref()
                .and_then(|delivery| delivery.dead_letter_sink.as_ref())
        });
    status.conditions.push(match dead_letter_sink {
        None => Condition {
            reason: Some("DeadLetterSinkNotConfigured".to_owned()),
            message: Some("No dead letter sink is configured.".to_owned()),
            ..Condition::ready("DeadLetterSinkResolved")
        },
        Some(sink) => match resolver.resolve(sink, namespace) {
            Ok(uri) => {
                status.fields.insert("deadLetterSinkUri".into(), json!(uri));
                Condition::ready("DeadLetterSinkResolved")
            }
            Err(why) => Condition::failed(
                "DeadLetterSinkResolved",
                "Unable to get the dead letter sink's URI",
                why,
            ),
        },
    });
    status
}

fn sink_status(sink: &Destination, namespace: &str, resolver: &Resolver) -> Status {
    match resolver.resolve(sink, namespace) {
        Ok(uri) => Status {
            conditions: vec![Condition::ready("SinkProvided")],
            fields: Default::default(),
        }
        .field("sinkUri", json!(uri)),
        Err(why) => Status {
            conditions: vec![Condition::failed("SinkProvided", "NotFound", why)],
            fields: Default::default(),
        },
    }
}

/// What a Revision's `Ready` condition says (written by the autoscaler that runs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionReady {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl RevisionReady {
    /// The `Ready` condition of a Revision object's status, if it has one.
    pub fn of(object: &Value) -> Option<RevisionReady> {
        let ready = object
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?;
        Some(RevisionReady {
            status: ready["status"].as_str()?.to_owned(),
            reason: ready["reason"].as_str().map(str::to_owned),
            message: ready["message"].as_str().map(str::to_owned),
        })
    }
}

/// A Service's status from its revisions and what each one's `Ready` says (`readiness`, by
/// name; a revision missing there is not known to be ready): `ConfigurationsReady` follows its
/// newest revision, `RoutesReady` every revision its traffic names, `latestRevision` targets
/// route to the newest ready revision. Never falsely `True`.
pub fn service_status(
    service: &Service,
    revisions: &[kinetic_api::Revision],
    readiness: &std::collections::HashMap<String, RevisionReady>,
) -> Status {
    let namespace = &service.metadata.namespace;
    let name = &service.metadata.name;
    let latest = kinetic_serving::revision::latest(name, revisions);
    let is_ready = |revision: &str| readiness.get(revision).is_some_and(|r| r.status == "True");
    let latest_ready = revisions
        .iter()
        .filter(|r| r.service() == name && is_ready(&r.metadata.name))
        .max_by_key(|r| kinetic_serving::revision::generation(r))
        .map(|r| r.metadata.name.clone());
    let mut status = Status::default();
    match latest {
        Some(latest) => {
            let revision = &latest.metadata.name;
            status
                .fields
                .insert("latestCreatedRevisionName".into(), json!(revision));
            status.conditions.push(match readiness.get(revision) {
                Some(ready) if ready.status == "True" => Condition::ready("ConfigurationsReady"),
                Some(ready) if ready.status == "False" => Condition::failed(
                    "ConfigurationsReady",
                    "RevisionFailed",
                    format!(
                        "Revision \"{revision}\" failed with message: {}.",
                        ready.message.as_deref().unwrap_or("no message")
                    ),
                ),
                _ => Condition::unknown(
                    "ConfigurationsReady",
                    "Deploying",
                    format!(
                        "Revision \"{revision}\" is not ready yet (kinetic-autoscaler runs it)"
                    ),
                ),
            });
        }
        None => status.conditions.push(Condition::unknown(
            "ConfigurationsReady",
            "RevisionMissing",
            "The revision of this generation is not created yet",
        )),
    }
    if let Some(ready) = &latest_ready {
        status
            .fields
            .insert("latestReadyRevisionName".into(), json!(ready));
    }
    let mut routed = Vec::new();
    let traffic: Vec<Value> = service
        .traffic()
        .iter()
        .map(|target| {
            let revision = match &target.revision_name {
                Some(named) => Some(named.clone()),
                None => latest_ready
                    .clone()
                    .or_else(|| latest.map(|l| l.metadata.name.clone())),
            };
            let mut entry = json!({"percent": target.percent.unwrap_or(0)});
            if let Some(revision) = revision {
                routed.push(revision.clone());
                entry["revisionName"] = json!(revision);
            }
            if target.latest_revision == Some(true) {
                entry["latestRevision"] = json!(true);
            }
            if let Some(tag) = &target.tag {
                entry["tag"] = json!(tag);
            }
            entry
        })
        .collect();
    let failed = routed.iter().find(|r| {
        readiness
            .get(r.as_str())
            .is_some_and(|ready| ready.status == "False")
    });
    let waiting = routed.iter().find(|r| !is_ready(r));
    status.conditions.push(match (failed, waiting) {
        (Some(revision), _) => Condition::failed(
            "RoutesReady",
            "RevisionFailed",
            format!("Revision \"{revision}\" that the traffic names failed"),
        ),
        (None, Some(revision)) => Condition::unknown(
            "RoutesReady",
            "RevisionMissing",
            format!("Revision \"{revision}\" that the traffic names is not ready yet"),
        ),
        (None, None) => Condition::ready("RoutesReady"),
    });
    status
        .field(
            "url",
            json!(format!("http://{name}.{namespace}.svc.cluster.local")),
        )
        .field("traffic", Value::Array(traffic))
}

/// The Revisions of `namespace` in the snapshot.
pub fn revisions(snapshot: &Snapshot, namespace: &str) -> Vec<kinetic_api::Revision> {
    snapshot
        .typed::<kinetic_api::Revision>()
        .filter(|(stored, _)| stored.namespace == namespace)
        .map(|(_, revision)| revision.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_the_first_false_then_the_first_unknown_then_true() {
        let mut status = Status {
            conditions: vec![
                Condition::ready("A"),
                Condition::unknown("B", "Waiting", "b"),
                Condition::failed("C", "Broken", "c"),
            ],
            fields: Default::default(),
        };
        assert_eq!(status.ready(), Condition::failed("Ready", "Broken", "c"));
        status.conditions.pop();
        assert_eq!(status.ready(), Condition::unknown("Ready", "Waiting", "b"));
        status.conditions.pop();
        assert_eq!(status.ready(), Condition::ready("Ready"));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let before = Status {
            conditions: vec![Condition::ready("A"), Condition::ready("B")],
            fields: Default::default(),
        }
        .to_json(1, None, "2026-01-01T00:00:00Z");
        let after = Status {
            conditions: vec![Condition::ready("A"), Condition::failed("B", "Broken", "b")],
            fields: Default::default(),
        }
        .to_json(2, Some(&before), "2026-02-02T00:00:00Z");
        let time = |status: &Value, type_: &str| {
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == type_)
                .unwrap()["lastTransitionTime"]
                .clone()
        };
        assert_eq!(time(&after, "A"), "2026-01-01T00:00:00Z");
        assert_eq!(time(&after, "B"), "2026-02-02T00:00:00Z");
        assert_eq!(time(&after, "Ready"), "2026-02-02T00:00:00Z");
        assert_eq!(after["observedGeneration"], 2);
        // The same status written again is equal, so it is not patched.
        let again = Status {
            conditions: vec![Condition::ready("A"), Condition::failed("B", "Broken", "b")],
            fields: Default::default(),
        }
        .to_json(2, Some(&after), "2026-03-03T00:00:00Z");
        assert_eq!(again, after);
    }
}
