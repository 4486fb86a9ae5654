//! `kinetic controller`: what `kinetic apply` does beside storing a resource, done for resources
//! applied to the Kubernetes API instead (with `kubectl apply`), as Knative's controllers do it.
//!
//! For each object of every kind kinetic implements:
//!
//! - **Finalizers** where deleting needs cleanup in kinetic's store: a Trigger's cursor, pending
//!   deliveries and Kafka checkpoints ([`kinetic_triggers::lifecycle::deleted`]); a source's
//!   state ([`kinetic_sources::forget`]). The finalizer comes off once the cleanup is done.
//! - **A new Trigger's cursor** at its broker's head ([`kinetic_triggers::lifecycle::bound`]),
//!   before its finalizer goes on: it sees every event accepted from then.
//! - **A Service's Revisions, Configuration and Route**, written with server-side apply and owned
//!   by the Service (so Kubernetes' garbage collector deletes them with it); Revisions no traffic
//!   keeps beyond the newest [`kinetic_serving::revision::KEPT_UNROUTED`] are deleted.
//! - **Status** as Knative shows it ([`status`]): `observedGeneration` and the kind's conditions,
//!   patched only when they change; a condition that turns `False` is also a `Warning` Event.
//!
//! Objects are checked with kinetic's own validation ([`kinetic_control::validate`]); one it
//! refuses shows why in its `Ready` condition (the admission webhook stops such objects before
//! they are stored, where it is installed).
//!
//! Only the leader ([`leader`]) reconciles; the other replicas wait to take over.

pub mod leader;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kinetic_api::{Kind, Resource, Service};
use kinetic_control::ServiceChecks;
use kinetic_outbound::destination::Resolver;
use kinetic_resources::{Snapshot, Watch};
use kinetic_serving::revision::{self, Next};
use kinetic_store::{Store, TriggerRef};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The field manager of what the controller writes with server-side apply.
pub const FIELD_MANAGER: &str = "kinetic-controller";

/// How often a resource that is not ready is looked at again, beside every change.
const NOT_READY_RECHECK: Duration = Duration::from_secs(30);
/// How often a ready one is.
const READY_RECHECK: Duration = Duration::from_secs(600);

/// Why one reconcile failed; the object is reconciled again 5 s later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API refused: {0}")]
    Kube(#[from] kube::Error),
    #[error("kinetic's store failed: {0}")]
    Store(#[from] kinetic_store::Error),
}

/// What the reconcilers share.
pub struct Context {
    pub client: kube::Client,
    pub store: Arc<dyn Store>,
    /// The resources of the API server, for what one resource refers to (a Trigger's Broker, a
    /// Service's Revisions): [`crate::feed`] feeds it.
    pub resources: Watch,
    /// Where destinations resolve on the cluster.
    pub resolver: Resolver,
    pub checks: ServiceChecks,
    pub recorder: Recorder,
    /// The serving gateway's Service (`kinetic-gateway.kinetic-system.svc.cluster.local`): a
    /// Knative Service's cluster-local name (`NAME.NAMESPACE.svc.cluster.local`) is a Kubernetes
    /// Service of type ExternalName pointing there, as Knative's Route points at its ingress.
    /// `None`: no such name is made.
    pub gateway: Option<String>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        store: Arc<dyn Store>,
        resources: Watch,
        resolver: Resolver,
        instance: Option<String>,
    ) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance,
            },
        );
        Context {
            client,
            store,
            resources,
            resolver,
            // On Kubernetes every Service names an image, and a `command` runs in its container.
            checks: ServiceChecks {
                containers: true,
                ..ServiceChecks::default()
            },
            recorder,
            gateway: None,
        }
    }

    /// Gives Knative Services their cluster-local names, pointing at the gateway `host`.
    pub fn with_gateway(mut self, host: impl Into<String>) -> Context {
        self.gateway = Some(host.into());
        self
    }
}

