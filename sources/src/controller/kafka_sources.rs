//! KafkaSources in the controller: one consumer task per source, started when the source appears,
//! started anew when its generation (or uid) changes, stopped when it is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use kinetic_api::sources::KafkaSource;

use super::{Key, Sources, Task, lock};
use crate::kafka;

impl Sources {
    /// The KafkaSource part of [`Sources::reconcile`].
    pub(super) async fn reconcile_kafka(
        self: &Arc<Self>,
        seen: &mut Vec<Key>,
    ) -> kinetic_store::Result<()> {
        let mut wanted = HashMap::new();
        for stored in self.store.list_resources("KafkaSource", None).await? {
            seen.push((
                "KafkaSource".into(),
                stored.namespace.clone(),
                stored.name.clone(),
            ));
            wanted.insert((stored.namespace.clone(), stored.name.clone()), stored);
        }
        let mut tasks = lock(&self.kafkas);
        tasks.retain(|id, task| {
            let keep = wanted
                .get(id)
                .is_some_and(|s| s.generation == task.generation && s.uid == task.uid);
            if !keep {
                task.cancel.cancel();
            }
            keep
        });
        for (id, stored) in wanted {
            if tasks.contains_key(&id) {
                continue;
            }
            let key: Key = ("KafkaSource".into(), id.0.clone(), id.1.clone());
            let started = serde_json::from_value::<KafkaSource>(stored.body.clone())
                .map_err(|e| format!("stored resource is unreadable: {e}"))
                .and_then(|source| {
                    let sink = self.target("KafkaSource", &id.0, &id.1, &source.spec.sink)?;
                    Ok((source, sink))
                });
            let (source, sink) = match started {
                Ok(started) => started,
                Err(problem) => {
                    self.not_ready(&key, problem);
                    continue;
                }
            };
            self.update(&key, |s| {
                s.ready = true;
                s.sink = Some(sink.url.clone());
                s.last_error = None;
                s.backlog = None;
            });
            let cancel = self.cancel.child_token();
            self.tracker.spawn(kafka::run(
                self.clone(),
                key,
                source,
                stored.uid.clone(),
                sink,
                cancel.clone(),
            ));
            tasks.insert(
                id,
                Task {
                    generation: stored.generation,
                    uid: stored.uid,
                    cancel,
                },
            );
        }
        Ok(())
    }
}
