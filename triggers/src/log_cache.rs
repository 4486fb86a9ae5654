//! A window over each broker's log shared by the cursor workers of this process: the triggers of one
//! broker read the same events, so each event is read from the store and parsed once, not once per
//! trigger. Workers that fall behind the window read the store directly.
//!
//! In `kinetic up` the ingress's group commit also hands each commit's events (as the ingress parsed
//! them) to the windows of the brokers being read ([`Feed`]), so a worker woken by the commit finds
//! them here instead of reading back and parsing what was just written. An event is added only
//! right after the window's last one: anything else (another process's appends in between) is left
//! to the store, so the window stays exactly what the store holds. The window's events are behind a
//! short lock never held across an await, so a commit's events are kept even while a worker is
//! fetching from the store (that worker's fetch then skips what the feed already added).
//!
//! A worker that has delivered everything up to a window's end asks again at once, and mostly the
//! store has nothing newer. Each window knows the commit count (the counter every append in this
//! process, and every append signal from other processes, moves) up to which it holds the log's
//! end: a read at the end that found the store empty records the count its caller saw before
//! reading, and each commit fed to the windows moves a window that was current to the count that
//! commit signals. A reader woken by a signal it has seen at that count gets an empty answer from
//! memory; a count the window does not know of, or a reader woken by its poll (appends nothing
//! signalled, such as another process's on the same SQLite file), reads the store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use cloudevents::Event;
use kinetic_log::{Feed, Stored};
use kinetic_store::{Store, StoredEvent};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// Events kept per broker: ten batches of headroom between the fastest and slowest trigger.
const WINDOW: usize = 5_000;
/// Bytes kept per broker, counting each event's stored payload and its parsed form: large events
/// shorten the window instead of growing memory (5,000 events of 4 MiB would be 40 GiB).
const WINDOW_BYTES: usize = 64 * 1024 * 1024;

/// The recent events of one broker, contiguous by position (a lock held only to look or add, never
/// across an await), and a lock that makes one reader at a time fetch from the store.
#[derive(Default)]
struct Window {
    ring: Mutex<Ring>,
    fetching: tokio::sync::Mutex<()>,
}

impl Window {
    /// Up to `limit` events after `after` from memory, when `after` is inside the window (not at
    /// its end).
    fn serve(&self, after: i64, limit: usize) -> Option<Vec<Arc<Logged>>> {
        let ring = self.ring();
        let first = ring.events.front()?.stored.seq;
        let last = ring.events.back()?.stored.seq;
        if first > after.saturating_add(1) || after >= last {
            return None;
        }
        let start = ring.events.partition_point(|e| e.stored.seq <= after);
        Some(ring.events.range(start..).take(limit).cloned().collect())
    }

    /// Whether `after` is the window's last event and the window holds the log's end at the
    /// commit count `seen`.
    fn current_at_end(&self, after: i64, seen: Option<u64>) -> bool {
        let ring = self.ring();
        seen.is_some()
            && ring.current_at == seen
            && ring.events.back().is_some_and(|e| e.stored.seq == after)
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A window's events and what they weigh; the oldest go first when either bound is passed.
struct Ring {
    events: VecDeque<Arc<Logged>>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// The commit count up to which the last event is the log's last (see the module's doc).
    current_at: Option<u64>,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            max_events: WINDOW,
            max_bytes: WINDOW_BYTES,
            current_at: None,
        }
    }
}

impl Ring {
    fn push_back(&mut self, logged: Arc<Logged>) {
        self.bytes += logged.weight();
        self.events.push_back(logged);
        // The newest event stays even alone over the bound: readers need the window's end.
        while self.events.len() > self.max_events
            || (self.bytes > self.max_bytes && self.events.len() > 1)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.weight();
            }
        }
    }

    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
        self.current_at = None;
    }
}

/// An event of the log, read and parsed.
#[derive(Debug)]
pub struct Logged {
    pub stored: StoredEvent,
    /// `None` when the stored payload cannot be read back (counted, logged, skipped).
    pub event: Option<Event>,
}

