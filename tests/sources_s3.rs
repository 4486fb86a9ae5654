//! S3Source end to end against moto's S3, SQS and SNS: objects uploaded with the AWS SDK become
//! CloudEvents that reach a trigger's subscriber through the broker, read from the queue the
//! bucket notifies (directly or through an SNS topic), across a crash of kinetic.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Event, NotificationConfiguration, QueueConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use kinetic_testkit::moto::{self, Moto};
use support::{
    Engine, Kinetic, Receiver, TO_DEFAULT_BROKER, TestStore, broker_with_trigger, write_yaml,
};

async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> String {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    attributes.attributes().unwrap()[&QueueAttributeName::QueueArn].clone()
}

/// A fresh bucket notifying a fresh queue of every created and removed object, the queue moving
/// a message received three times and not deleted to a dead-letter queue; returns both queues' URLs.
async fn bucket_notifying_queue(moto: &Moto, bucket: &str) -> (String, String) {
    let s3 = moto.s3().await;
    let sqs = moto.sqs().await;
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let dead_letters = sqs
        .create_queue()
        .queue_name(format!("{bucket}-dead"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": queue_arn(&sqs, &dead_letters).await,
        // A message in flight to a process that crashed counts as received: 1 would send it
        // to the dead letters.
        "maxReceiveCount": "3",
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{bucket}-events"))
        // Short, so a message received by a process that then crashed comes back soon.
        .attributes(QueueAttributeName::VisibilityTimeout, "3")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = queue_arn(&sqs, &queue_url).await;
    let notify = QueueConfiguration::builder()
        .queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .events(Event::from("s3:ObjectRemoved:*"))
        .build()
        .unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(notify)
                .build(),
        )
        .send()
        .await
        .unwrap();
    (queue_url, dead_letters)
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
}

async fn put_multipart(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let upload_id = upload.upload_id().unwrap();
    // The last (here the only) part may be smaller than S3's 5 MiB minimum.
    let part = s3
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from(vec![b'x'; 4096]))
        .send()
        .await
        .unwrap();
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Messages in the queue, visible or being processed.
async fn queued(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> u64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    attributes
        .attributes()
        .unwrap()
        .values()
        .map(|v| v.parse::<u64>().unwrap())
        .sum()
}

/// 100 objects in all with the six named ones: this many more selected ones, split around a crash.
const BULK_SELECTED: usize = 62;
/// And this many excluded by prefix and by suffix.
const BULK_EXCLUDED: usize = 16;

async fn bulk(s3: &aws_sdk_s3::Client, bucket: &str, part: &str) {
    for i in 0..BULK_SELECTED / 2 {
        put(s3, bucket, &format!("uploads/{part}-{i}.jpg"), "x").await;
    }
    for i in 0..BULK_EXCLUDED / 2 {
        put(s3, bucket, &format!("other/{part}-{i}.jpg"), "x").await;
        put(s3, bucket, &format!("uploads/{part}-{i}.txt"), "x").await;
    }
}

#[tokio::test]
async fn sqlite_sqs_notifications_reach_a_trigger_once_across_a_crash() {
    sqs_notifications_reach_a_trigger_once_across_a_crash(Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_sqs_notifications_reach_a_trigger_once_across_a_crash() {
    sqs_notifications_reach_a_trigger_once_across_a_crash(Engine::Postgres).await;
}

async fn sqs_notifications_reach_a_trigger_once_across_a_crash(engine: Engine) {
    let Some(moto) = Moto::start() else { return };
    let bucket = format!("photos-{}", uuid::Uuid::new_v4().simple());
    let (queue_url, dead_letters) = bucket_notifying_queue(&moto, &bucket).await;
    let s3 = moto.s3().await;
    let sqs = moto.sqs().await;

    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: photos}}
spec:
  bucket: {bucket}
  endpoint: {endpoint}
  region: {region}
  forcePathStyle: true
  credentials:
    accessKeyId: {{env: MOTO_ACCESS_KEY}}
    secretAccessKey: {{env: MOTO_SECRET_KEY}}
  eventTypes: ['ObjectCreated:*']
  prefix: uploads/
  suffix: .jpg
  notifications:
    sqs: {{queueUrl: '{queue_url}'}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("uploads", &receiver.url("/uploads")),
        endpoint = moto.endpoint,
        region = moto::REGION,
    );
    let file = write_yaml(store.dir(), "s3.yaml", &yaml);
    let env = [
        ("MOTO_ACCESS_KEY", moto::ACCESS_KEY),
        ("MOTO_SECRET_KEY", moto::SECRET_KEY),
        ("KINETIC_SECRET_ENV", "MOTO_*"),
    ];
    let mut kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);

    // Not a notification: left in the queue, whose redrive policy moves it aside.
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("{\"hello\": \"world\"}")
        .send()
        .await
        .unwrap();
    put(&s3, &bucket, "uploads/a.jpg", "a").await;
    put(&s3, &bucket, "uploads/b.png", "not selected: suffix").await;
    put(&s3, &bucket, "other/c.jpg", "not selected: prefix").await;
    put_multipart(&s3, &bucket, "uploads/big.jpg").await;
    // A removal is not among the source's `eventTypes`.
    s3.delete_object()
        .bucket(&bucket)
        .key("uploads/a.jpg")
        .send()
        .await
        .unwrap();

    // moto notifies a completed multipart upload twice, as `Put` and `CompleteMultipartUpload`
    // (AWS: only the latter); each is its own event.
    let got = receiver
        .wait_for("/uploads", 3, Duration::from_secs(30))
        .await;
    let kinds: BTreeSet<(String, String)> = changes(&got).into_keys().collect();
    let expected_kinds: BTreeSet<(String, String)> = [
        ("ObjectCreated:Put", "uploads/a.jpg"),
        ("ObjectCreated:Put", "uploads/big.jpg"),
        ("ObjectCreated:CompleteMultipartUpload", "uploads/big.jpg"),
    ]
    .into_iter()
    .map(|(t, k)| (format!("com.amazonaws.s3.{t}"), k.to_owned()))
    .collect();
    assert_eq!(kinds, expected_kinds, "{got:?}\n{}", kinetic.log());
    let small = got
        .iter()
        .find(|e| e.header("ce-subject") == Some("uploads/a.jpg"))
        .unwrap();
    assert_eq!(
        small.header("ce-source"),
        Some(format!("aws:s3.us-east-1.{bucket}").as_str())
    );
    assert_eq!(small.header("content-type"), Some("application/json"));
    let record: serde_json::Value = serde_json::from_slice(&small.body).unwrap();
    assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str());
    assert_eq!(record["s3"]["object"]["size"], 1);

    // Half the bulk while kinetic runs; a crash; the other half while it is down.
    bulk(&s3, &bucket, "before").await;
    // A crash: objects uploaded while kinetic is down are delivered after it is up again.
    kinetic.kill9();
    bulk(&s3, &bucket, "during").await;
    put(&s3, &bucket, "uploads/while-down.jpg", "d").await;
    let kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    wait_for_subject(&receiver, "/uploads", "uploads/while-down.jpg", &kinetic).await;

    // SQS delivers at least once: the same notification twice reaches the subscriber once.
    let delivered = |subject: &str| {
        receiver
            .received("/uploads")
            .iter()
            .filter(|e| e.header("ce-subject") == Some(subject))
            .count()
    };
    let before = delivered("uploads/a.jpg");
    let duplicate = serde_json::json!({ "Records": [record] }).to_string();
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body(duplicate)
        .send()
        .await
        .unwrap();
    put(&s3, &bucket, "uploads/last.jpg", "l").await;
    wait_for_subject(&receiver, "/uploads", "uploads/last.jpg", &kinetic).await;
    // Messages are deleted once delivered; wait (bounded) for the last ones.
    let mut left = u64::MAX;
    for _ in 0..300 {
        left = queued(&sqs, &queue_url).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "messages left in the queue\n{}", kinetic.log());
    // The redrive policy moved the message that is not a notification (moto moves it while
    // answering a receive; a count read at that moment may see it in neither queue).
    let mut dead = 0;
    for _ in 0..100 {
        dead = queued(&sqs, &dead_letters).await;
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1, "{}", kinetic.log());
    // The broker hands accepted events to the trigger asynchronously.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(delivered("uploads/a.jpg"), before, "{}", kinetic.log());
    let counts = changes(&receiver.received("/uploads"));
    let mut expected: BTreeMap<(String, String), usize> = [
        ("ObjectCreated:Put", "uploads/a.jpg"),
        ("ObjectCreated:Put", "uploads/big.jpg"),
        ("ObjectCreated:CompleteMultipartUpload", "uploads/big.jpg"),
        ("ObjectCreated:Put", "uploads/while-down.jpg"),
        ("ObjectCreated:Put", "uploads/last.jpg"),
    ]
    .into_iter()
    .map(|(t, k)| ((format!("com.amazonaws.s3.{t}"), k.to_owned()), 1))
    .collect();
    for part in ["before", "during"] {
        for i in 0..BULK_SELECTED / 2 {
            expected.insert(
                (
                    "com.amazonaws.s3.ObjectCreated:Put".to_owned(),
                    format!("uploads/{part}-{i}.jpg"),
                ),
                1,
            );
        }
    }
    assert_eq!(counts, expected, "{}", kinetic.log());
    // `kinetic get sources` shows the queue's backlog.
    let sources = kinetic.cli(&["get", "sources", "-o", "json"]);
    let sources: serde_json::Value = serde_json::from_slice(&sources.stdout).unwrap();
    let photos = &sources[0];
    assert_eq!(photos["name"], "photos", "{sources}");
    assert!(photos["backlog"].is_u64(), "{sources}");
}

