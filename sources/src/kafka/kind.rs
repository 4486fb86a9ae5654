//! KafkaSource in the controller: one consumer task per source, started when the source appears,
//! started anew when its generation (or uid) changes, stopped when it is deleted. Its offsets
//! live in its consumer group, so it keeps nothing in kinetic's store.

use std::sync::Arc;

use kinetic_api::sources::KafkaSource;
use kinetic_store::StoredResource;

use crate::controller::Sources;
use crate::controller::kind::{self, Kind, Prepared};

pub(crate) struct KafkaKind;

impl Kind for KafkaKind {
    fn kind(&self) -> &'static str {
        "KafkaSource"
    }

    fn prepare(&self, sources: &Arc<Sources>, stored: &StoredResource) -> Result<Prepared, String> {
        let source: KafkaSource = kind::read(stored)?;
        let sink = kind::sink_of(sources, self, stored, &source.spec.sink)?;
        let uid = stored.uid.clone();
        Ok(Prepared::task(sink, move |sources, key, sink, cancel| {
            super::consumer::run(sources, key, source, uid, sink, cancel)
        }))
    }
}