/// The finalizer of `kind`, as Knative names its own (`{plural}.{group}`): present on the kinds
/// whose deletion cleans up kinetic's store.
pub fn finalizer(kind: Kind) -> Option<String> {
    (kind == Kind::Trigger || kind.is_source()).then(|| {
        let group = kind.api_version().split('/').next().unwrap_or_default();
        format!("{}.{group}", kind.plural())
    })
}

/// Reconciles every kind of [`crate::feed::resources`] but Revisions until `cancel`; every resource again
/// whenever `resources` changes (a Trigger's Broker appears, a Service's Revision is seen).
pub async fn run(context: Arc<Context>, cancel: CancellationToken) {
    let kinds = crate::feed::resources();
    let controllers = kinds.into_iter().filter_map(|resource| {
        let kind = Kind::of(&resource.kind)?;
        // Revisions are written by this controller from their Service; their status is the
        // runtime's that serves them.
        if kind == Kind::Revision {
            return None;
        }
        let api: Api<DynamicObject> = Api::all_with(context.client.clone(), &resource);
        let changes = futures::stream::unfold(context.resources.clone(), |mut watch| async move {
            watch.changed().await?;
            Some(((), watch))
        });
        let reconciled = resource.clone();
        let controller = Controller::new_with(api, watcher::Config::default(), resource);
        // A Service is reconciled again when one of its Revisions changes: the autoscaler writes
        // their readiness.
        let controller = if kind == Kind::Service {
            controller.owns_with(
                Api::<DynamicObject>::all_with(context.client.clone(), &revision_resource()),
                revision_resource(),
                watcher::Config::default(),
            )
        } else {
            controller
        };
        let controller = controller
            .reconcile_all_on(changes)
            .graceful_shutdown_on(cancel.clone().cancelled_owned())
            .run(
                move |object, context| reconcile(object, context, kind, reconciled.clone()),
                |_object, error: &Error, _context| {
                    tracing::warn!(%error, "A reconcile failed; it is retried.");
                    Action::requeue(Duration::from_secs(5))
                },
                context.clone(),
            )
            .for_each(|_| futures::future::ready(()));
        Some(controller)
    });
    futures::future::join_all(controllers).await;
}

/// Takes one object towards what its spec asks.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    context: Arc<Context>,
    kind: Kind,
    resource: ApiResource,
) -> Result<Action, Error> {
    let namespace = object.namespace().unwrap_or_else(|| "default".to_owned());
    let name = object.name_any();
    let api: Api<DynamicObject> =
        Api::namespaced_with(context.client.clone(), &namespace, &resource);
    let finalizer = finalizer(kind);
    let finalized = finalizer
        .as_ref()
        .is_some_and(|finalizer| object.finalizers().contains(finalizer));
    let uid = object.uid().unwrap_or_default();

    if object.metadata.deletion_timestamp.is_some() {
        if let (true, Some(finalizer)) = (finalized, &finalizer) {
            if kind == Kind::Trigger {
                kinetic_triggers::lifecycle::deleted(&*context.store, &uid, &namespace, &name)
                    .await?;
            } else {
                kinetic_sources::forget(&*context.store, kind.as_str(), &namespace, &name).await?;
            }
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(remove_finalizer(&object, finalizer)),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }

    let parsed = crate::feed::stored(kind.as_str(), &object)
        .map(|stored| stored.body)
        .ok_or_else(|| kinetic_api::Error::new("metadata.name", "is missing"))
        .and_then(Resource::from_value)
        .and_then(|resource| {
            kinetic_control::validate::document(&resource, Some(&context.checks))?;
            Ok(resource)
        });

    if let (false, Some(finalizer)) = (finalized, &finalizer) {
        if let Ok(Resource::Trigger(trigger)) = &parsed {
            let reference = TriggerRef {
                uid: uid.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                broker: format!("{namespace}/{}", trigger.spec.broker),
            };
            let now = chrono::Utc::now().timestamp_millis();
            kinetic_triggers::lifecycle::bound(&*context.store, &reference, false, now).await?;
        }
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(add_finalizer(&object, finalizer)),
        )
        .await?;
    }

    let Some(snapshot) = context.resources.latest() else {
        // The resources are not listed yet: what this object refers to cannot be told.
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let computed = match &parsed {
        Ok(Resource::Service(service)) => {
            match write_children(&context, service, &object, &snapshot).await? {
                Ok(revisions) => {
                    let readiness = revision_readiness(&context, service).await?;
                    status::service_status(service, &revisions, &readiness)
                }
                Err(taken) => status::invalid(&kinetic_api::Error::new(
                    "spec.template.metadata.name",
                    taken.to_string(),
                )),
            }
        }
        Ok(resource) => status::of(resource, &snapshot, &context.resolver),
        Err(error) => status::invalid(error),
    };

    let generation = object.metadata.generation.unwrap_or(1);
    let previous = object.data.get("status");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let written = computed.to_json(generation, previous, &now);
    if previous != Some(&written) {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": written})),
        )
        .await?;
        for condition in newly_failed(&computed, previous) {
            let event = Event {
                type_: EventType::Warning,
                reason: condition.reason.clone().unwrap_or_default(),
                note: condition.message.clone(),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            let reference = object.object_ref(&resource);
            if let Err(error) = context.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "Publishing a Kubernetes Event failed.");
            }
        }
    }
    Ok(Action::requeue(if computed.ready().status == "True" {
        READY_RECHECK
    } else {
        NOT_READY_RECHECK
    }))
}

