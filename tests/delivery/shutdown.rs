//! Graceful shutdown and restart: SIGTERM lets in-flight work finish and exits 0; the next
//! `kinetic up` on the same store has the resources and delivers what was accepted before.

use std::time::{Duration, Instant};

use crate::support::{Answer, Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids, sorted};

engines!(restart_keeps_resources_and_pending_events);

async fn restart_keeps_resources_and_pending_events(engine: Engine) {
    let receiver = Receiver::start().await;
    // `slow`'s first delivery is in flight when the signal comes; `failing` has retries pending.
    receiver.script(
        "/slow",
        vec![Answer::status(200).delay(Duration::from_secs(2))],
    );
    receiver.default_answer("/failing", Answer::status(503));
    let mut world = World::start(
        engine,
        &[
            trigger_yaml(
                "slow",
                "default",
                &receiver.url("/slow"),
                "  filter: {attributes: {type: slow}}\n",
            ),
            trigger_yaml(
                "failing",
                "default",
                &receiver.url("/failing"),
                "  filter: {attributes: {type: failing}}\n  delivery: {retry: 20, backoffPolicy: linear, backoffDelay: PT1S}\n",
            ),
        ],
    )
    .await;
    world
        .send(
            "default",
            &[Ce::new("f-1", "failing"), Ce::new("f-2", "failing")],
        )
        .await;
    receiver.wait_for("/failing", 2, WAIT).await;
    world.send("default", &[Ce::new("s-1", "slow")]).await;
    let got = receiver.wait_for("/slow", 1, WAIT).await;
    assert_eq!(ids(&got), ["s-1"], "log:\n{}", world.log());
    // Accepted while `slow`'s subscriber still works on s-1: not read by its trigger yet.
    world
        .send("default", &[Ce::new("s-2", "slow"), Ce::new("s-3", "slow")])
        .await;

    let started = Instant::now();
    let statuses = tokio::task::block_in_place(|| world.terminate());
    let took = started.elapsed();
    for status in statuses {
        let status =
            status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", world.log()));
        assert!(status.success(), "{status}; log:\n{}", world.log());
    }
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?}; log:\n{}",
        world.log()
    );

    // The subscriber is fixed while kinetic is down; restart without resource files.
    receiver.default_answer("/failing", Answer::status(200));
    let before_restart = receiver.received("/failing").len();
    tokio::task::block_in_place(|| world.restart());
    let (status, listed) = world.get("/api/v1/triggers").await;
    assert_eq!(status, 200);
    let mut names: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["failing", "slow"]);

    // At once: the stopped process released its cursors (on PostgreSQL a lease left behind would
    // hold them for 10 s).
    let slow = receiver.wait_for("/slow", 3, Duration::from_secs(5)).await;
    assert_eq!(
        sorted(ids(&slow)),
        ["s-1", "s-2", "s-3"],
        "events accepted before the stop, soon after the restart; log:\n{}",
        world.log()
    );
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let after: Vec<String> = ids(&receiver.received("/failing")[before_restart..]);
        if after.contains(&"f-1".to_owned()) && after.contains(&"f-2".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new event flows too.
    world.send("default", &[Ce::new("s-4", "slow")]).await;
    receiver.wait_for("/slow", 4, WAIT).await;
    tokio::time::sleep(QUIET).await;
    // s-1 finished before the exit: not delivered again.
    assert_eq!(
        sorted(ids(&receiver.received("/slow"))),
        ["s-1", "s-2", "s-3", "s-4"],
        "log:\n{}",
        world.log()
    );
    let after = sorted(ids(&receiver.received("/failing")[before_restart..]));
    assert_eq!(after, ["f-1", "f-2"], "log:\n{}", world.log());
}
