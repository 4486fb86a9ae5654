//! The one rule of every controller that runs a task per resource (a source's task, a revision's
//! instances, a trigger's cursor worker): from the tasks running, each with the version of the
//! resource it runs, and the resources wanted, each with its current version, which tasks to stop
//! and which to start. A version is whatever makes a task stale when it changes: a resource's
//! `(generation, uid)` (applied with another spec, or deleted and created again under its name),
//! or its uid alone where a spec never changes (a Revision).
//!
//! Pure: the callers keep their own tasks and apply the decision.

use std::collections::HashMap;
use std::hash::Hash;

/// What [`plan`] decided, each list sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<K> {
    /// Running tasks whose resource is gone, or runs another version now.
    pub stop: Vec<K>,
    /// Wanted resources with no task running their version (none, or one in `stop`).
    pub start: Vec<K>,
}

/// The tasks to stop and start to go from `running` to `wanted`.
pub fn plan<K, V>(running: &HashMap<K, V>, wanted: &HashMap<K, V>) -> Changes<K>
where
    K: Clone + Eq + Hash + Ord,
    V: PartialEq,
{
    let mut stop: Vec<K> = running
        .iter()
        .filter(|(key, version)| wanted.get(*key) != Some(*version))
        .map(|(key, _)| key.clone())
        .collect();
    let mut start: Vec<K> = wanted
        .iter()
        .filter(|(key, version)| running.get(*key) != Some(*version))
        .map(|(key, _)| key.clone())
        .collect();
    stop.sort();
    start.sort();
    Changes { stop, start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(entries: &[(&str, i64, &str)]) -> HashMap<String, (i64, String)> {
        entries
            .iter()
            .map(|(name, generation, uid)| ((*name).to_owned(), (*generation, (*uid).to_owned())))
            .collect()
    }

    #[test]
    fn new_resources_start_changed_ones_restart_gone_ones_stop() {
        let running = versions(&[
            ("same", 1, "u1"),
            ("applied", 1, "u2"),
            ("recreated", 1, "u3"),
            ("gone", 1, "u4"),
        ]);
        let wanted = versions(&[
            ("same", 1, "u1"),
            ("applied", 2, "u2"),
            ("recreated", 1, "u5"),
            ("new", 1, "u6"),
        ]);
        let changes = plan(&running, &wanted);
        assert_eq!(changes.stop, ["applied", "gone", "recreated"]);
        assert_eq!(changes.start, ["applied", "new", "recreated"]);
    }

    #[test]
    fn nothing_changes_when_everything_runs() {
        let both = versions(&[("a", 3, "u1"), ("b", 1, "u2")]);
        assert_eq!(
            plan(&both, &both),
            Changes {
                stop: vec![],
                start: vec![]
            }
        );
    }

    #[test]
    fn versions_may_be_anything_comparable() {
        let running: HashMap<u8, ()> = [(1, ()), (2, ())].into();
        let wanted: HashMap<u8, ()> = [(2, ()), (3, ())].into();
        let changes = plan(&running, &wanted);
        assert_eq!((changes.stop, changes.start), (vec![1], vec![3]));
    }
}
