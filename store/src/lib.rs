//! Durable state of kinetic behind one [`Store`] interface, with a PostgreSQL implementation
//! ([`postgres::PostgresStore`], scale-out: many processes share it) and a SQLite one
//! ([`sqlite::SqliteStore`], the embedded default). Open either with [`open`].
//!
//! The interface is split by aggregate: [`Resources`] (applied YAML), [`EventLog`] (accepted events
//! and the dedupe window), [`Deliveries`] (per-trigger cursors over the log, and the retry state of
//! events whose first attempt failed), [`DeadLetters`] (events that gave up, kept for inspection and
//! replay), [`Checkpoints`] (sources' progress, advanced by compare-and-set). This crate knows nothing of HTTP or CloudEvents: an event is an opaque payload with a
//! broker, a source and an id.
//!
//! Times are Unix milliseconds (`i64`) passed in by the caller, so logic can be tested with any clock
//! and several processes agree on the same representation.
//!
//! How delivery state works: each trigger has a cursor into its broker's log. The process that holds
//! the cursor's lease reads events after the cursor, delivers them, and moves the cursor in the same
//! transaction that records every event whose first attempt did not succeed (as a [`Delivery`] row to
//! retry, or as a dead letter). So an event is either behind the cursor and accounted for, or ahead of
//! it and read again after a crash: at-least-once without a write per successful delivery.

use async_trait::async_trait;
pub use bytes::Bytes;

pub mod postgres;
pub mod sqlite;

mod codec;
mod error;
pub use error::{Error, Result};

/// Unix time in milliseconds.
pub type Millis = i64;

/// See [`EventLog::watch_appends`].
pub type AppendSignals = futures::stream::BoxStream<'static, ()>;

/// Opens the store named by `url` and applies its migrations: `sqlite:///path/to/state.db`
/// (created when missing), `sqlite::memory:`, or `postgres://user@host:port/db`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(url).await?,
        ))
    } else {
        Err(Error::InvalidUrl(url.to_owned()))
    }
}

/// Everything kinetic keeps. Implementations are cheap to share (`Arc<dyn Store>`).
pub trait Store:
    Resources + EventLog + Deliveries + DeadLetters + Checkpoints + Send + Sync + 'static
{
    /// Which engine this is, for logs and metrics: `"sqlite"` or `"postgres"`.
    fn engine(&self) -> &'static str;
}

// ---------------------------------------------------------------- resources

/// A stored resource. `body` is the resource's JSON as the API crate serializes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Stable identity, generated when the resource is first created; a resource deleted and created
    /// again gets a new one. A UUID v7: it carries the creation time ([`created_at`]).
    pub uid: String,
    /// 1 on creation, +1 on every change of `body`.
    pub generation: i64,
    pub body: serde_json::Value,
    pub updated_at: Millis,
}

/// When the resource with `uid` was created, from its UUID v7; `None` for other uids (resources
/// created before uids carried the time).
pub fn created_at(uid: &str) -> Option<Millis> {
    let uuid = uuid::Uuid::parse_str(uid).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    i64::try_from(seconds)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Updated,
    Unchanged,
}