/// Waits (bounded) until the subscriber at `path` got an event about `subject`. After a crash a
/// trigger may deliver an earlier event again, so counting deliveries would not do.
async fn wait_for_subject(receiver: &Receiver, path: &str, subject: &str, kinetic: &Kinetic) {
    for _ in 0..400 {
        let received = receiver.received(path);
        if received
            .iter()
            .any(|e| e.header("ce-subject") == Some(subject))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no event about {subject} reached {path}:\n{}",
        kinetic.log()
    );
}

/// Waits (bounded) until kinetic's log has `line`.
async fn wait_for_log(kinetic: &Kinetic, line: &str) {
    for _ in 0..300 {
        if kinetic.log().contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("kinetic never logged {line:?}:\n{}", kinetic.log());
}

/// (type, subject) → how many distinct events (ids) the subscriber got. A trigger delivers at
/// least once, so kill -9 right after a delivery may repeat it, with the same id.
fn changes(received: &[support::Received]) -> BTreeMap<(String, String), usize> {
    let mut ids = BTreeMap::<(String, String), BTreeSet<String>>::new();
    for event in received {
        let ty = event.header("ce-type").unwrap_or_default();
        let subject = event.header("ce-subject").unwrap_or_default();
        ids.entry((ty.to_owned(), subject.to_owned()))
            .or_default()
            .insert(event.header("ce-id").unwrap_or_default().to_owned());
    }
    ids.into_iter().map(|(k, v)| (k, v.len())).collect()
}

#[tokio::test]
async fn a_polled_bucket_emits_each_change_once_across_a_crash() {
    let Some(moto) = Moto::start() else { return };
    let bucket = format!("polled-{}", uuid::Uuid::new_v4().simple());
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    put(&s3, &bucket, "uploads/before.jpg", "baseline").await;

    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: polled}}
