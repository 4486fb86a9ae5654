//! The `Store` contract, one test body per behaviour, run against SQLite (a temporary file) and
//! PostgreSQL (a fresh database per test, dropped afterwards).
//!
//! PostgreSQL comes from `KINETIC_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); when it cannot be reached the PostgreSQL tests
//! fail rather than skip. Bodies live in `conformance/*.rs` and take `Arc<dyn Store>` (or two
//! handles on the same database, standing for two processes).

use std::future::Future;
use std::sync::Arc;

use kinetic_store::Store;
use kinetic_testkit::postgres::ScratchDatabase;
use sqlx::Connection;

#[path = "conformance/checkpoints.rs"]
mod checkpoints;
#[path = "conformance/cursors.rs"]
mod cursors;
#[path = "conformance/dead_letters.rs"]
mod dead_letters;
#[path = "conformance/events.rs"]
mod events;
#[path = "conformance/fixtures.rs"]
mod fixtures;
#[path = "conformance/leases.rs"]
mod leases;
#[path = "conformance/outcomes.rs"]
mod outcomes;
#[path = "conformance/resources.rs"]
mod resources;

/// One engine's database for one test.
struct Fixture {
    url: String,
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Removed with the directory.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(ScratchDatabase),
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}/state.db", dir.path().display());
        let store = kinetic_store::open(&url)
            .await
            .expect("open the SQLite store");
        Fixture {
            url,
            store,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    async fn postgres() -> Fixture {
        let database = ScratchDatabase::create("kinetic_test").await;
        let store = kinetic_store::open(&database.url)
            .await
            .expect("open the PostgreSQL store");
        Fixture {
            url: database.url.clone(),
            store,
            cleanup: Cleanup::Postgres(database),
        }
    }

    /// Another handle on the same database, as a second process would open it.
    async fn open_another(&self) -> Arc<dyn Store> {
        kinetic_store::open(&self.url)
            .await
            .expect("open a second handle")
    }

    /// Runs a body to completion (a panic included), cleans up, then reports the body's outcome.
    async fn run(self, body: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        let outcome = tokio::spawn(body).await;
        let Fixture { store, cleanup, .. } = self;
        drop(store);
        if let Cleanup::Postgres(database) = cleanup {
            database
                .drop_database()
                .await
                .expect("drop the test database");
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("{error:?}"),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
}

/// Generates `mod sqlite` and `mod postgres`, each with one test per body. `one` bodies take a
/// store; `two` bodies take two handles on the same database.
macro_rules! conformance {
    (one: [$($m1:ident :: $n1:ident),* $(,)?], two: [$($m2:ident :: $n2:ident),* $(,)?] $(,)?) => {
        conformance!(@engine sqlite, [$($m1::$n1),*], [$($m2::$n2),*]);
        conformance!(@engine postgres, [$($m1::$n1),*], [$($m2::$n2),*]);
    };
    (@engine $engine:ident, [$($m1:ident :: $n1:ident),*], [$($m2:ident :: $n2:ident),*]) => {
        mod $engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $n1() {
                    let fixture = crate::Fixture::$engine().await;
                    let store = fixture.store.clone();
                    fixture.run(crate::$m1::$n1(store)).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $n2() {
                    let fixture = crate::Fixture::$engine().await;
                    let (first, second) = (fixture.store.clone(), fixture.open_another().await);
                    fixture.run(crate::$m2::$n2(first, second)).await;
                }
            )*
        }
    };
}

conformance! {
    one: [
        resources::apply_creates_updates_and_keeps_unchanged,
        resources::list_get_and_delete,
        events::append_reads_in_order_and_moves_the_head,
        events::dedupe_within_a_batch_first_wins,
        events::dedupe_across_batches_and_after_the_window,
        events::every_key_of_a_large_batch_is_remembered,
        events::remember_and_forget_keep_the_window_without_a_log,
        events::prune_keeps_what_a_cursor_still_needs,
        events::prune_empties_a_broker_without_cursors,
        cursors::claim_creates_cursors_at_the_head,
        cursors::claim_leases_are_exclusive_renewed_and_taken_over,
        cursors::advance_is_compare_and_set,
        cursors::advance_records_deliveries_and_dead_letters,
        cursors::record_outcomes_without_a_cursor,
        cursors::heartbeat_lists_live_dispatchers,
        cursors::release_cursors_frees_only_the_owners_leases,
        leases::lease_takes_due_rows_only,
        leases::lease_expires_and_is_taken_again,
        leases::ordered_lanes_lease_their_head_only,
        outcomes::retry_reschedules_and_releases,
        outcomes::done_removes_the_row,
        outcomes::give_up_without_sink_records_a_dead_letter,
        outcomes::give_up_with_sink_then_sink_done,
        outcomes::sink_give_up_marks_the_dead_letter_failed,
        outcomes::update_after_losing_the_lease_writes_nothing,
        leases::blocked_lanes_are_lanes_with_subscriber_rows,
        outcomes::release_all_leases_frees_cursors_and_rows,
        outcomes::drop_trigger_removes_cursor_and_rows,
        outcomes::backlog_counts_unread_and_pending,
        leases::next_due_ignores_leased_and_blocked_rows,
        dead_letters::list_filters_and_orders,
        dead_letters::get_returns_what_was_recorded,
        dead_letters::replay_queues_found_letters_of_live_triggers,
        dead_letters::replay_goes_to_the_end_of_its_lane,
        dead_letters::pages_follow_each_other,
        cursors::skipping_to_the_head_releases_a_free_cursor,
        events::a_read_stops_once_it_holds_enough_bytes,
        events::a_batch_of_many_megabytes_appends_whole,
        events::concurrent_appends_of_the_same_keys_accept_each_once,
        dead_letters::delete_by_id_trigger_and_all,
        dead_letters::retention_by_age_and_count,
        checkpoints::create_only_when_absent,
        checkpoints::compare_and_set_wins_once_per_version,
        checkpoints::delete_removes_a_key_and_what_is_under_it,
    ],
    two: [
        events::concurrent_appends_are_seen_in_order,
        cursors::cursor_claims_are_exclusive_across_processes,
        leases::row_leases_are_exclusive_across_processes,
        checkpoints::concurrent_compare_and_set_has_one_winner_per_version,
    ],
}

// ---------------------------------------------------------------- SQLite only

#[tokio::test]
async fn sqlite_memory_works_and_is_private_to_its_store() -> anyhow::Result<()> {
    let first = kinetic_store::open("sqlite::memory:").await?;
    let second = kinetic_store::open("sqlite::memory:").await?;
    let event = fixtures::event("default/b", "s", "1", b"x");
    first.append(std::slice::from_ref(&event), 1_000, 0).await?;
    assert_eq!(first.read("default/b", 0, 10).await?.len(), 1);
    assert!(second.read("default/b", 0, 10).await?.is_empty());
    assert_eq!(first.engine(), "sqlite");
    Ok(())
}

#[tokio::test]
async fn sqlite_creates_missing_directories_and_keeps_data_across_opens() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/deeper/state.db");
    let url = format!("sqlite://{}", path.display());
    {
        let store = kinetic_store::open(&url).await?;
        store
            .append(&[fixtures::event("default/b", "s", "1", b"kept")], 1_000, 0)
            .await?;
    }
    assert!(path.exists());
    let store = kinetic_store::open(&url).await?;
    let events = store.read("default/b", 0, 10).await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, &b"kept"[..]);
    Ok(())
}

