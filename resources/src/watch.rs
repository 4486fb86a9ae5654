//! The latest [`Snapshot`], shared: one writer ([`Feed`]), any number of readers ([`Watch`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::Snapshot;

/// A new feed and the watch its readers clone. The watch holds no snapshot until the feed
/// publishes its first.
pub fn channel() -> (Feed, Watch) {
    let (tx, rx) = watch::channel(None);
    let refresh = Arc::new(Notify::new());
    (
        Feed {
            tx,
            refresh: Arc::clone(&refresh),
        },
        Watch {
            rx,
            refresh,
            closed: false,
        },
    )
}

/// Publishes snapshots to the [`Watch`]es of its [`channel`].
#[derive(Debug)]
pub struct Feed {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    refresh: Arc<Notify>,
}

impl Feed {
    /// Publishes `snapshot` when it differs from the last one published ([`Snapshot::same_as`]),
    /// waking the readers; `true` if it did.
    pub fn publish(&self, snapshot: Snapshot) -> bool {
        self.tx.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|current| current.same_as(&snapshot))
            {
                return false;
            }
            *current = Some(Arc::new(snapshot));
            true
        })
    }

    /// The last snapshot published.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    /// Resolves when a reader asks for a fresh read ([`Watch::refresh`]).
    pub async fn refresh_asked(&self) {
        self.refresh.notified().await;
    }
}

/// Reads the latest snapshot, and waits for the next. Clones share the feed.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<Option<Arc<Snapshot>>>,
    refresh: Arc<Notify>,
    /// The feed is gone: [`Watch::changed`] would resolve at once, forever.
    closed: bool,
}

impl Watch {
    /// A watch of `snapshot` that never changes, for tests and one-off tools.
    pub fn fixed(snapshot: Snapshot) -> Watch {
        let (feed, watch) = channel();
        feed.publish(snapshot);
        // The feed goes; the watch keeps the last value.
        watch
    }

    /// The latest snapshot; `None` until the feed has read the resources once.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.rx.borrow().clone()
    }

    /// The latest snapshot, waiting for the first; `None` only when the feed is gone without ever
    /// publishing one.
    pub async fn loaded(&mut self) -> Option<Arc<Snapshot>> {
        let loaded = match self.rx.wait_for(Option::is_some).await {
            Ok(snapshot) => snapshot.clone(),
            Err(_) => None,
        };
        loaded.or_else(|| self.latest())
    }

    /// Waits until a snapshot newer than the last one this watch saw is published; the latest
    /// then. `None` once the feed is gone (the process is stopping), so callers end their loop.
    /// Cancel safe.
    pub async fn changed(&mut self) -> Option<Arc<Snapshot>> {
        if self.rx.changed().await.is_err() {
            self.closed = true;
            return None;
        }
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a reconcile loop's next pass: a new snapshot, or `period` after the call
    /// (passes also do what depends on time, such as reading rotated secrets again). The latest
    /// snapshot then; `None` while none was ever published. Once the feed is gone, passes come
    /// every `period` with its last snapshot. Cancel safe.
    pub async fn next_pass(&mut self, period: Duration) -> Option<Arc<Snapshot>> {
        let period = tokio::time::sleep(period);
        tokio::pin!(period);
        if !self.closed {
            tokio::select! {
                changed = self.changed() => if changed.is_some() {
                    return self.latest();
                },
                () = &mut period => return self.latest(),
            }
        }
        period.await;
        self.latest()
    }

    /// Asks the feed to read the resources again now instead of at its next period: after this
    /// process applied or deleted something, its components see it within milliseconds.
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_wake_only_for_a_changed_snapshot() {
        let (feed, mut watch) = channel();
        assert!(watch.latest().is_none());
        let mut other = watch.clone();
        assert!(feed.publish(Snapshot::default()));
        assert!(watch.loaded().await.is_some());
        assert!(other.changed().await.is_some());
        assert!(!feed.publish(Snapshot::default()), "the same again");
        let woke =
            tokio::time::timeout(std::time::Duration::from_millis(50), other.changed()).await;
        assert!(woke.is_err(), "no wake for the same snapshot");
        drop(feed);
        assert!(other.changed().await.is_none(), "the feed is gone");
        assert!(other.latest().is_some(), "the last snapshot stays");
    }

    #[tokio::test(start_paused = true)]
    async fn passes_come_with_each_change_and_every_period() {
        let (feed, mut watch) = channel();
        feed.publish(Snapshot::default());
        watch.loaded().await;
        let period = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        assert!(watch.next_pass(period).await.is_some());
        assert_eq!(started.elapsed(), period, "no change: one period");
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            feed.publish(Snapshot::new(vec![kinetic_store::StoredResource {
                kind: "Broker".into(),
                namespace: "default".into(),
                name: "b".into(),
                uid: "u".into(),
                generation: 1,
                body: serde_json::json!({}),
                updated_at: 0,
            }]));
            feed
        });
        let started = tokio::time::Instant::now();
        let snapshot = watch.next_pass(period).await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "a change: at once"
        );
        assert_eq!(snapshot.stored(kinetic_api::Kind::Broker).len(), 1);
        drop(publisher.await.unwrap());
        // The feed is gone: passes go on every period, with the last snapshot, never spinning.
        for _ in 0..3 {
            let started = tokio::time::Instant::now();
            assert!(watch.next_pass(period).await.is_some());
            assert!(started.elapsed() >= period);
        }
    }

    #[tokio::test]
    async fn a_fixed_watch_is_loaded_at_once() {
        let mut watch = Watch::fixed(Snapshot::default());
        assert!(watch.loaded().await.is_some());
        assert!(watch.changed().await.is_none());
    }
}