#[async_trait]
pub trait Resources {
    /// Creates or replaces a resource. Idempotent: the same body again is `Unchanged` and keeps the
    /// generation. Returns the outcome and the stored resource.
    async fn apply_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<(ApplyOutcome, StoredResource)>;
    async fn get_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredResource>>;
    /// Resources of one kind, in any namespace when `namespace` is `None`, ordered by namespace and name.
    async fn list_resources(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>>;
    /// Every resource of every kind, ordered by kind, namespace and name: one read for a whole
    /// snapshot of what exists.
    async fn all_resources(&self) -> Result<Vec<StoredResource>>;
    /// Deletes a resource; `false` when it did not exist. Deleting a Trigger's resource does not touch
    /// its cursor; call [`Deliveries::drop_trigger`] for that.
    async fn delete_resource(&self, kind: &str, namespace: &str, name: &str) -> Result<bool>;
}

// ---------------------------------------------------------------- event log

/// An event to append to a broker's log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// `namespace/name` of the broker.
    pub broker: String,
    /// CloudEvents `source` and `id`: the dedupe key within a broker.
    pub source: String,
    pub id: String,
    /// The event in CloudEvents structured JSON: shared, not copied, by the log, the dispatcher's
    /// window over it and the console's journal.
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position of the log.
    Accepted(i64),
    /// The same (broker, source, id) was accepted within the dedupe window: not stored again.
    Duplicate,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the log: increasing in commit order within a broker (readers never see a lower
    /// position appear after a higher one).
    pub seq: i64,
    pub payload: Bytes,
    pub accepted_at: Millis,
}

#[async_trait]
pub trait EventLog {
    /// Appends a batch in one transaction (group commit): all or nothing. The result has one entry per
    /// input, in order. Within the batch and against the dedupe window (entries newer than
    /// `dedupe_since`), a repeated (broker, source, id) is `Duplicate`. On error nothing was written.
    async fn append(
        &self,
        events: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<Appended>>;
    /// The dedupe window without the log, for brokers whose log lives elsewhere (the Kafka class):
    /// stamps each (broker, source, id) of `keys` that is new with `now` and returns one flag per
    /// input, `true` for new. A key repeated within `keys` is new only the first time. Payloads are
    /// ignored.
    async fn remember(
        &self,
        keys: &[NewEvent],
        now: Millis,
        dedupe_since: Millis,
    ) -> Result<Vec<bool>>;
    /// Undoes [`EventLog::remember`] for `keys` stamped at `stamped_at` (their write elsewhere
    /// failed, so a retry must not count as a duplicate). Keys stamped at another time are untouched.
    async fn forget(&self, keys: &[NewEvent], stamped_at: Millis) -> Result<()>;
    /// Events of `broker` with `seq > after`, oldest first, at most `limit`, and no further event
    /// once those read hold [`READ_BYTES`] of payload (at least one is read).
    async fn read(&self, broker: &str, after: i64, limit: usize) -> Result<Vec<StoredEvent>>;
    /// The highest position of `broker`'s log (0 when empty).
    async fn head(&self, broker: &str) -> Result<i64>;
    /// Signals appends committed by any process, where the engine can (PostgreSQL: LISTEN/NOTIFY);
    /// `None` where it cannot, and readers poll. An item means "the log may have grown"; items may
    /// coalesce, and one also comes after the signal connection was lost and restored.
    async fn watch_appends(&self) -> Result<Option<AppendSignals>>;
    /// Deletes dedupe entries older than `dedupe_since` and events that every cursor of their broker
    /// has passed (events of a broker without cursors are deleted too: nobody can ever read them).
    /// Returns how many events were deleted.
    async fn prune(&self, dedupe_since: Millis) -> Result<u64>;
}

// ---------------------------------------------------------------- deliveries

/// Which trigger a cursor or delivery belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TriggerRef {
    /// The trigger resource's uid.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `namespace/name` of the trigger's broker.
    pub broker: String,
}

/// A cursor this process holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub trigger_uid: String,
    /// Every event with `seq <= position` is accounted for.
    pub position: i64,
}

/// Where a delivery row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Being delivered to the trigger's subscriber.
    Subscriber,
    /// Gave up on the subscriber; being sent to the dead-letter sink. Linked to a dead letter.
    DeadLetterSink,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Subscriber => "subscriber",
            Phase::DeadLetterSink => "dead_letter_sink",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        match text {
            "subscriber" => Some(Phase::Subscriber),
            "dead_letter_sink" => Some(Phase::DeadLetterSink),
            _ => None,
        }
    }
}

/// An event that needs another attempt (or its first, when it waits behind an ordered lane).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub trigger: TriggerRef,
    pub event_seq: i64,
    pub payload: Vec<u8>,
    /// Ordered lane (the `partitionkey` value; `""` for events without one). `None`: unordered.
    pub lane: Option<String>,
    /// Attempts made so far.
    pub attempts: i32,
    pub next_attempt_at: Millis,
    pub first_attempt_at: Option<Millis>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
}

/// A leased delivery row.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub trigger: TriggerRef,
    pub event_seq: i64,
    pub payload: Vec<u8>,
    pub lane: Option<String>,
    pub phase: Phase,
    /// Attempts made so far in this phase.
    pub attempts: i32,
    pub first_attempt_at: Option<Millis>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// Set in phase `DeadLetterSink`.
    pub dead_letter_id: Option<String>,
}