#[tokio::test]
async fn sqlite_dedupe_window_survives_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let key = |id: &str| fixtures::event("default/b", "s", id, b"x");
    {
        let store = kinetic_store::open(&url).await?;
        store.append(&[key("1"), key("2")], 1_000, 0).await?;
        assert_eq!(store.remember(&[key("3")], 1_100, 0).await?, [true]);
        store.forget(&[key("2")], 1_000).await?;
    }
    let store = kinetic_store::open(&url).await?;
    let again = store
        .append(&[key("1"), key("2"), key("3")], 2_000, 0)
        .await?;
    assert_eq!(again[0], kinetic_store::Appended::Duplicate);
    assert!(
        matches!(again[1], kinetic_store::Appended::Accepted(_)),
        "forgotten before the restart: {again:?}"
    );
    assert_eq!(again[2], kinetic_store::Appended::Duplicate, "remembered");
    // Pruned, the keys are new again, and stay pruned after another restart.
    store.prune(1_500).await?;
    drop(store);
    let store = kinetic_store::open(&url).await?;
    assert_eq!(
        store.remember(&[key("1"), key("2")], 3_000, 0).await?,
        [true, false]
    );
    Ok(())
}

/// A database written before the dedupe window became an append-only log keeps its keys.
#[tokio::test]
async fn sqlite_dedupe_keys_of_an_older_database_are_kept() -> anyhow::Result<()> {
    use sqlx::SqlSafeStr as _;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut connection = <sqlx::SqliteConnection as Connection>::connect_with(&options).await?;
        let older = [
            (
                1,
                "initial",
                include_str!("../../migrations/sqlite/0001_initial.sql"),
            ),
            (
                2,
                "dispatchers",
                include_str!("../../migrations/sqlite/0002_dispatchers.sql"),
            ),
            (
                3,
                "checkpoints",
                include_str!("../../migrations/sqlite/0003_checkpoints.sql"),
            ),
        ];
        Migrator::with_migrations(
            older
                .into_iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        version,
                        name.into(),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
        .run(&mut connection)
        .await?;
        sqlx::query("INSERT INTO dedupe (broker, source, id, accepted_at) VALUES ('default/b', 's', 'old', 1000)")
            .execute(&mut connection)
            .await?;
        connection.close().await?;
    }
    let store = kinetic_store::open(&format!("sqlite://{}", path.display())).await?;
    let key = fixtures::event("default/b", "s", "old", b"x");
    assert_eq!(
        store.append(std::slice::from_ref(&key), 2_000, 500).await?,
        [kinetic_store::Appended::Duplicate]
    );
    assert!(matches!(
        store.append(&[key], 3_000, 1_500).await?[0],
        kinetic_store::Appended::Accepted(_)
    ));
    Ok(())
}

