//! Batches overlap: a slow event does not hold the batches read after it. Unordered, the other
//! events go on; ordered, the other lanes do, and the slow lane keeps its order across batches.
//! (The Kafka class's consumer delivers a batch at a time; these run on the store's log.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{Answer, Engine, Receiver};
use crate::{WAIT, World, ids};

engines!(
    a_slow_event_does_not_hold_the_batches_after_it,
    a_slow_lane_does_not_hold_other_lanes_of_later_batches
);

const SLOW: Duration = Duration::from_millis(1_500);

/// Small batches, and a fixed subscriber concurrency (the adaptive one starts by probing with one
/// request at a time, which a slow first answer would hold).
const ENV: [(&str, &str); 2] = [
    ("KINETIC_DELIVERY_BATCH", "4"),
    ("KINETIC_SUBSCRIBER_CONCURRENCY", "50"),
];

/// Posts `events` in one batch-mode request, so they are in the log together.
async fn send_batch(world: &World, events: &[(String, Option<&str>)]) {
    let batch: Vec<serde_json::Value> = events
        .iter()
        .map(|(id, lane)| {
            let mut event = serde_json::json!({
                "specversion": "1.0", "id": id, "source": "/e2e", "type": "com.example.pipelined",
            });
            if let Some(lane) = lane {
                event["partitionkey"] = (*lane).into();
            }
            event
        })
        .collect();
    let response = world
        .client
        .post(world.broker("default"))
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch)
        .send()
        .await
        .expect("POST a batch");
    assert_eq!(response.status().as_u16(), 202, "the batch is accepted");
}

fn first_at(got: &[crate::support::Received], id: &str) -> Instant {
    got.iter()
        .find(|r| r.header("ce-id") == Some(id))
        .unwrap_or_else(|| panic!("{id} not delivered; arrivals {:?}", ids(got)))
        .at
}

async fn a_slow_event_does_not_hold_the_batches_after_it(engine: Engine) {
    if engine == Engine::Kafka {
        return;
    }
    let receiver = Receiver::start().await;
    receiver.respond_with("/hook", |request| {
        if request.header("ce-id") == Some("slow") {
            Answer::status(200).delay(SLOW)
        } else {
            Answer::status(200)
        }
    });
    let trigger = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: pipelined}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n",
        receiver.url("/hook")
    );
    let world = World::start_with_env(engine, &[trigger], &ENV).await;
    // 1 slow + 12 fast: four batches of 4 at most, all in delivery at once.
    let mut events = vec![("slow".to_owned(), None)];
    events.extend((1..=12).map(|n| (format!("fast-{n}"), None)));
    send_batch(&world, &events).await;
    receiver.wait_for("/hook", events.len(), WAIT).await;
    let got = receiver.received("/hook");
    let answered = first_at(&got, "slow") + SLOW;
    for n in 1..=12 {
        let id = format!("fast-{n}");
        assert!(
            first_at(&got, &id) < answered,
            "{id} waited for the slow event's answer; arrivals {:?}\n{}",
            ids(&got),
            world.log()
        );
    }
}

async fn a_slow_lane_does_not_hold_other_lanes_of_later_batches(engine: Engine) {
    if engine == Engine::Kafka {
        return;
    }
    const LANE_SLOW: Duration = Duration::from_millis(400);
    let receiver = Receiver::start().await;
    receiver.respond_with("/ordered", |request| {
        if request.header("ce-partitionkey") == Some("S") {
            Answer::status(200).delay(LANE_SLOW)
        } else {
            Answer::status(200)
        }
    });
    let trigger = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ordered\n  annotations:\n    kafka.eventing.knative.dev/delivery.order: ordered\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n",
        receiver.url("/ordered")
    );
    let world = World::start_with_env(engine, &[trigger], &ENV).await;
    // Batches of 4: [S1 A1 B1 S2] [A2 B2 S3 A3] [B3 A4 B4].
    let order = [
        "S1", "A1", "B1", "S2", "A2", "B2", "S3", "A3", "B3", "A4", "B4",
    ];
    let events: Vec<(String, Option<&str>)> = order
        .iter()
        .map(|id| ((*id).to_owned(), Some(&id[..1])))
        .collect();
    send_batch(&world, &events).await;
    receiver.wait_for("/ordered", order.len(), WAIT).await;
    let got = receiver.received("/ordered");
    let at: HashMap<&str, Instant> = order.iter().map(|id| (*id, first_at(&got, id))).collect();
    assert_eq!(got.len(), order.len(), "each once: {:?}", ids(&got));
    for lane in [
        &["S1", "S2", "S3"][..],
        &["A1", "A2", "A3", "A4"],
        &["B1", "B2", "B3", "B4"],
    ] {
        for pair in lane.windows(2) {
            assert!(
                at[pair[0]] < at[pair[1]],
                "{} before {}: arrivals {:?}",
                pair[0],
                pair[1],
                ids(&got)
            );
        }
    }
    // The slow lane one at a time: each sent only once the one before was answered.
    assert!(at["S2"] >= at["S1"] + LANE_SLOW && at["S3"] >= at["S2"] + LANE_SLOW);
    // Lanes A and B of the later batches did not wait for S.
    for id in ["A4", "B4"] {
        assert!(
            at[id] < at["S2"],
            "{id} waited for the slow lane; arrivals {:?}\n{}",
            ids(&got),
            world.log()
        );
    }
}
