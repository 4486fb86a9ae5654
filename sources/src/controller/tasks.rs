//! One running task per source of a kind (a PingSource's ticks, a pulling S3Source, a
//! KafkaSource's consumer): started when the source appears, started anew when its uid or
//! generation changes (deleted and created again, or applied with another spec), stopped when it
//! is gone. The decision is [`plan`], a pure function; [`TaskSet`] applies it.

use std::collections::HashMap;
use std::sync::Mutex;

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

/// What to do given the running tasks' versions and the stored sources' versions (each
/// `(generation, uid)`): the tasks to stop (their source is gone or changed) and the sources to
/// start (no task, or one being stopped).
pub(crate) fn plan(
    running: &HashMap<Id, (i64, String)>,
    stored: &HashMap<Id, (i64, String)>,
) -> (Vec<Id>, Vec<Id>) {
    let mut stop: Vec<Id> = running
        .iter()
        .filter(|(id, version)| stored.get(*id) != Some(*version))
        .map(|(id, _)| id.clone())
        .collect();
    let mut start: Vec<Id> = stored
        .iter()
        .filter(|(id, version)| running.get(*id) != Some(*version))
        .map(|(id, _)| id.clone())
        .collect();
    stop.sort();
    start.sort();
    (stop, start)
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
        let (stop, start) = plan(&running, &wanted);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(entries: &[(&str, i64, &str)]) -> HashMap<Id, (i64, String)> {
        entries
            .iter()
            .map(|(name, generation, uid)| {
                (
                    ("ns".to_owned(), (*name).to_owned()),
                    (*generation, (*uid).to_owned()),
                )
            })
            .collect()
    }

    fn names(ids: Vec<Id>) -> Vec<String> {
        ids.into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn new_sources_start_changed_ones_restart_gone_ones_stop() {
        let running = versions(&[
            ("same", 1, "u1"),
            ("applied", 1, "u2"),
            ("recreated", 1, "u3"),
            ("gone", 1, "u4"),
        ]);
        let stored = versions(&[
            ("same", 1, "u1"),
            ("applied", 2, "u2"),
            ("recreated", 1, "u5"),
            ("new", 1, "u6"),
        ]);
        let (stop, start) = plan(&running, &stored);
        assert_eq!(names(stop), ["applied", "gone", "recreated"]);
        assert_eq!(names(start), ["applied", "new", "recreated"]);
    }

    #[test]
    fn nothing_changes_when_everything_runs() {
        let both = versions(&[("a", 3, "u1"), ("b", 1, "u2")]);
        assert_eq!(plan(&both, &both), (vec![], vec![]));
    }
}
