//! The event log: append, read, head, dedupe, prune, and ordering under concurrent appends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kinetic_store::{Appended, Store};

use crate::fixtures::{LONG_AGO, T0, claim, event, events, trigger};

fn accepted(results: &[Appended]) -> Vec<i64> {
    results
        .iter()
        .map(|result| match result {
            Appended::Accepted(seq) => *seq,
            Appended::Duplicate => panic!("expected every event to be accepted: {results:?}"),
        })
        .collect()
}

fn strictly_increasing(seqs: &[i64]) -> bool {
    seqs.windows(2).all(|pair| pair[0] < pair[1])
}

pub async fn append_reads_in_order_and_moves_the_head(store: Arc<dyn Store>) -> anyhow::Result<()> {
    assert_eq!(
        store.head("default/one").await?,
        0,
        "an empty log's head is 0"
    );
    assert!(store.append(&[], T0, LONG_AGO).await?.is_empty());

    let batch = vec![
        event("default/one", "s", "1", b"one 1"),
        event("default/two", "s", "1", b"two 1"),
        event("default/one", "s", "2", b"one 2"),
        event("default/one", "s", "3", b"one 3"),
        event("default/two", "s", "2", b"two 2"),
    ];
    let seqs = accepted(&store.append(&batch, T0, LONG_AGO).await?);
    let one = [seqs[0], seqs[2], seqs[3]];
    let two = [seqs[1], seqs[4]];
    assert!(
        strictly_increasing(&one) && strictly_increasing(&two),
        "{seqs:?}"
    );

    let read = store.read("default/one", 0, 100).await?;
    assert_eq!(read.iter().map(|event| event.seq).collect::<Vec<_>>(), one);
    assert_eq!(
        read.iter()
            .map(|event| event.payload.as_ref())
            .collect::<Vec<_>>(),
        [b"one 1", b"one 2", b"one 3"]
    );
    assert!(read.iter().all(|event| event.accepted_at == T0));
    assert_eq!(store.head("default/one").await?, one[2]);
    assert_eq!(store.head("default/two").await?, two[1]);

    let after_first = store.read("default/one", one[0], 100).await?;
    assert_eq!(
        after_first
            .iter()
            .map(|event| event.seq)
            .collect::<Vec<_>>(),
        &one[1..]
    );
    assert_eq!(store.read("default/one", 0, 2).await?.len(), 2, "limit");
    assert!(store.read("default/one", one[2], 100).await?.is_empty());
    assert!(store.read("default/none", 0, 100).await?.is_empty());

    let later = accepted(
        &store
            .append(&events("default/one", "later", 3), T0 + 1, LONG_AGO)
            .await?,
    );
    assert!(
        later[0] > one[2] && strictly_increasing(&later),
        "{later:?}"
    );
    assert_eq!(store.head("default/one").await?, later[2]);
    Ok(())
}

pub async fn dedupe_within_a_batch_first_wins(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let batch = vec![
        event("default/b", "s", "1", b"first"),
        event("default/b", "s", "1", b"second"),
        event("default/b", "other", "1", b"other source"),
        event("default/c", "s", "1", b"other broker"),
        event("default/b", "s", "2", b"next"),
        event("default/b", "s", "1", b"third"),
    ];
    let results = store.append(&batch, T0, LONG_AGO).await?;
    let kinds: Vec<bool> = results
        .iter()
        .map(|result| matches!(result, Appended::Accepted(_)))
        .collect();
    assert_eq!(kinds, [true, false, true, true, true, false], "{results:?}");
    let payloads: Vec<Vec<u8>> = store
        .read("default/b", 0, 100)
        .await?
        .into_iter()
        .map(|event| event.payload.to_vec())
        .collect();
    assert_eq!(
        payloads,
        [
            b"first".to_vec(),
            b"other source".to_vec(),
            b"next".to_vec()
        ]
    );
    Ok(())
}

