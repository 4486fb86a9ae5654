//! The thumbnails row: `examples/image-pipeline` under the real `kinetic up`, against moto's S3
//! and SQS, beside the thumbnailer called directly with the same events.
//!
//! Each measurement starts its own `moto_server` (an empty store: bucket, queue and notification
//! made fresh, as the example's README sets them up) and, for the pipeline, its own kinetic:
//!
//! - **pipeline**: the example's resources as written, but for what only the run knows (moto's
//!   address in the S3Source, its queue URL and the Service's `AWS_ENDPOINT_URL`, where the
//!   thumbnailer binary is, and where `thumbnail-log` delivers: a counting receiver), with the
//!   example's `config/autoscaler.yaml`. The clock starts at the first upload and stops when the
//!   receiver has one `dev.kinetic.thumbnail.created` reply per upload: uploading, SQS polling,
//!   the broker, the trigger's filter, the Service's cold start and scaling, the S3 reads and
//!   writes and the replies' delivery are all inside.
//! - **baseline**: the objects already uploaded to a bucket notifying a queue the same way, the
//!   thumbnailer started directly with the Service's environment, and sent one binary-mode
//!   CloudEvent per upload, built from the bucket's own notification records as the S3Source
//!   builds them, at most containerConcurrency × max-scale at a time (what kinetic lets reach the
//!   Service), until every one was answered 200 with its reply event.
//!
//! The baseline is one process with the Service's `THUMBNAIL_WORKERS` (images decoded at once),
//! while the pipeline may run up to max-scale instances, each with as many. On a machine with no
//! more cores than one process's workers, the extra decoding threads only take turns; on a larger
//! one the pipeline could decode more at once than the baseline does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::photos::Upload;
use crate::{Args, Kinetic, start_kinetic_with};
use kinetic_testkit::moto::{self, Moto};
use kinetic_testkit::receiver::start_counter;

const PIPELINE: &str = include_str!("../../../../examples/image-pipeline/pipeline.yaml");
const AUTOSCALER: &str = include_str!("../../../../examples/image-pipeline/config/autoscaler.yaml");
/// Where the example's moto (or MinIO) listens; the run's replaces it.
const EXAMPLE_ENDPOINT: &str = "http://127.0.0.1:5000";
/// The reply type the receiver counts.
const CREATED: &str = "dev.kinetic.thumbnail.created";

/// One repetition's rates, in images per second.
pub struct Run {
    pub pipeline: f64,
    pub baseline: f64,
    /// Events in flight at once in the baseline: containerConcurrency × max-scale.
    pub concurrency: usize,
}

/// A pipeline measurement, then a baseline one, each on a fresh moto.
pub async fn run(args: &Args, uploads: &[Upload]) -> anyhow::Result<Run> {
    let thumbnailer = std::fs::canonicalize(&args.thumbnailer).with_context(|| {
        format!(
            "{} is missing; build it with `cargo build --release -p thumbnailer`",
            args.thumbnailer.display()
        )
    })?;
    let pipeline = pipeline_run(args, uploads, &thumbnailer).await?;
    let (baseline, concurrency) = baseline_run(args, uploads, &thumbnailer).await?;
    Ok(Run {
        pipeline,
        baseline,
        concurrency,
    })
}

/// The example, adapted to one run.
struct Example {
    /// Every resource, as YAML for `kinetic up -f`.
    yaml: String,
    bucket: String,
    /// The queue's URL as the S3Source reads it: the example's, on the run's moto.
    queue_url: String,
    /// The Service's container environment, with the run's endpoint.
    env: Vec<(String, String)>,
    /// containerConcurrency × max-scale of the Service.
    concurrency: usize,
}

