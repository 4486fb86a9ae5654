//! Which brokers exist. The ingress asks on every request, so answers come from memory, refreshed
//! from the store every second; a name not in memory is looked up in the store once before a 404,
//! so a broker applied a moment ago is served at once.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kinetic_store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct BrokerDirectory {
    store: Arc<dyn Store>,
    known: Arc<RwLock<HashSet<String>>>,
}

impl BrokerDirectory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: Arc::new(RwLock::new(HashSet::new())),
        }
    }

    /// Whether `namespace/name` is a broker this ingress serves.
    pub async fn exists(&self, namespace: &str, name: &str) -> Result<bool, kinetic_store::Error> {
        let key = format!("{namespace}/{name}");
        if self
            .known
            .read()
            .map(|set| set.contains(&key))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let found = self
            .store
            .get_resource("Broker", namespace, name)
            .await?
            .is_some();
        if found && let Ok(mut set) = self.known.write() {
            set.insert(key);
        }
        Ok(found)
    }

    /// Reloads the set of brokers from the store.
    pub async fn refresh(&self) -> Result<(), kinetic_store::Error> {
        let brokers = self.store.list_resources("Broker", None).await?;
        let set: HashSet<String> = brokers
            .iter()
            .map(|b| format!("{}/{}", b.namespace, b.name))
            .collect();
        if let Ok(mut known) = self.known.write() {
            *known = set;
        }
        Ok(())
    }

    /// Refreshes every `period` until cancelled.
    pub async fn run(self, period: Duration, cancel: CancellationToken) {
        loop {
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "Refreshing the broker list failed.");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}
