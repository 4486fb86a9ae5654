//! Replaying dead letters once the subscriber is fixed: by id and by trigger with the CLI, by id
//! over HTTP; replays are counted and unknown ids reported.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::support::{Answer, Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids, sorted};

engines!(dead_letters_are_replayed_to_the_subscriber);

fn count(receiver: &Receiver, id: &str) -> usize {
    ids(&receiver.received("/replay"))
        .iter()
        .filter(|i| *i == id)
        .count()
}

async fn dead_letters_are_replayed_to_the_subscriber(engine: Engine) {
    let receiver = Receiver::start().await;
    // Refuses the first three deliveries, then accepts: "the subscriber was fixed".
    receiver.script("/replay", vec![Answer::status(400); 3]);
    let world = World::start(
        engine,
        &[trigger_yaml(
            "replay",
            "default",
            &receiver.url("/replay"),
            "  delivery: {retry: 3, backoffDelay: PT0.1S}\n",
        )],
    )
    .await;
    world
        .send(
            "default",
            &[
                Ce::new("x1", "com.example.replay"),
                Ce::new("x2", "com.example.replay"),
                Ce::new("x3", "com.example.replay"),
            ],
        )
        .await;
    let letters = world.wait_dead_letters("replay", 3, |_| true).await;
    assert_eq!(letters.len(), 3, "log:\n{}", world.log());
    assert_eq!(receiver.received("/replay").len(), 3, "400 is not retried");
    let letter_of: HashMap<String, String> = letters
        .iter()
        .map(|l| {
            (
                l["event"]["id"].as_str().unwrap().to_owned(),
                l["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();

    // By id, with the CLI.
    let output = world
        .kinetic
        .cli_in_place(&["dlq", "replay", &letter_of["x1"]]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 dead letter(s) queued"), "{stdout}");
    receiver.wait_for("/replay", 4, WAIT).await;
    assert_eq!(
        count(&receiver, "x1"),
        2,
        "x1 replayed; log:\n{}",
        world.log()
    );
    let replays = |letters: &[Value]| -> HashMap<String, i64> {
        letters
            .iter()
            .map(|l| {
                (
                    l["event"]["id"].as_str().unwrap().to_owned(),
                    l["replayCount"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let now = replays(&world.dead_letters("replay").await);
    assert_eq!((now["x1"], now["x2"], now["x3"]), (1, 0, 0));

    // Every dead letter of the trigger not replayed yet, with the CLI.
    let output =
        world
            .kinetic
            .cli_in_place(&["dlq", "replay", "--trigger", "default/replay", "--all"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("2 dead letter(s) queued"), "{stdout}");
    receiver.wait_for("/replay", 6, WAIT).await;
    let now = replays(&world.dead_letters("replay").await);
    assert_eq!((now["x1"], now["x2"], now["x3"]), (1, 1, 1));

    // By id over HTTP, next to an id that does not exist.
    let (status, body) = world
        .post_json(
            "/api/v1/deadletters/replay",
            &json!({"ids": [letter_of["x1"], "no-such-letter"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], json!([letter_of["x1"]]));
    assert_eq!(body["notReplayed"], json!(["no-such-letter"]));
    receiver.wait_for("/replay", 7, WAIT).await;

    // Unknown ids with the CLI: reported, nothing queued.
    let output = world
        .kinetic
        .cli_in_place(&["dlq", "replay", "no-such-letter"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(stdout.contains("0 dead letter(s) queued"), "{stdout}");
    assert!(stdout.contains("not replayed"), "{stdout}");
    assert!(stdout.contains("no-such-letter"), "{stdout}");

    tokio::time::sleep(QUIET).await;
    assert_eq!(
        sorted(ids(&receiver.received("/replay"))),
        ["x1", "x1", "x1", "x2", "x2", "x3", "x3"]
    );
    let now = replays(&world.dead_letters("replay").await);
    assert_eq!((now["x1"], now["x2"], now["x3"]), (2, 1, 1));
    // Replayed and delivered: no new dead letters.
    assert_eq!(world.dead_letters("replay").await.len(), 3);
}
