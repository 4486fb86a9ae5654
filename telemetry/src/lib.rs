//! Logs and traces.
//!
//! Logs: `tracing`'s formatter on stderr, filtered by `KINETIC_LOG` (default `info`), as JSON
//! with `KINETIC_LOG_FORMAT=json`. A log line inside a traced span carries that span's fields,
//! `trace_id` among them.
//!
//! Traces (off unless an OTLP endpoint is given): kinetic's own spans (targets `kinetic*`) become
//! OpenTelemetry spans, exported over OTLP/HTTP with protobuf bodies by a batch processor. The
//! sampler is parent-based: a trace that arrives sampled (its `traceparent` says so) is kept, one
//! that arrives unsampled is not, and a trace kinetic starts is kept with the configured ratio.
//!
//! Trace context travels as W3C trace context (`traceparent`, `tracestate`): in from requests'
//! headers, out on every request kinetic sends, and with an event through the log in the
//! CloudEvents distributed-tracing extension (the `traceparent` and `tracestate` attributes), so
//! the delivery of an event, and the delivery of a reply to it, continue the trace of the request
//! that brought it. With traces off none of this runs: spans are [`Span::none`], nothing is read
//! or written.

pub mod journal;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cloudevents::Event;
use cloudevents::event::ExtensionValue;
use http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The CloudEvents distributed-tracing extension's attributes (W3C trace context).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// How long shutting down waits for the last spans to be exported.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// `--trace-sampling-ratio`, as the bits of an f64.
static RATIO: AtomicU64 = AtomicU64::new(0);
static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The service name spans are exported under (`service.name`).
    pub service: String,
    /// Where to export spans: an OTLP/HTTP traces URL such as
    /// `http://127.0.0.1:4318/v1/traces`. `None`: traces are off.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces kinetic starts that are kept, 0.0–1.0.
    pub sampling_ratio: f64,
}

/// Keeps the trace exporter; [`Telemetry::shutdown`] exports what is left.
#[must_use = "dropping it stops exporting traces"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans not sent yet (waiting at most a few seconds) and stops the exporter.
    /// Blocks: call it from a blocking context.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            eprintln!("warning: exporting the last spans failed: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
    }
}

/// A setting [`init`] refuses.
#[derive(Debug)]
pub struct InvalidSettings(String);

impl std::fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidSettings {}

/// Checks an OTLP endpoint: an `http` or `https` URL with a host.
pub fn parse_endpoint(text: &str) -> Result<String, InvalidSettings> {
    let uri: http::Uri = text.parse().map_err(|error| {
        InvalidSettings(format!(
            "`{text}` is not a URL ({error}); give the collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces"
        ))
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(text.to_owned()),
        _ => Err(InvalidSettings(format!(
            "`{text}` is not an http(s) URL with a host; give the collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces"
        ))),
    }
}

/// Checks a sampling ratio: a number from 0 to 1.
pub fn parse_ratio(text: &str) -> Result<f64, InvalidSettings> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(InvalidSettings(format!(
            "`{text}` is not a sampling ratio; give a number from 0 (no trace kinetic starts is kept) to 1 (every one is), e.g. 0.1"
        ))),
    }
}

/// Installs the process's logging, and its tracing when `settings` name an endpoint. Call once,
/// inside a tokio runtime or outside any (the exporter runs on its own thread).
pub fn init(settings: &Settings) -> Result<Telemetry, InvalidSettings> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KINETIC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("KINETIC_LOG_FORMAT").is_ok_and(|f| f == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // The filter is the log's alone: spans of a trace exist whatever the log level.
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(provider(settings, endpoint)?),
        None => None,
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("kinetic"))
            // kinetic's spans and its warnings; not every library's.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("kinetic")
                    && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
            }))
    });
    tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init()
        .map_err(|error| InvalidSettings(format!("logging was already set up: {error}")))?;
    RATIO.store(settings.sampling_ratio.to_bits(), Ordering::Release);
    ENABLED.store(provider.is_some(), Ordering::Release);
    Ok(Telemetry { provider })
}

fn provider(settings: &Settings, endpoint: &str) -> Result<SdkTracerProvider, InvalidSettings> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| {
            InvalidSettings(format!(
                "the OTLP exporter to `{endpoint}` could not be set up: {error}"
            ))
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service.clone())
                .build(),
        )
        .build())
}