/// What happened to a leased delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryUpdate {
    /// Delivered (to the subscriber, or to the dead-letter sink): the row is removed; in phase
    /// `DeadLetterSink` the dead letter is marked as sent.
    Done,
    /// Try again at `next_attempt_at`; the lease is released.
    Retry {
        attempts: i32,
        next_attempt_at: Millis,
        last_status: Option<i32>,
        last_error: Option<String>,
    },
    /// Phase `Subscriber` gave up: the dead letter is recorded; with `send_to_sink` the row moves to
    /// phase `DeadLetterSink` (attempts 0, due now), otherwise it is removed. Phase `DeadLetterSink`
    /// gave up: the row is removed and the dead letter marked as failed to send, with `dead.last_*`
    /// describing the sink's failure.
    GiveUp {
        dead: NewDeadLetter,
        send_to_sink: bool,
    },
}

/// Backlog of one trigger, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub trigger_uid: String,
    /// Events in the log after the cursor.
    pub unread: i64,
    /// Delivery rows (retrying, waiting in a lane, or going to the dead-letter sink).
    pub pending: i64,
    /// Since when the oldest event not yet delivered waits: the first unread event's acceptance,
    /// or a row's first attempt (its next one if none was made yet), whichever is older.
    pub oldest: Option<Millis>,
}

impl Backlog {
    /// From the store's columns: the oldest unread event's acceptance and the oldest row's time.
    pub fn new(
        trigger_uid: String,
        unread: i64,
        pending: i64,
        unread_since: Option<Millis>,
        pending_since: Option<Millis>,
    ) -> Self {
        let oldest = match (unread_since.filter(|_| unread > 0), pending_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Backlog {
            trigger_uid,
            unread,
            pending,
            oldest,
        }
    }
}

#[async_trait]
pub trait Deliveries {
    /// Creates missing cursors at their broker's current head (a new trigger sees events accepted from
    /// now on), extends this owner's leases, takes leases that expired, and returns the cursors `owner`
    /// now holds. Cursors of triggers not in `triggers` are untouched.
    async fn claim_cursors(
        &self,
        owner: &str,
        triggers: &[TriggerRef],
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<Cursor>>;
    /// Moves a cursor from `from` to `to` and records, in the same transaction, the deliveries and dead
    /// letters of the events in between that were not delivered at the first attempt. Returns `false`
    /// (and writes nothing) when `owner` no longer holds the lease or the cursor is not at `from`.
    ///
    /// The commit does not wait for the disk (SQLite `synchronous=NORMAL`, PostgreSQL
    /// `synchronous_commit=off`): a crash of the machine (not of kinetic) can undo the last advances,
    /// and only together with every later write, so their events are delivered again; nothing
    /// accepted is lost, and the broker's next durable commit makes them durable too. It halves the
    /// disk flushes of a busy broker.
    #[allow(clippy::too_many_arguments)] // One atomic step; a parameter struct would only rename them.
    async fn advance_cursor(
        &self,
        owner: &str,
        trigger_uid: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
        dead_letters: &[(NewDeadLetter, bool)],
        now: Millis,
    ) -> Result<bool>;
    /// Records, without a cursor, the deliveries and dead letters of events not delivered at their
    /// first attempt: for brokers whose log and positions live elsewhere (the Kafka class commits
    /// its consumer offsets after this returns).
    async fn record_outcomes(
        &self,
        deliveries: &[NewDelivery],
        dead_letters: &[(NewDeadLetter, bool)],
        now: Millis,
    ) -> Result<()>;
    /// Lanes of `trigger_uid` that have a row in phase `Subscriber`: new events of those lanes must
    /// queue behind them.
    async fn blocked_lanes(&self, trigger_uid: &str) -> Result<Vec<String>>;
    /// Leases up to `limit` due rows (`next_attempt_at <= now`, lease free or expired) for `lease_ms`.
    /// In an ordered lane only the oldest row in phase `Subscriber` is due, oldest meaning inserted
    /// first (`advance_cursor` inserts its rows in event order; a replay goes to the end of its lane).
    /// Rows of different owners never overlap.
    async fn lease_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// Applies the outcome of an attempt on a row `owner` leased. Returns `false` when the lease was
    /// lost (another owner took the row); then nothing is written.
    async fn update_delivery(
        &self,
        owner: &str,
        id: i64,
        update: DeliveryUpdate,
        now: Millis,
    ) -> Result<bool>;
    /// Releases every lease (cursors and rows). Only for a single-process store at start-up, where any
    /// lease left is from a previous run of the same process.
    async fn release_all_leases(&self) -> Result<()>;
    /// Records that dispatcher `owner` is alive until `now + ttl_ms`, forgets owners whose time ran
    /// out, and returns the owners alive now (itself included, unless `ttl_ms` is negative: that is
    /// how a stopping dispatcher leaves), sorted. Dispatchers use it to take a fair share of the
    /// cursors.
    async fn heartbeat(&self, owner: &str, now: Millis, ttl_ms: i64) -> Result<Vec<String>>;
    /// Ends `owner`'s leases on these cursors (cursors it does not hold are untouched), so another
    /// dispatcher can take them at once.
    async fn release_cursors(&self, owner: &str, trigger_uids: &[String]) -> Result<()>;
    /// Removes a deleted trigger's cursor and delivery rows (its dead letters stay).
    async fn drop_trigger(&self, trigger_uid: &str) -> Result<()>;
    /// Moves `trigger_uid`'s cursor to its broker's head, unless a lease on it is live at `now`:
    /// the events behind it are no longer kept for that trigger, and pruning may remove them.
    /// Returns the position it moved from, or `None` when it did not move.
    async fn skip_to_head(&self, trigger_uid: &str, now: Millis) -> Result<Option<i64>>;
    async fn backlog(&self) -> Result<Vec<Backlog>>;
    /// The earliest `next_attempt_at` of rows not leased, to know how long to sleep.
    async fn next_due(&self) -> Result<Option<Millis>>;
}

/// Payload bytes past which [`EventLog::read`] stops adding events: a batch of large events stays
/// a bounded amount of memory.
pub const READ_BYTES: usize = 32 * 1024 * 1024;

/// Whether a read holding `bytes` of payload already may take another event.
pub(crate) fn read_has_room(bytes: usize) -> bool {
    bytes < READ_BYTES
}

// ---------------------------------------------------------------- dead letters

/// An event that gave up.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub trigger: TriggerRef,
    pub event_seq: i64,
    pub payload: Vec<u8>,
    /// The event's ordered lane (`None`: unordered), so a replay queues it at the end of that lane.
    /// [`Deliveries::update_delivery`] ignores it and keeps the lane of the row that gave up.
    pub lane: Option<String>,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// The start of the last response body (at most 4 KiB), for `knativeerrordata`.
    pub last_response: Option<Vec<u8>>,
    pub first_attempt_at: Option<Millis>,
}

/// State of sending a dead letter to the trigger's dead-letter sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkState {
    /// No dead-letter sink configured.
    None,
    Pending,
    Delivered,
    Failed,
}

