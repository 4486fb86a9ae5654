//! `poll`: one task per S3Source lists the bucket every `interval` (ListObjectsV2, page by page)
//! and emits `ObjectCreated:Put` for new or changed objects and `ObjectRemoved:Delete` for objects
//! gone since the previous listing, comparing with the listing state kept in the store.
//!
//! # State
//! The state is the previous listing (key, ETag, size, last-modified) under the source's
//! prefix, in key order, in checkpoints of at most [`CHUNK`] objects:
//! `s3/{namespace}/{name}/poll` names the current slot (`a` or `b`) and its number of chunks;
//! `s3/{namespace}/{name}/poll/{slot}/{i}` are the chunks. A pass merges the stored state with the
//! listing (both sorted by key), sends each difference to the sink, writes the new state into the
//! other slot, and switches slots at the end (compare-and-set). So the state moves only after the
//! sink accepted every change of the pass; a pass that stops half-way (crash, shutdown) is done
//! again, and the events it had sent come again with the same ids and dedupe at the broker.
//!
//! Memory: one listing page, one stored chunk and one chunk being written, whatever the bucket's
//! size. The store holds the whole listing (about 100 bytes per object, twice during a pass).
//!
//! On a source's first pass (no state, or state of an earlier source with the same name) the
//! listing is the baseline: nothing is emitted unless `poll.emitExisting`.
//!
//! Several kinetic processes sharing a store take turns: a pass starts only under the lease
//! `s3/{namespace}/{name}/poll/lease` (owner and expiry, taken and renewed by compare-and-set, for
//! [`LEASE`]), so two passes never write the same slot at once; a process that finds another's
//! live lease skips its pass, and a dead owner's lease runs out. The slot switch is a
//! compare-and-set too, so should a lease lapse mid-pass (a pass stuck longer than [`LEASE`] on a
//! sink) only one of the passes switches.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kinetic_api::sources::{S3Poll, S3SourceSpec};
use kinetic_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::controller::{Key, Sources, sleep_or_cancel};
use crate::s3::client::Clients;
use crate::s3::{self, ListedObject};
use crate::sink::{SinkError, Target};

/// Objects per state checkpoint.
pub const CHUNK: usize = 1000;
/// How long a pass's lease lasts; renewed when a third of it has passed.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(15);
/// The `eventSource` of polled records: the same as AWS's notifications, so consumers see one shape.
const EVENT_SOURCE: &str = "aws:s3";
const FALLBACK_REGION: &str = "us-east-1";

/// Where the current state is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    /// The source's uid: state of a deleted source of the same name is not this source's.
    uid: String,
    slot: String,
    chunks: usize,
}

/// One stored object: key, ETag, size, last-modified.
type Entry = (String, Option<String>, u64, DateTime<Utc>);

fn to_entry(object: &ListedObject) -> Entry {
    (
        object.key.clone(),
        object.etag.clone(),
        object.size,
        object.last_modified,
    )
}

fn from_entry((key, etag, size, last_modified): Entry) -> ListedObject {
    ListedObject {
        key,
        etag,
        size,
        last_modified,
    }
}

/// What the heads of the stored state and of the listing say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The stored object is no longer listed.
    Removed,
    /// The listed object was not stored.
    Created,
    /// The same key, with other content.
    Changed,
    /// The same key and content.
    Same,
    /// Both exhausted.
    Done,
}

/// Compares the next stored object with the next listed one (both in key order).
pub fn step(stored: Option<&ListedObject>, listed: Option<&ListedObject>) -> Step {
    match (stored, listed) {
        (None, None) => Step::Done,
        (Some(_), None) => Step::Removed,
        (None, Some(_)) => Step::Created,
        (Some(old), Some(new)) => match old.key.cmp(&new.key) {
            std::cmp::Ordering::Less => Step::Removed,
            std::cmp::Ordering::Greater => Step::Created,
            std::cmp::Ordering::Equal => {
                if old.etag == new.etag
                    && old.size == new.size
                    && old.last_modified == new.last_modified
                {
                    Step::Same
                } else {
                    Step::Changed
                }
            }
        },
    }
}

