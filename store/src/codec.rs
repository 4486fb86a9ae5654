//! Pure pieces both engines share: which events of a batch reach the dedupe table (the first
//! occurrence of each key), how positions are handed out once the engine has said which events were
//! accepted, lease arithmetic, and decoding of the enum texts stored in `phase` and `sink_state`.

use std::collections::{HashMap, HashSet};

use crate::{Appended, Error, Millis, NewDelivery, NewEvent, Phase, Result, SinkState};

/// Indexes (ascending) of the events whose (broker, source, id) appears for the first time in the
/// batch. Later repeats are `Duplicate` without asking the store: the first one wins.
pub(crate) fn first_occurrences(events: &[NewEvent]) -> Vec<usize> {
    let mut seen = HashSet::with_capacity(events.len());
    events
        .iter()
        .enumerate()
        .filter(|(_, event)| {
            seen.insert((
                event.broker.as_str(),
                event.source.as_str(),
                event.id.as_str(),
            ))
        })
        .map(|(index, _)| index)
        .collect()
}

/// `len` flags, set at the `chosen` indexes.
pub(crate) fn flags(len: usize, chosen: &[usize]) -> Vec<bool> {
    let mut flags = vec![false; len];
    for &index in chosen {
        flags[index] = true;
    }
    flags
}

/// How many of the `accepted` events go to each broker, brokers in order of first appearance.
pub(crate) fn counts_per_broker<'a>(
    events: &'a [NewEvent],
    accepted: &[usize],
) -> Vec<(&'a str, i64)> {
    let mut counts: Vec<(&str, i64)> = Vec::new();
    for &index in accepted {
        let broker = events[index].broker.as_str();
        match counts.iter_mut().find(|(name, _)| *name == broker) {
            Some((_, count)) => *count += 1,
            None => counts.push((broker, 1)),
        }
    }
    counts
}

/// The result of an append: `accepted` (ascending indexes) get consecutive positions per broker
/// ending at the broker's new head, in batch order; every other event is a duplicate.
pub(crate) fn positions(
    events: &[NewEvent],
    accepted: &[usize],
    new_heads: &HashMap<String, i64>,
) -> Result<Vec<Appended>> {
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (broker, count) in counts_per_broker(events, accepted) {
        let head = new_heads
            .get(broker)
            .ok_or_else(|| Error::Corrupt(format!("no log head returned for broker `{broker}`")))?;
        next.insert(broker, head - count + 1);
    }
    let mut results = vec![Appended::Duplicate; events.len()];
    for &index in accepted {
        let seq = next
            .get_mut(events[index].broker.as_str())
            .expect("every accepted broker was counted above");
        results[index] = Appended::Accepted(*seq);
        *seq += 1;
    }
    Ok(results)
}