/// The conditions of `computed` that are `False` now and were not, with that reason, before.
fn newly_failed<'a>(
    computed: &'a status::Status,
    previous: Option<&Value>,
) -> impl Iterator<Item = &'a status::Condition> {
    let before: Vec<(String, String)> = previous
        .and_then(|status| status.get("conditions")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "False")
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    computed.conditions.iter().filter(move |condition| {
        condition.status == "False"
            && !before.iter().any(|(type_, reason)| {
                type_ == condition.type_ && Some(reason) == condition.reason.as_ref()
            })
    })
}

/// A merge patch adding `finalizer`, with the `resourceVersion` it was computed from: when the
/// object changed since, the API server answers 409 and the reconcile is retried on the object as
/// it is then, so two writers never lose each other's finalizers.
fn add_finalizer(object: &DynamicObject, finalizer: &str) -> Value {
    finalizer_patch(object, |finalizers| finalizers.push(finalizer.to_owned()))
}

fn remove_finalizer(object: &DynamicObject, finalizer: &str) -> Value {
    finalizer_patch(object, |finalizers| finalizers.retain(|f| f != finalizer))
}

fn finalizer_patch(object: &DynamicObject, change: impl FnOnce(&mut Vec<String>)) -> Value {
    let mut finalizers = object.metadata.finalizers.clone().unwrap_or_default();
    change(&mut finalizers);
    json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.metadata.resource_version,
    }})
}

/// What the `Ready` condition of each of a Service's Revisions says (the autoscaler that runs
/// them writes it), by name.
async fn revision_readiness(
    context: &Context,
    service: &Service,
) -> Result<std::collections::HashMap<String, status::RevisionReady>, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        context.client.clone(),
        &service.metadata.namespace,
        &revision_resource(),
    );
    let listed = api
        .list(&kube::api::ListParams::default().labels(&format!(
            "serving.knative.dev/service={}",
            service.metadata.name
        )))
        .await?;
    Ok(listed
        .items
        .iter()
        .filter_map(|revision| {
            let value = serde_json::to_value(revision).ok()?;
            Some((revision.name_any(), status::RevisionReady::of(&value)?))
        })
        .collect())
}

fn revision_resource() -> ApiResource {
    ApiResource {
        group: "serving.knative.dev".to_owned(),
        version: "v1".to_owned(),
        api_version: "serving.knative.dev/v1".to_owned(),
        kind: "Revision".to_owned(),
        plural: "revisions".to_owned(),
    }
}

