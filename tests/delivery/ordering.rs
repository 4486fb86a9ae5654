//! Ordered delivery (`kafka.eventing.knative.dev/delivery.order: ordered`): events of one
//! `partitionkey` arrive in the order they were accepted, one lane's retries do not hold up another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::support::{Answer, Engine, Receiver};
use crate::{Ce, QUIET, WAIT, World, ids};

engines!(lanes_keep_order_and_do_not_block_each_other);

async fn lanes_keep_order_and_do_not_block_each_other(engine: Engine) {
    let receiver = Receiver::start().await;
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counts = seen.clone();
    // A2 fails twice; C1 fails, then is refused for good; everything else succeeds at once.
    receiver.respond_with("/ordered", move |request| {
        let id = request.header("ce-id").unwrap_or_default().to_owned();
        let mut counts = counts.lock().unwrap();
        let n = counts.entry(id.clone()).or_default();
        *n += 1;
        match (id.as_str(), *n) {
            ("A2", 1 | 2) | ("C1", 1) => Answer::status(503),
            ("C1", _) => Answer::status(400),
            _ => Answer::status(200),
        }
    });
    let trigger = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: ordered\n  annotations:\n    kafka.eventing.knative.dev/delivery.order: ordered\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n  delivery: {{retry: 5, backoffPolicy: linear, backoffDelay: PT0.8S}}\n",
        receiver.url("/ordered")
    );
    let world = World::start(engine, &[trigger]).await;
    let sent = ["A1", "B1", "A2", "C1", "B2", "C2", "A3", "B3", "A4", "B4"];
    let events: Vec<Ce> = sent
        .iter()
        .map(|id| Ce::new(id, "com.example.ordered").attr("partitionkey", &id[..1]))
        .collect();
    world.send("default", &events).await;
    // 10 events, A2 three times, C1 twice.
    receiver.wait_for("/ordered", 13, WAIT).await;
    tokio::time::sleep(QUIET).await;
    let got = receiver.received("/ordered");
    let arrived = ids(&got);
    let first = |id: &str| -> Instant {
        got.iter()
            .find(|r| r.header("ce-id") == Some(id))
            .unwrap_or_else(|| panic!("{id} lost; arrivals {arrived:?}; log:\n{}", world.log()))
            .at
    };
    let attempts = |id: &str| -> Vec<Instant> {
        got.iter()
            .filter(|r| r.header("ce-id") == Some(id))
            .map(|r| r.at)
            .collect()
    };
    let a2 = attempts("A2");
    assert_eq!(a2.len(), 3, "arrivals {arrived:?}");
    let a2_delivered = a2[2];
    let c1 = attempts("C1");
    assert_eq!(c1.len(), 2, "arrivals {arrived:?}");
    for lane in [["A1", "A2", "A3", "A4"], ["B1", "B2", "B3", "B4"]] {
        for pair in lane.windows(2) {
            assert!(
                first(pair[0]) < first(pair[1]),
                "{} before {}: arrivals {arrived:?}",
                pair[0],
                pair[1]
            );
        }
    }
    // A3 waited for A2's success; B's lane did not wait for A's retries.
    assert!(
        first("A3") > a2_delivered,
        "A3 after A2 succeeded: {arrived:?}"
    );
    assert!(
        first("B4") < a2_delivered,
        "B4 not held up by A2: {arrived:?}"
    );
    // A dead letter does not block its lane: C2 follows C1's last attempt.
    assert!(
        first("C2") > c1[1],
        "C2 after C1 was dead-lettered: {arrived:?}"
    );
    // Nothing lost, nothing twice (but the retries).
    let mut once = arrived.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), sent.len(), "{arrived:?}");
    assert_eq!(arrived.len(), sent.len() + 3, "{arrived:?}");
    let letters = world.dead_letters("ordered").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["id"], "C1");
    assert_eq!(letters[0]["lastStatus"], 400);
}
