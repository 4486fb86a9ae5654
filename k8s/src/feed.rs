//! Feeds a resource watch ([`kinetic_resources::Feed`]) from the Kubernetes API instead of the
//! store: one watcher (kube-runtime's list-then-watch, re-listing after a lost watch) per kind
//! kinetic implements, every object kept in memory, and the whole snapshot published whenever one
//! changes. The broker directory, the dispatcher, the sources and serving then read the API
//! server's resources exactly as they read the store's.
//!
//! Nothing is published until every kind has been listed once: a snapshot missing a kind would
//! look like every resource of that kind had been deleted.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt as _;
use kinetic_resources::{Feed, Snapshot};
use kinetic_store::StoredResource;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The kinds watched, as kube's dynamic API sees them: every CRD's kind (see [`crate::crds`]).
pub fn resources() -> Vec<ApiResource> {
    crate::crds::all()
        .into_iter()
        .map(|crd| {
            let version = crd.spec.versions[0].name.clone();
            ApiResource {
                api_version: format!("{}/{version}", crd.spec.group),
                group: crd.spec.group,
                version,
                kind: crd.spec.names.kind,
                plural: crd.spec.names.plural,
            }
        })
        // Configurations and Routes are written by kinetic, not read by its components.
        .filter(|resource| resource.kind != "Configuration" && resource.kind != "Route")
        .collect()
}

/// An object as the store would hold it: its kind, name, uid and generation, and a body with the
/// metadata kinetic's types read (the API server's own fields, such as `managedFields`, left out).
pub(crate) fn stored(kind: &str, object: &DynamicObject) -> Option<StoredResource> {
    let metadata = &object.metadata;
    let name = metadata.name.clone()?;
    let namespace = metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let mut body = serde_json::to_value(object).ok()?;
    let body_object = body.as_object_mut()?;
    body_object.remove("status");
    body_object.insert(
        "metadata".into(),
        json!({
            "name": name,
            "namespace": namespace,
            "labels": metadata.labels.clone().unwrap_or_default(),
            "annotations": metadata.annotations.clone().unwrap_or_default(),
            "generation": metadata.generation,
        }),
    );
    Some(StoredResource {
        kind: kind.to_owned(),
        namespace,
        name,
        uid: metadata.uid.clone().unwrap_or_default(),
        generation: metadata.generation.unwrap_or(1),
        body,
        updated_at: 0,
    })
}

/// One kind's objects: those listed, and while a (re)list runs, the list being read.
#[derive(Default)]
struct Kind {
    objects: BTreeMap<(String, String), StoredResource>,
    listing: Option<BTreeMap<(String, String), StoredResource>>,
    listed: bool,
}

/// Watches every kind of [`resources`] through `client`, and the ConfigMaps of kinetic's system
/// namespace (its configuration, [`kinetic_api::config`], and those Kafka-class Brokers name in
/// `spec.config`), and publishes to `feed` until `cancel`. A watch that fails is retried with kube-runtime's backoff; the last snapshot stays
/// meanwhile.
pub async fn run(client: kube::Client, feed: Feed, cancel: CancellationToken) {
    let mut watched = resources();
    let config_maps = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
    let mut streams: Vec<_> = watched
        .iter()
        .map(|resource| {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
            let kind = resource.kind.clone();
            watcher::watcher(api, watcher::Config::default())
                .map(move |event| (kind.clone(), event))
                .boxed()
        })
        .collect();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        kinetic_api::config::SYSTEM_NAMESPACE,
        &config_maps,
    );
    streams.push(
        watcher::watcher(api, watcher::Config::default())
            .map(|event| ("ConfigMap".to_owned(), event))
            .boxed(),
    );
    watched.push(config_maps);
    let mut events = futures::stream::select_all(streams);
    let mut kinds: HashMap<String, Kind> = watched
        .iter()
        .map(|resource| (resource.kind.clone(), Kind::default()))
        .collect();
    let mut failing: HashMap<String, bool> = HashMap::new();
    loop {
        let (kind, event) = tokio::select! {
            () = cancel.cancelled() => return,
            next = events.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let Some(state) = kinds.get_mut(&kind) else {
            continue;
        };
        let changed = match event {
            Ok(watcher::Event::Init) => {
                state.listing = Some(BTreeMap::new());
                false
            }
            Ok(watcher::Event::InitApply(object)) => {
                if let (Some(listing), Some(stored)) = (&mut state.listing, stored(&kind, &object))
                {
                    listing.insert((stored.namespace.clone(), stored.name.clone()), stored);
                }
                false
            }
            Ok(watcher::Event::InitDone) => {
                state.objects = state.listing.take().unwrap_or_default();
                state.listed = true;
                true
            }
            Ok(watcher::Event::Apply(object)) => match stored(&kind, &object) {
                Some(stored) => {
                    state
                        .objects
                        .insert((stored.namespace.clone(), stored.name.clone()), stored);
                    true
                }
                None => false,
            },
            Ok(watcher::Event::Delete(object)) => {
                let namespace = object
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned());
                let name = object.metadata.name.clone().unwrap_or_default();
                state.objects.remove(&(namespace, name)).is_some()
            }
            Err(error) => {
                if !failing.insert(kind.clone(), true).unwrap_or(false) {
                    tracing::warn!(%kind, %error, "Watching a kind on the Kubernetes API failed; retrying, the last resources read stay.");
                }
                false
            }
        };
        if changed {
            failing.remove(&kind);
        }
        if changed && kinds.values().all(|k| k.listed) {
            let all: Vec<StoredResource> = kinds
                .values()
                .flat_map(|k| k.objects.values().cloned())
                .collect();
            let previous = feed.latest();
            feed.publish(Snapshot::reusing(all, previous.as_deref()));
        }
    }
}
