//! Replies: an event in a subscriber's 200 answer goes back into the broker; 202 answers and bodies
//! that are not events are not replies; the TTL stops reply loops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Answer, Engine, Receiver, metric_sum, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids, sorted};

engines!(
    replies_flow_through_the_broker,
    broker_refuses_a_spent_ttl,
    a_reply_loop_ends,
);

fn typed(name: &str, ty: &str, receiver: &Receiver) -> String {
    trigger_yaml(
        name,
        "default",
        &receiver.url(&format!("/{name}")),
        &format!("  filter: {{attributes: {{type: {ty}}}}}\n"),
    )
}

/// A binary-mode reply event.
fn reply(status: u16, id: &str, ty: &str) -> Answer {
    Answer::status(status)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/responder")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(r#"{"answer":42}"#)
}

async fn replies_flow_through_the_broker(engine: Engine) {
    let receiver = Receiver::start().await;
    receiver.default_answer("/responder", reply(200, "reply-1", "com.example.reply"));
    receiver.default_answer("/accepted", reply(202, "reply-2", "com.example.reply202"));
    receiver.default_answer(
        "/structured",
        Answer::status(200)
            .header("content-type", "application/cloudevents+json")
            .body(
                r#"{"specversion":"1.0","id":"reply-s","source":"/responder","type":"com.example.reply","data":{"answer":43}}"#,
            ),
    );
    receiver.default_answer(
        "/junk",
        Answer::status(200)
            .header("content-type", "text/plain")
            .body("thanks, not an event"),
    );
    let world = World::start(
        engine,
        &[
            typed("responder", "com.example.request", &receiver),
            typed("replies", "com.example.reply", &receiver),
            typed("structured", "com.example.request-s", &receiver),
            typed("accepted", "com.example.request202", &receiver),
            typed("replies202", "com.example.reply202", &receiver),
            typed("junk", "com.example.junk", &receiver),
        ],
    )
    .await;
    world
        .send(
            "default",
            &[
                Ce::new("req-1", "com.example.request"),
                Ce::new("req-2", "com.example.request202"),
                Ce::new("req-3", "com.example.junk"),
                Ce::new("req-4", "com.example.request-s"),
            ],
        )
        .await;
    let replies = receiver.wait_for("/replies", 2, WAIT).await;
    assert_eq!(
        sorted(ids(&replies)),
        ["reply-1", "reply-s"],
        "log:\n{}",
        world.log()
    );
    let reply = replies
        .iter()
        .find(|r| r.header("ce-id") == Some("reply-1"))
        .expect("reply-1");
    assert_eq!(reply.header("ce-source"), Some("/responder"));
    assert_eq!(reply.header("ce-type"), Some("com.example.reply"));
    assert_eq!(reply.body.as_ref(), br#"{"answer":42}"#);
    assert!(reply.header("ce-knativearrivaltime").is_some());
    assert_eq!(reply.header("ce-knativebrokerttl"), None);
    receiver.wait_for("/accepted", 1, WAIT).await;
    receiver.wait_for("/junk", 1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(ids(&receiver.received("/responder")), ["req-1"]);
    assert_eq!(
        sorted(ids(&receiver.received("/replies"))),
        ["reply-1", "reply-s"]
    );
    let structured = receiver
        .received("/replies")
        .into_iter()
        .find(|r| r.header("ce-id") == Some("reply-s"))
        .expect("reply-s");
    assert_eq!(structured.body.as_ref(), br#"{"answer":43}"#);
    // A 202 is an acknowledgement, whatever it carries.
    assert_eq!(ids(&receiver.received("/accepted")), ["req-2"]);
    assert!(receiver.received("/replies202").is_empty());
    // A body that is no event is ignored: delivered once, not retried, no dead letter.
    assert_eq!(ids(&receiver.received("/junk")), ["req-3"]);
    assert!(world.dead_letters("junk").await.is_empty());
    let metrics = world.scrape().await;
    let delivered = metric_sum(
        &metrics,
        "kinetic_dispatcher_deliveries_total",
        &[("trigger", "default/junk"), ("outcome", "delivered")],
    );
    assert_eq!(delivered, 1.0, "{metrics}");
    let health = world
        .client
        .get(world.kinetic.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status().as_u16(), 200);
}

async fn broker_refuses_a_spent_ttl(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start(engine, &[typed("all", "com.example.ttl", &receiver)]).await;
    let (status, body) = Ce::new("ttl-1", "com.example.ttl")
        .attr("knativebrokerttl", "1")
        .post(&world.client, &world.broker("default"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["attribute"], "knativebrokerttl", "{body}");
    // One hop left is still accepted.
    world
        .send(
            "default",
            &[Ce::new("ttl-2", "com.example.ttl").attr("knativebrokerttl", "2")],
        )
        .await;
    receiver.wait_for("/all", 1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(ids(&receiver.received("/all")), ["ttl-2"]);
}

async fn a_reply_loop_ends(engine: Engine) {
    let receiver = Receiver::start().await;
    let counter = Arc::new(AtomicUsize::new(0));
    let next = counter.clone();
    // Answers every event with a new event of the same type: without the TTL, forever.
    receiver.respond_with("/loop", move |_| {
        let n = next.fetch_add(1, Ordering::SeqCst);
        reply(200, &format!("hop-{n}"), "com.example.loop")
    });
    let world = World::start(engine, &[typed("loop", "com.example.loop", &receiver)]).await;
    world
        .send("default", &[Ce::new("hop-start", "com.example.loop")])
        .await;
    let bounded = Duration::from_secs(90);
    let got = receiver.wait_for("/loop", 250, bounded).await;
    assert!(
        got.len() >= 250,
        "{} hops; log:\n{}",
        got.len(),
        world.log()
    );
    // Stops: no delivery for a while, and the count stays put.
    let mut last = receiver.received("/loop").len();
    loop {
        tokio::time::sleep(QUIET).await;
        let now = receiver.received("/loop").len();
        if now == last {
            break;
        }
        assert!(now <= 256, "the loop goes on: {now} hops");
        last = now;
    }
    assert!(
        (250..=256).contains(&last),
        "the TTL (255) bounds the hops: {last}"
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.received("/loop").len(), last);
}
