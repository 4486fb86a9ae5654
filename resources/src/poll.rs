//! Feeds a [`Watch`](crate::Watch) from the store: every resource in one read, once per period and
//! whenever a reader asks, published when something changed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kinetic_store::Store;
use tokio_util::sync::CancellationToken;

use crate::{Feed, Snapshot, Unreadable};

/// Reads every resource from `store` every `period` (and at once when a reader asks, see
/// [`Watch::refresh`](crate::Watch::refresh)) and publishes the snapshot to `feed` when it
/// changed, until `cancel`. A failed read keeps the last snapshot and is logged once per run of
/// failures; an unreadable resource is logged once per generation.
pub async fn poll(store: Arc<dyn Store>, feed: Feed, period: Duration, cancel: CancellationToken) {
    let mut failing = false;
    let mut reported: HashSet<(String, String, String, i64)> = HashSet::new();
    loop {
        match store.all_resources().await {
            Ok(resources) => {
                if failing {
                    tracing::info!("Reading the resources works again.");
                    failing = false;
                }
                let previous = feed.latest();
                let snapshot = Snapshot::reusing(resources, previous.as_deref());
                report(&snapshot, &mut reported);
                feed.publish(snapshot);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "Reading the resources failed; keeping the last ones read.");
                    failing = true;
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(period) => {}
            () = feed.refresh_asked() => {}
        }
    }
}

/// Logs each unreadable resource once per generation.
fn report(snapshot: &Snapshot, reported: &mut HashSet<(String, String, String, i64)>) {
    let now: HashSet<_> = snapshot.unreadable().iter().map(key).collect();
    for unreadable in snapshot.unreadable() {
        if !reported.contains(&key(unreadable)) {
            tracing::warn!(resource = %unreadable, "A stored resource cannot be read; kinetic leaves it alone until it is applied again.");
        }
    }
    *reported = now;
}

fn key(unreadable: &Unreadable) -> (String, String, String, i64) {
    (
        unreadable.kind.clone(),
        unreadable.namespace.clone(),
        unreadable.name.clone(),
        unreadable.generation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_api::Kind;
    use kinetic_api::eventing::Broker;
    use serde_json::json;

    fn broker(name: &str) -> serde_json::Value {
        json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": name, "namespace": "default"}, "spec": {}})
    }

    #[tokio::test]
    async fn a_change_in_the_store_reaches_the_watch_at_once_when_asked() {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        store
            .apply_resource("Broker", "default", "one", &broker("one"), 0)
            .await
            .unwrap();
        let (feed, mut watch) = crate::channel();
        let cancel = CancellationToken::new();
        // A period far longer than the test: only the refresh brings the change.
        let polling = tokio::spawn(poll(
            store.clone(),
            feed,
            Duration::from_secs(3600),
            cancel.clone(),
        ));
        let first = watch.loaded().await.unwrap();
        assert_eq!(first.typed::<Broker>().count(), 1);
        store
            .apply_resource("Broker", "default", "two", &broker("two"), 0)
            .await
            .unwrap();
        watch.refresh();
        let second = tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("the change within the refresh")
            .unwrap();
        assert_eq!(second.stored(Kind::Broker).len(), 2);
        cancel.cancel();
        polling.await.unwrap();
        assert!(
            watch.changed().await.is_none(),
            "the feed ended with the poll"
        );
    }
}
