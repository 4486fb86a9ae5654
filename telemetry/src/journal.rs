//! What happened to the most recent events in this process, for the console's timeline: when an
//! event was accepted (and its body, so the console can say which triggers' filters match it),
//! each delivery attempt with its status, latency and answer, retries with their times, dead
//! letters, and the function instance that served it (and whether that was a cold start).
//!
//! In memory only, bounded: the last [`EVENTS`] events by the time they were first seen, at most
//! [`STEPS`] steps each. Nothing here touches the store, so a delivery that succeeds still costs no
//! store write; a process restart forgets it all (dead letters stay in the store). Each record
//! takes one short lock.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex};

/// Events kept.
pub const EVENTS: usize = 4096;
/// Steps kept per event (the first ones).
pub const STEPS: usize = 64;
/// Bytes of an answer kept.
pub const EXCERPT: usize = 300;

/// One event's history.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub source: String,
    pub accepted: Option<Accepted>,
    pub steps: Vec<Step>,
}

/// Where and when an event was accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Unix milliseconds.
    pub at: i64,
    /// `namespace/name`.
    pub broker: Arc<str>,
    /// The event as stored (structured JSON).
    pub payload: bytes::Bytes,
    pub trace_id: Option<String>,
}

/// Something that happened to an event after it was accepted. Times are Unix milliseconds.
#[derive(Debug, Clone)]
pub enum Step {
    Attempt {
        at: i64,
        trigger: String,
        status: Option<u16>,
        millis: u64,
        /// delivered, retryable, permanent.
        outcome: &'static str,
        error: Option<String>,
        excerpt: String,
    },
    Retry {
        at: i64,
        trigger: String,
        /// The attempt that failed (1 = the first).
        attempt: u32,
        due: i64,
    },
    DeadLettered {
        at: i64,
        trigger: String,
    },
    Served {
        at: i64,
        revision: String,
        instance: u64,
        cold_start: bool,
    },
}

/// Entries by a hash of `(id, source)`: a record costs no copy of the key, only a new entry
/// does. Two events whose keys share a hash share a slot, the later one taking it over (the
/// journal is a window of recent history, and 64-bit collisions among 4,096 keys are rare).
#[derive(Default)]
struct Inner {
    hasher: RandomState,
    entries: HashMap<u64, Entry>,
    order: VecDeque<u64>,
}

static JOURNAL: LazyLock<Mutex<Inner>> = LazyLock::new(Mutex::default);

fn lock() -> std::sync::MutexGuard<'static, Inner> {
    // Each record changes one entry in one step; a panic leaves nothing half-done.
    JOURNAL.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn entry(&mut self, id: &str, source: &str) -> &mut Entry {
        let key = self.hasher.hash_one((id, source));
        let fresh = || Entry {
            id: id.to_owned(),
            source: source.to_owned(),
            accepted: None,
            steps: Vec::new(),
        };
        if !self.entries.contains_key(&key) {
            while self.order.len() >= EVENTS {
                if let Some(oldest) = self.order.pop_front() {
                    self.entries.remove(&oldest);
                }
            }
            self.order.push_back(key);
        }
        let entry = self.entries.entry(key).or_insert_with(&fresh);
        if entry.id != id || entry.source != source {
            *entry = fresh();
        }
        entry
    }

    fn step(&mut self, id: &str, source: &str, step: Step) {
        let entry = self.entry(id, source);
        if entry.steps.len() < STEPS {
            entry.steps.push(step);
        }
    }
}

/// Now, in Unix milliseconds (the journal's clock).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Events a broker accepted: `(id, source, stored payload)`.
pub fn accepted<'a>(
    broker: &str,
    at: i64,
    trace_id: Option<String>,
    events: impl IntoIterator<Item = (&'a str, &'a str, &'a bytes::Bytes)>,
) {
    let broker: Arc<str> = Arc::from(broker);
    let mut inner = lock();
    for (id, source, payload) in events {
        inner.entry(id, source).accepted = Some(Accepted {
            at,
            broker: broker.clone(),
            payload: payload.clone(),
            trace_id: trace_id.clone(),
        });
    }
}

/// A delivery attempt of the event `(id, source)` to `trigger` (`namespace/name`).
#[allow(clippy::too_many_arguments)] // One record of one attempt, as the dispatcher has it.
pub fn attempt(
    id: &str,
    source: &str,
    trigger: &str,
    at: i64,
    millis: u64,
    status: Option<u16>,
    outcome: &'static str,
    error: Option<&str>,
    answer: &[u8],
) {
    let excerpt = if outcome == "delivered" {
        String::new()
    } else {
        String::from_utf8_lossy(&answer[..answer.len().min(EXCERPT)]).into_owned()
    };
    lock().step(
        id,
        source,
        Step::Attempt {
            at,
            trigger: trigger.to_owned(),
            status,
            millis,
            outcome,
            error: error.map(str::to_owned),
            excerpt,
        },
    );
}

/// The event will be tried again at `due`, after its attempt number `attempt` failed.
pub fn retry(id: &str, source: &str, trigger: &str, at: i64, attempt: u32, due: i64) {
    lock().step(
        id,
        source,
        Step::Retry {
            at,
            trigger: trigger.to_owned(),
            attempt,
            due,
        },
    );
}

/// The event was given up on for `trigger`.
pub fn dead_lettered(id: &str, source: &str, trigger: &str, at: i64) {
    lock().step(
        id,
        source,
        Step::DeadLettered {
            at,
            trigger: trigger.to_owned(),
        },
    );
}

/// A function instance served the request that carried the event.
pub fn served(id: &str, source: &str, revision: &str, instance: u64, cold_start: bool, at: i64) {
    lock().step(
        id,
        source,
        Step::Served {
            at,
            revision: revision.to_owned(),
            instance,
            cold_start,
        },
    );
}

/// The kept history of events with this id (from any source, or only `source`).
pub fn find(id: &str, source: Option<&str>) -> Vec<Entry> {
    let inner = lock();
    let mut found: Vec<Entry> = inner
        .entries
        .values()
        .filter(|entry| entry.id == id && source.is_none_or(|s| entry.source == s))
        .cloned()
        .collect();
    found.sort_by(|a, b| a.source.cmp(&b.source));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_keeps_its_steps_and_old_events_leave() {
        accepted(
            "default/b",
            1,
            None,
            [("journal-1", "/t", &bytes::Bytes::from_static(b"{}"))],
        );
        attempt(
            "journal-1",
            "/t",
            "default/t",
            2,
            5,
            Some(500),
            "retryable",
            Some("HTTP 500"),
            b"no",
        );
        retry("journal-1", "/t", "default/t", 2, 1, 100);
        let found = find("journal-1", Some("/t"));
        assert_eq!(found.len(), 1);
        assert_eq!(&*found[0].accepted.as_ref().unwrap().broker, "default/b");
        assert_eq!(found[0].steps.len(), 2);
        assert!(matches!(&found[0].steps[0], Step::Attempt { excerpt, .. } if excerpt == "no"));
        assert!(find("journal-1", Some("/other")).is_empty());
        for n in 0..EVENTS {
            accepted(
                "default/b",
                3,
                None,
                [(format!("filler-{n}").as_str(), "/t", &bytes::Bytes::new())],
            );
        }
        assert!(find("journal-1", None).is_empty(), "the oldest left");
        assert_eq!(lock().entries.len(), EVENTS);
    }
}
