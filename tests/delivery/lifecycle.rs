//! Resources change while kinetic runs: a changed file is re-applied, a deleted trigger stops
//! delivering, and a new trigger only sees events accepted after it was applied.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Engine, Receiver, broker_yaml, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids};

engines!(triggers_change_while_running);

fn names(items: &Value) -> Vec<String> {
    let mut names: Vec<String> = items["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    names.sort();
    names
}

async fn triggers_change_while_running(engine: Engine) {
    let receiver = Receiver::start().await;
    let switch = |ty: &str| {
        trigger_yaml(
            "switch",
            "default",
            &receiver.url("/switch"),
            &format!("  filter: {{attributes: {{type: {ty}}}}}\n"),
        )
    };
    let gone = trigger_yaml("gone", "default", &receiver.url("/gone"), "");
    let keep = trigger_yaml("keep", "default", &receiver.url("/keep"), "");
    let mut world = World::start(engine, &[switch("a"), gone.clone(), keep.clone()]).await;
    world.send("default", &[Ce::new("pre-1", "a")]).await;
    for path in ["/switch", "/gone", "/keep"] {
        let got = receiver.wait_for(path, 1, WAIT).await;
        assert_eq!(ids(&got), ["pre-1"], "{path}; log:\n{}", world.log());
    }
    let (status, listed) = world.get("/api/v1/triggers").await;
    assert_eq!(status, 200);
    assert_eq!(names(&listed), ["gone", "keep", "switch"]);

    // Change the file kinetic watches: `switch` now selects type b, and `marker` is new.
    let marker = trigger_yaml(
        "marker",
        "default",
        &receiver.url("/marker"),
        "  filter: {attributes: {type: marker}}\n",
    );
    world.rewrite(&[switch("b"), gone, keep, marker]);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _) = world.get("/api/v1/triggers/default/marker").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed file was not applied; log:\n{}",
            world.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, switched) = world.get("/api/v1/triggers/default/switch").await;
    assert_eq!(switched["spec"]["filter"]["attributes"]["type"], "b");
    assert_eq!(switched["metadata"]["generation"], 2);

    assert_eq!(world.delete("/api/v1/triggers/default/gone").await, 200);
    assert_eq!(world.delete("/api/v1/triggers/default/gone").await, 404);
    // A trigger applied after the deletion, through the API.
    let late = trigger_yaml(
        "late",
        "default",
        &receiver.url("/late"),
        "  filter: {attributes: {type: marker}}\n",
    );
    let response = world
        .kinetic
        .api()
        .post(world.kinetic.admin("/api/v1/apply?file=late.yaml"))
        .header("content-type", "application/yaml")
        .body(late)
        .send()
        .await
        .expect("apply");
    assert_eq!(response.status().as_u16(), 200);
    let (_, listed) = world.get("/api/v1/triggers").await;
    assert_eq!(names(&listed), ["keep", "late", "marker", "switch"]);

    // `marker` and `late` were applied after `pre-1` and before this event: they get this one
    // only. Once `late` has it, the dispatcher works with the triggers as they are now (the
    // deleted one may still have seen this event).
    world.send("default", &[Ce::new("probe-1", "marker")]).await;
    for path in ["/marker", "/late"] {
        let got = receiver.wait_for(path, 1, WAIT).await;
        assert_eq!(ids(&got), ["probe-1"], "{path}; log:\n{}", world.log());
    }

    world
        .send("default", &[Ce::new("post-a", "a"), Ce::new("post-b", "b")])
        .await;
    receiver.wait_for("/switch", 2, WAIT).await;
    receiver.wait_for("/keep", 4, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(ids(&receiver.received("/switch")), ["pre-1", "post-b"]);
    let gone: Vec<String> = ids(&receiver.received("/gone"))
        .into_iter()
        .filter(|id| id != "probe-1")
        .collect();
    assert_eq!(gone, ["pre-1"], "nothing after the deletion");
    assert_eq!(ids(&receiver.received("/marker")), ["probe-1"]);
    assert_eq!(ids(&receiver.received("/late")), ["probe-1"]);
    let mut kept = ids(&receiver.received("/keep"));
    kept.sort();
    assert_eq!(kept, ["post-a", "post-b", "pre-1", "probe-1"]);
}

engines!(a_moved_trigger_starts_at_the_new_brokers_head);

/// A trigger re-applied with another `spec.broker` leaves the old broker's log and sees the new
/// broker's events from the moment it moved, not the new broker's backlog.
async fn a_moved_trigger_starts_at_the_new_brokers_head(engine: Engine) {
    let receiver = Receiver::start().await;
    let mover = |broker: &str| trigger_yaml("mover", broker, &receiver.url("/mover"), "");
    // A trigger on `other` that cannot deliver (its Service does not resolve) keeps its cursor at
    // the start, so `other`'s events stay in the log instead of being pruned.
    let witness = "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: witness}\nspec:\n  broker: other\n  subscriber: {ref: {kind: Service, name: missing}}\n".to_owned();
    let world = World::start(engine, &[broker_yaml("other"), mover("default"), witness]).await;
    world.send("default", &[Ce::new("on-default-1", "t")]).await;
    // More events on `other` than the mover's position on `default`, so a position carried over
    // from the old broker would show.
    let before = [
        Ce::new("before-move-1", "t"),
        Ce::new("before-move-2", "t"),
        Ce::new("before-move-3", "t"),
    ];
    world.send("other", &before).await;
    assert_eq!(
        ids(&receiver.wait_for("/mover", 1, WAIT).await),
        ["on-default-1"]
    );

    let moved: Value = serde_saphyr::from_str(&mover("other")).expect("trigger YAML");
    let (status, answer) = world
        .post_json("/api/v1/apply?file=moved.json", &moved)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"][0]["outcome"], "updated");
    // The dispatcher picks the change up within its plan refresh: probe until a new event on
    // `other` arrives.
    let deadline = Instant::now() + WAIT;
    let mut probe = 0;
    loop {
        probe += 1;
        let id = format!("probe-{probe}");
        world.send("other", &[Ce::new(&id, "t")]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if ids(&receiver.received("/mover")).contains(&id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move never took effect; log:\n{}",
            world.log()
        );
    }
    world.send("default", &[Ce::new("on-default-2", "t")]).await;
    world
        .send("other", &[Ce::new("on-other-after-move", "t")])
        .await;
    receiver.wait_for("/mover", probe + 2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got: Vec<String> = ids(&receiver.received("/mover"))
        .into_iter()
        .filter(|id| !id.starts_with("probe-"))
        .collect();
    assert_eq!(
        got,
        ["on-default-1", "on-other-after-move"],
        "the old broker still delivers, or the new broker's backlog was delivered"
    );
}