/// The checkpoint under which a polled S3Source keeps its state; deleting the source deletes it.
pub fn state_key(namespace: &str, name: &str) -> String {
    format!("s3/{namespace}/{name}/poll")
}

fn head_key(key: &Key) -> String {
    state_key(&key.1, &key.2)
}

fn lease_key(key: &Key) -> String {
    format!("s3/{}/{}/poll/lease", key.1, key.2)
}

/// Who polls a source, until when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until: i64,
}

/// Takes or renews the polling lease of `key` for `owner` until `now` + [`LEASE`]: `false` when
/// another owner holds a live one (or took it a moment ago). Cancellation: one compare-and-set.
async fn hold_lease(
    store: &dyn Store,
    key: &Key,
    owner: &str,
    now: i64,
) -> kinetic_store::Result<bool> {
    let lease_key = lease_key(key);
    let current = store.get_checkpoint(&lease_key).await?;
    if let Some(checkpoint) = &current
        && let Ok(lease) = serde_json::from_value::<Lease>(checkpoint.value.clone())
        && lease.owner != owner
        && lease.until > now
    {
        return Ok(false);
    }
    let lease = Lease {
        owner: owner.to_owned(),
        until: now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX),
    };
    let written = store
        .put_checkpoint(
            &lease_key,
            &json!(lease),
            current.map(|checkpoint| checkpoint.version),
            now,
        )
        .await?;
    Ok(written.is_some())
}

fn chunk_key(key: &Key, slot: &str, index: usize) -> String {
    format!("s3/{}/{}/poll/{slot}/{index}", key.1, key.2)
}

/// Why a pass stopped before switching state; it is done again at the next interval.
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("listing the bucket: {0}")]
    List(String),
    #[error("the store: {0}")]
    Store(#[from] kinetic_store::Error),
    #[error("another process wrote the state first")]
    LostRace,
    #[error("another process polls the bucket now")]
    Leased,
    #[error("stopping")]
    Cancelled,
}

/// Runs until `cancel`. Cancellation safe: the state switches only at the end of a pass.
pub(crate) async fn run(
    sources: Arc<Sources>,
    key: Key,
    spec: Arc<S3SourceSpec>,
    poll: S3Poll,
    uid: String,
    sink: Target,
    cancel: CancellationToken,
) {
    let (namespace, name) = (key.1.clone(), key.2.clone());
    if let Some(endpoint) = &spec.endpoint
        && let Err(error) = sources.sink.check_endpoint(endpoint).await
    {
        sources.not_ready(&key, error);
        return;
    }
    let clients = tokio::select! {
        () = cancel.cancelled() => return,
        built = Clients::new(&spec) => built,
    };
    let s3 = match clients {
        Ok(clients) => clients.s3(),
        Err(error) => {
            tracing::warn!(%namespace, %name, %error, "An S3Source cannot build its S3 client.");
            sources.not_ready(&key, error.to_string());
            return;
        }
    };
    tracing::info!(%namespace, %name, bucket = %spec.bucket, "Polling a bucket.");
    let owner = uuid::Uuid::new_v4().to_string();
    let pass = Pass {
        sources: &sources,
        key: &key,
        spec: &spec,
        poll: &poll,
        uid: &uid,
        sink: &sink,
        s3: &s3,
        cancel: &cancel,
        owner: &owner,
        renewed: std::sync::Mutex::new(None),
    };
    loop {
        match pass.run().await {
            Ok(()) => {}
            Err(PassError::Cancelled) => return,
            Err(PassError::Leased) => {
                tracing::debug!(%namespace, %name, "Another process polls this bucket now; skipping a pass.");
            }
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "Polling a bucket failed; trying again at the next interval.");
                sources.update(&key, |s| s.last_error = Some(error.to_string()));
            }
        }
        if sleep_or_cancel(poll.interval(), &cancel).await {
            return;
        }
    }
}