#[tokio::test]
async fn unknown_url_scheme_is_rejected() {
    let error = kinetic_store::open("mysql://localhost/db")
        .await
        .err()
        .expect("not a supported URL");
    assert!(matches!(error, kinetic_store::Error::InvalidUrl(_)));
}

// ---------------------------------------------------------------- throughput (not asserted)

/// Appends 100 batches of 500 events of ~300 bytes, then reads them back, and prints the rates.
/// Run with `cargo test --release -p kinetic-store --test conformance -- --ignored --nocapture throughput`.
async fn throughput(fixture: Fixture) {
    let store = fixture.store.clone();
    let engine = store.engine();
    fixture
        .run(async move {
            const BATCHES: usize = 100;
            const BATCH: usize = 500;
            let payload = vec![b'x'; 300];
            let started = std::time::Instant::now();
            for batch in 0..BATCHES {
                let events: Vec<_> = (0..BATCH)
                    .map(|n| {
                        fixtures::event("default/bench", "bench", &format!("{batch}-{n}"), &payload)
                    })
                    .collect();
                store
                    .append(&events, fixtures::T0, fixtures::LONG_AGO)
                    .await?;
            }
            let appended = started.elapsed();
            let started = std::time::Instant::now();
            let (mut after, mut read) = (0, 0);
            loop {
                let events = store.read("default/bench", after, 1_000).await?;
                let Some(last) = events.last() else { break };
                after = last.seq;
                read += events.len();
            }
            let total = (BATCHES * BATCH) as f64;
            assert_eq!(read, BATCHES * BATCH);
            println!(
                "{engine}: append {:.0} events/s, read {:.0} events/s",
                total / appended.as_secs_f64(),
                total / started.elapsed().as_secs_f64()
            );
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measures, does not test; run with --ignored --nocapture"]
async fn sqlite_append_throughput() {
    throughput(Fixture::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measures, does not test; run with --ignored --nocapture"]
async fn postgres_append_throughput() {
    throughput(Fixture::postgres().await).await;
}