impl SinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::None => "none",
            SinkState::Pending => "pending",
            SinkState::Delivered => "delivered",
            SinkState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<SinkState> {
        match text {
            "none" => Some(SinkState::None),
            "pending" => Some(SinkState::Pending),
            "delivered" => Some(SinkState::Delivered),
            "failed" => Some(SinkState::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// A UUID (v7: sorts by creation).
    pub id: String,
    pub trigger: TriggerRef,
    pub event_seq: i64,
    pub payload: Vec<u8>,
    /// The event's ordered lane (`None`: unordered).
    pub lane: Option<String>,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_response: Option<Vec<u8>>,
    pub first_attempt_at: Option<Millis>,
    pub dead_at: Millis,
    pub sink_state: SinkState,
    pub sink_error: Option<String>,
    /// When it was last replayed, and how often.
    pub replayed_at: Option<Millis>,
    pub replay_count: i32,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// `(namespace, name)` of a trigger.
    pub trigger: Option<(String, String)>,
    /// Only those never replayed.
    pub unreplayed_only: bool,
    pub limit: Option<usize>,
    /// Only those after this `(dead_at, id)`: the last of the previous page.
    pub after: Option<(Millis, String)>,
}

/// Which dead letters to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    Ids(Vec<String>),
    /// `(namespace, name)` of a trigger.
    Trigger(String, String),
    All,
}

#[async_trait]
pub trait DeadLetters {
    /// Dead letters, oldest first.
    async fn list_dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;
    async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>>;
    /// Queues each dead letter for a fresh delivery to its trigger (attempts 0, due now; an ordered
    /// trigger puts it at the end of its lane), marks it replayed, and returns the ids that were found
    /// and whose trigger still exists (as a `TriggerRef` in `triggers`).
    async fn replay_dead_letters(
        &self,
        ids: &[String],
        triggers: &[TriggerRef],
        now: Millis,
    ) -> Result<Vec<String>>;
    /// Deletes the selected dead letters; returns how many there were.
    async fn delete_dead_letters(&self, which: &DeadLetterSelection) -> Result<u64>;
    /// Retention: deletes the dead letters that died before `dead_before`, and each trigger's
    /// beyond its newest `keep_per_trigger`. Those still on their way to a dead-letter sink stay.
    /// Returns how many were deleted.
    async fn prune_dead_letters(&self, dead_before: Millis, keep_per_trigger: u64) -> Result<u64>;
}

// ---------------------------------------------------------------- checkpoints

/// A source's remembered progress.
///
/// `value` is JSON: every source so far keeps a small structured record (a PingSource its last fired
/// tick, an object-store poller its listing marker, a Kafka source its offsets per partition), and
/// JSON keeps it readable with `psql` or `sqlite3` when someone asks why a source did or did not fire.
/// Binary state can travel base64-encoded in a JSON string.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub key: String,
    pub value: serde_json::Value,
    /// 1 when created, +1 on every successful [`Checkpoints::put_checkpoint`].
    pub version: i64,
    pub updated_at: Millis,
}