/// Rows to insert for `advance_cursor`, in event order, so that insertion order (the lane order)
/// follows the log even when the caller lists them otherwise. Stable: equal positions keep their order.
/// Splits `sizes` (bytes per item) into consecutive ranges whose total stays under `limit` (an item
/// larger than `limit` gets a range of its own): a batch too large for one statement's parameters
/// goes in several.
pub(crate) fn size_bounded_ranges(sizes: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut total = 0;
    for (index, size) in sizes.iter().enumerate() {
        if index > start && total + size > limit {
            ranges.push(start..index);
            start = index;
            total = 0;
        }
        total += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

pub(crate) fn in_event_order(deliveries: &[NewDelivery]) -> Vec<&NewDelivery> {
    let mut rows: Vec<&NewDelivery> = deliveries.iter().collect();
    rows.sort_by_key(|row| row.event_seq);
    rows
}

/// The ids of a replay request without repeats, first occurrence first.
pub(crate) fn distinct(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// When a lease taken at `now` for `lease_ms` ends.
pub(crate) fn lease_until(now: Millis, lease_ms: i64) -> Millis {
    now.saturating_add(lease_ms.max(0))
}

pub(crate) fn phase(text: &str) -> Result<Phase> {
    Phase::parse(text).ok_or_else(|| Error::Corrupt(format!("unknown delivery phase `{text}`")))
}

pub(crate) fn sink_state(text: &str) -> Result<SinkState> {
    SinkState::parse(text)
        .ok_or_else(|| Error::Corrupt(format!("unknown dead-letter sink state `{text}`")))
}

pub(crate) fn resource_body(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|error| Error::Corrupt(format!("resource body is not JSON: {error}")))
}

/// Sink state of a new dead letter.
pub(crate) fn initial_sink_state(send_to_sink: bool) -> SinkState {
    if send_to_sink {
        SinkState::Pending
    } else {
        SinkState::None
    }
}

/// A new dead letter's id: a UUID v7, so ids sort by creation.
pub(crate) fn dead_letter_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// What [`crate::Checkpoints::delete_checkpoints`] matches: the key itself, and keys starting with
/// it plus `/`.
pub(crate) fn checkpoint_scope(prefix: &str) -> (&str, String) {
    let key = prefix.trim_end_matches('/');
    (key, format!("{key}/"))
}

pub(crate) fn checkpoint_value(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|error| Error::Corrupt(format!("checkpoint value is not JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(broker: &str, id: &str) -> NewEvent {
        NewEvent {
            broker: broker.to_owned(),
            source: "s".to_owned(),
            id: id.to_owned(),
            payload: crate::Bytes::new(),
        }
    }

    #[test]
    fn first_occurrence_wins_within_a_broker_only() {
        let events = [
            event("a", "1"),
            event("a", "1"),
            event("b", "1"),
            event("a", "2"),
            event("b", "1"),
        ];
        assert_eq!(first_occurrences(&events), vec![0, 2, 3]);
    }

    #[test]
    fn positions_are_consecutive_per_broker_and_end_at_the_new_head() {
        let events = [
            event("a", "1"),
            event("b", "1"),
            event("a", "1"),
            event("a", "2"),
            event("b", "2"),
        ];
        let accepted = [0, 1, 3];
        assert_eq!(
            counts_per_broker(&events, &accepted),
            vec![("a", 2), ("b", 1)]
        );
        let heads = HashMap::from([("a".to_owned(), 12), ("b".to_owned(), 1)]);
        assert_eq!(
            positions(&events, &accepted, &heads).unwrap(),
            vec![
                Appended::Accepted(11),
                Appended::Accepted(1),
                Appended::Duplicate,
                Appended::Accepted(12),
                Appended::Duplicate,
            ]
        );
    }

    #[test]
    fn a_missing_head_is_corrupt_not_a_panic() {
        let events = [event("a", "1")];
        assert!(matches!(
            positions(&events, &[0], &HashMap::new()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn unknown_enum_texts_are_corrupt() {
        assert!(matches!(phase("sideways"), Err(Error::Corrupt(_))));
        assert!(matches!(sink_state(""), Err(Error::Corrupt(_))));
        assert_eq!(phase("dead_letter_sink").unwrap(), Phase::DeadLetterSink);
        assert_eq!(sink_state("failed").unwrap(), SinkState::Failed);
    }

    #[test]
    fn distinct_keeps_first_occurrences_in_order() {
        let ids = ["b", "a", "b", "c", "a"].map(String::from);
        assert_eq!(distinct(&ids), vec!["b", "a", "c"]);
    }

    #[test]
    fn lease_arithmetic_saturates() {
        assert_eq!(lease_until(1_000, 500), 1_500);
        assert_eq!(lease_until(i64::MAX - 1, 500), i64::MAX);
        assert_eq!(lease_until(1_000, -5), 1_000);
    }

    #[test]
    fn size_bounded_ranges_cover_everything_in_order() {
        assert_eq!(
            size_bounded_ranges(&[], 10),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(size_bounded_ranges(&[4, 4, 4, 4], 10), vec![0..2, 2..4]);
        assert_eq!(size_bounded_ranges(&[20, 1, 1], 10), vec![0..1, 1..3]);
        assert_eq!(size_bounded_ranges(&[1, 20, 1], 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(size_bounded_ranges(&[5, 5], 10), vec![0..2]);
    }
}