/// Whether traces are on: callers make spans only then ([`span!`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A span inside the current one, when that one is traced; else [`Span::none`] (nothing to
/// record, nothing exported). Takes `tracing::info_span!`'s arguments; every span it makes has a
/// `trace_id` field that log lines inside it show.
#[macro_export]
macro_rules! span {
    ($name:expr $(, $($fields:tt)*)?) => {
        if $crate::enabled() && !::tracing::Span::current().is_none() {
            ::tracing::info_span!($name, trace_id = ::tracing::field::Empty $(, $($fields)*)?)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The span where work for a request or an event starts, continuing the trace `parent` carries:
/// made only when that trace is sampled ([`sampled`]), else [`Span::none`], so that the traces
/// not kept cost (almost) nothing. Its trace id is recorded for log lines.
#[macro_export]
macro_rules! root_span {
    ($parent:expr, $name:expr $(, $($fields:tt)*)?) => {{
        let parent: $crate::Parent<'_> = $parent;
        if $crate::sampled(&parent) {
            let span = ::tracing::info_span!($name, trace_id = ::tracing::field::Empty $(, $($fields)*)?);
            $crate::continue_trace(&span, parent);
            span
        } else {
            ::tracing::Span::none()
        }
    }};
}

/// Whether work continuing `parent` is traced: as the parent's `traceparent` says (its sampled
/// flag); without one, a request (headers) starts a trace kept with the sampling ratio, and an
/// event without one was not traced where it entered, so its delivery is not either.
pub fn sampled(parent: &Parent<'_>) -> bool {
    if !enabled() {
        return false;
    }
    let flag = match parent {
        Parent::Headers(headers) => header_flag(headers),
        Parent::Event(event) => event_flag(event),
        Parent::Either(headers, event) => header_flag(headers).or_else(|| event_flag(event)),
    };
    match (flag, parent) {
        (Some(sampled), _) => sampled,
        (None, Parent::Event(_)) => false,
        (None, _) => {
            let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
            ratio >= 1.0 || rand::random::<f64>() < ratio
        }
    }
}

fn header_flag(headers: &HeaderMap) -> Option<bool> {
    sampled_flag(headers.get(TRACEPARENT)?.to_str().ok()?)
}

fn event_flag(event: &Event) -> Option<bool> {
    match event.extension(TRACEPARENT)? {
        ExtensionValue::String(value) => sampled_flag(value),
        _ => None,
    }
}

/// The sampled flag of a W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`); `None` when malformed.
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)) || version == "ff" {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(u8::from_str_radix(flags, 16).ok()? & 1 == 1)
}

/// Gives `event` the request's trace context (`traceparent`, `tracestate` headers) when the
/// request is not traced here but carries one, and the event has none: the trace the caller
/// decided not to sample still reaches the subscriber.
pub fn carry(headers: &HeaderMap, event: &mut Event) {
    if !enabled() || event.extension(TRACEPARENT).is_some() {
        return;
    }
    for key in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = headers.get(key).and_then(|v| v.to_str().ok()) {
            event.set_extension(key, ExtensionValue::String(value.to_owned()));
        }
    }
}

/// Where a trace continues from: a request's headers, or an event's distributed-tracing
/// extension.
#[derive(Clone, Copy)]
pub enum Parent<'a> {
    Headers(&'a HeaderMap),
    Event(&'a Event),
    /// The request's headers when they carry a trace, else the event's extension.
    Either(&'a HeaderMap, &'a Event),
}

/// Makes `span` continue the trace `parent` carries (a new trace when it carries none), and
/// records its trace id for log lines. Call before the span is entered.
pub fn continue_trace(span: &Span, parent: Parent<'_>) {
    if span.is_none() {
        return;
    }
    let context = match parent {
        Parent::Headers(headers) => from_headers(headers),
        Parent::Event(event) => from_event(event),
        Parent::Either(headers, event) => from_headers(headers).or_else(|| from_event(event)),
    };
    if let Some(context) = context {
        // Fails only when the span was already started, which callers do not do.
        let _ = span.set_parent(context);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

fn from_headers(headers: &HeaderMap) -> Option<Context> {
    headers.get(TRACEPARENT)?;
    let context = PROPAGATOR.extract(&HeaderExtractor(headers));
    context.span().span_context().is_valid().then_some(context)
}

fn from_event(event: &Event) -> Option<Context> {
    event.extension(TRACEPARENT)?;
    let context = PROPAGATOR.extract(&EventExtensions(event));
    context.span().span_context().is_valid().then_some(context)
}

/// Writes the current span's trace context into `headers` (`traceparent`, and `tracestate` when
/// there is one), replacing what was there; nothing when traces are off or no span is current.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        PROPAGATOR.inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// Gives `event` the current span's trace context in its distributed-tracing extension unless it
/// has one already (as the extension says: it is set where the event is created or first enters a
/// traced system, and left alone after). Returns whether the event now has one.
pub fn stamp(event: &mut Event) -> bool {
    if !enabled() {
        return false;
    }
    if event.extension(TRACEPARENT).is_some() {
        return true;
    }
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return false;
    }
    let mut fields = Vec::with_capacity(2);
    PROPAGATOR.inject_context(&context, &mut Fields(&mut fields));
    for (key, value) in fields {
        event.set_extension(key, ExtensionValue::String(value));
    }
    true
}

/// The current span's trace id, when traces are on and a span is current.
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct EventExtensions<'a>(&'a Event);

impl Extractor for EventExtensions<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.extension(key)? {
            ExtensionValue::String(value) => Some(value),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|key| self.0.extension(key).is_some())
            .collect()
    }
}

