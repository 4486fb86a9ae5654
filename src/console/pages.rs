//! The console's pages.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{Extension, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cloudevents::AttributesReader as _;
use kinetic_api::Kind;
use kinetic_store::{DeadLetter, DeadLetterFilter, DeadLetterSelection};
use serde::Deserialize;
use serde_json::Value;

use super::history::{self, Sample};
use super::html::{self, Nav, attr, esc, number, query, ready, table, time};
use super::{ConsoleState, error_page, html_response, page_or_fragment, see_other};
use crate::admin::{Caller, Role};

/// Rates are per second over the last minute; ratios and percentiles over the last 5 minutes.
const RATE_WINDOW: Duration = Duration::from_secs(60);
const RATIO_WINDOW: Duration = Duration::from_secs(300);

fn name_of(resource: &Value) -> (String, String) {
    let field = |pointer: &str| {
        resource
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("/metadata/namespace"), field("/metadata/name"))
}

fn status_ready(resource: &Value) -> (Option<bool>, Option<String>) {
    let ready = resource.pointer("/status/ready").and_then(Value::as_bool);
    let problem = resource
        .pointer("/status/problem")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (ready, problem)
}

pub async fn overview(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    match overview_main(&state).await {
        Ok(main) => page_or_fragment(&headers, "Overview", Nav::Overview, &caller, true, main),
        Err(error) => error_page(&caller, StatusCode::SERVICE_UNAVAILABLE, &error),
    }
}

