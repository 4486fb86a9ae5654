//! `notifications.sqs`: one task per S3Source long-polls the queue the bucket publishes its
//! notifications to (up to 10 messages a request), hands every selected object event to the sink
//! (the messages of a batch at once, each message's events in order), and deletes a message only
//! once the sink accepted all of its events (the batch's done messages in one request).
//!
//! Delivery is at least once: a message whose events were not all accepted (the sink is down,
//! kinetic stops or crashes, the queue's visibility timeout runs out while the sink retries) comes
//! back and is sent again with the same event ids, so the broker drops the duplicates.
//!
//! A message that is not an S3 notification, or whose events the sink refuses for good (a 4xx), is
//! left in the queue: kinetic never drops input it could not deliver. It comes back after the
//! queue's visibility timeout, counted as a failure each time; give the queue a redrive policy
//! (`maxReceiveCount` of 3 or more, and a dead-letter queue) so such messages end there: a message
//! in flight to a process that crashed has been received once already.

use kinetic_outbound::retry::Backoff;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use chrono::{DateTime, Utc};
use kinetic_api::sources::S3SourceSpec;
use tokio_util::sync::CancellationToken;

use crate::controller::{Key, Sources, sleep_or_cancel};
use crate::s3::client::Clients;
use crate::s3::{self, Parsed};
use crate::sink::SinkError;
use crate::sink::Target;

/// Long-polling wait of one ReceiveMessage (SQS allows at most 20 s).
const WAIT_SECONDS: i32 = 10;
/// Messages per ReceiveMessage (SQS allows at most 10).
const MAX_MESSAGES: i32 = 10;
/// Pauses after failed ReceiveMessages: 200 ms, doubling up to 30 s.
const BACKOFF: Backoff = Backoff::Doubling {
    first: Duration::from_millis(200),
    max: Duration::from_secs(30),
};

/// What became of one message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every event accepted (or none selected): the message may be deleted.
    Done,
    /// Left in the queue to come back.
    Kept,
    /// Shutting down; nothing acknowledged.
    Cancelled,
}

/// Runs until `cancel`. Cancellation safe: a message is deleted only after all of its events were
/// accepted, so stopping anywhere leaves it to be received again.
pub(crate) async fn run(
    sources: Arc<Sources>,
    key: Key,
    spec: Arc<S3SourceSpec>,
    queue_url: String,
    sink: Target,
    cancel: CancellationToken,
) {
    let (namespace, name) = (key.1.clone(), key.2.clone());
    for endpoint in spec.endpoint.iter().chain(std::iter::once(&queue_url)) {
        if let Err(error) = sources.sink.check_endpoint(endpoint).await {
            sources.not_ready(&key, error);
            return;
        }
    }
    let clients = tokio::select! {
        () = cancel.cancelled() => return,
        built = Clients::new(&spec) => built,
    };
    let sqs = match clients {
        Ok(clients) => clients.sqs(&queue_url),
        Err(error) => {
            tracing::warn!(%namespace, %name, %error, "An S3Source cannot build its SQS client.");
            sources.not_ready(&key, error.to_string());
            return;
        }
    };
    tracing::info!(%namespace, %name, queue = %queue_url, "Reading S3 notifications from SQS.");
    let mut failures = 0u32;
    let mut backlog_read: Option<tokio::time::Instant> = None;
    loop {
        if backlog_read.is_none_or(|at| at.elapsed() >= BACKLOG_INTERVAL) {
            backlog_read = Some(tokio::time::Instant::now());
            let backlog = backlog(&sqs, &queue_url).await;
            sources.update(&key, |s| s.backlog = backlog);
        }
        let received = tokio::select! {
            () = cancel.cancelled() => return,
            received = sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(MAX_MESSAGES)
                .wait_time_seconds(WAIT_SECONDS)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send() => received,
        };
        let messages = match received {
            Ok(output) => {
                failures = 0;
                output.messages.unwrap_or_default()
            }
            Err(error) => {
                let error = aws_sdk_sqs::error::DisplayErrorContext(error);
                tracing::warn!(%namespace, %name, error = %error, "Receiving from SQS failed; retrying.");
                sources.update(&key, |s| {
                    s.last_error = Some(format!("receiving from {queue_url}: {error}"))
                });
                failures = failures.saturating_add(1);
                if sleep_or_cancel(BACKOFF.exact(failures), &cancel).await {
                    return;
                }
                continue;
            }
        };
        // The messages of a batch go to the sink at once (S3 does not order notifications, and a
        // standard queue does not either), then the done ones are deleted in one request.
        let outcomes = futures::future::join_all(
            messages
                .iter()
                .map(|message| deliver(&sources, &key, &spec, &sink, message, &cancel)),
        )
        .await;
        if outcomes.contains(&Outcome::Cancelled) {
            return;
        }
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == Outcome::Done)
            .filter_map(|(message, _)| message.receipt_handle())
            .enumerate()
            .filter_map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        if done.is_empty() {
            continue;
        }
        // A lost delete only means the message comes back; its events dedupe.
        let deleted = sqs
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(done))
            .send()
            .await;
        match deleted {
            Ok(answer) if !answer.failed().is_empty() => {
                let failed = answer.failed();
                tracing::warn!(%namespace, %name, count = failed.len(), first = %failed[0].message().unwrap_or_default(), "Deleting delivered SQS messages failed; they will be delivered again.");
            }
            Ok(_) => {}
            Err(error) => {
                let error = aws_sdk_sqs::error::DisplayErrorContext(error);
                tracing::warn!(%namespace, %name, error = %error, "Deleting delivered SQS messages failed; they will be delivered again.");
            }
        }
    }
}

