//! What the dispatcher knows of each trigger: its compiled filter, effective delivery policy and
//! resolved addresses ([`Plan`]), rebuilt from the stored resources whenever they change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kinetic_api::Kind;
use kinetic_api::eventing::{BrokerClass, DeliveryOrder};
use kinetic_api::{Broker, Destination, Trigger};
use kinetic_outbound::destination::Resolver;
use kinetic_resources::Snapshot;
use kinetic_store::{StoredResource, TriggerRef};

use crate::disable::DisabledTable;
use crate::filter::Filter;
use crate::policy::{Defaults, DeliveryPolicy};
use kinetic_outbound::sender::Target;
use kinetic_outbound::signing::Signer;

/// Everything needed to deliver one trigger's events.
#[derive(Debug)]
pub struct Plan {
    pub trigger: TriggerRef,
    /// `namespace/name`, for logs and metrics.
    pub label: String,
    pub generation: i64,
    pub filter: Filter,
    pub policy: DeliveryPolicy,
    pub order: DeliveryOrder,
    pub subscriber: Target,
    pub dead_letter_sink: Option<Target>,
    /// Signs every delivery (subscriber and dead-letter sink) when the delivery spec says so.
    pub signer: Option<Signer>,
    /// Where the broker keeps its events: the store's log (read through cursors) or a Kafka topic
    /// (read through a consumer group).
    pub class: BrokerClass,
    /// When the trigger was created: a Kafka-class trigger delivers events accepted from then on
    /// (0 when unknown: everything the topic holds).
    pub created_at: kinetic_store::Millis,
}

/// The plans built from the stored resources.
pub struct Plans {
    /// By trigger uid. A disabled trigger ([`crate::disable`]) has a plan, so that its dead letters
    /// still reach their sink, but nothing delivers to its subscriber.
    pub ready: HashMap<String, Arc<Plan>>,
    /// Triggers that cannot run (missing broker, unresolvable subscriber, unreadable signing
    /// secret, disabled): `(namespace/name, why)`.
    pub problems: Vec<(String, String)>,
    /// Why `config-br-defaults` was not applied, when it does not read.
    pub config_problem: Option<String>,
}

/// Builds the plan of every trigger of `resources` that can run; one whose body cannot be read is
/// a problem, never a deletion.
pub fn build_plans(
    resources: &Snapshot,
    resolver: &Resolver,
    defaults: &Defaults,
    disabled: &DisabledTable,
) -> Plans {
    let brokers: HashMap<(&str, &str), &Broker> = resources
        .typed::<Broker>()
        .map(|(stored, broker)| ((stored.namespace.as_str(), stored.name.as_str()), broker))
        .collect();
    let (configured, config_problem) = defaults.configured(resources);
    let mut plans = HashMap::new();
    let mut problems = Vec::new();
    for stored in resources.stored(Kind::Trigger) {
        let label = format!("{}/{}", stored.namespace, stored.name);
        let Some((_, trigger)) = resources.get::<Trigger>(&stored.namespace, &stored.name) else {
            let why = resources
                .unreadable()
                .iter()
                .find(|u| {
                    u.kind == "Trigger" && u.namespace == stored.namespace && u.name == stored.name
                })
                .map_or_else(String::new, |u| u.problem.clone());
            problems.push((label, format!("stored trigger is unreadable: {why}")));
            continue;
        };
        let defaults = configured.for_namespace(&stored.namespace);
        match plan_of(stored, trigger, &brokers, resolver, &defaults) {
            Ok(plan) => {
                if let Some(why) = disabled.get(&stored.uid, stored.generation) {
                    problems.push((label, why.reason()));
                }
                plans.insert(stored.uid.clone(), Arc::new(plan));
            }
            Err(problem) => problems.push((label, problem)),
        }
    }
    Plans {
        ready: plans,
        problems,
        config_problem,
    }
}