async fn overview_main(state: &ConsoleState) -> Result<String, String> {
    let list = async |kind: Kind| {
        state
            .control
            .list(kind, None)
            .await
            .map_err(|error| format!("the store is unavailable ({error}); retry in a moment"))
    };
    let brokers = list(Kind::Broker).await?;
    let triggers = list(Kind::Trigger).await?;
    let services = list(Kind::Service).await?;
    let revisions = list(Kind::Revision).await?;
    let rates = state.history.window(RATE_WINDOW);
    let ratios = state.history.window(RATIO_WINDOW);
    let newest = rates.as_ref().map(|(_, newest)| newest.clone());
    let now = |name: &str, labels: &[(&str, &str)]| newest.as_ref().map(|s| s.sum(name, labels));
    let rate = |name: &str, labels: &[(&str, &str)]| {
        rates
            .as_ref()
            .and_then(|window| history::rate(window, name, labels))
    };
    let increase = |name: &str, labels: &[(&str, &str)]| {
        ratios
            .as_ref()
            .map(|(oldest, newest)| newest.sum(name, labels) - oldest.sum(name, labels))
    };

    let mut main = String::from("<h1>Overview</h1>");
    let note = match &rates {
        Some((oldest, newest)) if newest.at > oldest.at => format!(
            "<p class=\"note\">Rates per second over the last minute, success over the last 5 minutes; as of {}.</p>",
            time(newest.at)
        ),
        _ => "<p class=\"note\">Rates appear once two samples (2 s apart) exist.</p>".to_owned(),
    };
    main.push_str(&note);

    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|broker| {
            let (namespace, name) = name_of(broker);
            let key = format!("{namespace}/{name}");
            let labels = [("broker", key.as_str())];
            let (ready_now, problem) = status_ready(broker);
            vec![
                esc(&key),
                ready(ready_now.or(Some(true)), problem.as_deref()),
                format!(
                    "<span data-metric=\"ingress-rate\">{}</span>",
                    number(rate("kinetic_broker_events_accepted_total", &labels), 1)
                ),
                number(now("kinetic_broker_events_accepted_total", &labels), 0),
                number(now("kinetic_broker_events_rejected_total", &labels), 0),
            ]
        })
        .collect();
    main.push_str(&table(
        "brokers",
        "Brokers",
        &["Broker", "Ready", "Events/s in", "Accepted", "Refused"],
        &rows,
        "No brokers yet: apply one (Resources).",
    ));

    let rows: Vec<Vec<String>> = triggers
        .iter()
        .map(|trigger| {
            let (namespace, name) = name_of(trigger);
            let key = format!("{namespace}/{name}");
            let labels = [("trigger", key.as_str())];
            let (ready_now, problem) = status_ready(trigger);
            let outcome = |outcome: &str| {
                increase(
                    "kinetic_dispatcher_deliveries_total",
                    &[("trigger", key.as_str()), ("outcome", outcome)],
                )
            };
            let delivered = outcome("delivered");
            let failed = [outcome("retry_scheduled"), outcome("dead_lettered")]
                .into_iter()
                .flatten()
                .sum::<f64>();
            let success = delivered
                .filter(|d| d + failed > 0.0)
                .map(|d| 100.0 * d / (d + failed));
            let subscriber = trigger
                .pointer("/spec/subscriber/uri")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    let reference = trigger.pointer("/spec/subscriber/ref")?;
                    Some(format!(
                        "{} {}",
                        reference.get("kind")?.as_str()?,
                        reference.get("name")?.as_str()?
                    ))
                })
                .unwrap_or_default();
            vec![
                esc(&key),
                esc(trigger
                    .pointer("/spec/broker")
                    .and_then(Value::as_str)
                    .unwrap_or_default()),
                ready(ready_now, problem.as_deref()),
                number(
                    rate(
                        "kinetic_dispatcher_deliveries_total",
                        &[("trigger", key.as_str()), ("outcome", "delivered")],
                    ),
                    1,
                ),
                match success {
                    Some(percent) => format!("{percent:.1} %"),
                    None => "—".to_owned(),
                },
                number(now("kinetic_dispatcher_backlog", &labels), 0),
                match now("kinetic_dispatcher_oldest_undelivered_seconds", &labels) {
                    Some(seconds) if seconds > 0.0 => format!("{seconds:.1} s"),
                    Some(_) => "—".to_owned(),
                    None => "—".to_owned(),
                },
                format!(
                    "<a href=\"/console/dead-letters?trigger={}\">{}</a>",
                    attr(&query(&key)),
                    number(now("kinetic_dispatcher_dead_letters_total", &labels), 0)
                ),
                esc(&subscriber),
            ]
        })
        .collect();
    main.push_str(&table(
        "triggers",
        "Triggers",
        &[
            "Trigger",
            "Broker",
            "Ready",
            "Delivered/s",
            "Success",
            "Backlog",
            "Oldest waiting",
            "Dead letters",
            "Subscriber",
        ],
        &rows,
        "No triggers yet.",
    ));

    let samples = state.history.all();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|service| {
            let (namespace, name) = name_of(service);
            let revisions: Vec<String> = revisions
                .iter()
                .filter(|revision| {
                    let (ns, _) = name_of(revision);
                    ns == namespace
                        && revision
                            .pointer("/metadata/labels")
                            .and_then(|labels| labels.get(kinetic_api::serving::SERVICE_LABEL))
                            .and_then(Value::as_str)
                            == Some(name.as_str())
                })
                .map(|revision| name_of(revision).1)
                .collect();
            let per_revision = |sample: &Sample, metric: &str| -> f64 {
                revisions
                    .iter()
                    .map(|revision| {
                        sample.sum(
                            metric,
                            &[("namespace", namespace.as_str()), ("revision", revision)],
                        )
                    })
                    .sum()
            };
            let quantile = |q: f64| {
                ratios.as_ref().and_then(|window| {
                    let values: Vec<f64> = revisions
                        .iter()
                        .filter_map(|revision| {
                            history::quantile(
                                window,
                                "kinetic_serving_request_duration_seconds",
                                &[("namespace", namespace.as_str()), ("revision", revision)],
                                q,
                            )
                        })
                        .collect();
                    values.into_iter().reduce(f64::max)
                })
            };
            let cold_starts = newest
                .as_ref()
                .map(|sample| per_revision(sample, "kinetic_serving_cold_starts_total"));
            let graph = instances_graph(&name, &samples, |sample| {
                (
                    per_revision(sample, "kinetic_serving_desired_instances"),
                    per_revision(sample, "kinetic_serving_ready_instances"),
                )
            });
            let (ready_now, problem) = status_ready(service);
            let url = service
                .pointer("/status/url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            vec![
                esc(&format!("{namespace}/{name}")),
                ready(ready_now, problem.as_deref()),
                graph,
                number(cold_starts, 0),
                format!(
                    "{} / {}",
                    number(quantile(0.5).map(|s| s * 1000.0), 1),
                    number(quantile(0.99).map(|s| s * 1000.0), 1)
                ),
                esc(url),
            ]
        })
        .collect();
    main.push_str(&table(
        "services",
        "Services",
        &[
            "Service",
            "Ready",
            "Instances, up to 15 minutes (desired dashed, ready solid)",
            "Cold starts",
            "p50 / p99 ms",
            "URL",
        ],
        &rows,
        "No services yet.",
    ));

    let sources = state
        .control
        .sources
        .as_ref()
        .map(|sources| sources.status())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|source| {
            vec![
                esc(&format!(
                    "{} {}/{}",
                    source.kind, source.namespace, source.name
                )),
                ready(Some(source.ready), source.last_error.as_deref()),
                source
                    .last_event_at
                    .map(|at| esc(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                    .unwrap_or_else(|| "—".to_owned()),
                source.events.to_string(),
                source.failures.to_string(),
                number(source.backlog.map(|b| b as f64), 0),
            ]
        })
        .collect();
    main.push_str(&table(
        "sources",
        "Sources",
        &["Source", "Ready", "Last event", "Events", "Failures", "Lag"],
        &rows,
        "No sources run in this process.",
    ));
    Ok(main)
}

