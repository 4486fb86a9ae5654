//! Dead letters do not pile up: a count per trigger and an age are kept, and the rest deleted;
//! they can be deleted by id, by trigger or all at once, and are listed a page at a time.

use serde_json::Value;

use crate::support::{Answer, Engine, Receiver, trigger_yaml};
use crate::{Ce, WAIT, World};

/// A trigger whose subscriber refuses everything at once (no retries): each event it gets is
/// a dead letter.
fn refusing(receiver: &Receiver, name: &str) -> String {
    receiver.default_answer(&format!("/{name}"), Answer::status(400));
    trigger_yaml(
        name,
        "default",
        &receiver.url(&format!("/{name}")),
        "  delivery: {retry: 0}\n",
    )
}

async fn count_cap_paging_and_delete(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start_with_env(
        engine,
        &[refusing(&receiver, "refused"), refusing(&receiver, "other")],
        &[("KINETIC_DEAD_LETTERS_PER_TRIGGER", "4")],
    )
    .await;
    let events: Vec<Ce> = (0..6)
        .map(|n| Ce::new(&format!("e{n}"), "com.example.dead"))
        .collect();
    world.send("default", &events).await;
    // Six died; each trigger keeps its newest four.
    let deadline = std::time::Instant::now() + WAIT;
    let kept = loop {
        let kept = world.dead_letters("refused").await;
        if kept.len() == 4 && world.dead_letters("other").await.len() == 4 {
            break kept;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} kept; log:\n{}",
            kept.len(),
            world.kinetic.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    // Pages of three: 8 letters in all, so three pages, the last without a next.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let path = match &after {
            None => "/api/v1/deadletters?limit=3".to_owned(),
            Some(token) => format!("/api/v1/deadletters?limit=3&continue={token}"),
        };
        let (status, page) = world.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_owned()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(token) => after = Some(token.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    seen.dedup();
    assert_eq!(seen.len(), 8, "no letter twice");
    let (status, answer) = world.get("/api/v1/deadletters?limit=5000").await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().unwrap().contains("at most 1000"));
    let listed = world.kinetic.cli_in_place(&["dlq", "list", "--limit", "3"]);
    assert!(
        String::from_utf8_lossy(&listed.stderr)
            .contains("More dead letters follow: add --continue"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // Deleting: one by id, then a trigger's, then all.
    let id = kept[0]["id"].as_str().unwrap();
    let deleted = world.kinetic.cli_in_place(&["dlq", "delete", "--id", id]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(world.get(&format!("/api/v1/deadletters/{id}")).await.0, 404);
    assert_eq!(world.dead_letters("refused").await.len(), 3);
    let again = world.kinetic.cli_in_place(&["dlq", "delete", "--id", id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("does not exist"));
    let by_trigger = world
        .kinetic
        .cli_in_place(&["dlq", "delete", "--trigger", "default/refused"]);
    assert_eq!(
        String::from_utf8_lossy(&by_trigger.stdout).trim(),
        "3 dead letter(s) deleted."
    );
    assert!(world.dead_letters("refused").await.is_empty());
    assert_eq!(
        world.delete("/api/v1/deadletters").await,
        400,
        "no selector"
    );
    let all = world.kinetic.cli_in_place(&["dlq", "delete", "--all"]);
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).trim(),
        "4 dead letter(s) deleted."
    );
    let (_, everything) = world.get("/api/v1/deadletters").await;
    assert_eq!(everything["items"], Value::Array(Vec::new()));
}

async fn old_letters_are_deleted(engine: Engine) {
    let receiver = Receiver::start().await;
    let world = World::start_with_env(
        engine,
        &[refusing(&receiver, "refused")],
        &[("KINETIC_DEAD_LETTER_RETENTION", "PT3S")],
    )
    .await;
    world
        .send(
            "default",
            &[
                Ce::new("old-1", "com.example.dead"),
                Ce::new("old-2", "com.example.dead"),
            ],
        )
        .await;
    assert_eq!(
        world.wait_dead_letters("refused", 2, |_| true).await.len(),
        2
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !world.dead_letters("refused").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still kept after {WAIT:?}; log:\n{}",
            world.kinetic.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_cap_paging_and_delete_sqlite() {
    count_cap_paging_and_delete(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_cap_paging_and_delete_postgres() {
    count_cap_paging_and_delete(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_letters_are_deleted_sqlite() {
    old_letters_are_deleted(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_letters_are_deleted_postgres() {
    old_letters_are_deleted(Engine::Postgres).await;
}