spec:
  bucket: {bucket}
  endpoint: {endpoint}
  region: {region}
  forcePathStyle: true
  credentials:
    accessKeyId: {{env: MOTO_ACCESS_KEY}}
    secretAccessKey: {{env: MOTO_SECRET_KEY}}
  prefix: uploads/
  poll: {{interval: PT1S}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("changes", &receiver.url("/changes")),
        endpoint = moto.endpoint,
        region = moto::REGION,
    );
    let file = write_yaml(store.dir(), "s3.yaml", &yaml);
    let env = [
        ("MOTO_ACCESS_KEY", moto::ACCESS_KEY),
        ("MOTO_SECRET_KEY", moto::SECRET_KEY),
        ("KINETIC_SECRET_ENV", "MOTO_*"),
    ];
    let mut kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    wait_for_log(&kinetic, "Took a polled bucket's baseline.").await;

    put(&s3, &bucket, "uploads/new.jpg", "n").await;
    put(&s3, &bucket, "elsewhere/x.jpg", "not under the prefix").await;
    let got = receiver
        .wait_for("/changes", 1, Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), 1, "{}", kinetic.log());
    assert_eq!(got[0].header("ce-subject"), Some("uploads/new.jpg"));
    assert_eq!(
        got[0].header("ce-source"),
        Some(format!("aws:s3.us-east-1.{bucket}").as_str())
    );
    s3.delete_object()
        .bucket(&bucket)
        .key("uploads/new.jpg")
        .send()
        .await
        .unwrap();
    receiver
        .wait_for("/changes", 2, Duration::from_secs(20))
        .await;

    // Changes while kinetic is down are emitted once after it is up again; nothing else is.
    kinetic.kill9();
    put(&s3, &bucket, "uploads/while-down.jpg", "d").await;
    let kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    wait_for_subject(&receiver, "/changes", "uploads/while-down.jpg", &kinetic).await;
    // A few more listings find nothing new.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let created = "com.amazonaws.s3.ObjectCreated:Put".to_owned();
    let removed = "com.amazonaws.s3.ObjectRemoved:Delete".to_owned();
    let expected: BTreeMap<(String, String), usize> = [
        ((created.clone(), "uploads/new.jpg".to_owned()), 1),
        ((removed, "uploads/new.jpg".to_owned()), 1),
        ((created, "uploads/while-down.jpg".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    let all = receiver.received("/changes");
    let ids: Vec<_> = all
        .iter()
        .map(|e| {
            (
                e.header("ce-subject"),
                e.header("ce-type"),
                e.header("ce-id"),
                e.header("ce-time"),
            )
        })
        .collect();
    assert_eq!(changes(&all), expected, "{ids:#?}\n{}", kinetic.log());
}

/// More objects than one ListObjectsV2 page and one state chunk (1000 each): the baseline counts
/// them all, and only the real changes are emitted, before and after a restart.
#[tokio::test]
async fn polling_a_bucket_larger_than_a_page_emits_only_changes() {
    let Some(moto) = Moto::start() else { return };
    let bucket = format!("large-{}", uuid::Uuid::new_v4().simple());
    let s3 = moto.s3().await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    const OBJECTS: usize = 1005;
    let keys: Vec<String> = (0..OBJECTS).map(|i| format!("o/{i:05}.bin")).collect();
    // Uploads 20 at a time.
    for batch in keys.chunks(20) {
        let uploads: Vec<_> = batch
            .iter()
            .map(|key| {
                let (s3, bucket, key) = (s3.clone(), bucket.clone(), key.clone());
                tokio::spawn(async move { put(&s3, &bucket, &key, "x").await })
            })
            .collect();
        for upload in uploads {
            upload.await.unwrap();
        }
    }

    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: large}}
spec:
  bucket: {bucket}
  endpoint: {endpoint}
  region: {region}
  forcePathStyle: true
  credentials:
    accessKeyId: {{env: MOTO_ACCESS_KEY}}
    secretAccessKey: {{env: MOTO_SECRET_KEY}}
  poll: {{interval: PT1S}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("changes", &receiver.url("/changes")),
        endpoint = moto.endpoint,
        region = moto::REGION,
    );
    let file = write_yaml(store.dir(), "s3.yaml", &yaml);
    let env = [
        ("MOTO_ACCESS_KEY", moto::ACCESS_KEY),
        ("MOTO_SECRET_KEY", moto::SECRET_KEY),
        ("KINETIC_SECRET_ENV", "MOTO_*"),
    ];
    let mut kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    wait_for_log(&kinetic, "Took a polled bucket's baseline.").await;
    assert!(
        kinetic.log().contains(&format!("objects={OBJECTS}")),
        "{}",
        kinetic.log()
    );

    // One removal in the first page, one in the second; one new object at the very end.
    for key in ["o/00003.bin", "o/01002.bin"] {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    put(&s3, &bucket, "z-last.bin", "new").await;
    receiver
        .wait_for("/changes", 3, Duration::from_secs(30))
        .await;
    kinetic.kill9();
    let kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    wait_for_log(&kinetic, "Polling a bucket.").await;
    // A few listings after the restart find nothing new.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let created = "com.amazonaws.s3.ObjectCreated:Put".to_owned();
    let removed = "com.amazonaws.s3.ObjectRemoved:Delete".to_owned();
    let expected: BTreeMap<(String, String), usize> = [
        ((removed.clone(), "o/00003.bin".to_owned()), 1),
        ((removed, "o/01002.bin".to_owned()), 1),
        ((created, "z-last.bin".to_owned()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        changes(&receiver.received("/changes")),
        expected,
        "{}",
        kinetic.log()
    );
}

/// One call of moto's SNS Query API, its parameters in the query string (the AWS SDK for SNS is not
/// a dependency for these two calls): the text between `<{field}>` and `</{field}>` of the answer.
async fn sns(moto: &Moto, form: &[(&str, &str)], field: &str) -> String {
    let mut body = vec![("Version", "2010-03-31")];
    body.extend_from_slice(form);
    let answer = reqwest::Client::new()
        .post(format!("{}/", moto.endpoint))
        // moto reads the region from the credential scope.
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/20261127/{}/sns/aws4_request, SignedHeaders=host, Signature=0",
                moto::ACCESS_KEY,
                moto::REGION
            ),
        )
        .query(&body)
        .send()
        .await
        .unwrap();
    assert!(
        answer.status().is_success(),
        "SNS {form:?}: {}",
        answer.status()
    );
    let text = answer.text().await.unwrap();
    let start = text
        .find(&format!("<{field}>"))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        + field.len()
        + 2;
    let end = text[start..].find(&format!("</{field}>")).unwrap() + start;
    text[start..end].to_owned()
}

/// The fan-out AWS recommends for several consumers: the bucket notifies an SNS topic, the topic
/// delivers to an SQS queue in SNS envelopes (raw delivery off), and the S3Source reads the queue,
/// unwrapping each envelope into the S3 notification inside.
#[tokio::test]
async fn notifications_through_an_sns_topic_into_sqs_become_events() {
    let Some(moto) = Moto::start() else { return };
    let bucket = format!("photos-{}", uuid::Uuid::new_v4().simple());
    let s3 = moto.s3().await;
    let sqs = moto.sqs().await;
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{bucket}-fanout"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = queue_arn(&sqs, &queue_url).await;
    let topic = sns(
        &moto,
        &[
            ("Action", "CreateTopic"),
            ("Name", &format!("{bucket}-topic")),
        ],
        "TopicArn",
    )
    .await;
    sns(
        &moto,
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &topic),
            ("Protocol", "sqs"),
            ("Endpoint", &queue),
        ],
        "SubscriptionArn",
    )
    .await;
    let notify = aws_sdk_s3::types::TopicConfiguration::builder()
        .topic_arn(&topic)
        .events(Event::from("s3:ObjectCreated:*"))
        .build()
        .unwrap();
    s3.put_bucket_notification_configuration()
        .bucket(&bucket)
        .notification_configuration(
            NotificationConfiguration::builder()
                .topic_configurations(notify)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let store = TestStore::new(Engine::Sqlite).await;
    let receiver = Receiver::start().await;
    let yaml = format!(
        "{}---
apiVersion: sources.kinetic.dev/v1alpha1
kind: S3Source
metadata: {{name: photos}}
spec:
  bucket: {bucket}
  endpoint: {endpoint}
  region: {region}
  forcePathStyle: true
  credentials:
    accessKeyId: {{env: MOTO_ACCESS_KEY}}
    secretAccessKey: {{env: MOTO_SECRET_KEY}}
  notifications:
    sqs: {{queueUrl: '{queue_url}'}}
{TO_DEFAULT_BROKER}",
        broker_with_trigger("uploads", &receiver.url("/uploads")),
        endpoint = moto.endpoint,
        region = moto::REGION,
    );
    let file = write_yaml(store.dir(), "s3.yaml", &yaml);
    let env = [
        ("MOTO_ACCESS_KEY", moto::ACCESS_KEY),
        ("MOTO_SECRET_KEY", moto::SECRET_KEY),
        ("KINETIC_SECRET_ENV", "MOTO_*"),
    ];
    let kinetic = Kinetic::up_with_env(&store, &[&file], &[], &env);
    put(&s3, &bucket, "uploads/one.jpg", "1").await;
    put(&s3, &bucket, "uploads/two words.jpg", "22").await;
    let got = receiver
        .wait_for("/uploads", 2, Duration::from_secs(30))
        .await;
    let subjects: BTreeSet<&str> = got.iter().filter_map(|r| r.header("ce-subject")).collect();
    assert_eq!(
        subjects,
        BTreeSet::from(["uploads/one.jpg", "uploads/two%20words.jpg"]),
        "{got:?}\n{}",
        kinetic.log()
    );
    for event in &got {
        assert_eq!(
            event.header("ce-type"),
            Some("com.amazonaws.s3.ObjectCreated:Put")
        );
        let record: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str(), "{record}");
    }
    // Every message was deleted once its events were accepted.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while queued(&sqs, &queue_url).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "messages left in the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