/// Desired (dashed) and ready (solid) instances over the history, as an inline SVG, with the
/// values in `data-` attributes and a text equivalent.
fn instances_graph(
    service: &str,
    samples: &[std::sync::Arc<Sample>],
    values: impl Fn(&Sample) -> (f64, f64),
) -> String {
    const WIDTH: f64 = 240.0;
    const HEIGHT: f64 = 48.0;
    let points: Vec<(i64, f64, f64)> = samples
        .iter()
        .map(|sample| {
            let (desired, ready) = values(sample);
            (sample.at, desired, ready)
        })
        .collect();
    let Some(&(last_at, desired_now, ready_now)) = points.last() else {
        return "—".to_owned();
    };
    // The graph spans what the history holds (at least a minute, at most its 15 minutes).
    let first_at = points.first().map_or(last_at, |point| point.0);
    let span = (last_at - first_at).clamp(60_000, history::SPAN.as_millis() as i64);
    let since = last_at - span;
    let top = points
        .iter()
        .map(|(_, d, r)| d.max(*r))
        .fold(1.0_f64, f64::max);
    let x = |at: i64| (at - since) as f64 / span as f64 * WIDTH;
    let y = |value: f64| HEIGHT - 2.0 - value / top * (HEIGHT - 4.0);
    let line = |pick: fn(&(i64, f64, f64)) -> f64| {
        points
            .iter()
            .map(|point| format!("{:.1},{:.1}", x(point.0), y(pick(point))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let series = |pick: fn(&(i64, f64, f64)) -> f64| {
        points
            .iter()
            .map(|point| format!("{}", pick(point)))
            .collect::<Vec<_>>()
            .join(",")
    };
    let minutes = (span as f64 / 60_000.0).round().max(1.0);
    let label = format!(
        "Instances of {service} over the last {minutes} minute(s): {desired_now} desired, {ready_now} ready now, at most {top}"
    );
    format!(
        "<svg class=\"instances\" role=\"img\" aria-label=\"{}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" data-desired=\"{}\" data-ready=\"{}\"><title>{}</title><polyline class=\"desired\" points=\"{}\"/><polyline class=\"ready\" points=\"{}\"/></svg><span class=\"now\">{desired_now} desired, {ready_now} ready</span>",
        attr(&label),
        series(|p| p.1),
        series(|p| p.2),
        esc(&label),
        line(|p| p.1),
        line(|p| p.2),
    )
}

#[derive(Deserialize, Default)]
pub struct EventQuery {
    id: Option<String>,
    source: Option<String>,
}

/// An event by id (and source): its recent history in this process (accepted, which triggers
/// match it and why not, each attempt, retries, the function instance that served it; kept for
/// the last events in memory, see `kinetic_telemetry::journal`), and its dead letters and replays
/// from the store.
pub async fn events(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<EventQuery>,
) -> Response {
    let id = query.id.as_deref().map(str::trim).unwrap_or_default();
    let source = query.source.as_deref().map(str::trim).unwrap_or_default();
    let mut main = format!(
        "<h1>Events</h1><form method=\"get\" action=\"/console/events\" class=\"filters\"><label for=\"id\">Event id</label><input id=\"id\" name=\"id\" value=\"{}\" required><label for=\"source\">Source (optional)</label><input id=\"source\" name=\"source\" value=\"{}\"><button type=\"submit\">Find</button></form><p class=\"note\">This process remembers the last {} events it handled (restarts forget them); dead letters stay in the store.</p>",
        attr(id),
        attr(source),
        kinetic_telemetry::journal::EVENTS
    );
    if id.is_empty() {
        return html_response(
            StatusCode::OK,
            html::page("Events", Nav::Events, Some(&caller), false, &main),
        );
    }
    let letters = match matching_letters(&state, &LetterQuery::default()).await {
        Ok(letters) => letters,
        Err(error) => return error_page(&caller, StatusCode::SERVICE_UNAVAILABLE, &error),
    };
    let triggers = match state.control.list(Kind::Trigger, None).await {
        Ok(triggers) => triggers,
        Err(error) => {
            return error_page(
                &caller,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is unavailable ({error}); retry in a moment"),
            );
        }
    };
    let remembered = kinetic_telemetry::journal::find(id, (!source.is_empty()).then_some(source));
    let letters: Vec<&(DeadLetter, Option<cloudevents::Event>)> = letters
        .iter()
        .filter(|(_, event)| {
            event.as_ref().is_some_and(|event| {
                event.id() == id && (source.is_empty() || event.source().as_str() == source)
            })
        })
        .collect();
    if remembered.is_empty() && letters.is_empty() {
        let _ = write!(
            main,
            "<p class=\"empty\" role=\"status\">Nothing is known of event <code>{}</code>: it is older than what this process remembers and has no dead letter, or it never arrived here.</p>",
            esc(id)
        );
    }
    for entry in &remembered {
        let _ = write!(
            main,
            "<section class=\"timeline\" aria-label=\"Event {0} from {1}\"><h2>Event <code>{0}</code> from <code>{1}</code></h2><ol>",
            esc(&entry.id),
            esc(&entry.source)
        );
        let event = entry
            .accepted
            .as_ref()
            .and_then(|accepted| kinetic_api::cloudevent::from_json(&accepted.payload).ok());
        let mut items: Vec<(i64, String)> = Vec::new();
        if let Some(accepted) = &entry.accepted {
            let mut text = format!(
                "Accepted by broker <strong>{}</strong>{}",
                esc(&accepted.broker),
                event
                    .as_ref()
                    .map(|e| format!(", type <code>{}</code>", esc(e.ty())))
                    .unwrap_or_default()
            );
            if let Some(trace) = &accepted.trace_id {
                let _ = write!(text, ", trace <code>{}</code>", esc(trace));
            }
            text.push('.');
            if let Some(event) = &event {
                text.push_str(&matched_triggers(&triggers, &accepted.broker, event));
            }
            items.push((accepted.at, text));
        }
        for step in &entry.steps {
            use kinetic_telemetry::journal::Step;
            let item = match step {
                Step::Attempt {
                    at,
                    trigger,
                    status,
                    millis,
                    outcome,
                    error,
                    excerpt,
                } => {
                    let answer = match (status, error) {
                        (Some(status), _) => format!("HTTP {status}"),
                        (None, Some(error)) => esc(error),
                        (None, None) => "no answer".to_owned(),
                    };
                    let class = if *outcome == "delivered" {
                        "ok"
                    } else {
                        "failed"
                    };
                    let mut text = format!(
                        "<span class=\"{class}\">Attempt to <strong>{}</strong>: {answer} in {millis} ms ({outcome}).</span>",
                        esc(trigger)
                    );
                    if !excerpt.is_empty() {
                        let _ = write!(text, "<pre class=\"excerpt\">{}</pre>", esc(excerpt));
                    }
                    (*at, text)
                }
                Step::Retry {
                    at,
                    trigger,
                    attempt,
                    due,
                } => (
                    *at,
                    format!(
                        "Retry {} for <strong>{}</strong> scheduled at {}.",
                        attempt + 1,
                        esc(trigger),
                        time(*due)
                    ),
                ),
                Step::DeadLettered { at, trigger } => (
                    *at,
                    format!(
                        "<span class=\"failed\">Dead-lettered for <strong>{}</strong>.</span>",
                        esc(trigger)
                    ),
                ),
                Step::Served {
                    at,
                    revision,
                    instance,
                    cold_start,
                } => (
                    *at,
                    format!(
                        "Served by function revision <strong>{}</strong>, instance {instance}{}.",
                        esc(revision),
                        if *cold_start {
                            " (a cold start: no instance was ready)"
                        } else {
                            ""
                        }
                    ),
                ),
            };
            items.push(item);
        }
        items.sort_by_key(|(at, _)| *at);
        for (at, text) in items {
            let _ = write!(main, "<li><time>{}</time> {text}</li>", time(at));
        }
        main.push_str("</ol></section>");
    }
    for (letter, event) in letters {
        let _ = write!(
            main,
            "<section class=\"timeline letter\" aria-label=\"Dead letter for {0}\"><h2>Dead letter for trigger {0}</h2><ol>",
            esc(&format!(
                "{}/{}",
                letter.trigger.namespace, letter.trigger.name
            ))
        );
        if let Some(event) = event {
            let _ = write!(
                main,
                "<li>Event <code>{}</code> from <code>{}</code>, type <code>{}</code>, broker <strong>{}</strong>.</li>",
                esc(event.id()),
                esc(event.source()),
                esc(event.ty()),
                esc(&letter.trigger.broker),
            );
        }
        // The event itself, as the API shows it (JSON data as JSON).
        let shown = crate::api::dead_letter_json(letter);
        if let Ok(pretty) = serde_json::to_string_pretty(&shown["event"]) {
            let _ = write!(
                main,
                "<li><details><summary>The event</summary><pre class=\"yaml\">{}</pre></details></li>",
                esc(&pretty)
            );
        }
        if let Some(first) = letter.first_attempt_at {
            let _ = write!(main, "<li>First attempt at {}.</li>", time(first));
        }
        let _ = write!(
            main,
            "<li class=\"failed\">{} attempt(s) failed; the last answered {}{}.</li>",
            letter.attempts,
            letter
                .last_status
                .map(|s| format!("HTTP {s}"))
                .unwrap_or_else(|| "nothing".to_owned()),
            letter
                .last_error
                .as_deref()
                .filter(|e| Some(*e) != letter.last_status.map(|s| format!("HTTP {s}")).as_deref())
                .map(|e| format!(" ({})", esc(e)))
                .unwrap_or_default()
        );
        if let Some(body) = &letter.last_response {
            let excerpt: String = String::from_utf8_lossy(body).chars().take(300).collect();
            let _ = write!(
                main,
                "<li>Last answer: <pre class=\"excerpt\">{}</pre></li>",
                esc(&excerpt)
            );
        }
        let _ = write!(
            main,
            "<li class=\"failed\">Dead-lettered at {} (dead-letter sink: {}).</li>",
            time(letter.dead_at),
            esc(letter.sink_state.as_str())
        );
        if let Some(replayed) = letter.replayed_at {
            let _ = write!(
                main,
                "<li class=\"ok\">Replayed at {} ({} time(s)).</li>",
                time(replayed),
                letter.replay_count
            );
        }
        let _ = write!(
            main,
            "</ol>{}</section>",
            replay_button(&caller, &letter.id)
        );
    }
    html_response(
        StatusCode::OK,
        html::page("Events", Nav::Events, Some(&caller), false, &main),
    )
}

/// Which of the broker's triggers (as they are now) match `event`, and why the others do not.
fn matched_triggers(triggers: &[Value], broker: &str, event: &cloudevents::Event) -> String {
    let mut list = String::new();
    for resource in triggers {
        let (namespace, name) = name_of(resource);
        let on = resource
            .pointer("/spec/broker")
            .and_then(Value::as_str)
            .map(|b| format!("{namespace}/{b}"));
        if on.as_deref() != Some(broker) {
            continue;
        }
        let verdict = match serde_json::from_value::<kinetic_api::Trigger>(resource.clone())
            .map_err(|e| e.to_string())
            .and_then(|t| kinetic_triggers::filter::Filter::compile(&t).map_err(|e| e.to_string()))
        {
            Ok(filter) => match filter.explain(event) {
                None => "<span class=\"ok\">✓ matches</span>".to_owned(),
                Some(why) => format!(
                    "<span class=\"failed\">✗ does not match</span>: {}",
                    esc(&why)
                ),
            },
            Err(error) => format!("its filter cannot be read: {}", esc(&error)),
        };
        let _ = write!(
            list,
            "<li>Trigger <strong>{}</strong> {verdict}</li>",
            esc(&format!("{namespace}/{name}"))
        );
    }
    if list.is_empty() {
        " No trigger on this broker now.".to_owned()
    } else {
        format!("<ul class=\"matches\">{list}</ul>")
    }
}

fn replay_button(caller: &Caller, id: &str) -> String {
    if caller.role < Role::Operator {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"/console/dead-letters/replay\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\">Replay</button></form>",
        attr(id)
    )
}

/// The dead-letter filters of the page and of "replay/delete all matching".
#[derive(Deserialize, Default, Clone)]
pub struct LetterQuery {
    trigger: Option<String>,
    #[serde(rename = "type")]
    ty: Option<String>,
    /// RFC 3339, or a date-time without zone (UTC).
    since: Option<String>,
    replayed: Option<u64>,
    deleted: Option<u64>,
    skipped: Option<u64>,
}

/// Most dead letters one page reads from the store.
const LETTERS_READ: usize = 1000;

async fn matching_letters(
    state: &ConsoleState,
    filter: &LetterQuery,
) -> Result<Vec<(DeadLetter, Option<cloudevents::Event>)>, String> {
    let trigger = match filter.trigger.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(trigger) => Some(
            trigger
                .split_once('/')
                .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
                .ok_or_else(|| format!("`{trigger}` is not NAMESPACE/NAME"))?,
        ),
    };
    let since = match filter.since.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(since) => Some(parse_since(since)?),
    };
    let letters = state
        .control
        .store
        .list_dead_letters(&DeadLetterFilter {
            trigger,
            unreplayed_only: false,
            limit: Some(LETTERS_READ),
            after: None,
        })
        .await
        .map_err(|error| format!("the store is unavailable ({error}); retry in a moment"))?;
    let ty = filter
        .ty
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Ok(letters
        .into_iter()
        .map(|letter| {
            let event = kinetic_api::cloudevent::from_json(&letter.payload).ok();
            (letter, event)
        })
        .filter(|(letter, event)| {
            since.is_none_or(|since| letter.dead_at >= since)
                && ty.is_none_or(|ty| event.as_ref().is_some_and(|e| e.ty() == ty))
        })
        .collect())
}

fn parse_since(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .map(|t| t.and_utc().timestamp_millis())
        })
        .map_err(|_| {
            format!("`{text}` is not a time; give it as 2026-12-07T14:00 (UTC) or in RFC 3339")
        })
}