struct Pass<'a> {
    sources: &'a Sources,
    key: &'a Key,
    spec: &'a S3SourceSpec,
    poll: &'a S3Poll,
    uid: &'a str,
    sink: &'a Target,
    s3: &'a aws_sdk_s3::Client,
    cancel: &'a CancellationToken,
    /// This task's name in the lease.
    owner: &'a str,
    /// When the lease was last taken or renewed.
    renewed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Pass<'_> {
    fn store(&self) -> &dyn Store {
        self.sources.store.as_ref()
    }

    /// Takes the lease, or renews it once a third of it has passed; [`PassError::Leased`] when
    /// another process holds it.
    async fn lease(&self) -> Result<(), PassError> {
        let renewed = || {
            self.renewed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if renewed().is_some_and(|at| at.elapsed() < LEASE / 3) {
            return Ok(());
        }
        let now = Utc::now().timestamp_millis();
        let held = hold_lease(self.store(), self.key, self.owner, now).await?;
        *renewed() = held.then(std::time::Instant::now);
        if held { Ok(()) } else { Err(PassError::Leased) }
    }

    async fn run(&self) -> Result<(), PassError> {
        self.lease().await?;
        let head_key = head_key(self.key);
        let stored_head = self.store().get_checkpoint(&head_key).await?;
        let (head, version) = match &stored_head {
            Some(found) => match serde_json::from_value::<Head>(found.value.clone()) {
                Ok(head) if head.uid == self.uid => (Some(head), Some(found.version)),
                _ => (None, Some(found.version)),
            },
            None => (None, None),
        };
        let baseline = head.is_none();
        let slot = match head.as_ref().map(|h| h.slot.as_str()) {
            Some("a") => "b",
            _ => "a",
        };
        self.store()
            .delete_checkpoints(&format!("{head_key}/{slot}"))
            .await?;
        let mut stored = VecDeque::new();
        let mut next_chunk = 0;
        let mut listed = VecDeque::new();
        let mut token: Option<String> = None;
        let mut listing_done = false;
        let mut out: Vec<Entry> = Vec::new();
        let mut written = 0;
        let mut total = 0usize;
        loop {
            if stored.is_empty()
                && let Some(head) = &head
                && next_chunk < head.chunks
            {
                stored = self.read_chunk(&head.slot, next_chunk).await?;
                next_chunk += 1;
                continue;
            }
            if listed.is_empty() && !listing_done {
                let (page, next) = self.list_page(token.take()).await?;
                listed = page;
                listing_done = next.is_none();
                token = next;
                continue;
            }
            match step(stored.front(), listed.front()) {
                Step::Done => break,
                Step::Same => {
                    stored.pop_front();
                    if let Some(object) = listed.pop_front() {
                        out.push(to_entry(&object));
                        total += 1;
                    }
                }
                Step::Removed => {
                    if let Some(object) = stored.pop_front() {
                        self.emit(&object, false).await?;
                    }
                }
                change @ (Step::Created | Step::Changed) => {
                    if change == Step::Changed {
                        stored.pop_front();
                    }
                    if let Some(object) = listed.pop_front() {
                        if !baseline || self.poll.emit_existing {
                            self.emit(&object, true).await?;
                        }
                        out.push(to_entry(&object));
                        total += 1;
                    }
                }
            }
            if out.len() >= CHUNK {
                self.write_chunk(slot, written, &out).await?;
                written += 1;
                out.clear();
            }
        }
        if !out.is_empty() {
            self.write_chunk(slot, written, &out).await?;
            written += 1;
        }
        let new_head = Head {
            uid: self.uid.to_owned(),
            slot: slot.to_owned(),
            chunks: written,
        };
        self.lease().await?;
        let now = Utc::now().timestamp_millis();
        self.store()
            .put_checkpoint(&head_key, &json!(new_head), version, now)
            .await?
            .ok_or(PassError::LostRace)?;
        if baseline {
            tracing::info!(namespace = %self.key.1, name = %self.key.2, objects = total, "Took a polled bucket's baseline.");
        }
        Ok(())
    }

    async fn read_chunk(
        &self,
        slot: &str,
        index: usize,
    ) -> Result<VecDeque<ListedObject>, PassError> {
        let found = self
            .store()
            .get_checkpoint(&chunk_key(self.key, slot, index))
            .await?;
        let entries = found
            .and_then(|c| serde_json::from_value::<Vec<Entry>>(c.value).ok())
            .unwrap_or_else(|| {
                // Objects of a lost chunk look new and are emitted again with their old ids,
                // which the broker drops as duplicates.
                tracing::warn!(namespace = %self.key.1, name = %self.key.2, slot, index, "A chunk of a polled bucket's state is missing or unreadable.");
                Vec::new()
            });
        Ok(entries.into_iter().map(from_entry).collect())
    }

    async fn write_chunk(
        &self,
        slot: &str,
        index: usize,
        entries: &[Entry],
    ) -> Result<(), PassError> {
        self.lease().await?;
        let now = Utc::now().timestamp_millis();
        self.store()
            .put_checkpoint(
                &chunk_key(self.key, slot, index),
                &json!(entries),
                None,
                now,
            )
            .await?
            .ok_or(PassError::LostRace)?;
        Ok(())
    }

    /// One ListObjectsV2 page under the source's prefix, and the token of the next one.
    async fn list_page(
        &self,
        token: Option<String>,
    ) -> Result<(VecDeque<ListedObject>, Option<String>), PassError> {
        let request = self
            .s3
            .list_objects_v2()
            .bucket(&self.spec.bucket)
            .set_prefix(self.spec.prefix.clone())
            .set_continuation_token(token)
            .send();
        let output = tokio::select! {
            () = self.cancel.cancelled() => return Err(PassError::Cancelled),
            output = request => output
                .map_err(|e| PassError::List(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?,
        };
        let page = output
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?.to_owned();
                let last_modified = object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                Some(ListedObject {
                    key,
                    etag: object.e_tag().map(str::to_owned),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified,
                })
            })
            .collect();
        let next = output
            .is_truncated()
            .unwrap_or(false)
            .then(|| output.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok((page, next))
    }

    /// Sends the event of one change, if the source selects it. A refusal for good is counted and
    /// the change passed over (sending it again cannot succeed); anything else is retried.
    async fn emit(&self, object: &ListedObject, created: bool) -> Result<(), PassError> {
        let region = self.spec.region.as_deref().unwrap_or(FALLBACK_REGION);
        let record =
            s3::record_from_listing(&self.spec.bucket, region, EVENT_SOURCE, object, created);
        if !s3::selects(self.spec, &record) {
            return Ok(());
        }
        self.lease().await?;
        let event = match s3::to_event(self.spec, &record) {
            Ok(event) => event,
            Err(error) => {
                self.sources.failed(self.key, error.to_string());
                return Ok(());
            }
        };
        match self
            .sources
            .sink
            .send_until_accepted(self.sink, &event, self.cancel)
            .await
        {
            Ok(()) => {
                let since = if created {
                    object.last_modified
                } else {
                    Utc::now()
                };
                self.sources.accepted(self.key, since);
                Ok(())
            }
            Err(SinkError::Cancelled) => Err(PassError::Cancelled),
            Err(error) => {
                tracing::warn!(namespace = %self.key.1, name = %self.key.2, key = %object.key, %error, "The sink refused a polled object's event; it is dropped.");
                self.sources.failed(self.key, error.to_string());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes (two handles on one SQLite file) and the lease: one holds it, the other is
    /// refused until it runs out; the holder renews it; the key sits under the state, so deleting
    /// the source removes it.
    #[tokio::test]
    async fn one_process_at_a_time_holds_the_polling_lease() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let first = kinetic_store::open(&url).await.expect("open");
        let second = kinetic_store::open(&url).await.expect("open again");
        let key: Key = ("S3Source".into(), "default".into(), "photos".into());
        let lease_ms = i64::try_from(LEASE.as_millis()).expect("fits");
        let t0 = 1_000_000;
        assert!(hold_lease(&*first, &key, "a", t0).await.expect("store"));
        assert!(
            !hold_lease(&*second, &key, "b", t0 + 1)
                .await
                .expect("store")
        );
        // Renewed by its holder, it lasts from the renewal.
        assert!(
            hold_lease(&*first, &key, "a", t0 + lease_ms / 2)
                .await
                .expect("store")
        );
        assert!(
            !hold_lease(&*second, &key, "b", t0 + lease_ms + 1)
                .await
                .expect("store")
        );
        // Not renewed, it runs out and the other takes it.
        let later = t0 + lease_ms / 2 + lease_ms + 1;
        assert!(hold_lease(&*second, &key, "b", later).await.expect("store"));
        assert!(
            !hold_lease(&*first, &key, "a", later + 1)
                .await
                .expect("store")
        );
        assert!(lease_key(&key).starts_with(&format!("{}/", state_key("default", "photos"))));
        first
            .delete_checkpoints(&state_key("default", "photos"))
            .await
            .expect("store");
        assert!(
            hold_lease(&*first, &key, "a", later + 2)
                .await
                .expect("store")
        );
    }

    fn object(key: &str, etag: &str, seconds: i64) -> ListedObject {
        ListedObject {
            key: key.into(),
            etag: Some(etag.into()),
            size: 1,
            last_modified: DateTime::from_timestamp(seconds, 0).unwrap(),
        }
    }

    #[test]
    fn heads_compare_by_key_then_content() {
        let a = object("a", "1", 10);
        let b = object("b", "1", 10);
        for (stored, listed, expected) in [
            (None, None, Step::Done),
            (Some(&a), None, Step::Removed),
            (None, Some(&a), Step::Created),
            (Some(&a), Some(&b), Step::Removed),
            (Some(&b), Some(&a), Step::Created),
            (Some(&a), Some(&a), Step::Same),
            (Some(&a), Some(&object("a", "2", 10)), Step::Changed),
            (Some(&a), Some(&object("a", "1", 11)), Step::Changed),
        ] {
            assert_eq!(step(stored, listed), expected, "{stored:?} {listed:?}");
        }
    }

    /// The merge visits every key of both sides once, in order.
    #[test]
    fn merging_two_sorted_lists_finds_every_difference() {
        let mut stored: VecDeque<_> = [
            object("a", "1", 1),
            object("b", "1", 1),
            object("d", "1", 1),
        ]
        .into();
        let mut listed: VecDeque<_> = [
            object("b", "2", 2),
            object("c", "1", 1),
            object("d", "1", 1),
        ]
        .into();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = step(stored.front(), listed.front());
            match next {
                Step::Done => break,
                Step::Removed => seen.push(("removed", stored.pop_front().unwrap().key)),
                Step::Created => seen.push(("created", listed.pop_front().unwrap().key)),
                Step::Changed => {
                    stored.pop_front();
                    seen.push(("changed", listed.pop_front().unwrap().key));
                }
                Step::Same => {
                    stored.pop_front();
                    seen.push(("same", listed.pop_front().unwrap().key));
                }
            }
        }
        let keys: Vec<(&str, &str)> = seen.iter().map(|(s, k)| (*s, k.as_str())).collect();
        assert_eq!(
            keys,
            [
                ("removed", "a"),
                ("changed", "b"),
                ("created", "c"),
                ("same", "d")
            ]
        );
    }
}