/// Reads `examples/image-pipeline/pipeline.yaml`, replacing the store's address with `endpoint`
/// (in the S3Source, its queue URL and the Service's `AWS_ENDPOINT_URL`), the thumbnailer command
/// with `thumbnailer`, and `thumbnail-log`'s destination with `receiver`. Fails when the example no
/// longer has what the benchmark adapts.
fn example(endpoint: &str, thumbnailer: &Path, receiver: &str) -> anyhow::Result<Example> {
    let mut documents: Vec<Value> =
        serde_saphyr::from_multiple(PIPELINE).context("parsing the example's pipeline.yaml")?;
    let (mut bucket, mut queue_url, mut env, mut concurrency) = (None, None, None, None);
    let mut adapted = 0;
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
            ("S3Source", _) => {
                bucket = spec["bucket"].as_str().map(str::to_owned);
                let url = spec["notifications"]["sqs"]["queueUrl"]
                    .as_str()
                    .context("the example's S3Source reads no SQS queue")?
                    .replace(EXAMPLE_ENDPOINT, endpoint);
                spec["endpoint"] = json!(endpoint);
                spec["notifications"]["sqs"]["queueUrl"] = json!(url);
                queue_url = Some(url);
            }
            ("Service", "thumbnailer") => {
                let template = &mut spec["template"];
                let per_instance = template["spec"]["containerConcurrency"]
                    .as_u64()
                    .context("the Service sets no containerConcurrency")?;
                let max_scale: u64 =
                    template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"]
                        .as_str()
                        .and_then(|n| n.parse().ok())
                        .context("the Service sets no max-scale")?;
                concurrency = Some((per_instance * max_scale) as usize);
                let container = &mut template["spec"]["containers"][0];
                container["command"][0] = json!(thumbnailer.display().to_string());
                let mut vars = Vec::new();
                for var in container["env"].as_array_mut().into_iter().flatten() {
                    if var["name"] == "AWS_ENDPOINT_URL" {
                        var["value"] = json!(endpoint);
                    }
                    if let (Some(name), Some(value)) = (var["name"].as_str(), var["value"].as_str())
                    {
                        vars.push((name.to_owned(), value.to_owned()));
                    }
                }
                env = Some(vars);
            }
            ("Trigger", "thumbnail-log") => spec["subscriber"]["uri"] = json!(receiver),
            _ => continue,
        }
        adapted += 1;
    }
    let (Some(bucket), Some(queue_url), Some(env), Some(concurrency), 3) =
        (bucket, queue_url, env, concurrency, adapted)
    else {
        bail!(
            "examples/image-pipeline/pipeline.yaml no longer has the S3Source, the thumbnailer \
             Service and the thumbnail-log Trigger this benchmark adapts"
        );
    };
    let yaml = documents
        .iter()
        .map(serde_saphyr::to_string)
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n");
    Ok(Example {
        yaml,
        bucket,
        queue_url,
        env,
        concurrency,
    })
}

/// Creates the example's bucket and queue (`{bucket}-events`) in `moto`, the bucket notifying the
/// queue.
async fn bucket_and_queue(moto: &Moto, example: &Example) -> anyhow::Result<()> {
    let queue_url = moto.bucket_notifying_queue(&example.bucket).await?;
    if queue_url != example.queue_url {
        bail!(
            "moto named the queue {queue_url}; the example reads {}",
            example.queue_url
        );
    }
    Ok(())
}