pub async fn dead_letters(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Query(filter): Query<LetterQuery>,
) -> Response {
    let field = |value: &Option<String>| attr(value.as_deref().unwrap_or_default());
    let mut main = String::from("<h1>Dead letters</h1>");
    let mut said = Vec::new();
    if let Some(n) = filter.replayed {
        said.push(format!("{n} replayed"));
    }
    if let Some(n) = filter.skipped.filter(|n| *n > 0) {
        said.push(format!(
            "{n} not replayed (its trigger no longer exists, or it is gone)"
        ));
    }
    if let Some(n) = filter.deleted {
        said.push(format!("{n} deleted"));
    }
    if !said.is_empty() {
        let _ = write!(
            main,
            "<p class=\"done\" role=\"status\">{}.</p>",
            said.join(", ")
        );
    }
    let _ = write!(
        main,
        "<form method=\"get\" action=\"/console/dead-letters\" class=\"filters\"><label for=\"trigger\">Trigger</label><input id=\"trigger\" name=\"trigger\" placeholder=\"default/orders\" value=\"{}\"><label for=\"type\">Event type</label><input id=\"type\" name=\"type\" value=\"{}\"><label for=\"since\">Dead since (UTC)</label><input id=\"since\" name=\"since\" type=\"datetime-local\" value=\"{}\"><button type=\"submit\">Filter</button></form>",
        field(&filter.trigger),
        field(&filter.ty),
        field(&filter.since)
    );
    let letters = match matching_letters(&state, &filter).await {
        Ok(letters) => letters,
        Err(error) => {
            let _ = write!(
                main,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&error)
            );
            return html_response(
                StatusCode::BAD_REQUEST,
                html::page(
                    "Dead letters",
                    Nav::DeadLetters,
                    Some(&caller),
                    false,
                    &main,
                ),
            );
        }
    };
    if letters.is_empty() {
        main.push_str("<p class=\"empty\">No dead letters match.</p>");
        return html_response(
            StatusCode::OK,
            html::page(
                "Dead letters",
                Nav::DeadLetters,
                Some(&caller),
                false,
                &main,
            ),
        );
    }
    let operator = caller.role >= Role::Operator;
    let _ = write!(
        main,
        "<form method=\"post\" id=\"selection\" action=\"/console/dead-letters/replay\"><table id=\"dead-letters\"><caption>{} dead letter(s){}</caption><thead><tr>{}<th scope=\"col\">Event</th><th scope=\"col\">Trigger</th><th scope=\"col\">Type</th><th scope=\"col\">Attempts</th><th scope=\"col\">Last answer</th><th scope=\"col\">Dead at</th><th scope=\"col\">Replayed</th></tr></thead><tbody>",
        letters.len(),
        if letters.len() >= LETTERS_READ {
            " (the newest; narrow the filter to see others)"
        } else {
            ""
        },
        if operator {
            "<th scope=\"col\">Select</th>"
        } else {
            ""
        }
    );
    for (letter, event) in &letters {
        let id = event
            .as_ref()
            .map(|e| e.id().to_owned())
            .unwrap_or_default();
        let check = if operator {
            format!(
                "<td><input type=\"checkbox\" name=\"id\" value=\"{}\" aria-label=\"Select {}\"></td>",
                attr(&letter.id),
                attr(&id)
            )
        } else {
            String::new()
        };
        let answer = match (letter.last_status, letter.last_error.as_deref()) {
            (Some(status), _) => format!("HTTP {status}"),
            (None, Some(error)) => error.to_owned(),
            (None, None) => "—".to_owned(),
        };
        let excerpt: String = letter
            .last_response
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).chars().take(120).collect())
            .unwrap_or_default();
        let _ = write!(
            main,
            "<tr>{check}<th scope=\"row\"><a href=\"/console/events?id={}\">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td>{}<div class=\"excerpt\">{}</div></td><td>{}</td><td>{}</td></tr>",
            attr(&query(&id)),
            esc(&id),
            esc(&format!(
                "{}/{}",
                letter.trigger.namespace, letter.trigger.name
            )),
            esc(event.as_ref().map(|e| e.ty()).unwrap_or_default()),
            letter.attempts,
            esc(&answer),
            esc(&excerpt),
            time(letter.dead_at),
            letter
                .replayed_at
                .map(|at| format!("{} ({}×)", time(at), letter.replay_count))
                .unwrap_or_else(|| "—".to_owned()),
        );
    }
    main.push_str("</tbody></table>");
    if operator {
        // "All matching" carries the filter; the selection carries ids.
        let _ = write!(
            main,
            "<input type=\"hidden\" name=\"trigger\" value=\"{}\"><input type=\"hidden\" name=\"type\" value=\"{}\"><input type=\"hidden\" name=\"since\" value=\"{}\"><div class=\"actions\"><button type=\"submit\">Replay selected</button><button type=\"submit\" name=\"all\" value=\"1\">Replay all matching</button><button type=\"submit\" formaction=\"/console/dead-letters/delete\" class=\"danger\">Delete selected</button><button type=\"submit\" name=\"all\" value=\"1\" formaction=\"/console/dead-letters/delete\" class=\"danger\">Delete all matching</button></div>",
            field(&filter.trigger),
            field(&filter.ty),
            field(&filter.since)
        );
    }
    main.push_str("</form>");
    html_response(
        StatusCode::OK,
        html::page(
            "Dead letters",
            Nav::DeadLetters,
            Some(&caller),
            false,
            &main,
        ),
    )
}

