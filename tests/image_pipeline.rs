//! Object-upload image processing end to end, as `examples/image-pipeline/` ships it: images
//! uploaded to a bucket (moto's S3, notifying moto's SQS) become thumbnails written by the
//! thumbnailer function, run by the real `kinetic up` as a Service that starts at zero; its reply
//! events reach a second trigger; what it can never thumbnail (a corrupt image, an object that is
//! gone) ends in kinetic's dead letters after one attempt. On SQLite and on PostgreSQL.
//!
//! The example's resources are used as written, except for what only the test knows: the bucket,
//! moto's address, the queue, where the thumbnailer binary was built and where the log trigger
//! delivers. One more trigger, `everything`, records every event of the broker, so the test sees
//! the thumbnails' own ObjectCreated events pass by the `thumbnails` trigger's filter.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use image::ImageFormat;
use kinetic_testkit::moto::{self, Moto};
use serde_json::{Value, json};
use support::images::{decode, encode, photo, translucent};
use support::{Engine, Kinetic, Receiver, TestStore, write_yaml};

/// Longest wait for something that should happen.
const WAIT: Duration = Duration::from_secs(45);
/// How long to watch for events that should not happen, once the expected ones arrived.
const QUIET: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_uploaded_images_become_thumbnails() {
    uploaded_images_become_thumbnails(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_uploaded_images_become_thumbnails() {
    uploaded_images_become_thumbnails(Engine::Postgres).await;
}

/// One uploaded image and the thumbnails it must get: (size, key, width, height).
struct Expected {
    key: &'static str,
    format: ImageFormat,
    width: u32,
    height: u32,
    thumbnails: [(u32, &'static str, u32, u32); 2],
}

fn images() -> Vec<(Expected, Vec<u8>)> {
    vec![
        (
            // A space and non-ASCII letters: the key travels URL-encoded in the notification
            // and %-encoded in the CloudEvent's headers.
            Expected {
                key: "uploads/2024/Été photo.jpg",
                format: ImageFormat::Jpeg,
                width: 1600,
                height: 900,
                thumbnails: [
                    (128, "thumbnails/128/2024/Été photo.jpg", 128, 72),
                    (512, "thumbnails/512/2024/Été photo.jpg", 512, 288),
                ],
            },
            encode(&photo(1600, 900), ImageFormat::Jpeg),
        ),
        (
            // Upper-case extension: the trigger compares suffixes in lower case.
            Expected {
                key: "uploads/Tall.PNG",
                format: ImageFormat::Png,
                width: 300,
                height: 800,
                thumbnails: [
                    (128, "thumbnails/128/Tall.PNG", 48, 128),
                    (512, "thumbnails/512/Tall.PNG", 192, 512),
                ],
            },
            encode(&translucent(300, 800), ImageFormat::Png),
        ),
        (
            // 600 × 128 / 1000 = 76.8 and 600 × 512 / 1000 = 307.2: rounded to nearest.
            Expected {
                key: "uploads/art.webp",
                format: ImageFormat::WebP,
                width: 1000,
                height: 600,
                thumbnails: [
                    (128, "thumbnails/128/art.webp", 128, 77),
                    (512, "thumbnails/512/art.webp", 512, 307),
                ],
            },
            encode(&translucent(1000, 600), ImageFormat::WebP),
        ),
    ]
}

/// Uploads the trigger must pass over: not an image, and an image outside `uploads/`.
const IGNORED: [&str; 2] = ["uploads/notes.txt", "other/outside.jpg"];
/// A JPEG by its first bytes, nothing after: the function answers 422 and kinetic dead-letters it.
const BROKEN: &str = "uploads/broken.jpg";
/// An event about an object that is not in the bucket (as when it is deleted right after its
/// upload): S3 answers 404, the function 422, not the 404 kinetic would retry.
const GONE: &str = "uploads/gone.jpg";

async fn uploaded_images_become_thumbnails(engine: Engine) {
    let Some(moto) = Moto::start() else { return };
    let started = Instant::now();
    let bucket = format!("photos-{}", uuid::Uuid::new_v4().simple());
    let queue_url = moto
        .bucket_notifying_queue(&bucket)
        .await
        .expect("a bucket notifying a queue");
    let s3 = moto.s3().await;

    let store = TestStore::new(engine).await;
    let receiver = Receiver::start().await;
    let yaml = pipeline_yaml(&bucket, &moto.endpoint, &queue_url, &receiver);
    let file = write_yaml(store.dir(), "pipeline.yaml", &yaml);
    let config = example("config/autoscaler.yaml");
    let env = [
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        (
            "KINETIC_SECRET_ENV",
            "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY",
        ),
    ];
    let kinetic = tokio::task::block_in_place(|| {
        Kinetic::up_with_env(
            &store,
            &[&file],
            &[
                "--config",
                config.to_str().unwrap(),
                "--termination-grace",
                "PT2S",
            ],
            &env,
        )
    });
    let api = Api::of(&kinetic);

    // The function is at zero until the first upload.
    let revision = api
        .wait("the thumbnailer's revision", |api| async move {
            let status = api.revision("thumbnailer-00001").await;
            // Until the serving controller runs it, the API shows a placeholder without `service`.
            (status["service"] == "thumbnailer").then_some(status)
        })
        .await;
    assert_eq!(revision["ready"], 0, "{revision}");
    assert_eq!(revision["desired"], 0, "{revision}");

    let images = images();
    for (expected, bytes) in &images {
        put(&s3, &bucket, expected.key, bytes.clone()).await;
    }
    put(
        &s3,
        &bucket,
        IGNORED[0],
        b"a shopping list, not a picture".to_vec(),
    )
    .await;
    put(
        &s3,
        &bucket,
        IGNORED[1],
        encode(&photo(800, 600), ImageFormat::Jpeg),
    )
    .await;
    put(
        &s3,
        &bucket,
        BROKEN,
        b"\xff\xd8\xff\xe0 and then nothing".to_vec(),
    )
    .await;
    let record = json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": moto::REGION,
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": GONE, "size": 100}},
    });
    let status = support::send_event(
        &reqwest::Client::new(),
        &kinetic.url("/default/images"),
        "gone-1",
        "com.amazonaws.s3.ObjectCreated:Put",
        &[("subject", GONE)],
        &record.to_string(),
    )
    .await;
    assert_eq!(status, 202);

    // Every image's reply event reaches the log trigger, listing its thumbnails.
    let replies = receiver.wait_for("/thumbnails", images.len(), WAIT).await;
    assert_eq!(
        replies.len(),
        images.len(),
        "{}",
        diagnosis(&kinetic, &api).await
    );
    let mut by_key: BTreeMap<String, &support::Received> = BTreeMap::new();
    for reply in &replies {
        assert_eq!(
            reply.header("ce-type"),
            Some("dev.kinetic.thumbnail.created")
        );
        assert_eq!(reply.header("ce-source"), Some("/services/thumbnailer"));
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let subject = attribute(reply.header("ce-subject").expect("ce-subject"));
        by_key.insert(subject, reply);
    }
    let all = receiver.received("/all");
    for (expected, _) in &images {
        let reply = by_key
            .get(expected.key)
            .unwrap_or_else(|| panic!("no reply about {}: {:?}", expected.key, by_key.keys()));
        // The reply's id is the S3 event's, extended: a redelivery replies the same event.
        let upload = all
            .iter()
            .find(|e| {
                e.header("ce-type") == Some("com.amazonaws.s3.ObjectCreated:Put")
                    && e.header("ce-subject").map(attribute).as_deref() == Some(expected.key)
            })
            .unwrap_or_else(|| panic!("the broker never had the upload of {}", expected.key));
        assert_eq!(
            reply.header("ce-id").map(str::to_owned),
            upload.header("ce-id").map(|id| format!("{id}.thumbnails"))
        );
        let data: Value = serde_json::from_slice(&reply.body).expect("JSON data");
        let format = match expected.format {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            _ => "WebP",
        };
        assert_eq!(data["bucket"], bucket.as_str(), "{data}");
        assert_eq!(data["key"], expected.key, "{data}");
        assert_eq!(data["format"], format, "{data}");
        assert_eq!(data["width"], expected.width, "{data}");
        assert_eq!(data["height"], expected.height, "{data}");
        let listed = data["thumbnails"].as_array().expect("thumbnails");
        assert_eq!(listed.len(), 2, "{data}");
        for ((size, key, width, height), listed) in expected.thumbnails.iter().zip(listed) {
            assert_eq!(listed["size"], *size, "{data}");
            assert_eq!(listed["key"], *key, "{data}");
            assert_eq!(listed["width"], *width, "{data}");
            assert_eq!(listed["height"], *height, "{data}");
            // The object is there, in the original's format, at the size the event says.
            let (bytes, content_type) = get(&s3, &bucket, key).await;
            assert_eq!(listed["bytes"], bytes.len(), "{key}");
            assert_eq!(
                content_type.as_deref(),
                Some(expected.format.to_mime_type())
            );
            assert_eq!(decode(&bytes), (expected.format, *width, *height), "{key}");
        }
    }

    // The corrupt upload and the missing object: dead-lettered with the function's reason, after
    // exactly one attempt.
    let letters = api
        .wait("the dead letters", |api| async move {
            let letters = api.dead_letters("thumbnails").await;
            (letters.len() >= 2).then_some(letters)
        })
        .await;
    assert_eq!(letters.len(), 2, "{letters:#?}");
    for (key, code, says) in [
        (BROKEN, "corrupt_image", "JPEG image cannot be decoded"),
        (GONE, "object_missing", "the object does not exist"),
    ] {
        let letter = letters
            .iter()
            .find(|l| l["event"]["subject"] == key)
            .unwrap_or_else(|| panic!("no dead letter about {key}: {letters:#?}"));
        assert_eq!(letter["attempts"], 1, "{letter}");
        assert_eq!(letter["lastStatus"], 422, "{letter}");
        let response: Value = serde_json::from_str(
            letter["lastResponse"]
                .as_str()
                .expect("the function's answer"),
        )
        .expect("a JSON answer");
        assert_eq!(response["code"], code, "{response}");
        assert_eq!(response["bucket"], bucket.as_str(), "{response}");
        assert_eq!(response["key"], key, "{response}");
        assert!(
            response["error"].as_str().is_some_and(|e| e.contains(says)),
            "{response}"
        );
    }

    // The thumbnails' own ObjectCreated events went through the broker, and the ignored uploads'
    // too: the `thumbnails` trigger passed them over.
    let thumbnail_keys: BTreeSet<&str> = images
        .iter()
        .flat_map(|(expected, _)| expected.thumbnails.iter().map(|t| t.1))
        .collect();
    let passing: BTreeSet<&str> = thumbnail_keys.iter().copied().chain(IGNORED).collect();
    api.wait("the thumbnails' own events on the broker", |_| {
        let subjects = created_subjects(&receiver);
        let passing = &passing;
        async move { passing.iter().all(|k| subjects.contains(*k)).then_some(()) }
    })
    .await;
    tokio::time::sleep(QUIET).await;

    // The function saw each uploaded image once, and nothing else: no thumbnail of a thumbnail,
    // nothing for the text or the image outside uploads/, no retry of the corrupt one.
    let lines = api.function_events().await;
    let about = |key: &str| {
        let object = format!("s3://{bucket}/{key}");
        lines
            .iter()
            .filter(|line| {
                line.contains(&format!("{object} ")) || line.contains(&format!("{object}:"))
            })
            .count()
    };
    let handled: Vec<&str> = images
        .iter()
        .map(|(e, _)| e.key)
        .chain([BROKEN, GONE])
        .collect();
    for key in &handled {
        assert_eq!(
            about(key),
            1,
            "{key}; the function's events:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines.len(),
        handled.len(),
        "the function's events:\n{}",
        lines.join("\n")
    );
    assert_eq!(receiver.received("/thumbnails").len(), images.len());
    assert_eq!(api.dead_letters("thumbnails").await.len(), 2);

    // The bucket holds the uploads and the thumbnails, nothing more.
    let mut expected_objects: BTreeSet<String> = images
        .iter()
        .map(|(e, _)| e.key.to_owned())
        .chain(IGNORED.iter().map(|k| (*k).to_owned()))
        .chain([BROKEN.to_owned()])
        .collect();
    expected_objects.extend(thumbnail_keys.iter().map(|k| (*k).to_owned()));
    assert_eq!(list(&s3, &bucket).await, expected_objects);

    // It started from zero for these events.
    let revision = api.revision("thumbnailer-00001").await;
    assert!(
        revision["coldStarts"].as_u64().is_some_and(|n| n >= 1),
        "{revision}"
    );
    eprintln!(
        "{engine:?}: the image pipeline took {:?}",
        started.elapsed()
    );
}

/// The example's file, from the repository.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/image-pipeline")
        .join(name)
}

/// The function, built beside the kinetic binary.
fn thumbnailer_binary() -> PathBuf {
    let path = support::binary()
        .parent()
        .expect("target directory")
        .join("thumbnailer");
    assert!(
        path.exists(),
        "{} is missing; build it with `cargo build -p thumbnailer` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `examples/image-pipeline/pipeline.yaml` with this test's addresses, and a trigger
/// `everything` that sends every event of the broker to the receiver's `/all`.
fn pipeline_yaml(bucket: &str, endpoint: &str, queue_url: &str, receiver: &Receiver) -> String {
    let text = std::fs::read_to_string(example("pipeline.yaml")).expect("the example");
    let mut documents: Vec<Value> = serde_saphyr::from_multiple(&text).expect("the example parses");
    let mut changed = BTreeSet::new();
    for document in &mut documents {
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(spec) = document.get_mut("spec") else {
            continue;
        };
        match (kind.as_str(), name.as_str()) {
            ("S3Source", "photos") => {
                spec["bucket"] = json!(bucket);
                spec["endpoint"] = json!(endpoint);
                spec["notifications"]["sqs"]["queueUrl"] = json!(queue_url);
            }
            ("Service", "thumbnailer") => {
                let container = &mut spec["template"]["spec"]["containers"][0];
                container["command"][0] = json!(thumbnailer_binary().display().to_string());
                let env = container["env"].as_array_mut().expect("env");
                let endpoint_var = env
                    .iter_mut()
                    .find(|var| var["name"] == "AWS_ENDPOINT_URL")
                    .expect("the Service names its S3 endpoint");
                endpoint_var["value"] = json!(endpoint);
            }
            ("Trigger", "thumbnail-log") => {
                spec["subscriber"]["uri"] = json!(receiver.url("/thumbnails"));
            }
            _ => continue,
        }
        changed.insert(format!("{kind}/{name}"));
    }
    assert_eq!(
        changed.len(),
        3,
        "the example no longer has the resources this test adapts: {changed:?}"
    );
    documents.push(json!({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "everything"},
        "spec": {"broker": "images", "subscriber": {"uri": receiver.url("/all")}},
    }));
    documents
        .iter()
        .map(|document| serde_saphyr::to_string(document).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("uploading {key}: {e:?}"));
}

/// An object's bytes and content type.
async fn get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (Vec<u8>, Option<String>) {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} is not in the bucket: {e:?}"));
    let content_type = object.content_type().map(str::to_owned);
    let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
    (bytes, content_type)
}

/// Every key in the bucket.
async fn list(s3: &aws_sdk_s3::Client, bucket: &str) -> BTreeSet<String> {
    let listing = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    assert_ne!(listing.is_truncated(), Some(true));
    listing
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect()
}

/// Subjects of the ObjectCreated events the broker carried, decoded.
fn created_subjects(receiver: &Receiver) -> BTreeSet<String> {
    receiver
        .received("/all")
        .iter()
        .filter(|e| {
            e.header("ce-type")
                .is_some_and(|t| t.starts_with("com.amazonaws.s3.ObjectCreated:"))
        })
        .filter_map(|e| e.header("ce-subject").map(attribute))
        .collect()
}

/// A binary-mode attribute value, `%XX`-decoded.
fn attribute(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 attribute")
}

/// kinetic's control-plane API.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn of(kinetic: &Kinetic) -> Api {
        Api {
            client: kinetic.api(),
            base: kinetic.admin_url.clone(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    async fn revision(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/revisions/default/{name}"))
            .await
            .get("status")
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn dead_letters(&self, trigger: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/deadletters?trigger=default/{trigger}"))
            .await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The thumbnailer's log lines about events (one per event it answered).
    async fn function_events(&self) -> Vec<String> {
        self.get("/api/v1/services/default/thumbnailer/logs?limit=10000")
            .await["lines"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|line| line["text"].as_str())
            .filter(|text| text.starts_with("thumbnailer: event "))
            .map(str::to_owned)
            .collect()
    }

    /// Polls `check` until it gives a value, bounded by [`WAIT`].
    async fn wait<T, F>(&self, what: &str, check: impl Fn(Api) -> F) -> T
    where
        F: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check(self.clone()).await {
                return value;
            }
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What to look at when the pipeline did not deliver: kinetic's log and the function's.
async fn diagnosis(kinetic: &Kinetic, api: &Api) -> String {
    format!(
        "the function:\n{}\nkinetic:\n{}",
        api.function_events().await.join("\n"),
        kinetic.log()
    )
}