fn plan_of(
    stored: &StoredResource,
    trigger: &Trigger,
    brokers: &HashMap<(&str, &str), &Broker>,
    resolver: &Resolver,
    defaults: &Defaults,
) -> Result<Plan, String> {
    let namespace = &trigger.metadata.namespace;
    let broker = brokers
        .get(&(namespace.as_str(), trigger.spec.broker.as_str()))
        .ok_or_else(|| {
            format!(
                "broker `{namespace}/{}` does not exist",
                trigger.spec.broker
            )
        })?;
    let filter = Filter::compile(trigger).map_err(|error| error.to_string())?;
    let order = trigger
        .delivery_order()
        .map_err(|error| error.to_string())?;
    let policy = DeliveryPolicy::resolve(
        trigger.spec.delivery.as_ref(),
        broker.spec.delivery.as_ref(),
        defaults,
    );
    // The trigger's identity (Knative's OIDC subject): what its deliveries' tokens say.
    let identity = kinetic_api::policy::subject_of(
        &trigger.api_version,
        "Trigger",
        namespace,
        &trigger.metadata.name,
    );
    let target = |destination: &Destination| -> Result<Target, String> {
        Target::new(resolver.resolve(destination, namespace)?)
            .with_identity(
                kinetic_api::policy::destination_audience(destination, namespace),
                &identity,
            )
            .with_ca_certs(destination.ca_certs.as_deref())
    };
    let replies = trigger.replies().map_err(|error| error.to_string())?;
    let subscriber = target(&trigger.spec.subscriber)?.with_replies(replies);
    let sink = trigger
        .spec
        .delivery
        .as_ref()
        .and_then(|d| d.dead_letter_sink.as_ref())
        .or_else(|| {
            broker
                .spec
                .delivery
                .as_ref()
                .and_then(|d| d.dead_letter_sink.as_ref())
        });
    let dead_letter_sink = sink
        .map(target)
        .transpose()
        .map_err(|error| format!("deadLetterSink: {error}"))?;
    let signer = policy
        .signing
        .as_ref()
        .map(|signing| Signer::read(&signing.secrets))
        .transpose()
        .map_err(|error| format!("delivery.signing: {}", error_chain(&error)))?;
    Ok(Plan {
        trigger: TriggerRef {
            uid: stored.uid.clone(),
            namespace: namespace.clone(),
            name: trigger.metadata.name.clone(),
            broker: format!("{namespace}/{}", trigger.spec.broker),
        },
        label: format!("{namespace}/{}", trigger.metadata.name),
        generation: stored.generation,
        filter,
        policy,
        order,
        subscriber,
        dead_letter_sink,
        signer,
        class: broker.class_kind().unwrap_or(BrokerClass::Store),
        created_at: kinetic_store::created_at(&stored.uid).unwrap_or(0),
    })
}

/// An error with its causes, for people: `the file … cannot be read: No such file or directory`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Why triggers are not ready, by `namespace/name`, as the dispatcher last found them; for the API.
#[derive(Clone, Default)]
pub struct ProblemTable {
    problems: Arc<RwLock<HashMap<String, String>>>,
}

impl ProblemTable {
    pub fn get(&self, label: &str) -> Option<String> {
        self.problems.read().ok()?.get(label).cloned()
    }

    pub fn replace(&self, problems: HashMap<String, String>) {
        if let Ok(mut current) = self.problems.write() {
            *current = problems;
        }
    }
}

/// The current plans, shared by the dispatcher's tasks.
#[derive(Clone, Default)]
pub struct PlanTable {
    plans: Arc<RwLock<HashMap<String, Arc<Plan>>>>,
}