impl Logged {
    /// Memory it holds, about: the payload, and the parsed event (its data and attributes are at
    /// most as large again).
    fn weight(&self) -> usize {
        2 * self.stored.payload.len() + 256
    }
}

pub struct LogCache {
    store: Arc<dyn Store>,
    brokers: Mutex<HashMap<String, Arc<Window>>>,
    corrupt: Counter,
    /// The commit counter; a commit is fed before it is counted.
    commits: watch::Receiver<u64>,
}

impl Feed for LogCache {
    fn stored(&self, events: Vec<Stored>) {
        // This commit will be signalled as the count after this one, unless another signal comes
        // first (then windows claim a count that signalled something else, and readers that saw
        // the later count read the store).
        let count = *self.commits.borrow();
        let windows: Vec<(String, Arc<Window>)> = self
            .brokers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(broker, window)| (broker.clone(), window.clone()))
            .collect();
        let mut events = events.into_iter().peekable();
        // Brokers appear in runs (a commit's events are grouped by request, each of one broker);
        // a broker seen twice is handled twice, which is the same.
        let mut fed: Vec<(&str, bool)> = Vec::new();
        while let Some(first) = events.next() {
            let broker = first.broker.clone();
            // A broker nobody reads keeps no window.
            let Some((name, window)) = windows.iter().find(|(name, _)| *name == broker) else {
                while events.next_if(|e| e.broker == broker).is_some() {}
                continue;
            };
            let mut ring = window.ring();
            let mut whole = true;
            let mut next = |stored: Stored| {
                let follows = ring
                    .events
                    .back()
                    .is_none_or(|last| last.stored.seq + 1 == stored.stored.seq);
                if follows {
                    ring.push_back(Arc::new(Logged {
                        stored: stored.stored,
                        event: Some(stored.event),
                    }));
                } else {
                    whole = false;
                }
            };
            next(first);
            while let Some(stored) = events.next_if(|e| e.broker == broker) {
                next(stored);
            }
            if !whole {
                ring.current_at = None;
            }
            fed.push((name.as_str(), whole));
        }
        // Every window that held the log's end before this commit holds it after (with this
        // commit's events, or none of them: the commit had none for its broker).
        for (name, window) in &windows {
            if fed.iter().any(|(fed, whole)| fed == name && !whole) {
                continue;
            }
            let mut ring = window.ring();
            if ring.current_at == Some(count) {
                ring.current_at = Some(count.wrapping_add(1));
            }
        }
    }
}

impl LogCache {
    /// `commits` is the counter every append of this process (and every append signal) moves.
    pub fn new(store: Arc<dyn Store>, corrupt: Counter, commits: watch::Receiver<u64>) -> Self {
        Self {
            store,
            brokers: Mutex::new(HashMap::new()),
            corrupt,
            commits,
        }
    }

    /// Up to `limit` events of `broker` with `seq > after`, oldest first; from the window possibly
    /// fewer (up to its end), and empty only when the store has nothing after `after` (as of
    /// `seen`, when given). One worker at a time per broker fetches from the store; the others then
    /// find the events in the window.
    ///
    /// `seen` is the commit count the caller saw before this read, when a signal (not its poll)
    /// woke it: at the window's end, a window current at that count answers empty from memory.
    ///
    /// Cancel safety: dropping the future loses nothing; the window only ever holds what the store
    /// returned.
    pub async fn read(
        &self,
        broker: &str,
        after: i64,
        limit: usize,
        seen: Option<u64>,
    ) -> Result<Vec<Arc<Logged>>, kinetic_store::Error> {
        let window = {
            let mut brokers = self
                .brokers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            brokers.entry(broker.to_owned()).or_default().clone()
        };
        if let Some(events) = window.serve(after, limit) {
            return Ok(events);
        }
        if window.current_at_end(after, seen) {
            return Ok(Vec::new());
        }
        let _fetching = window.fetching.lock().await;
        // Another reader may have fetched, or a commit fed, meanwhile.
        if let Some(events) = window.serve(after, limit) {
            return Ok(events);
        }
        let last = window.ring().events.back().map(|e| e.stored.seq);
        if last.is_some_and(|last| after < last) {
            // Behind the window: read the store without disturbing the window.
            return self.fetch(broker, after, limit).await;
        }
        // At the window's end (or no window yet): fetch the next events and keep them.
        let fetched = self.fetch(broker, after, limit).await?;
        let mut ring = window.ring();
        match ring.events.back().map(|e| e.stored.seq) {
            // A worker ahead of the window: start the window anew, so it stays contiguous.
            Some(last) if after > last => ring.clear(),
            _ => {}
        }
        // Nothing after the window's end, as of `seen` (what was committed before that count was
        // signalled is in the store).
        if fetched.is_empty()
            && let Some(seen) = seen
            && ring.events.back().is_some_and(|e| e.stored.seq == after)
        {
            ring.current_at = Some(ring.current_at.map_or(seen, |at| at.max(seen)));
        }
        for logged in &fetched {
            // What a commit fed while the store was read is there already.
            let follows = ring
                .events
                .back()
                .is_none_or(|last| last.stored.seq + 1 == logged.stored.seq);
            if follows {
                ring.push_back(logged.clone());
            }
        }
        Ok(fetched)
    }