struct Fields<'a>(&'a mut Vec<(&'static str, String)>);

impl Injector for Fields<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_goes_from_headers_to_the_event_and_out_again() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        ENABLED.store(true, Ordering::Release);
        tracing::subscriber::with_default(subscriber, || {
            let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            let mut incoming = HeaderMap::new();
            incoming.insert(
                TRACEPARENT,
                format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
            );
            let mut event = Event::default();
            RATIO.store(0.0_f64.to_bits(), Ordering::Release);
            let ingress = root_span!(Parent::Either(&incoming, &event), "ingress");
            assert!(!ingress.is_none(), "the caller sampled it");
            ingress.in_scope(|| {
                assert_eq!(current_trace_id().as_deref(), Some(trace));
                stamp(&mut event);
            });
            let stamped = event.extension(TRACEPARENT).unwrap().to_string();
            assert!(stamped.starts_with(&format!("00-{trace}-")), "{stamped}");
            assert!(
                !stamped.contains("00f067aa0ba902b7"),
                "the ingress span is the parent"
            );
            // An event that has a trace keeps it.
            let other = root_span!(Parent::Headers(&incoming), "other");
            other.in_scope(|| stamp(&mut event));
            assert_eq!(event.extension(TRACEPARENT).unwrap().to_string(), stamped);

            // Its delivery continues it, and says so to the subscriber.
            let deliver = root_span!(Parent::Event(&event), "deliver");
            assert!(!deliver.is_none());
            // A span inside it is made; outside any traced span, none is.
            assert!(!deliver.in_scope(|| span!("inner")).is_none());
            assert!(span!("outside").is_none());
            let mut outgoing = HeaderMap::new();
            deliver.in_scope(|| inject(&mut outgoing));
            let sent = outgoing[TRACEPARENT].to_str().unwrap();
            assert!(sent.starts_with(&format!("00-{trace}-")), "{sent}");
            assert_ne!(sent, stamped, "the attempt's own span id");

            // No trace anywhere: a new one at the sampling ratio; an event without one is not
            // traced (it was not where it entered).
            assert!(root_span!(Parent::Headers(&HeaderMap::new()), "dropped").is_none());
            assert!(root_span!(Parent::Event(&Event::default()), "untraced").is_none());
            RATIO.store(1.0_f64.to_bits(), Ordering::Release);
            let fresh = root_span!(Parent::Headers(&HeaderMap::new()), "fresh");
            let id = fresh.in_scope(current_trace_id).unwrap();
            assert_ne!(id, trace);
            // A caller's unsampled trace is not traced here, but carried on.
            let mut unsampled = HeaderMap::new();
            unsampled.insert(
                TRACEPARENT,
                format!("00-{trace}-00f067aa0ba902b7-00").parse().unwrap(),
            );
            assert!(root_span!(Parent::Headers(&unsampled), "not kept").is_none());
            let mut carried = Event::default();
            carry(&unsampled, &mut carried);
            assert_eq!(
                carried.extension(TRACEPARENT).unwrap().to_string(),
                format!("00-{trace}-00f067aa0ba902b7-00")
            );
        });
    }

    #[test]
    fn traceparents_are_read_strictly() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            sampled_flag(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(true)
        );
        assert_eq!(
            sampled_flag(&format!("00-{id}-00f067aa0ba902b7-02")),
            Some(false)
        );
        for wrong in [
            "",
            "00-abc-00f067aa0ba902b7-01",
            &format!("ff-{id}-00f067aa0ba902b7-01"),
            &format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            &format!("00-{id}-0000000000000000-01"),
            &format!("00-{id}-00f067aa0ba902b7"),
        ] {
            assert_eq!(sampled_flag(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn settings_say_what_is_wrong() {
        assert!(parse_endpoint("http://127.0.0.1:4318/v1/traces").is_ok());
        assert!(parse_endpoint("https://collector.example/v1/traces").is_ok());
        let error = parse_endpoint("127.0.0.1:4318").unwrap_err().to_string();
        assert!(error.contains("http(s) URL"), "{error}");
        let error = parse_endpoint("http://").unwrap_err().to_string();
        assert!(
            error.contains("e.g. http://127.0.0.1:4318/v1/traces"),
            "{error}"
        );
        assert_eq!(parse_ratio("0.01").unwrap(), 0.01);
        assert_eq!(parse_ratio("1").unwrap(), 1.0);
        for wrong in ["1.5", "-0.1", "half", "NaN"] {
            let error = parse_ratio(wrong).unwrap_err().to_string();
            assert!(error.contains("number from 0"), "{wrong}: {error}");
        }
    }
}
