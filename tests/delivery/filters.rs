//! Every filter dialect, end to end: one trigger per dialect, one set of events, and each
//! subscriber gets exactly the events its filter selects.

use crate::support::{Engine, Receiver, trigger_yaml};
use crate::{Ce, QUIET, WAIT, World, ids, sorted};

engines!(every_dialect_selects_exactly_its_events);

async fn every_dialect_selects_exactly_its_events(engine: Engine) {
    let receiver = Receiver::start().await;
    // (trigger, spec lines, ids it must get)
    let cases: &[(&str, &str, &[&str])] = &[
        ("everything", "", &["e1", "e2", "e3", "e4", "e5"]),
        (
            "attr-value",
            "  filter: {attributes: {type: order.created}}\n",
            &["e1", "e2", "e5"],
        ),
        // An empty value matches any value, but the attribute must be there.
        (
            "attr-any",
            "  filter: {attributes: {type: order.created, region: ''}}\n",
            &["e1", "e2"],
        ),
        (
            "attr-missing",
            "  filter: {attributes: {color: ''}}\n",
            &["e3"],
        ),
        (
            "exact",
            "  filters: [{exact: {type: order.created, source: /shop}}]\n",
            &["e1", "e5"],
        ),
        (
            "prefix",
            "  filters: [{prefix: {type: order.}}]\n",
            &["e1", "e2", "e3", "e5"],
        ),
        (
            "suffix",
            "  filters: [{suffix: {subject: .png}}]\n",
            &["e1", "e4"],
        ),
        (
            "all",
            "  filters: [{all: [{prefix: {type: order.}}, {exact: {region: eu}}]}]\n",
            &["e1"],
        ),
        (
            "any",
            "  filters: [{any: [{exact: {type: order.deleted}}, {suffix: {subject: .png}}]}]\n",
            &["e1", "e3", "e4"],
        ),
        (
            "not",
            "  filters: [{not: {prefix: {type: order.}}}]\n",
            &["e4"],
        ),
        // `priority` is an extension; events without `region` fail to evaluate: no match.
        (
            "cesql",
            "  filters: [{cesql: \"region = 'eu' AND priority > 3\"}]\n",
            &["e1"],
        ),
        // A subject that is not a number (or no subject) is an evaluation error: no match, even
        // under NOT.
        (
            "cesql-error",
            "  filters: [{cesql: \"NOT (INT(subject) > 100)\"}]\n",
            &["e2", "e5"],
        ),
        // `filters` wins over `filter`.
        (
            "override",
            "  filter: {attributes: {type: nope}}\n  filters: [{exact: {region: us}}]\n",
            &["e2"],
        ),
        // Several `filters` must all match.
        (
            "several",
            "  filters: [{prefix: {type: order.}}, {exact: {source: /shop}}]\n",
            &["e1", "e3", "e5"],
        ),
    ];
    let docs: Vec<String> = cases
        .iter()
        .map(|(name, spec, _)| {
            trigger_yaml(name, "default", &receiver.url(&format!("/{name}")), spec)
        })
        .collect();
    let world = World::start(engine, &docs).await;
    world
        .send(
            "default",
            &[
                Ce::new("e1", "order.created")
                    .source("/shop")
                    .attr("subject", "uploads/cat.png")
                    .attr("region", "eu")
                    .attr("priority", "5"),
                Ce::new("e2", "order.created")
                    .source("/other")
                    .attr("subject", "7")
                    .attr("region", "us")
                    .attr("priority", "1"),
                Ce::new("e3", "order.deleted")
                    .source("/shop")
                    .attr("subject", "a.jpg")
                    .attr("color", "red"),
                Ce::new("e4", "user.signup")
                    .source("/shop")
                    .attr("subject", "x.png")
                    .attr("region", "eu")
                    .attr("priority", "2"),
                Ce::new("e5", "order.created")
                    .source("/shop")
                    .attr("subject", "12"),
            ],
        )
        .await;
    for (name, _, want) in cases {
        receiver
            .wait_for(&format!("/{name}"), want.len(), WAIT)
            .await;
    }
    tokio::time::sleep(QUIET).await;
    for (name, _, want) in cases {
        let got = sorted(ids(&receiver.received(&format!("/{name}"))));
        assert_eq!(got, *want, "trigger {name}; kinetic log:\n{}", world.log());
    }
}