impl PlanTable {
    pub fn get(&self, uid: &str) -> Option<Arc<Plan>> {
        self.plans.read().ok()?.get(uid).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Plan>> {
        self.plans
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn replace(&self, plans: HashMap<String, Arc<Plan>>) {
        if let Ok(mut current) = self.plans.write() {
            *current = plans;
        }
    }
}

/// Keeps `problems` as a dispatcher would find them, without delivering: for a process that
/// serves the API beside dispatchers of their own (`kinetic broker`), so `kinetic get triggers`
/// says whether each trigger can run and why not. The same planner, on every new snapshot and
/// every `interval` (signing secrets are read again); whether a trigger was disabled by a 410
/// is read from the store by the API itself.
pub async fn watch_problems(
    mut resources: kinetic_resources::Watch,
    resolver: Resolver,
    defaults: Defaults,
    problems: ProblemTable,
    interval: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let disabled = DisabledTable::default();
    loop {
        let latest = tokio::select! {
            () = cancel.cancelled() => return,
            latest = resources.next_pass(interval) => latest,
        };
        let Some(latest) = latest else {
            continue;
        };
        let plans = build_plans(&latest, &resolver, &defaults, &disabled);
        problems.replace(plans.problems.into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_api::KReference;
    use std::time::Duration;

    #[test]
    fn resolves_service_refs_to_the_gateway() {
        let service = Destination {
            reference: Some(KReference {
                kind: "Service".into(),
                name: "thumbs".into(),
                namespace: None,
                api_version: Some("serving.knative.dev/v1".into()),
            }),
            uri: Some("/events".into()),
            ca_certs: None,
            audience: None,
        };
        let mut resolver = Resolver {
            ingress_url: "http://127.0.0.1:8080".into(),
            gateway: None,
        };
        assert!(
            resolver
                .resolve(&service, "ns")
                .unwrap_err()
                .contains("gateway")
        );
        resolver.gateway = Some(kinetic_outbound::sender::GatewayAddress {
            domain: "kinetic.localhost".into(),
            address: "127.0.0.1:8081".parse().unwrap(),
        });
        assert_eq!(
            resolver.resolve(&service, "ns").unwrap(),
            "http://thumbs.ns.kinetic.localhost:8081/events"
        );
    }

    #[test]
    fn resolves_uris_and_broker_refs() {
        let resolver = Resolver {
            gateway: None,
            ingress_url: "http://127.0.0.1:8080/".into(),
        };
        let uri = Destination {
            reference: None,
            uri: Some("http://x/y".into()),
            ca_certs: None,
            audience: None,
        };
        assert_eq!(resolver.resolve(&uri, "ns").unwrap(), "http://x/y");
        let broker = Destination {
            reference: Some(KReference {
                kind: "Broker".into(),
                name: "b".into(),
                namespace: None,
                api_version: None,
            }),
            uri: None,
            ..uri.clone()
        };
        assert_eq!(
            resolver.resolve(&broker, "ns").unwrap(),
            "http://127.0.0.1:8080/ns/b"
        );
        let with_path = Destination {
            uri: Some("/extra".into()),
            ..broker.clone()
        };
        assert_eq!(
            resolver.resolve(&with_path, "ns").unwrap(),
            "http://127.0.0.1:8080/ns/b/extra"
        );
        let mut service = broker;
        if let Some(reference) = service.reference.as_mut() {
            reference.kind = "Service".into();
        }
        assert!(
            resolver
                .resolve(&service, "ns")
                .unwrap_err()
                .contains("Service")
        );
    }

    fn stored(kind: &str, name: &str, generation: i64, body: serde_json::Value) -> StoredResource {
        StoredResource {
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation,
            body,
            updated_at: 0,
        }
    }

    fn trigger(name: &str, generation: i64, delivery: serde_json::Value) -> StoredResource {
        stored(
            "Trigger",
            name,
            generation,
            serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Trigger",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "broker": "default",
                    "subscriber": {"uri": "https://hooks.example/in"},
                    "delivery": delivery,
                },
            }),
        )
    }

    #[test]
    fn unreadable_signing_secrets_and_disabled_triggers_are_problems() {
        let broker = stored(
            "Broker",
            "default",
            1,
            serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "metadata": {"name": "default", "namespace": "default"},
            }),
        );
        let missing = trigger(
            "missing",
            1,
            serde_json::json!({"signing": {"standardWebhooks": {"secrets": [{"env": "KINETIC_TEST_SURELY_UNSET_SECRET"}]}}}),
        );
        let absent_file = trigger(
            "absent",
            1,
            serde_json::json!({"signing": {"standardWebhooks": {"secrets": [{"file": "/nonexistent/kinetic/secret"}]}}}),
        );
        let gone = trigger("gone", 2, serde_json::json!({}));
        let broken = stored(
            "Trigger",
            "broken",
            1,
            serde_json::json!({"spec": {"broker": 7}}),
        );
        let resolver = Resolver {
            ingress_url: "http://127.0.0.1:8080".into(),
            gateway: None,
        };
        let disabled = DisabledTable::default();
        disabled.mark(crate::disable::Disabled {
            uid: "uid-gone".into(),
            generation: 2,
            status: 410,
            url: "https://hooks.example/in".into(),
            at: 0,
            event_id: "e".into(),
            released_at: None,
        });
        let plans = build_plans(
            &Snapshot::new(vec![
                missing,
                absent_file,
                gone.clone(),
                broken,
                broker.clone(),
            ]),
            &resolver,
            &Defaults::default(),
            &disabled,
        );
        let problems: HashMap<String, String> = plans.problems.into_iter().collect();
        assert_eq!(
            problems["default/missing"],
            "delivery.signing: signing secret 0: environment variable `KINETIC_TEST_SURELY_UNSET_SECRET` is not set or not UTF-8"
        );
        assert!(
            problems["default/absent"].starts_with(
                "delivery.signing: signing secret 0: the file `/nonexistent/kinetic/secret` cannot be read: "
            ),
            "{}",
            problems["default/absent"]
        );
        assert!(
            problems["default/gone"]
                .starts_with("delivery is disabled: https://hooks.example/in answered 410 Gone"),
            "{}",
            problems["default/gone"]
        );
        assert!(
            problems["default/broken"].starts_with("stored trigger is unreadable: "),
            "{}",
            problems["default/broken"]
        );
        // A disabled trigger keeps its plan (its dead letters still reach their sink).
        assert_eq!(plans.ready.keys().collect::<Vec<_>>(), ["uid-gone"]);
        // Applied again with a change: enabled.
        let changed = StoredResource {
            generation: 3,
            ..gone
        };
        let plans = build_plans(
            &Snapshot::new(vec![changed, broker]),
            &resolver,
            &Defaults::default(),
            &disabled,
        );
        assert!(plans.problems.is_empty());
        assert_eq!(plans.ready.len(), 1);
    }

    #[test]
    fn config_br_defaults_set_the_delivery_defaults_of_its_namespaces() {
        let broker = stored(
            "Broker",
            "default",
            1,
            serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "metadata": {"name": "default", "namespace": "default"},
            }),
        );
        let config = |text: &str| StoredResource {
            namespace: "kinetic-system".into(),
            ..stored(
                "ConfigMap",
                "config-br-defaults",
                1,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "config-br-defaults", "namespace": "kinetic-system"},
                    "data": {"default-br-config": text},
                }),
            )
        };
        let resolver = Resolver {
            ingress_url: "http://127.0.0.1:8080".into(),
            gateway: None,
        };
        let plan = |resources: Vec<StoredResource>| {
            let plans = build_plans(
                &Snapshot::new(resources),
                &resolver,
                &Defaults::default(),
                &DisabledTable::default(),
            );
            (
                plans.ready["uid-plain"].policy.clone(),
                plans.ready["uid-own"].policy.clone(),
                plans.config_problem,
            )
        };
        let plain = trigger("plain", 1, serde_json::json!(null));
        let own = trigger("own", 1, serde_json::json!({"retry": 1}));
        let (p, o, problem) = plan(vec![broker.clone(), plain.clone(), own.clone()]);
        assert_eq!((p.retry, o.retry, problem), (10, 1, None));

        // The cluster's default, then a namespace's own; a trigger's own setting still wins.
        let cluster = config("clusterDefault:\n  delivery: {retry: 4, backoffDelay: PT1S}\n");
        let (p, o, _) = plan(vec![broker.clone(), plain.clone(), own.clone(), cluster]);
        assert_eq!(
            (p.retry, p.backoff_delay, o.retry),
            (4, Duration::from_secs(1), 1)
        );
        let namespaced = config(
            "clusterDefault:\n  delivery: {retry: 4}\nnamespaceDefaults:\n  default:\n    delivery: {retry: 2, timeout: PT3S}\n",
        );
        let (p, _, _) = plan(vec![broker.clone(), plain.clone(), own.clone(), namespaced]);
        assert_eq!((p.retry, p.timeout), (2, Duration::from_secs(3)));

        // One that does not read changes nothing, and says why.
        let bad = config("clusterDefault:\n  delivery: {backoffDelay: soon}\n");
        let (p, _, problem) = plan(vec![broker, plain, own, bad]);
        assert_eq!(p.retry, 10);
        let problem = problem.unwrap();
        assert!(
            problem.starts_with("ConfigMap kinetic-system/config-br-defaults: data[default-br-config].clusterDefault.delivery.backoffDelay"),
            "{problem}"
        );
    }
}
