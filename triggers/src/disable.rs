//! Subscriptions the subscriber ended: an answer of `410 Gone` says the endpoint is gone for good, so
//! the event is dead-lettered at once and the trigger's delivery is disabled, as webhook senders do.
//!
//! While disabled, the trigger is not ready and its events wait, as for a trigger whose subscriber
//! cannot be resolved: its cursor stays where it is (store class), its consumer group does not
//! consume (Kafka class), its retry rows are put off. Nothing is lost. Dead letters already going to
//! the trigger's dead-letter sink still go. Applying the trigger again with a change (a new
//! generation) enables it again.
//!
//! Why it is disabled (status, URL, time, event) is kept durably in the store, as the checkpoint
//! [`key`] under the trigger's path (deleted with the trigger), so every process and the API agree,
//! and a restart keeps it disabled.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use kinetic_store::{Millis, Store, StoredResource};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The status that disables a trigger.
pub const GONE: u16 = 410;
/// How often this process reads every trigger's checkpoint again, to learn of triggers another
/// dispatcher disabled (the one that got the `410` knows at once).
pub const RESYNC: Duration = Duration::from_secs(10);

/// The checkpoint that says trigger `namespace/name` is disabled.
pub fn key(namespace: &str, name: &str) -> String {
    format!(
        "{}/delivery/disabled",
        crate::kafka::checkpoint_prefix(namespace, name)
    )
}

/// Why a trigger's delivery is disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disabled {
    /// The trigger it applies to: a trigger deleted and created again is a new one.
    pub uid: String,
    /// The trigger's generation when it was disabled; a later generation is enabled.
    pub generation: i64,
    /// The answer that disabled it.
    pub status: u16,
    /// The subscriber that answered.
    pub url: String,
    /// When (Unix ms).
    pub at: Millis,
    /// The event whose delivery got the answer (it is dead-lettered).
    pub event_id: String,
    /// When the events waiting for it were released (see [`release_expired`]), if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Millis>,
}

impl Disabled {
    /// Whether this disables the trigger `uid` as of `generation`.
    pub fn applies_to(&self, uid: &str, generation: i64) -> bool {
        self.uid == uid && self.generation >= generation
    }

    pub fn reason(&self) -> String {
        let released = self.released_at.map_or(String::new(), |at| {
            format!(
                "; the events that waited for it were released at {} (it was disabled longer than the retention)",
                rfc3339(at)
            )
        });
        format!(
            "delivery is disabled: {} answered {} Gone at {} (event {}); apply the trigger again with a change to enable it{released}",
            self.url,
            self.status,
            rfc3339(self.at),
            self.event_id
        )
    }

    /// How the API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "url": self.url,
            "at": rfc3339(self.at),
            "eventId": self.event_id,
            "generation": self.generation,
            "reason": self.reason(),
        })
    }

    /// Reads it from a checkpoint value; `None` for anything else.
    pub fn from_checkpoint(value: &serde_json::Value) -> Option<Disabled> {
        serde_json::from_value(value.clone()).ok()
    }
}

/// Releases the events waiting for triggers disabled longer than `retention` at `now`: their
/// cursors move to their broker's head, so pruning removes what no other trigger needs, and the
/// record says when. A trigger enabled again later starts from there. Returns how many triggers
/// were released.
pub async fn release_expired(
    store: &dyn Store,
    retention: Duration,
    now: Millis,
) -> Result<usize, kinetic_store::Error> {
    let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut released = 0;
    for trigger in store.list_resources("Trigger", None).await? {
        let Some(mut disabled) = read(
            store,
            &trigger.namespace,
            &trigger.name,
            &trigger.uid,
            trigger.generation,
        )
        .await?
        else {
            continue;
        };
        if disabled.released_at.is_some() || disabled.at > now.saturating_sub(retention) {
            continue;
        }
        let Some(from) = store.skip_to_head(&trigger.uid, now).await? else {
            continue;
        };
        tracing::warn!(trigger = %format!("{}/{}", trigger.namespace, trigger.name), from, "A trigger disabled longer than the retention no longer holds its broker's events; they were released.");
        disabled.released_at = Some(now);
        self::store(store, &trigger.namespace, &trigger.name, &disabled, now).await?;
        released += 1;
    }
    Ok(released)
}

fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Reads the disabled state of `namespace/name` (`uid` at `generation`) from the store.
pub async fn read(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    uid: &str,
    generation: i64,
) -> Result<Option<Disabled>, kinetic_store::Error> {
    Ok(store
        .get_checkpoint(&key(namespace, name))
        .await?
        .and_then(|checkpoint| Disabled::from_checkpoint(&checkpoint.value))
        .filter(|disabled| disabled.applies_to(uid, generation)))
}

/// Records `disabled` durably (replacing an older record). Idempotent; a few attempts, then the
/// error (the caller's process still knows, see [`DisabledTable::mark`]).
pub async fn store(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    disabled: &Disabled,
    now: Millis,
) -> Result<(), kinetic_store::Error> {
    let key = key(namespace, name);
    let value = serde_json::to_value(disabled).unwrap_or_default();
    let mut tries = 0;
    loop {
        tries += 1;
        let outcome = async {
            let version = store.get_checkpoint(&key).await?.map(|c| c.version);
            store.put_checkpoint(&key, &value, version, now).await
        }
        .await;
        match outcome {
            Ok(Some(_)) => return Ok(()),
            // Another process wrote it meanwhile: read its version and write again.
            Ok(None) if tries < 5 => {}
            Ok(None) => return Ok(()),
            Err(error) if tries >= 3 => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What this process knows of disabled triggers, by uid. A trigger this process disabled is known
/// at once; others are learnt from their checkpoints, read when a trigger (or a new generation of
/// it) is first seen and again every [`RESYNC`].
#[derive(Debug, Default)]
pub struct DisabledTable {
    /// Read before every attempt, written when a trigger is disabled and at each sync.
    known: RwLock<HashMap<String, Known>>,
}

#[derive(Debug)]
struct Known {
    generation: i64,
    disabled: Option<Disabled>,
    read_at: Option<Instant>,
}

impl DisabledTable {
    /// Why `uid` at `generation` is disabled, if it is.
    pub fn get(&self, uid: &str, generation: i64) -> Option<Disabled> {
        let known = self.known.read().ok()?;
        known
            .get(uid)
            .and_then(|k| k.disabled.clone())
            .filter(|d| d.applies_to(uid, generation))
    }

    pub fn is_disabled(&self, uid: &str, generation: i64) -> bool {
        self.get(uid, generation).is_some()
    }

    /// Disables a trigger in this process now, before (and whether or not) it is stored.
    pub fn mark(&self, disabled: Disabled) {
        if let Ok(mut known) = self.known.write() {
            let entry = known.entry(disabled.uid.clone()).or_insert(Known {
                generation: disabled.generation,
                disabled: None,
                read_at: None,
            });
            entry.generation = entry.generation.max(disabled.generation);
            entry.disabled = Some(disabled);
        }
    }

    /// Brings the table up to date with `triggers` as stored: forgets deleted triggers and reads the
    /// checkpoints of triggers new to it, of new generations, and of those read [`RESYNC`] ago. A
    /// read that fails keeps what was known.
    pub async fn sync(&self, store: &Arc<dyn Store>, triggers: &[StoredResource], now: Instant) {
        let due: Vec<Due> = {
            let Ok(mut known) = self.known.write() else {
                return;
            };
            known.retain(|uid, _| triggers.iter().any(|t| t.uid == *uid));
            triggers
                .iter()
                .filter(|t| {
                    known.get(&t.uid).is_none_or(|k| {
                        k.generation != t.generation
                            || k.read_at.is_none_or(|at| now.duration_since(at) >= RESYNC)
                    })
                })
                .map(|t| Due {
                    uid: t.uid.clone(),
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                    generation: t.generation,
                })
                .collect()
        };
        let read: Vec<(Due, Result<Option<Disabled>, kinetic_store::Error>)> =
            futures::stream::iter(due)
                .map(|due| {
                    let store = store.clone();
                    async move {
                        let found =
                            read(&*store, &due.namespace, &due.name, &due.uid, due.generation)
                                .await;
                        (due, found)
                    }
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let Ok(mut known) = self.known.write() else {
            return;
        };
        for (due, found) in read {
            let Ok(found) = found else {
                tracing::debug!(trigger = %due.name, "Reading whether a trigger is disabled failed; keeping what was known.");
                continue;
            };
            let entry = known.entry(due.uid.clone()).or_insert(Known {
                generation: due.generation,
                disabled: None,
                read_at: None,
            });
            // A disable this process made stays until the generation moves past it, even if its
            // checkpoint could not be written.
            let kept = entry
                .disabled
                .take()
                .filter(|d| d.applies_to(&due.uid, due.generation));
            entry.generation = due.generation;
            entry.disabled = found.or(kept);
            entry.read_at = Some(now);
        }
    }
}

/// A trigger whose checkpoint is to be read.
struct Due {
    uid: String,
    namespace: String,
    name: String,
    generation: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disabled(uid: &str, generation: i64) -> Disabled {
        Disabled {
            uid: uid.into(),
            generation,
            status: GONE,
            url: "https://hooks.example/in".into(),
            at: 1_700_000_000_000,
            event_id: "e-1".into(),
            released_at: None,
        }
    }

    #[test]
    fn a_new_generation_or_a_new_trigger_is_enabled() {
        let d = disabled("u1", 3);
        assert!(d.applies_to("u1", 3));
        assert!(d.applies_to("u1", 2), "a process behind on the generation");
        assert!(!d.applies_to("u1", 4));
        assert!(!d.applies_to("u2", 3));
        let table = DisabledTable::default();
        assert!(!table.is_disabled("u1", 3));
        table.mark(d.clone());
        assert_eq!(table.get("u1", 3), Some(d));
        assert!(!table.is_disabled("u1", 4));
    }

    #[test]
    fn the_reason_says_what_when_and_how_to_undo_it() {
        let d = disabled("u1", 1);
        assert_eq!(
            d.reason(),
            "delivery is disabled: https://hooks.example/in answered 410 Gone at 2023-11-14T22:13:20Z (event e-1); apply the trigger again with a change to enable it"
        );
        let json = d.to_json();
        assert_eq!(json["status"], 410);
        assert_eq!(json["at"], "2023-11-14T22:13:20Z");
        let value = serde_json::to_value(&d).unwrap();
        assert_eq!(Disabled::from_checkpoint(&value), Some(d));
        assert_eq!(
            Disabled::from_checkpoint(&serde_json::json!({"since": 1})),
            None
        );
        assert_eq!(
            key("default", "hooks"),
            "trigger/default/hooks/delivery/disabled"
        );
    }

    #[tokio::test]
    async fn a_long_disabled_trigger_releases_the_events_it_held() {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        let trigger = serde_json::json!({
            "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": "gone", "namespace": "default"},
            "spec": {"broker": "b", "subscriber": {"uri": "https://hooks.example/in"}}
        });
        let (_, stored) = store
            .apply_resource("Trigger", "default", "gone", &trigger, 0)
            .await
            .unwrap();
        let reference = kinetic_store::TriggerRef {
            uid: stored.uid.clone(),
            namespace: "default".into(),
            name: "gone".into(),
            broker: "default/b".into(),
        };
        store
            .claim_cursors("a", std::slice::from_ref(&reference), 0, 1)
            .await
            .unwrap();
        let events: Vec<kinetic_store::NewEvent> = (0..3)
            .map(|n| kinetic_store::NewEvent {
                broker: "default/b".into(),
                source: "/s".into(),
                id: n.to_string(),
                payload: b"{}".to_vec().into(),
            })
            .collect();
        store.append(&events, 0, 0).await.unwrap();
        let day = 86_400_000;
        let record = Disabled {
            uid: stored.uid.clone(),
            generation: stored.generation,
            at: 10 * day,
            ..disabled("", 0)
        };
        self::store(&*store, "default", "gone", &record, 10 * day)
            .await
            .unwrap();
        let retention = Duration::from_secs(7 * 86_400);
        // Not yet past the retention.
        assert_eq!(
            release_expired(&*store, retention, 16 * day).await.unwrap(),
            0
        );
        assert_eq!(
            release_expired(&*store, retention, 18 * day).await.unwrap(),
            1
        );
        let now = read(&*store, "default", "gone", &stored.uid, stored.generation)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.released_at, Some(18 * day));
        assert!(now.reason().contains("released"), "{}", now.reason());
        // Once.
        assert_eq!(
            release_expired(&*store, retention, 19 * day).await.unwrap(),
            0
        );
        store.prune(0).await.unwrap();
        assert!(store.read("default/b", 0, 10).await.unwrap().is_empty());
    }
}
