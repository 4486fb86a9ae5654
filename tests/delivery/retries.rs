//! Retries: the backoff schedule as measured by the subscriber, which answers are retried, transport
//! failures and timeouts, and `Retry-After`.

use std::time::Duration;

use crate::support::{Answer, ClosedPort, Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, assert_gap, gaps};

engines!(
    backoff_is_linear_or_exponential,
    retryable_answers_are_retried_others_dead_letter_at_once,
    transport_failures_and_timeouts_are_retried,
    retry_after_is_honoured_and_capped,
);

/// A trigger selecting events of type `name`, delivering to `/name` of `receiver`.
fn typed(name: &str, receiver: &Receiver, spec: &str) -> String {
    trigger_yaml(
        name,
        "default",
        &receiver.url(&format!("/{name}")),
        &format!("  filter: {{attributes: {{type: {name}}}}}\n{spec}"),
    )
}

async fn backoff_is_linear_or_exponential(engine: Engine) {
    let receiver = Receiver::start().await;
    receiver.script(
        "/linear",
        vec![
            Answer::status(503),
            Answer::status(503),
            Answer::status(200),
        ],
    );
    receiver.script(
        "/exponential",
        vec![
            Answer::status(503),
            Answer::status(503),
            Answer::status(503),
            Answer::status(200),
        ],
    );
    let world = World::start(
        engine,
        &[
            typed(
                "linear",
                &receiver,
                "  delivery: {retry: 5, backoffPolicy: linear, backoffDelay: PT0.4S}\n",
            ),
            typed(
                "exponential",
                &receiver,
                "  delivery: {retry: 5, backoffPolicy: exponential, backoffDelay: PT0.2S}\n",
            ),
        ],
    )
    .await;
    world
        .send(
            "default",
            &[Ce::new("l-1", "linear"), Ce::new("x-1", "exponential")],
        )
        .await;
    let linear = receiver.wait_for("/linear", 3, WAIT).await;
    let exponential = receiver.wait_for("/exponential", 4, WAIT).await;
    tokio::time::sleep(QUIET).await;
    // Delivered once: no attempt after the 200, no dead letter.
    assert_eq!(receiver.received("/linear").len(), 3, "{}", world.log());
    assert_eq!(
        receiver.received("/exponential").len(),
        4,
        "{}",
        world.log()
    );
    for (k, gap) in gaps(&linear).into_iter().enumerate() {
        let k = u32::try_from(k).unwrap() + 1;
        assert_gap(
            gap,
            Duration::from_millis(400) * k,
            &format!("linear retry {k}"),
        );
    }
    for (k, gap) in gaps(&exponential).into_iter().enumerate() {
        let k = u32::try_from(k).unwrap() + 1;
        assert_gap(
            gap,
            Duration::from_millis(200) * 2u32.pow(k),
            &format!("exponential retry {k}"),
        );
    }
    assert!(world.dead_letters("linear").await.is_empty());
    assert!(world.dead_letters("exponential").await.is_empty());
}

const RETRYABLE: &[u16] = &[404, 408, 409, 429, 500, 502, 503, 504];
const PERMANENT: &[u16] = &[400, 401, 403, 422];

async fn retryable_answers_are_retried_others_dead_letter_at_once(engine: Engine) {
    let receiver = Receiver::start().await;
    let sink = receiver.url("/dls");
    let spec = format!(
        "  delivery: {{retry: 3, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{sink}'}}}}\n"
    );
    let mut docs = Vec::new();
    for status in RETRYABLE {
        // Fails once, then succeeds.
        receiver.script(&format!("/s{status}"), vec![Answer::status(*status)]);
        docs.push(typed(&format!("s{status}"), &receiver, &spec));
    }
    for status in PERMANENT {
        receiver.default_answer(&format!("/s{status}"), Answer::status(*status));
        docs.push(typed(&format!("s{status}"), &receiver, &spec));
    }
    let world = World::start(engine, &docs).await;
    let events: Vec<Ce> = RETRYABLE
        .iter()
        .chain(PERMANENT)
        .map(|status| Ce::new(&format!("ev-{status}"), &format!("s{status}")))
        .collect();
    world.send("default", &events).await;
    for status in RETRYABLE {
        receiver.wait_for(&format!("/s{status}"), 2, WAIT).await;
    }
    receiver.wait_for("/dls", PERMANENT.len(), WAIT).await;
    tokio::time::sleep(QUIET).await;
    for status in RETRYABLE {
        let got = receiver.received(&format!("/s{status}"));
        assert_eq!(
            got.len(),
            2,
            "HTTP {status} is retried once, then delivered; log:\n{}",
            world.log()
        );
        assert!(world.dead_letters(&format!("s{status}")).await.is_empty());
    }
    for status in PERMANENT {
        let got = receiver.received(&format!("/s{status}"));
        assert_eq!(got.len(), 1, "HTTP {status} is not retried");
        let letters = world.dead_letters(&format!("s{status}")).await;
        assert_eq!(letters.len(), 1, "HTTP {status} is dead-lettered");
        assert_eq!(letters[0]["attempts"], 1);
        assert_eq!(letters[0]["lastStatus"], *status);
    }
    let mut codes: Vec<String> = receiver
        .received("/dls")
        .iter()
        .map(|r| r.header("ce-knativeerrorcode").unwrap_or("-").to_owned())
        .collect();
    codes.sort();
    assert_eq!(codes, ["400", "401", "403", "422"]);
}