/// Durable per-source state. Keys are paths, `{kind}/{namespace}/{name}[/{part}]` (for example
/// `ping/default/heartbeat`), so everything of one source can be deleted together.
#[async_trait]
pub trait Checkpoints {
    async fn get_checkpoint(&self, key: &str) -> Result<Option<Checkpoint>>;
    /// Compare-and-set. With `expected_version` `None` it creates the checkpoint only if `key` is
    /// absent; with `Some(v)` it replaces the value only if the stored version is still `v`. Returns
    /// the new version, or `None` when the condition failed: another process created or moved the
    /// checkpoint first, and the caller lost the race (read it again to see what won). Of several
    /// callers putting from the same version, across processes sharing a database, exactly one wins.
    ///
    /// Cancellation: one statement; a dropped future either wrote or did not, and the caller finds
    /// out which by reading the version back.
    async fn put_checkpoint(
        &self,
        key: &str,
        value: &serde_json::Value,
        expected_version: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>>;
    /// Deletes the checkpoint `prefix` and every checkpoint under it (`prefix/…`); a trailing `/` on
    /// `prefix` is ignored. Whole path segments only: `ping/default/a` does not delete
    /// `ping/default/ab`, which a plain string prefix would. Returns how many were deleted.
    async fn delete_checkpoints(&self, prefix: &str) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::created_at;

    #[test]
    fn creation_time_comes_from_a_v7_uid_only() {
        let before = chrono::Utc::now().timestamp_millis();
        let uid = uuid::Uuid::now_v7().to_string();
        let after = chrono::Utc::now().timestamp_millis();
        let at = created_at(&uid).expect("a v7 uid carries its time");
        assert!(
            (before..=after).contains(&at),
            "{before} <= {at} <= {after}"
        );
        assert_eq!(created_at(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(created_at("not a uid"), None);
    }

    /// Every file of `migrations/{engine}` is in that engine's migrator, in order and with the
    /// name sqlx would give it, and nothing else is: a new file cannot be forgotten.
    #[test]
    fn every_migration_file_is_applied() {
        for (engine, migrator) in [
            ("sqlite", crate::sqlite::migrator()),
            ("postgres", crate::postgres::migrator()),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(engine);
            let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .map(|name| {
                    let stem = name
                        .strip_suffix(".sql")
                        .unwrap_or_else(|| panic!("{engine}/{name}: a migration is a `.sql` file"));
                    let (version, description) = stem.split_once('_').unwrap();
                    let sql = std::fs::read_to_string(dir.join(&name)).unwrap();
                    (version.parse().unwrap(), description.replace('_', " "), sql)
                })
                .collect();
            files.sort();
            let listed: Vec<(i64, String, String)> = migrator
                .iter()
                .map(|m| {
                    (
                        m.version,
                        m.description.replace('_', " "),
                        m.sql.as_str().to_owned(),
                    )
                })
                .collect();
            assert_eq!(
                files.iter().map(|f| (f.0, &f.1)).collect::<Vec<_>>(),
                listed.iter().map(|f| (f.0, &f.1)).collect::<Vec<_>>(),
                "migrations/{engine} and its migrator differ"
            );
            assert!(
                files
                    .iter()
                    .zip(&listed)
                    .all(|(file, listed)| file.2 == listed.2),
                "a migration's SQL is not its file's"
            );
        }
    }
}