/// Every key of a batch large enough to be written in statements of several sizes is known as
/// that key afterwards, one by one and together: a key remembered at another key's row would
/// let its duplicate in.
pub async fn every_key_of_a_large_batch_is_remembered(store: Arc<dyn Store>) -> anyhow::Result<()> {
    // Keys already in the window, so the batch's rows do not start at the table's first.
    let earlier: Vec<_> = (0..3)
        .map(|n| event("default/b", "s", &format!("earlier-{n}"), b"e"))
        .collect();
    accepted(&store.append(&earlier, T0, LONG_AGO).await?);
    let batch: Vec<_> = (0..173)
        .map(|n| event("default/b", "s", &format!("key-{n}"), b"p"))
        .collect();
    let first = accepted(&store.append(&batch, T0 + 1, LONG_AGO).await?);
    assert_eq!(first.len(), 173);
    for (n, key) in batch.iter().enumerate().step_by(7) {
        assert_eq!(
            store
                .append(std::slice::from_ref(key), T0 + 2, LONG_AGO)
                .await?,
            [Appended::Duplicate],
            "key {n}"
        );
    }
    let again = store.append(&batch, T0 + 3, LONG_AGO).await?;
    assert!(
        again.iter().all(|result| *result == Appended::Duplicate),
        "{again:?}"
    );
    // A new key next to the old ones is still new.
    let fresh = store
        .append(
            &[event("default/b", "s", "key-173", b"p")],
            T0 + 4,
            LONG_AGO,
        )
        .await?;
    assert!(matches!(fresh[..], [Appended::Accepted(_)]), "{fresh:?}");
    Ok(())
}

pub async fn dedupe_across_batches_and_after_the_window(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let key = || vec![event("default/b", "s", "k", b"payload")];
    let first = accepted(&store.append(&key(), T0, T0 - 60_000).await?);

    // Within the window: not stored again, the head does not move.
    assert_eq!(
        store.append(&key(), T0 + 100, T0 - 60_000).await?,
        [Appended::Duplicate]
    );
    let mixed = store
        .append(
            &[key(), vec![event("default/b", "s", "fresh", b"new")]].concat(),
            T0 + 200,
            T0 - 60_000,
        )
        .await?;
    assert_eq!(mixed[0], Appended::Duplicate);
    assert!(matches!(mixed[1], Appended::Accepted(seq) if seq > first[0]));
    let head = store.head("default/b").await?;
    assert_eq!(
        store.append(&key(), T0 + 300, T0 - 60_000).await?,
        [Appended::Duplicate]
    );
    assert_eq!(store.head("default/b").await?, head);

    // Accepted before the window started: new again, and stamped anew.
    let again = accepted(&store.append(&key(), T0 + 120_000, T0 + 1).await?);
    assert!(again[0] > head);
    assert_eq!(
        store.append(&key(), T0 + 120_001, T0 + 1).await?,
        [Appended::Duplicate]
    );
    assert_eq!(store.read("default/b", 0, 100).await?.len(), 3);
    Ok(())
}

pub async fn prune_keeps_what_a_cursor_still_needs(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let (fast, slow) = (trigger("default/b", "fast"), trigger("default/b", "slow"));
    assert_eq!(claim(&store, "me", &fast, T0).await?, 0);
    assert_eq!(claim(&store, "me", &slow, T0).await?, 0);
    let seqs = accepted(
        &store
            .append(&events("default/b", "e", 5), T0, LONG_AGO)
            .await?,
    );

    assert!(
        store
            .advance_cursor("me", &fast.uid, 0, seqs[2], &[], &[], T0)
            .await?
    );
    assert!(
        store
            .advance_cursor("me", &slow.uid, 0, seqs[1], &[], &[], T0)
            .await?
    );
    assert_eq!(
        store.prune(LONG_AGO).await?,
        2,
        "events behind the slowest cursor"
    );
    let left: Vec<i64> = store
        .read("default/b", 0, 100)
        .await?
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(left, &seqs[2..]);

    assert!(
        store
            .advance_cursor("me", &slow.uid, seqs[1], seqs[4], &[], &[], T0)
            .await?
    );
    assert_eq!(
        store.prune(LONG_AGO).await?,
        1,
        "now the fast cursor is the slowest"
    );
    let left: Vec<i64> = store
        .read("default/b", 0, 100)
        .await?
        .iter()
        .map(|event| event.seq)
        .collect();
    assert_eq!(left, &seqs[3..]);
    assert_eq!(store.prune(LONG_AGO).await?, 0);
    assert_eq!(
        store.head("default/b").await?,
        seqs[4],
        "pruning does not move the head"
    );

    // Prune also forgets dedupe keys older than the window it is given.
    let key = vec![event("default/b", "test/source", "e-0", b"again")];
    assert_eq!(
        store.append(&key, T0 + 10, LONG_AGO).await?,
        [Appended::Duplicate]
    );
    store.prune(T0 + 1).await?;
    assert!(matches!(
        store.append(&key, T0 + 20, LONG_AGO).await?[0],
        Appended::Accepted(_)
    ));
    Ok(())
}

