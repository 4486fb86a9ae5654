//! KafkaSources in the controller: one consumer task per source, started when the source appears,
//! started anew when its generation (or uid) changes, stopped when it is deleted.

use std::sync::Arc;

use kinetic_api::sources::KafkaSource;

use super::{Key, Sources};
use crate::kafka;

impl Sources {
    /// The KafkaSource part of [`Sources::reconcile`].
    pub(super) async fn reconcile_kafka(
        self: &Arc<Self>,
        seen: &mut Vec<Key>,
    ) -> kinetic_store::Result<()> {
        let stored = self.store.list_resources("KafkaSource", None).await?;
        for source in &stored {
            seen.push((
                "KafkaSource".into(),
                source.namespace.clone(),
                source.name.clone(),
            ));
        }
        for stored in self.kafkas.sync(&stored) {
            let id = (stored.namespace.clone(), stored.name.clone());
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
            self.kafkas.started(stored, cancel);
        }
        Ok(())
    }
}
