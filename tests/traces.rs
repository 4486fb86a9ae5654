//! Traces end to end: the real `kinetic up` exports OpenTelemetry spans over OTLP/HTTP to a
//! collector written here (it decodes the real OTLP protobuf). One event, sent with a
//! `traceparent`, goes through a trigger to a function that scales from zero and replies; the
//! reply goes through another trigger to a subscriber. Every hop is a span of that one trace:
//! ingress, commit, the delivery attempt, the gateway, the cold start, the function request, and
//! the reply's delivery as a child of the attempt that brought the reply.

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::{Engine, Kinetic, Receiver, TestStore, broker_yaml, documents, trigger_yaml};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Every span the collector got so far.
fn spans(collector: &Receiver) -> Vec<Span> {
    collector
        .received("/v1/traces")
        .iter()
        .flat_map(|request| {
            assert_eq!(
                request.header("content-type"),
                Some("application/x-protobuf")
            );
            ExportTraceServiceRequest::decode(request.body.clone())
                .expect("an OTLP protobuf body")
                .resource_spans
        })
        .flat_map(|resource| resource.scope_spans)
        .flat_map(|scope| scope.spans)
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn describe(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} id={} parent={} trigger={:?} cold_start={:?}",
                span.name,
                hex::encode(&span.span_id),
                hex::encode(&span.parent_span_id),
                text(span, "trigger"),
                attribute(span, "cold_start"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_is_one_trace_from_ingress_through_a_function_and_its_reply() {
    let store = TestStore::new(Engine::Sqlite).await;
    let collector = Receiver::start().await;
    let subscriber = Receiver::start().await;
    let service = support::service_at_zero("hello", &[("REPLY_TYPE", "com.example.receipt")]);
    let orders = support::trigger_to_service("orders", "com.example.order", "hello");
    let receipts = trigger_yaml(
        "receipts",
        "default",
        &subscriber.url("/receipts"),
        "  filter: {attributes: {type: com.example.receipt}}\n",
    );
    let file = support::write_yaml(
        store.dir(),
        "traced.yaml",
        &documents(&[broker_yaml("default"), service, orders, receipts]),
    );
    let config = support::write_yaml(
        store.dir(),
        "config.yaml",
        "autoscaler:\n  allow-zero-initial-scale: true\n",
    );
    let collector_url = collector.url("/v1/traces");
    let kinetic = Kinetic::up_with_env(
        &store,
        &[&file],
        &[
            "--otlp-endpoint",
            &collector_url,
            "--trace-sampling-ratio",
            "0",
            "--termination-grace",
            "PT2S",
            "--config",
            config.to_str().unwrap(),
        ],
        // Export every 100 ms instead of every 5 s; debug logs, some of them inside the spans.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100"), ("KINETIC_LOG", "debug")],
    );

    // Sampled by its caller: kept although kinetic keeps none of the traces it starts itself.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .post(kinetic.url("/default/default"))
            .header("ce-specversion", "1.0")
            .header("ce-id", "order-1")
            .header("ce-source", "/shop")
            .header("ce-type", "com.example.order")
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
            .body(r#"{"total": 12}"#)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broker never accepted the event: {status}\n{}",
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipts = subscriber
        .wait_for("/receipts", 1, Duration::from_secs(60))
        .await;
    assert_eq!(receipts.len(), 1, "{}", kinetic.log());
    let traceparent = receipts[0].header("traceparent").unwrap_or_default();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE}-")) && traceparent.ends_with("-01"),
        "the subscriber of the reply gets the trace: {traceparent:?}"
    );

    // The reply's delivery is the last hop; its span is exported within a few batches.
    let wanted = [
        "ingress",
        "commit",
        "gateway",
        "activator wait",
        "cold start",
        "function",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let trace: Vec<Span> = spans(&collector)
            .into_iter()
            .filter(|span| hex::encode(&span.trace_id) == TRACE)
            .collect();
        let delivers = trace.iter().filter(|s| s.name == "deliver").count();
        if delivers >= 2
            && wanted
                .iter()
                .all(|name| trace.iter().any(|s| s.name == *name))
        {
            break trace;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never had every hop; spans of it so far:\n{}\nall spans: {}\n{}",
            describe(&trace),
            spans(&collector).len(),
            kinetic.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let one = |name: &str, trigger: Option<&str>| -> &Span {
        let found: Vec<&Span> = trace
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| trigger.is_none_or(|t| text(s, "trigger").as_deref() == Some(t)))
            .collect();
        assert_eq!(found.len(), 1, "one `{name}` span:\n{}", describe(&trace));
        found[0]
    };
    let ingress = one("ingress", None);
    let commit = one("commit", None);
    let to_function = one("deliver", Some("default/orders"));
    let gateway = one("gateway", None);
    let wait = one("activator wait", None);
    let cold_start = one("cold start", None);
    let function = one("function", None);
    let to_subscriber = one("deliver", Some("default/receipts"));
    let parent = |child: &Span, parent: &Span| {
        assert_eq!(
            hex::encode(&child.parent_span_id),
            hex::encode(&parent.span_id),
            "`{}` is a child of `{}`:\n{}",
            child.name,
            parent.name,
            describe(&trace)
        );
    };
    assert_eq!(hex::encode(&ingress.parent_span_id), CALLER_SPAN);
    parent(commit, ingress);
    parent(to_function, ingress);
    parent(gateway, to_function);
    parent(wait, gateway);
    parent(cold_start, wait);
    parent(function, gateway);
    parent(to_subscriber, to_function);
    assert_eq!(attribute(wait, "cold_start"), Some(&Value::BoolValue(true)));
    assert_eq!(
        attribute(to_subscriber, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    // Kinds: the ingress and the gateway serve, the deliveries and the function request are sent.
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!(ingress.kind, SpanKind::Server as i32);
    assert_eq!(gateway.kind, SpanKind::Server as i32);
    assert_eq!(to_function.kind, SpanKind::Client as i32);
    assert_eq!(function.kind, SpanKind::Client as i32);
    // Every span names the service that made it.
    let requests: Vec<ExportTraceServiceRequest> = collector
        .received("/v1/traces")
        .iter()
        .map(|r| ExportTraceServiceRequest::decode(r.body.clone()).unwrap())
        .collect();
    // Log lines inside a span of the trace carry its id (here hyper's, at debug level, while
    // the attempt connects to the gateway).
    let log = kinetic.log();
    assert!(
        log.lines()
            .any(|line| line.contains(&format!("trace_id={TRACE}")) && line.contains("deliver{")),
        "no log line carries the trace id:\n{log}"
    );
    assert!(requests.iter().flat_map(|r| &r.resource_spans).all(|rs| {
        rs.resource.as_ref().is_some_and(|resource| {
            resource.attributes.iter().any(|kv| {
                kv.key == "service.name"
                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&Value::StringValue("kinetic".into()))
            })
        })
    }));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_trace_settings_are_refused_with_what_to_give() {
    let output = support::cli(&["up", "--otlp-endpoint", "collector:4318"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--otlp-endpoint") && stderr.contains("http://127.0.0.1:4318/v1/traces"),
        "{stderr}"
    );
    let output = support::cli(&["up", "--trace-sampling-ratio", "2"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--trace-sampling-ratio") && stderr.contains("number from 0"),
        "{stderr}"
    );
}