pub async fn prune_empties_a_broker_without_cursors(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let seqs = accepted(
        &store
            .append(&events("default/nobody", "e", 3), T0, LONG_AGO)
            .await?,
    );
    let watched = trigger("default/watched", "t");
    claim(&store, "me", &watched, T0).await?;
    store
        .append(&events("default/watched", "e", 2), T0, LONG_AGO)
        .await?;

    assert_eq!(store.prune(LONG_AGO).await?, 3);
    assert!(store.read("default/nobody", 0, 100).await?.is_empty());
    assert_eq!(
        store.read("default/watched", 0, 100).await?.len(),
        2,
        "its cursor has not passed them"
    );

    // Positions are never handed out twice, even after the log was emptied.
    assert_eq!(store.head("default/nobody").await?, seqs[2]);
    let next = accepted(
        &store
            .append(&events("default/nobody", "f", 1), T0, LONG_AGO)
            .await?,
    );
    assert!(next[0] > seqs[2]);
    Ok(())
}

/// Several writers (on two handles: two processes) append to one broker while a reader follows the
/// log. The reader must see positions strictly increasing and, at the end, every accepted position:
/// a position below one it already passed that became visible later would be missing.
pub async fn concurrent_appends_are_seen_in_order(
    first: Arc<dyn Store>,
    second: Arc<dyn Store>,
) -> anyhow::Result<()> {
    const WRITERS: usize = 6;
    const BATCHES: usize = 20;
    const BATCH: usize = 25;
    let broker = "default/busy";
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let store = first.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = 0;
            loop {
                // Read the flag before reading the log: once every writer has finished, one more empty
                // read means everything was seen.
                let finished = done.load(Ordering::SeqCst);
                let events = store.read(broker, last, 200).await?;
                for event in &events {
                    anyhow::ensure!(event.seq > last, "saw {} after {last}", event.seq);
                    last = event.seq;
                    seen.push(event.seq);
                }
                if events.is_empty() {
                    if finished {
                        return Ok(seen);
                    }
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        writers.spawn(async move {
            let mut seqs = Vec::new();
            for batch in 0..BATCHES {
                let events = events(broker, &format!("w{writer}-b{batch}"), BATCH);
                seqs.extend(accepted(&store.append(&events, T0, LONG_AGO).await?));
            }
            anyhow::Ok(seqs)
        });
    }
    let mut all = Vec::new();
    while let Some(result) = writers.join_next().await {
        all.extend(result??);
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await??;

    all.sort_unstable();
    assert_eq!(all.len(), WRITERS * BATCHES * BATCH);
    assert!(
        strictly_increasing(&all),
        "no position was handed out twice"
    );
    assert_eq!(seen, all, "the reader saw every position, in order");
    Ok(())
}

pub async fn remember_and_forget_keep_the_window_without_a_log(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let keys = vec![
        event("default/k", "s", "1", b""),
        event("default/k", "s", "2", b""),
        event("default/k", "s", "1", b""),
    ];
    // New the first time, a repeat within the input is not.
    assert_eq!(
        store.remember(&keys, T0, T0 - 60_000).await?,
        [true, true, false]
    );
    assert_eq!(
        store.remember(&keys[..2], T0 + 10, T0 - 60_000).await?,
        [false, false]
    );
    // The window is shared with appends: an appended key is remembered, and the other way round.
    assert_eq!(
        store.append(&keys[..1], T0 + 20, T0 - 60_000).await?,
        [Appended::Duplicate]
    );
    // Nothing reached the log.
    assert_eq!(store.head("default/k").await?, 0);

    // Forgetting removes a key only when it was stamped at that time: "2" is new again, "3"
    // (stamped later) stays, "1" was not forgotten.
    assert_eq!(
        store
            .remember(&[event("default/k", "s", "3", b"")], T0 + 30, T0 - 60_000)
            .await?,
        [true]
    );
    store.forget(&keys[1..2], T0).await?;
    store
        .forget(&[event("default/k", "s", "3", b"")], T0)
        .await?;
    assert_eq!(
        store
            .remember(
                &[
                    event("default/k", "s", "2", b""),
                    event("default/k", "s", "3", b""),
                    event("default/k", "s", "1", b""),
                ],
                T0 + 40,
                T0 - 60_000
            )
            .await?,
        [true, false, false]
    );
    // Past the window a key is new again.
    assert_eq!(
        store.remember(&keys[..1], T0 + 120_000, T0 + 1).await?,
        [true]
    );
    assert!(store.remember(&[], T0, T0).await?.is_empty());
    store.forget(&[], T0).await?;
    Ok(())
}

pub async fn a_read_stops_once_it_holds_enough_bytes(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let third = kinetic_store::READ_BYTES / 3 + 1;
    let big = vec![b'x'; third];
    let batch: Vec<_> = (1..=4)
        .map(|n| event("default/big", "s", &n.to_string(), &big))
        .collect();
    let seqs = accepted(&store.append(&batch, T0, LONG_AGO).await?);
    // Three of a third each pass the bound: the third is the last one read.
    let read = store.read("default/big", 0, 100).await?;
    assert_eq!(
        read.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[..3],
        "bounded by bytes"
    );
    // The limit still applies, and a single event larger than the bound is read alone.
    assert_eq!(store.read("default/big", 0, 2).await?.len(), 2);
    let huge = vec![b'y'; kinetic_store::READ_BYTES + 1];
    let huge_seq = accepted(
        &store
            .append(&[event("default/huge", "s", "1", &huge)], T0, LONG_AGO)
            .await?,
    );
    let read = store.read("default/huge", 0, 100).await?;
    assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), huge_seq);
    Ok(())
}

