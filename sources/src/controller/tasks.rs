//! One running task per source of a kind (a PingSource's ticks, a pulling S3Source, a
//! KafkaSource's consumer): started when the source appears, started anew when its uid or
//! generation changes (deleted and created again, or applied with another spec), stopped when it
//! is gone. The decision is `kinetic_api::reconcile::plan`, the rule every controller shares;
//! [`TaskSet`] applies it.

use std::collections::HashMap;
use std::sync::Mutex;

use kinetic_api::reconcile::{Changes, plan};
use kinetic_store::StoredResource;
use tokio_util::sync::CancellationToken;

/// A source by namespace and name.
pub(crate) type Id = (String, String);

/// A running task and the version of its source it runs.
struct Task {
    generation: i64,
    uid: String,
    cancel: CancellationToken,
}

/// The running tasks of one source kind.
#[derive(Default)]
pub(crate) struct TaskSet {
    tasks: Mutex<HashMap<Id, Task>>,
}

impl TaskSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Task>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the tasks whose source is not in `stored` or changed, and returns the sources of
    /// `stored` that have no task now, for the caller to start (and then [`Self::started`]).
    pub(crate) fn sync<'a>(&self, stored: &'a [StoredResource]) -> Vec<&'a StoredResource> {
        let mut tasks = self.lock();
        let running = tasks
            .iter()
            .map(|(id, t)| (id.clone(), (t.generation, t.uid.clone())))
            .collect();
        let wanted: HashMap<Id, (i64, String)> = stored
            .iter()
            .map(|s| (id_of(s), (s.generation, s.uid.clone())))
            .collect();
        let Changes { stop, start } = plan(&running, &wanted);
        for id in stop {
            if let Some(task) = tasks.remove(&id) {
                task.cancel.cancel();
            }
        }
        stored
            .iter()
            .filter(|s| start.contains(&id_of(s)))
            .collect()
    }

    /// Records the task started for `stored`, stopped by `cancel`.
    pub(crate) fn started(&self, stored: &StoredResource, cancel: CancellationToken) {
        let task = Task {
            generation: stored.generation,
            uid: stored.uid.clone(),
            cancel,
        };
        if let Some(old) = self.lock().insert(id_of(stored), task) {
            old.cancel.cancel();
        }
    }
}

fn id_of(stored: &StoredResource) -> Id {
    (stored.namespace.clone(), stored.name.clone())
}