/// A Service's Revision for its current template, its Configuration and its Route, owned by it;
/// and the Revisions it no longer keeps, deleted. Written when the Service's spec changed since
/// its status was last written, or its latest Revision is not among the resources yet. Returns
/// the Service's namespace's Revisions as they are now.
async fn write_children(
    context: &Context,
    service: &Service,
    object: &DynamicObject,
    snapshot: &Snapshot,
) -> Result<Result<Vec<kinetic_api::Revision>, revision::NameTaken>, Error> {
    let namespace = &service.metadata.namespace;
    let name = &service.metadata.name;
    let existing = status::revisions(snapshot, namespace);
    let next = revision::next(service, &existing);
    let observed = object
        .data
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64);
    let changed = observed != object.metadata.generation;
    if !changed && matches!(next, Ok(Next::Unchanged)) {
        return Ok(Ok(existing));
    }
    let owner = json!([{
        "apiVersion": Kind::Service.api_version(),
        "kind": "Service",
        "name": name,
        "uid": object.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let serving = |kind: &str| ApiResource {
        group: "serving.knative.dev".to_owned(),
        version: "v1".to_owned(),
        api_version: Kind::Service.api_version().to_owned(),
        kind: kind.to_owned(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    let api = |kind: &str| -> Api<DynamicObject> {
        Api::namespaced_with(context.client.clone(), namespace, &serving(kind))
    };
    let mut all = existing.clone();
    match next {
        Ok(Next::Create(created)) => {
            let mut body = serde_json::to_value(&*created).unwrap_or_default();
            body["metadata"]["ownerReferences"] = owner.clone();
            api("Revision")
                .patch(&created.metadata.name, &apply, &Patch::Apply(body))
                .await?;
            all.push(*created);
        }
        Ok(Next::Unchanged) => {}
        // A named revision whose template changed: nothing is written, the status says why.
        Err(taken) => return Ok(Err(taken)),
    }
    for gone in revision::collectable(service, &all, revision::KEPT_UNROUTED) {
        match api("Revision")
            .delete(&gone, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        all.retain(|revision| revision.metadata.name != gone);
    }
    // The Service's Configuration and Route, named as it, owned by it.
    let child = |kind: &str, spec: Value| {
        json!({
            "apiVersion": Kind::Service.api_version(),
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": owner,
                         "labels": {"serving.knative.dev/service": name}},
            "spec": spec,
        })
    };
    let template = serde_json::to_value(&service.spec.template).unwrap_or_default();
    let traffic: Vec<Value> = service
        .traffic()
        .into_iter()
        .map(|mut target| {
            if target.latest_revision == Some(true) {
                target.configuration_name = Some(name.clone());
            }
            serde_json::to_value(target).unwrap_or_default()
        })
        .collect();
    for (kind, spec) in [
        ("Configuration", json!({"template": template})),
        ("Route", json!({"traffic": traffic})),
    ] {
        api(kind)
            .patch(name, &apply, &Patch::Apply(child(kind, spec)))
            .await?;
    }
    if let Some(gateway) = &context.gateway {
        cluster_local_name(context, service, object, gateway, &owner).await?;
    }
    Ok(Ok(all))
}

/// The Knative Service's cluster-local name: a Kubernetes Service of the same name, type
/// ExternalName, pointing at the gateway, owned by the Knative Service. A Kubernetes Service of
/// that name that is not this one's is left alone (and said so in the log): the name stays the
/// user's.
async fn cluster_local_name(
    context: &Context,
    service: &Service,
    object: &DynamicObject,
    gateway: &str,
    owner: &Value,
) -> Result<(), Error> {
    let namespace = &service.metadata.namespace;
    let name = &service.metadata.name;
    let core = ApiResource {
        group: String::new(),
        version: "v1".to_owned(),
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        plural: "services".to_owned(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(context.client.clone(), namespace, &core);
    if let Some(existing) = api.get_opt(name).await? {
        let ours = existing
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == object.metadata.uid.as_ref());
        if !ours {
            tracing::warn!(%namespace, %name, "A Kubernetes Service of the Knative Service's name exists and is not kinetic's; the Knative Service has no cluster-local name.");
            return Ok(());
        }
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": owner,
                     "labels": {"serving.knative.dev/service": name}},
        "spec": {
            "type": "ExternalName",
            "externalName": gateway,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}