/// How often the queue's backlog is read for `kinetic get sources`.
const BACKLOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Messages waiting in the queue plus those received and not yet deleted (SQS's approximations);
/// `None` when the queue does not say.
async fn backlog(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Option<u64> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let answer = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .ok()?;
    let attributes = answer.attributes?;
    let count = |name: QueueAttributeName| -> Option<u64> { attributes.get(&name)?.parse().ok() };
    Some(
        count(QueueAttributeName::ApproximateNumberOfMessages)?
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible).unwrap_or(0),
    )
}

/// Hands every event of one message to the sink, in order.
async fn deliver(
    sources: &Sources,
    key: &Key,
    spec: &S3SourceSpec,
    sink: &Target,
    message: &Message,
    cancel: &CancellationToken,
) -> Outcome {
    let (namespace, name) = (&key.1, &key.2);
    let id = message.message_id().unwrap_or_default();
    let body = message.body().unwrap_or_default();
    let events = match s3::to_events(spec, body.as_bytes()) {
        Ok(Parsed::Events(events)) => events,
        Ok(Parsed::SubscriptionConfirmation { .. }) => {
            // SNS confirms subscriptions of SQS queues by itself; such a message carries no object.
            tracing::info!(%namespace, %name, message = %id, "Ignored an SNS subscription confirmation in the queue.");
            return Outcome::Done;
        }
        Err(error) => {
            tracing::warn!(%namespace, %name, message = %id, %error, "An SQS message is not an S3 notification; leaving it to the queue's redrive policy.");
            sources.failed(key, format!("SQS message {id}: {error}"));
            return Outcome::Kept;
        }
    };
    let sent_at = sent_at(message).unwrap_or_else(Utc::now);
    for event in &events {
        match sources.sink.send_until_accepted(sink, event, cancel).await {
            Ok(()) => sources.accepted(key, sent_at),
            Err(SinkError::Cancelled) => return Outcome::Cancelled,
            Err(error) => {
                tracing::warn!(%namespace, %name, message = %id, %error, "The sink refused an S3 event; its SQS message stays in the queue.");
                sources.failed(key, error.to_string());
                return Outcome::Kept;
            }
        }
    }
    Outcome::Done
}

/// When SQS received the message (`SentTimestamp`, Unix milliseconds), for the lag metric.
fn sent_at(message: &Message) -> Option<DateTime<Utc>> {
    let millis = message
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse::<i64>()
        .ok()?;
    DateTime::from_timestamp_millis(millis)
}