    async fn fetch(
        &self,
        broker: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Arc<Logged>>, kinetic_store::Error> {
        let events = self.store.read(broker, after, limit).await?;
        Ok(events
            .into_iter()
            .map(|stored| {
                let event = kinetic_api::cloudevent::from_json(&stored.payload).ok();
                if event.is_none() {
                    self.corrupt.inc();
                    tracing::error!(seq = stored.seq, %broker, "A stored event cannot be read; skipping it.");
                }
                Arc::new(Logged { stored, event })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_store::NewEvent;

    /// Event `i` of broker `ns/b`.
    fn numbered(i: usize) -> NewEvent {
        NewEvent {
            broker: "ns/b".into(),
            source: "/s".into(),
            id: i.to_string(),
            payload: format!(r#"{{"specversion":"1.0","id":"{i}","source":"/s","type":"t"}}"#)
                .into_bytes()
                .into(),
        }
    }

    async fn store_with(count: usize) -> Arc<dyn Store> {
        let store = kinetic_store::open("sqlite::memory:").await.expect("store");
        let events: Vec<NewEvent> = (0..count).map(numbered).collect();
        store.append(&events, 0, 0).await.expect("append");
        store
    }

    fn seqs(events: &[Arc<Logged>]) -> Vec<i64> {
        events.iter().map(|e| e.stored.seq).collect()
    }

    #[tokio::test]
    async fn every_reader_sees_what_the_store_holds() {
        let store = store_with(50).await;
        let cache = LogCache::new(store.clone(), Counter::default(), watch::channel(0).1);
        // A leading reader fills the window; others read inside it, behind it and ahead of it.
        for (after, limit) in [
            (0, 10),
            (0, 10),
            (5, 10),
            (10, 10),
            (3, 100),
            (20, 5),
            (45, 10),
            (50, 10),
            (30, 3),
            (0, 60),
        ] {
            let cached = seqs(&cache.read("ns/b", after, limit, None).await.unwrap());
            let direct: Vec<i64> = store
                .read("ns/b", after, limit)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            // From the window a read may stop at the window's end, never skip or invent an event.
            assert!(
                direct.starts_with(&cached),
                "after {after}, limit {limit}: {cached:?} vs {direct:?}"
            );
            assert_eq!(
                cached.is_empty(),
                direct.is_empty(),
                "after {after}, limit {limit}"
            );
        }
        // Events appended later are seen by a reader at the window's end.
        let more = NewEvent {
            broker: "ns/b".into(),
            source: "/s".into(),
            id: "late".into(),
            payload: br#"{"specversion":"1.0","id":"late","source":"/s","type":"t"}"#
                .to_vec()
                .into(),
        };
        store.append(&[more], 0, 0).await.unwrap();
        assert_eq!(seqs(&cache.read("ns/b", 50, 10, None).await.unwrap()), [51]);
        assert_eq!(
            seqs(&cache.read("ns/b", 49, 10, None).await.unwrap()),
            [50, 51]
        );
    }

    /// What the ingress hands over for `seq`, marked so a read shows where it came from.
    fn handed(broker: &str, seq: i64) -> Stored {
        let payload = format!(r#"{{"specversion":"1.0","id":"{seq}","source":"/s","type":"t"}}"#);
        let mut event = kinetic_api::cloudevent::from_json(payload.as_bytes()).unwrap();
        cloudevents::AttributesWriter::set_type(&mut event, "from-the-feed");
        Stored {
            broker: broker.to_owned(),
            stored: StoredEvent {
                seq,
                payload: payload.into_bytes().into(),
                accepted_at: 0,
            },
            event,
        }
    }

    fn types(events: &[Arc<Logged>]) -> Vec<String> {
        use cloudevents::AttributesReader as _;
        events
            .iter()
            .map(|e| e.event.as_ref().unwrap().ty().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn committed_events_extend_the_window_only_right_after_its_end() {
        let store = store_with(3).await;
        let cache = LogCache::new(store.clone(), Counter::default(), watch::channel(0).1);
        assert_eq!(
            seqs(&cache.read("ns/b", 0, 10, None).await.unwrap()),
            [1, 2, 3]
        );

        // The next commit's events come from memory, as the ingress parsed them.
        let more: Vec<NewEvent> = (4..=5).map(numbered).collect();
        store.append(&more, 0, 0).await.unwrap();
        cache.stored(vec![
            handed("ns/b", 4),
            handed("ns/b", 5),
            handed("ns/x", 1),
        ]);
        let read = cache.read("ns/b", 3, 10, None).await.unwrap();
        assert_eq!(seqs(&read), [4, 5]);
        assert_eq!(types(&read), ["from-the-feed", "from-the-feed"]);

        // Events already there, or after a gap, are left to the store.
        cache.stored(vec![handed("ns/b", 5), handed("ns/b", 7)]);
        store
            .append(&[numbered(6), numbered(7)], 0, 0)
            .await
            .unwrap();
        let read = cache.read("ns/b", 5, 10, None).await.unwrap();
        assert_eq!(seqs(&read), [6, 7]);
        assert_eq!(types(&read), ["t", "t"], "read from the store");
        assert_eq!(
            types(&cache.read("ns/b", 4, 10, None).await.unwrap())[0],
            "from-the-feed"
        );

        // A broker nobody reads gets no window.
        assert!(!cache.brokers.lock().unwrap().contains_key("ns/x"));
    }

    /// A reader at the window's end woken by a commit count the window is current at is answered
    /// from memory; at a count the window does not know of, or on a poll, it reads the store.
    #[tokio::test]
    async fn a_reader_at_the_end_asks_the_store_only_when_something_may_be_new() {
        let store = store_with(3).await;
        let (commits, counter) = watch::channel(0u64);
        let cache = LogCache::new(store.clone(), Counter::default(), counter);
        let signal = || commits.send_modify(|count| *count += 1);
        assert_eq!(
            seqs(&cache.read("ns/b", 0, 10, Some(0)).await.unwrap()),
            [1, 2, 3]
        );
        // The store had nothing after 3 at count 0, and the window knows it from then on.
        assert!(cache.read("ns/b", 3, 10, Some(0)).await.unwrap().is_empty());
        store.append(&[numbered(4)], 0, 0).await.unwrap();
        assert!(cache.read("ns/b", 3, 10, Some(0)).await.unwrap().is_empty());
        // An append nobody signalled is found by a poll, and at any count the window does not know.
        assert_eq!(seqs(&cache.read("ns/b", 3, 10, None).await.unwrap()), [4]);
        store.append(&[numbered(5)], 0, 0).await.unwrap();
        signal();
        assert_eq!(
            seqs(&cache.read("ns/b", 4, 10, Some(1)).await.unwrap()),
            [5]
        );
        assert!(cache.read("ns/b", 5, 10, Some(1)).await.unwrap().is_empty());

        // A commit fed while the window is current keeps it current at the count it signals: the
        // reader gets the commit's events, then nothing, from memory.
        store.append(&[numbered(6)], 0, 0).await.unwrap();
        cache.stored(vec![handed("ns/b", 6)]);
        signal();
        assert_eq!(
            types(&cache.read("ns/b", 5, 10, Some(2)).await.unwrap()),
            ["from-the-feed"]
        );
        store.append(&[numbered(7)], 0, 0).await.unwrap();
        assert!(cache.read("ns/b", 6, 10, Some(2)).await.unwrap().is_empty());
        // So does a commit of another broker's events.
        cache.stored(vec![handed("ns/x", 1)]);
        signal();
        assert!(cache.read("ns/b", 6, 10, Some(3)).await.unwrap().is_empty());
        // A fed commit after a gap (another process appended 7) sends the next reader to the store.
        store.append(&[numbered(8)], 0, 0).await.unwrap();
        cache.stored(vec![handed("ns/b", 8)]);
        signal();
        assert_eq!(
            seqs(&cache.read("ns/b", 6, 10, Some(4)).await.unwrap()),
            [7, 8]
        );
        assert!(cache.read("ns/b", 8, 10, Some(4)).await.unwrap().is_empty());
        // A signal the window did not see (another process's append) before a commit is fed
        // leaves it unknown after that commit.
        store.append(&[numbered(9)], 0, 0).await.unwrap();
        signal();
        cache.stored(vec![handed("ns/x", 2)]);
        signal();
        assert_eq!(
            seqs(&cache.read("ns/b", 8, 10, Some(6)).await.unwrap()),
            [9]
        );
    }

    #[tokio::test]
    async fn a_commit_is_kept_while_a_reader_fetches() {
        let store = store_with(3).await;
        let cache = LogCache::new(store.clone(), Counter::default(), watch::channel(0).1);
        assert_eq!(
            seqs(&cache.read("ns/b", 0, 10, None).await.unwrap()),
            [1, 2, 3]
        );
        let window = cache.brokers.lock().unwrap()["ns/b"].clone();
        let fetching = window.fetching.lock().await;
        store
            .append(&[numbered(4), numbered(5)], 0, 0)
            .await
            .unwrap();
        cache.stored(vec![handed("ns/b", 4), handed("ns/b", 5)]);
        drop(fetching);
        let read = cache.read("ns/b", 3, 10, None).await.unwrap();
        assert_eq!(seqs(&read), [4, 5]);
        assert_eq!(types(&read), ["from-the-feed", "from-the-feed"]);
    }

    #[tokio::test]
    async fn unreadable_events_are_counted_and_kept_as_none() {
        let store = kinetic_store::open("sqlite::memory:").await.unwrap();
        let bad = NewEvent {
            broker: "ns/b".into(),
            source: "/s".into(),
            id: "x".into(),
            payload: b"not json".to_vec().into(),
        };
        store.append(&[bad], 0, 0).await.unwrap();
        let corrupt = Counter::default();
        let cache = LogCache::new(store, corrupt.clone(), watch::channel(0).1);
        let read = cache.read("ns/b", 0, 10, None).await.unwrap();
        assert_eq!(read.len(), 1);
        assert!(read[0].event.is_none());
        assert_eq!(corrupt.get(), 1);
    }

    #[test]
    fn the_window_is_bounded_by_bytes_as_well_as_events() {
        let logged = |seq: i64, size: usize| {
            Arc::new(Logged {
                stored: StoredEvent {
                    seq,
                    payload: vec![b'x'; size].into(),
                    accepted_at: 0,
                },
                event: None,
            })
        };
        let mut ring = Ring {
            max_events: 4,
            max_bytes: 10_000,
            ..Ring::default()
        };
        for seq in 1..=6 {
            ring.push_back(logged(seq, 10));
        }
        assert_eq!(ring.events.len(), 4, "by count");
        // Each weighs 2 * 3000 + 256: one fits, two do not.
        ring.push_back(logged(7, 3000));
        ring.push_back(logged(8, 3000));
        let seqs: Vec<i64> = ring.events.iter().map(|l| l.stored.seq).collect();
        assert_eq!(seqs, [8]);
        assert_eq!(ring.bytes, 6256);
        // Alone over the bound, the newest stays.
        ring.push_back(logged(9, 20_000));
        assert_eq!(ring.events.len(), 1);
        ring.clear();
        assert_eq!((ring.events.len(), ring.bytes), (0, 0));
    }
}