/// Uploads every object, `concurrency` at a time.
async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    uploads: &[Upload],
    concurrency: usize,
) -> anyhow::Result<()> {
    // Owned requests: the future may be spawned.
    let requests: Vec<_> = uploads
        .iter()
        .map(|upload| {
            let request = s3
                .put_object()
                .bucket(bucket)
                .key(&upload.key)
                .content_type(upload.content_type)
                .body(ByteStream::from(upload.bytes.clone()));
            (upload.key.clone(), request)
        })
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(requests)
        .map(|(key, request)| async move {
            request
                .send()
                .await
                .with_context(|| format!("uploading {key}"))?;
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

fn metrics_wanted() -> bool {
    std::env::var_os("JOBS_BENCH_METRICS").is_some()
}

/// kinetic's JSON API, bounded in time.
async fn api(_client: &reqwest::Client, kinetic: &Kinetic, path: &str) -> anyhow::Result<Value> {
    Ok(kinetic
        .api
        .get(format!("{}{path}", kinetic.admin))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Images per second through the pipeline: from the first upload until the receiver counted one
/// reply per upload.
async fn pipeline_run(args: &Args, uploads: &[Upload], thumbnailer: &Path) -> anyhow::Result<f64> {
    let moto = Moto::launch()?;
    let (receiver, replies) = start_counter().await?;
    let receiver = format!("http://{receiver}/thumbnails");
    let layout = example(&moto.endpoint, thumbnailer, &receiver)?;
    bucket_and_queue(&moto, &layout).await?;
    let kinetic = start_kinetic_with(
        args,
        &layout.yaml,
        Some(AUTOSCALER),
        &[
            ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY),
        ],
    )
    .await?;
    let client = reqwest::Client::new();
    // Uploads start once the source reads its queue and the Service's revision exists (at zero).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sources = api(&client, &kinetic, "/api/v1/sources").await?;
        let source_ready = sources["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|s| s["kind"] == "S3Source" && s["ready"] == true)
        });
        let revision = api(
            &client,
            &kinetic,
            "/api/v1/revisions/default/thumbnailer-00001",
        )
        .await
        .unwrap_or(Value::Null);
        if source_ready && revision["status"]["service"] == "thumbnailer" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the pipeline was not ready within 60 s: sources {sources}, revision {revision}; \
                 kinetic's log:\n{}",
                kinetic.log_tail(50)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let s3 = moto.s3().await;
    let sqs = moto.sqs().await;
    let started = Instant::now();
    // Uploading goes on while the first thumbnails are made, as uploads do.
    let mut uploading = Aborting(tokio::spawn({
        let (bucket, uploads, concurrency) = (
            layout.bucket.clone(),
            uploads.to_vec(),
            args.upload_concurrency,
        );
        async move {
            upload(&s3, &bucket, &uploads, concurrency).await?;
            anyhow::Ok(started.elapsed())
        }
    }));
    let expected = uploads.len() as u64;
    let timeout = Duration::from_secs(120 + expected);
    let (mut uploaded, mut first) = (None, None);
    // With JOBS_BENCH_METRICS, a sample every 250 ms: (seconds, events the source emitted,
    // replies, ready instances), and once a second how long one SQS request to moto takes.
    let (mut timeline, mut sample_at) = (Vec::new(), Instant::now());
    let mut sqs_times = Vec::new();
    loop {
        let count = replies.load(Ordering::Relaxed);
        if count >= expected {
            break;
        }
        if first.is_none() && count > 0 {
            first = Some(started.elapsed());
        }
        if metrics_wanted() && Instant::now() >= sample_at {
            sample_at = Instant::now() + Duration::from_millis(250);
            let at = started.elapsed().as_secs_f64();
            let revision = api(
                &client,
                &kinetic,
                "/api/v1/revisions/default/thumbnailer-00001",
            )
            .await
            .unwrap_or_default();
            let sources = api(&client, &kinetic, "/api/v1/sources")
                .await
                .unwrap_or_default();
            let emitted: u64 = sources["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|source| source["events"].as_u64())
                .sum();
            let ready = revision["status"]["ready"].as_u64().unwrap_or(0);
            timeline.push((at, emitted, count, ready));
            let asked = Instant::now();
            // Once a second: the probe is one more client of moto.
            if timeline.len() % 4 == 1
                && sqs
                    .get_queue_attributes()
                    .queue_url(&layout.queue_url)
                    .send()
                    .await
                    .is_ok()
            {
                sqs_times.push(asked.elapsed());
            }
        }
        if uploaded.is_none() && uploading.0.is_finished() {
            uploaded = Some((&mut uploading.0).await??);
        }
        if started.elapsed() > timeout {
            let sources = api(&client, &kinetic, "/api/v1/sources")
                .await
                .unwrap_or_default();
            let letters = api(&client, &kinetic, "/api/v1/deadletters")
                .await
                .unwrap_or_default();
            bail!(
                "only {count} of {expected} thumbnail replies arrived within {timeout:?}; \
                 sources: {sources}; dead letters: {}; kinetic's log:\n{}",
                letters["items"].as_array().map_or(0, Vec::len),
                kinetic.log_tail(50)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let uploaded = match uploaded {
        Some(uploaded) => uploaded,
        // Every reply needs its upload: the uploads are done.
        None => (&mut uploading.0).await??,
    };
    let rate = expected as f64 / elapsed.as_secs_f64();
    if metrics_wanted() {
        eprintln!(
            "thumbnails pipeline: {expected} images in {elapsed:.2?} ({rate:.1}/s): uploads took \
             {uploaded:.2?}, the first reply came after {:.2?}, at most {} instances were ready",
            first.unwrap_or(elapsed),
            timeline.iter().map(|s| s.3).max().unwrap_or(0)
        );
        let samples: Vec<String> = timeline
            .iter()
            .step_by(4)
            .map(|(at, emitted, replies, ready)| {
                format!("{at:.1}s: {emitted} source events, {replies} replies, {ready} ready")
            })
            .collect();
        eprintln!("thumbnails pipeline: {}", samples.join("; "));
        sqs_times.sort_unstable();
        if let Some(median) = sqs_times.get(sqs_times.len() / 2) {
            eprintln!(
                "thumbnails pipeline: one SQS request to moto took {median:.1?} (median of {}) \
                 during the run",
                sqs_times.len()
            );
        }
        let logs = api(
            &client,
            &kinetic,
            "/api/v1/services/default/thumbnailer/logs?limit=10000",
        )
        .await?;
        let lines: Vec<&str> = logs["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|line| line["text"].as_str())
            .collect();
        eprintln!(
            "thumbnails pipeline: the function's own time per image: {}",
            event_times(&lines)
        );
        let revision = api(
            &client,
            &kinetic,
            "/api/v1/revisions/default/thumbnailer-00001",
        )
        .await?;
        eprintln!("thumbnails pipeline: revision {}", revision["status"]);
        let metrics = kinetic
            .api
            .get(format!("{}/metrics", kinetic.admin))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .text()
            .await?;
        for line in metrics.lines().filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("kinetic_dispatcher_deliveries_total")
                    || l.starts_with("kinetic_dispatcher_retries")
                    || l.starts_with("kinetic_dispatcher_dead_letters")
                    || l.starts_with("kinetic_source_events_total")
                    || l.starts_with("kinetic_source_sink_failures")
                    || l.starts_with("kinetic_source_lag_seconds_sum")
                    || l.starts_with("kinetic_source_lag_seconds_count")
                    || l.starts_with("kinetic_broker_commit_duration_seconds_sum")
                    || l.starts_with("kinetic_broker_commit_duration_seconds_count")
                    || l.starts_with("kinetic_broker_commit_batch_size_sum")
                    || l.starts_with("kinetic_serving_cold_start_seconds_sum")
                    || l.contains("attempt_duration_seconds_sum")
                    || l.contains("attempt_duration_seconds_count")
                    || l.contains("delivery_latency_seconds_sum")
                    || l.contains("delivery_latency_seconds_count")
                    || l.contains("serving_request_duration_seconds_sum")
                    || l.contains("serving_request_duration_seconds_count"))
        }) {
            eprintln!("{line}");
        }
    }
    Ok(rate)
}

/// A task aborted when dropped (the uploads, when a run fails).
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// "mean 180 ms, median 150 ms over 200 events" from the thumbnailer's per-event log lines
/// (`thumbnailer: event … (N ms)`).
fn event_times(lines: &[&str]) -> String {
    let mut times: Vec<u64> = lines
        .iter()
        .filter(|line| line.starts_with("thumbnailer: event "))
        .filter_map(|line| {
            let inside = line.rsplit_once('(')?.1.strip_suffix(" ms)")?;
            inside.parse().ok()
        })
        .collect();
    if times.is_empty() {
        return "no event lines".to_owned();
    }
    times.sort_unstable();
    format!(
        "mean {} ms, median {} ms over {} events",
        times.iter().sum::<u64>() / times.len() as u64,
        times[times.len() / 2],
        times.len()
    )
}

/// The thumbnailer started directly, killed by its PID when dropped.
struct Thumbnailer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Thumbnailer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Thumbnailer {
    /// Starts `binary` with the Service's `env`, moto's credentials and a free `PORT`; waits (at
    /// most 30 s) until `/healthz` answers.
    async fn start(binary: &Path, env: &[(String, String)]) -> anyhow::Result<Thumbnailer> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
            .env("PORT", port.to_string())
            // What kinetic gives its instances of the Service.
            .env("K_SERVICE", "thumbnailer")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout.log"))?)
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut thumbnailer = Thumbnailer {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("{}healthz", thumbnailer.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(thumbnailer);
            }
            if let Ok(Some(status)) = thumbnailer.child.try_wait() {
                bail!(
                    "the thumbnailer exited at start ({status}): {}",
                    thumbnailer.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the thumbnailer did not answer /healthz within 30 s: {}",
                    thumbnailer.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }
}

/// The S3 event records of `expected` uploads, read from the bucket's notification queue (at
/// most 60 s).
async fn notification_records(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    expected: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < expected {
        if Instant::now() > deadline {
            bail!(
                "only {} of {expected} notifications arrived in the queue within 60 s",
                records.len()
            );
        }
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .context("reading the bucket's notifications")?;
        for message in received.messages() {
            let body: Value = serde_json::from_str(message.body().unwrap_or_default())
                .context("a notification that is not JSON")?;
            // s3:TestEvent, sent when the notification is configured, has no records.
            records.extend(body["Records"].as_array().into_iter().flatten().cloned());
        }
    }
    Ok(records)
}

/// The CloudEvent the S3Source makes of a record (`sources/src/s3/mapping.rs`), as binary-mode
/// headers; the body is the record.
fn event_headers(record: &Value) -> anyhow::Result<Vec<(&'static str, String)>> {
    let text = |pointer: &str| {
        record
            .pointer(pointer)
            .and_then(Value::as_str)
            .with_context(|| format!("a notification record without {pointer}: {record}"))
    };
    // The subject is the key decoded as S3 encodes keys in notifications (`%XX`, `+` for a
    // space); the benchmark's keys then need no %-encoding in a header.
    let key = decode_key(text("/s3/object/key")?);
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        bail!("unexpected key {key:?}");
    }
    let mut headers = vec![
        ("ce-specversion", "1.0".to_owned()),
        ("ce-id", uuid::Uuid::new_v4().to_string()),
        (
            "ce-type",
            format!("com.amazonaws.s3.{}", text("/eventName")?),
        ),
        (
            "ce-source",
            format!(
                "{}.{}.{}",
                text("/eventSource")?,
                text("/awsRegion")?,
                text("/s3/bucket/name")?
            ),
        ),
        ("ce-subject", key),
        ("content-type", "application/json".to_owned()),
    ];
    if let Ok(time) = text("/eventTime") {
        headers.push(("ce-time", time.to_owned()));
    }
    Ok(headers)
}

/// `uploads%2Fa+b.jpg` → `uploads/a b.jpg`.
fn decode_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| key.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Images per second of the thumbnailer alone: the objects already in the bucket, one event per
/// upload sent `concurrency` at a time until every one was answered 200 with a reply event.
/// Returns the rate and the concurrency.
async fn baseline_run(
    args: &Args,
    uploads: &[Upload],
    thumbnailer: &Path,
) -> anyhow::Result<(f64, usize)> {
    let moto = Moto::launch()?;
    // Nothing is delivered to the receiver here.
    let layout = example(&moto.endpoint, thumbnailer, "http://127.0.0.1:9/")?;
    bucket_and_queue(&moto, &layout).await?;
    upload(
        &moto.s3().await,
        &layout.bucket,
        uploads,
        args.upload_concurrency,
    )
    .await?;
    let records = notification_records(&moto.sqs().await, &layout.queue_url, uploads.len()).await?;
    let events: Vec<(Vec<(&str, String)>, String)> = records
        .iter()
        .map(|record| Ok((event_headers(record)?, record.to_string())))
        .collect::<anyhow::Result<_>>()?;
    let function = Thumbnailer::start(thumbnailer, &layout.env).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(layout.concurrency)
        .timeout(Duration::from_secs(120))
        .build()?;
    let failures = AtomicU64::new(0);
    let last_failure = std::sync::Mutex::new(String::new());
    let started = Instant::now();
    futures::stream::iter(&events)
        .for_each_concurrent(layout.concurrency, |(headers, body)| {
            let mut request = client.post(&function.url).body(body.clone());
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let (failures, last_failure) = (&failures, &last_failure);
            async move {
                let outcome = match request.send().await {
                    Ok(response)
                        if response.status() == 200
                            && response
                                .headers()
                                .get("ce-type")
                                .is_some_and(|t| t == CREATED) =>
                    {
                        return;
                    }
                    Ok(response) => format!(
                        "{}: {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    ),
                    Err(error) => error.to_string(),
                };
                failures.fetch_add(1, Ordering::Relaxed);
                *last_failure.lock().expect("not poisoned") = outcome;
            }
        })
        .await;
    let elapsed = started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "the thumbnailer failed {failed} of {} events, the last: {}",
            events.len(),
            last_failure.lock().expect("not poisoned")
        );
    }
    let rate = events.len() as f64 / elapsed.as_secs_f64();
    if metrics_wanted() {
        let stdout = function.stdout();
        let lines: Vec<&str> = stdout.lines().collect();
        eprintln!(
            "thumbnails baseline: {} images in {elapsed:.2?} ({rate:.1}/s), {} at a time; the \
             function's own time per image: {}",
            events.len(),
            layout.concurrency,
            event_times(&lines)
        );
    }
    Ok((rate, layout.concurrency))
}