/// The ids a replay or delete form names: the selected ones, or every one matching its filter.
async fn selected(
    state: &ConsoleState,
    form: &[(String, String)],
) -> Result<(Vec<String>, String), String> {
    let value = |key: &str| {
        form.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let filter = LetterQuery {
        trigger: value("trigger"),
        ty: value("type"),
        since: value("since"),
        ..LetterQuery::default()
    };
    let back = format!(
        "/console/dead-letters?trigger={}&type={}&since={}",
        query(filter.trigger.as_deref().unwrap_or_default()),
        query(filter.ty.as_deref().unwrap_or_default()),
        query(filter.since.as_deref().unwrap_or_default())
    );
    if value("all").is_some() {
        let ids = matching_letters(state, &filter)
            .await?
            .into_iter()
            .map(|(letter, _)| letter.id)
            .collect();
        return Ok((ids, back));
    }
    let ids = form
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    Ok((ids, back))
}

pub async fn replay(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let (ids, back) = match selected(&state, &form).await {
        Ok(selected) => selected,
        Err(error) => return error_page(&caller, StatusCode::BAD_REQUEST, &error),
    };
    let replayed = match crate::api::replay_dead_letters(&state.control, &ids).await {
        Ok(replayed) => replayed,
        Err(error) => {
            return error_page(
                &caller,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store is unavailable ({error}); nothing was replayed, retry"),
            );
        }
    };
    tracing::info!(by = %caller.name, replayed = replayed.len(), "Dead letters replayed from the console.");
    see_other(&format!(
        "{back}&replayed={}&skipped={}",
        replayed.len(),
        ids.len() - replayed.len()
    ))
}

pub async fn delete(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let (ids, back) = match selected(&state, &form).await {
        Ok(selected) => selected,
        Err(error) => return error_page(&caller, StatusCode::BAD_REQUEST, &error),
    };
    let deleted = if ids.is_empty() {
        0
    } else {
        match state
            .control
            .store
            .delete_dead_letters(&DeadLetterSelection::Ids(ids))
            .await
        {
            Ok(deleted) => deleted,
            Err(error) => {
                return error_page(
                    &caller,
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("the store is unavailable ({error}); nothing was deleted, retry"),
                );
            }
        }
    };
    tracing::info!(by = %caller.name, deleted, "Dead letters deleted from the console.");
    see_other(&format!("{back}&deleted={deleted}"))
}

pub async fn resources(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    match resources_main(&state, &caller, None, "").await {
        Ok(main) => html_response(
            StatusCode::OK,
            html::page("Resources", Nav::Resources, Some(&caller), false, &main),
        ),
        Err(error) => error_page(&caller, StatusCode::SERVICE_UNAVAILABLE, &error),
    }
}

async fn resources_main(
    state: &ConsoleState,
    caller: &Caller,
    outcome: Option<Result<String, String>>,
    pasted: &str,
) -> Result<String, String> {
    let mut main = String::from("<h1>Resources</h1>");
    match outcome {
        Some(Ok(done)) => {
            let _ = write!(main, "<p class=\"done\" role=\"status\">{done}</p>");
        }
        Some(Err(error)) => {
            let _ = write!(main, "<div class=\"error\" role=\"alert\">{error}</div>");
        }
        None => {}
    }
    if caller.role >= Role::Admin {
        let _ = write!(
            main,
            "<form method=\"post\" action=\"/console/resources/apply\" class=\"apply\"><label for=\"yaml\">Apply YAML (Knative or kinetic resources, several documents separated by <code>---</code>)</label><textarea id=\"yaml\" name=\"yaml\" rows=\"10\" spellcheck=\"false\">{}</textarea><button type=\"submit\">Apply</button></form>",
            esc(pasted)
        );
    }
    let mut by_kind: HashMap<&str, Vec<Value>> = HashMap::new();
    for kind in Kind::ALL {
        let listed =
            state.control.list(*kind, None).await.map_err(|error| {
                format!("the store is unavailable ({error}); retry in a moment")
            })?;
        by_kind.insert(kind.as_str(), listed);
    }
    for kind in Kind::ALL {
        let listed = &by_kind[kind.as_str()];
        if listed.is_empty() {
            continue;
        }
        let _ = write!(
            main,
            "<section aria-labelledby=\"kind-{0}\"><h2 id=\"kind-{0}\">{0}</h2><ul class=\"resources\">",
            kind.as_str()
        );
        for resource in listed {
            let (namespace, name) = name_of(resource);
            let (ready_now, problem) = status_ready(resource);
            // A stored Broker takes events at once (as on the overview).
            let ready_now = match kind {
                Kind::Broker => ready_now.or(Some(true)),
                _ => ready_now,
            };
            let conditions = resource
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .map(|conditions| {
                    conditions
                        .iter()
                        .map(|c| {
                            format!(
                                "<li>{}: {}{}</li>",
                                esc(c.get("type").and_then(Value::as_str).unwrap_or("?")),
                                esc(c.get("status").and_then(Value::as_str).unwrap_or("?")),
                                c.get("message")
                                    .and_then(Value::as_str)
                                    .map(|m| format!(" — {}", esc(m)))
                                    .unwrap_or_default()
                            )
                        })
                        .collect::<String>()
                })
                .unwrap_or_default();
            let yaml = serde_saphyr::to_string(resource).unwrap_or_default();
            let _ = write!(
                main,
                "<li><details><summary><strong>{}</strong> {}</summary>{}<pre class=\"yaml\">{}</pre></details></li>",
                esc(&format!("{namespace}/{name}")),
                ready(ready_now, problem.as_deref()),
                if conditions.is_empty() {
                    String::new()
                } else {
                    format!("<ul class=\"conditions\">{conditions}</ul>")
                },
                esc(&yaml)
            );
        }
        main.push_str("</ul></section>");
    }
    Ok(main)
}

#[derive(Deserialize)]
pub struct ApplyForm {
    yaml: String,
}

/// Applies pasted YAML as `kinetic apply` does, with the same errors.
pub async fn apply(
    State(state): State<ConsoleState>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<ApplyForm>,
) -> Response {
    let outcome = match state.control.apply_text("pasted YAML", &form.yaml).await {
        Ok(applied) => {
            tracing::info!(by = %caller.name, resources = applied.len(), "Resources applied from the console.");
            Ok(applied
                .iter()
                .map(|a| {
                    format!(
                        "{} {}/{} {}.",
                        esc(&a.kind),
                        esc(&a.namespace),
                        esc(&a.name),
                        esc(&a.outcome)
                    )
                })
                .collect::<Vec<_>>()
                .join(" "))
        }
        // The message `kinetic apply` prints: file, document, resource, field path and hint.
        Err(error) => Err(format!("<p>error: {}</p>", esc(&error.to_string()))),
    };
    let failed = outcome.is_err();
    let pasted = if failed { form.yaml.as_str() } else { "" };
    match resources_main(&state, &caller, Some(outcome), pasted).await {
        Ok(main) => html_response(
            if failed {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            },
            html::page("Resources", Nav::Resources, Some(&caller), false, &main),
        ),
        Err(error) => error_page(&caller, StatusCode::SERVICE_UNAVAILABLE, &error),
    }
}