async fn transport_failures_and_timeouts_are_retried(engine: Engine) {
    let receiver = Receiver::start().await;
    let nobody = ClosedPort::bind();
    let closed = nobody.url("/nobody");
    // The first attempt outlives the timeout; the second answers at once.
    receiver.script(
        "/slow",
        vec![Answer::status(200).delay(Duration::from_secs(3))],
    );
    let world = World::start(
        engine,
        &[
            trigger_yaml(
                "refused",
                "default",
                &closed,
                &format!(
                    "  filter: {{attributes: {{type: refused}}}}\n  delivery: {{retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
                    receiver.url("/dls")
                ),
            ),
            typed(
                "slow",
                &receiver,
                "  delivery: {retry: 2, backoffPolicy: linear, backoffDelay: PT0.1S, timeout: PT0.5S}\n",
            ),
        ],
    )
    .await;
    world
        .send(
            "default",
            &[Ce::new("r-1", "refused"), Ce::new("t-1", "slow")],
        )
        .await;

    let slow = receiver.wait_for("/slow", 2, WAIT).await;
    assert_eq!(
        slow.len(),
        2,
        "timed-out attempt retried; log:\n{}",
        world.log()
    );
    // The retry comes after the timeout (0.5 s) and the backoff (0.1 s), well before the first
    // answer would have (3 s).
    let gap = slow[1].at - slow[0].at;
    assert!(
        gap >= Duration::from_millis(480) && gap < Duration::from_millis(2900),
        "retry after the timeout, not after the answer: {gap:?}"
    );

    let sunk = receiver.wait_for("/dls", 1, WAIT).await;
    assert_eq!(sunk.len(), 1, "log:\n{}", world.log());
    assert_eq!(sunk[0].header("ce-id"), Some("r-1"));
    assert_eq!(sunk[0].header("ce-knativeerrordest"), Some(closed.as_str()));
    // No answer, so no status and no response data.
    assert_eq!(sunk[0].header("ce-knativeerrorcode"), None);
    assert_eq!(sunk[0].header("ce-knativeerrordata"), None);
    let letters = world.dead_letters("refused").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attempts"], 3, "{}", letters[0]);
    assert!(letters[0]["lastStatus"].is_null());
    let error = letters[0]["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("connect"), "lastError: {error}");

    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.received("/slow").len(), 2);
    assert!(world.dead_letters("slow").await.is_empty());
}

async fn retry_after_is_honoured_and_capped(engine: Engine) {
    let receiver = Receiver::start().await;
    let tiny = "retry: 3, backoffPolicy: linear, backoffDelay: PT0.1S";
    let after = |seconds: &str, status: u16| {
        vec![
            Answer::status(status).header("retry-after", seconds),
            Answer::status(200),
        ]
    };
    receiver.script("/ra429", after("2", 429));
    receiver.script("/ra503", after("2", 503));
    receiver.script("/capped", after("10", 503));
    receiver.script("/ignored", after("10", 429));
    // Retry-After on a status other than 429/503 means nothing.
    receiver.script("/other", after("10", 500));
    let world = World::start(
        engine,
        &[
            typed("ra429", &receiver, &format!("  delivery: {{{tiny}}}\n")),
            typed("ra503", &receiver, &format!("  delivery: {{{tiny}}}\n")),
            typed(
                "capped",
                &receiver,
                &format!("  delivery: {{{tiny}, retryAfterMax: PT0.5S}}\n"),
            ),
            typed(
                "ignored",
                &receiver,
                &format!("  delivery: {{{tiny}, retryAfterMax: PT0S}}\n"),
            ),
            typed("other", &receiver, &format!("  delivery: {{{tiny}}}\n")),
        ],
    )
    .await;
    let names = ["ra429", "ra503", "capped", "ignored", "other"];
    let events: Vec<Ce> = names
        .iter()
        .map(|name| Ce::new(&format!("{name}-1"), name))
        .collect();
    world.send("default", &events).await;
    let mut measured = Vec::new();
    for name in names {
        let got = receiver.wait_for(&format!("/{name}"), 2, WAIT).await;
        assert_eq!(got.len(), 2, "{name}; log:\n{}", world.log());
        measured.push((name, got[1].at - got[0].at));
    }
    for (name, gap) in measured {
        let expected = match name {
            "ra429" | "ra503" => Duration::from_secs(2),
            "capped" => Duration::from_millis(500),
            _ => Duration::from_millis(100),
        };
        assert_gap(gap, expected, &format!("{name}: gap before the retry"));
    }
}
