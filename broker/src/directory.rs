//! Which brokers exist, and of which class. The ingress asks on every request, so answers come
//! from memory, taken from each new resource snapshot; a name not in memory is looked up in the
//! store once before a 404, so a broker applied a moment ago (by another process) is served at
//! once. A name found missing is remembered until the next snapshot, so requests to brokers that
//! do not exist (a scan, a typo in a loop) cost the store one read per name per snapshot, not one
//! per request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kinetic_api::Kind;
use kinetic_api::eventing::{Broker, BrokerClass};
use kinetic_store::{Store, StoredResource};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct BrokerDirectory {
    store: Arc<dyn Store>,
    known: Arc<RwLock<HashMap<String, BrokerClass>>>,
    /// Names looked up and not found since the last refresh (at most [`MISSING_MOST`]).
    missing: Arc<RwLock<HashSet<String>>>,
}

/// Most missing names remembered between refreshes; past it, the set starts over.
const MISSING_MOST: usize = 10_000;

/// The class of a stored broker; one that cannot be read (stored by a newer kinetic) is served by
/// the store-backed class, which loses nothing.
fn class_of(resources: &kinetic_resources::Snapshot, stored: &StoredResource) -> BrokerClass {
    resources
        .get::<Broker>(&stored.namespace, &stored.name)
        .and_then(|(_, broker)| broker.class_kind())
        .unwrap_or(BrokerClass::Store)
}

/// [`class_of`] a broker read from the store on its own.
fn class_of_stored(stored: &StoredResource) -> BrokerClass {
    serde_json::from_value::<Broker>(stored.body.clone())
        .ok()
        .and_then(|broker| broker.class_kind())
        .unwrap_or(BrokerClass::Store)
}

impl BrokerDirectory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: Arc::new(RwLock::new(HashMap::new())),
            missing: Arc::default(),
        }
    }

    /// The class of broker `namespace/name`, `None` when there is no such broker.
    pub async fn class(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BrokerClass>, kinetic_store::Error> {
        let key = format!("{namespace}/{name}");
        if let Some(class) = self
            .known
            .read()
            .ok()
            .and_then(|map| map.get(&key).copied())
        {
            return Ok(Some(class));
        }
        if self
            .missing
            .read()
            .is_ok_and(|missing| missing.contains(&key))
        {
            return Ok(None);
        }
        let Some(stored) = self.store.get_resource("Broker", namespace, name).await? else {
            if let Ok(mut missing) = self.missing.write() {
                if missing.len() >= MISSING_MOST {
                    missing.clear();
                }
                missing.insert(key);
            }
            return Ok(None);
        };
        let class = class_of_stored(&stored);
        if let Ok(mut map) = self.known.write() {
            map.insert(key, class);
        }
        Ok(Some(class))
    }

    /// Takes the brokers of `resources`, and forgets the names found missing.
    pub fn update(&self, resources: &kinetic_resources::Snapshot) {
        let map: HashMap<String, BrokerClass> = resources
            .stored(Kind::Broker)
            .iter()
            .map(|b| {
                (
                    format!("{}/{}", b.namespace, b.name),
                    class_of(resources, b),
                )
            })
            .collect();
        if let Ok(mut known) = self.known.write() {
            *known = map;
        }
        if let Ok(mut missing) = self.missing.write() {
            missing.clear();
        }
    }

    /// Takes every new snapshot of `resources` until `cancel` (or until the snapshots end).
    pub async fn run(self, mut resources: kinetic_resources::Watch, cancel: CancellationToken) {
        if let Some(latest) = resources.latest() {
            self.update(&latest);
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                latest = resources.changed() => match latest {
                    Some(latest) => self.update(&latest),
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_name_is_remembered_until_the_next_refresh() {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        let directory = BrokerDirectory::new(store.clone());
        assert_eq!(directory.class("default", "late").await.unwrap(), None);
        let broker = serde_json::json!({
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "late", "namespace": "default"},
            "spec": {}
        });
        store
            .apply_resource("Broker", "default", "late", &broker, 0)
            .await
            .unwrap();
        // Not read again from the store until the next snapshot.
        assert_eq!(directory.class("default", "late").await.unwrap(), None);
        directory.update(&kinetic_resources::Snapshot::new(
            store.all_resources().await.unwrap(),
        ));
        assert_eq!(
            directory.class("default", "late").await.unwrap(),
            Some(BrokerClass::Store)
        );
        assert_eq!(directory.class("default", "other").await.unwrap(), None);
    }
}
