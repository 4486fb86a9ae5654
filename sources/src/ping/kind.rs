//! PingSource in the controller: one task per source that sleeps until the next tick, claims it
//! in the store and sends it. Time comes from the controller's [`crate::clock::Clock`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use kinetic_api::sources::PingSource;
use kinetic_store::StoredResource;
use tokio_util::sync::CancellationToken;

use super::{Due, PingPayload, Schedule};
use crate::controller::kind::{self, Kind, Prepared};
use crate::controller::{Key, Sources, sleep_or_cancel};
use crate::sink::{SinkError, Target};

/// Longest a PingSource task sleeps before looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub(crate) struct PingKind;

/// What a PingSource's task runs.
struct Ping {
    source: PingSource,
    /// The source's uid, part of each tick's event id.
    uid: String,
    /// When the source's current spec was applied.
    applied: Option<DateTime<Utc>>,
    schedule: Schedule,
    sink: Target,
}

impl Kind for PingKind {
    fn kind(&self) -> &'static str {
        "PingSource"
    }

    fn prepare(&self, sources: &Arc<Sources>, stored: &StoredResource) -> Result<Prepared, String> {
        let source: PingSource = kind::read(stored)?;
        let (zone, cron) = source.spec.schedule_parts();
        let schedule = Schedule::parse(cron, zone).map_err(|e| e.to_string())?;
        let sink = kind::sink_of(sources, self, stored, &source.spec.sink)?;
        let uid = stored.uid.clone();
        // Ticks before the source's spec was applied (its creation, or its last change) never
        // fire; a tick missed since then (kinetic was down) fires late, once.
        let applied = DateTime::from_timestamp_millis(stored.updated_at);
        Ok(Prepared::task(sink, move |sources, key, sink, cancel| {
            let task = Ping {
                source,
                uid,
                applied,
                schedule,
                sink,
            };
            run(sources, key, task, cancel)
        }))
    }

    fn state_key(&self, namespace: &str, name: &str) -> Option<String> {
        Some(super::tick_key(namespace, name))
    }
}

/// One PingSource: sleeps until its next tick, claims the tick in the store (so one process fires
/// it, once, even with several processes on one PostgreSQL), and sends it until the sink accepts.
async fn run(sources: Arc<Sources>, key: Key, task: Ping, cancel: CancellationToken) {
    let Ping {
        source,
        uid,
        applied,
        schedule,
        sink,
    } = task;
    let (namespace, name) = (key.1.clone(), key.2.clone());
    let checkpoint = super::tick_key(&namespace, &name);
    let created = applied.unwrap_or_else(|| sources.clock.now());
    loop {
        let now = sources.clock.now();
        let last = match sources.store.get_checkpoint(&checkpoint).await {
            Ok(found) => super::last_fired(found.as_ref()),
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "Reading a PingSource's checkpoint failed; retrying.");
                if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
                    return;
                }
                continue;
            }
        };
        let last = match last {
            Ok(last) => last,
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "A PingSource's checkpoint is unreadable; starting from now.");
                None
            }
        };
        match super::due(&schedule, last, created, now) {
            Due::Wait { next } => {
                sources.update(&key, |s| s.next_at = next);
                let wait = next
                    .and_then(|next| (next - now).to_std().ok())
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP);
                if sources.clock.sleep(wait, &cancel).await {
                    return;
                }
            }
            Due::Fire { tick, skipped } => {
                let claimed = super::claim_tick(
                    sources.store.as_ref(),
                    &checkpoint,
                    tick,
                    now.timestamp_millis(),
                )
                .await;
                match claimed {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::warn!(%namespace, %name, %error, "Claiming a tick failed; retrying.");
                        if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
                            return;
                        }
                        continue;
                    }
                }
                if skipped {
                    tracing::info!(%namespace, %name, %tick, "Ticks were missed while kinetic was down; firing only the latest.");
                }
                let payload = PingPayload {
                    data: source.spec.data.as_deref(),
                    data_base64: source.spec.data_base64.as_deref(),
                    content_type: source.spec.content_type.as_deref(),
                    extensions: source.spec.ce_overrides.as_ref().map(|o| &o.extensions),
                };
                let event = super::ping_event(&namespace, &name, &uid, tick, &payload)
                    .map_err(|e| e.to_string())
                    .and_then(|e| to_cloud_event(e).map_err(|e| e.to_string()));
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        sources.failed(&key, error);
                        continue;
                    }
                };
                match sources
                    .sink
                    .send_until_accepted(&sink, &event, &cancel)
                    .await
                {
                    Ok(()) => {
                        sources.accepted(&key, tick);
                        sources.update(&key, |s| s.last_error = None);
                    }
                    Err(SinkError::Cancelled) => return,
                    Err(error) => {
                        tracing::warn!(%namespace, %name, %error, "The sink refused a tick; it is dropped.");
                        sources.failed(&key, error.to_string());
                    }
                }
            }
        }
    }
}

fn to_cloud_event(tick: super::PingEvent) -> Result<Event, cloudevents::event::EventBuilderError> {
    let mut builder = EventBuilderV10::new()
        .id(tick.id)
        .source(tick.source)
        .ty(tick.ty)
        .time(tick.time);
    for (name, value) in tick.extensions {
        builder = builder.extension(&name, value);
    }
    let mut event = builder.build()?;
    if let Some(data) = tick.data {
        match tick.datacontenttype {
            Some(content_type) => {
                event.set_data(content_type, cloudevents::Data::Binary(data));
            }
            None => {
                event.set_data_unchecked(cloudevents::Data::Binary(data));
            }
        }
    }
    Ok(event)
}