/// A batch of more bytes than one statement carries (PostgreSQL appends it in several statements
/// in one transaction) keeps positions in batch order, dedupes within itself and against the
/// window, and reads back byte for byte.
pub async fn a_batch_of_many_megabytes_appends_whole(store: Arc<dyn Store>) -> anyhow::Result<()> {
    let broker = "default/large";
    store
        .append(&[event(broker, "s", "seen", b"before")], T0, LONG_AGO)
        .await?;
    let payloads: Vec<Vec<u8>> = (0..24u8).map(|n| vec![b'a' + n; 512 * 1024]).collect();
    let mut batch: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(n, payload)| event(broker, "s", &format!("big-{n}"), payload))
        .collect();
    batch.insert(5, event(broker, "s", "seen", b"a repeat of an earlier key"));
    batch.push(event(broker, "s", "big-3", b"a repeat within the batch"));
    let results = store.append(&batch, T0 + 1, LONG_AGO).await?;
    let seqs: Vec<i64> = results
        .iter()
        .filter_map(|result| match result {
            Appended::Accepted(seq) => Some(*seq),
            Appended::Duplicate => None,
        })
        .collect();
    assert_eq!(seqs, (2..=25).collect::<Vec<_>>(), "{results:?}");
    assert_eq!(results[5], Appended::Duplicate);
    assert_eq!(results[results.len() - 1], Appended::Duplicate);
    assert_eq!(store.head(broker).await?, 25);
    let mut read = Vec::new();
    let mut after = 1;
    while read.len() < payloads.len() {
        let events = store.read(broker, after, 100).await?;
        anyhow::ensure!(!events.is_empty(), "the log ended after {after}");
        after = events.last().map_or(after, |e| e.seq);
        read.extend(events);
    }
    for (stored, payload) in read.iter().zip(&payloads) {
        assert!(
            stored.payload == *payload,
            "event {} read back whole",
            stored.seq
        );
    }
    Ok(())
}

/// Writers append overlapping keys in opposite orders at once (on one handle: a SQLite file has
/// one owning process, whose dedupe index the writers share; PostgreSQL's pool runs them on
/// several connections): every key is accepted exactly once, nobody waits on anybody forever, and
/// positions are never handed out twice.
pub async fn concurrent_appends_of_the_same_keys_accept_each_once(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    const WRITERS: usize = 6;
    const KEYS: usize = 200;
    let broker = "default/contended";
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let mut keys: Vec<usize> = (0..KEYS).collect();
            if writer % 2 == 1 {
                keys.reverse();
            }
            let mut won = Vec::new();
            for chunk in keys.chunks(40) {
                let batch: Vec<_> = chunk
                    .iter()
                    .map(|key| event(broker, "s", &format!("k{key}"), b"x"))
                    .collect();
                let results = store.append(&batch, T0, LONG_AGO).await?;
                for (key, result) in chunk.iter().zip(results) {
                    if let Appended::Accepted(seq) = result {
                        won.push((*key, seq));
                    }
                }
            }
            anyhow::Ok(won)
        });
    }
    let mut won = Vec::new();
    let deadline = std::time::Duration::from_secs(60);
    while let Some(result) = tokio::time::timeout(deadline, writers.join_next()).await? {
        won.extend(result??);
    }
    let mut keys: Vec<usize> = won.iter().map(|(key, _)| *key).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        (0..KEYS).collect::<Vec<_>>(),
        "each key accepted once"
    );
    let mut seqs: Vec<i64> = won.iter().map(|(_, seq)| *seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=KEYS as i64).collect::<Vec<_>>());
    assert_eq!(store.head(broker).await?, KEYS as i64);
    Ok(())
}
