//! The last 15 minutes of the process's metrics, sampled every 2 s from its Prometheus registry:
//! what the console's rates, ratios, percentiles and instance graphs are computed from. Nothing is
//! added to the hot path: the registry is read the way a scrape reads it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

/// How often the registry is read.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How far back the history goes.
pub const SPAN: Duration = Duration::from_secs(15 * 60);

/// One reading of every series: `name{labels}` → value.
#[derive(Debug, Default)]
pub struct Sample {
    /// Unix milliseconds.
    pub at: i64,
    series: HashMap<String, f64>,
}

impl Sample {
    /// The text exposition format's samples (comments and malformed lines skipped).
    pub fn parse(at: i64, text: &str) -> Sample {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse::<f64>().ok()?))
            })
            .collect();
        Sample { at, series }
    }

    /// The sum of the series of metric `name` whose labels include every `key="value"` of
    /// `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(series, _)| matches(series, name, labels))
            .map(|(_, value)| value)
            .sum()
    }

    /// The histogram `name`'s cumulative bucket counts by upper bound, summed over the series
    /// matching `labels`.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_bound: Vec<(f64, f64)> = Vec::new();
        for (series, value) in &self.series {
            if !matches(series, &bucket, labels) {
                continue;
            }
            let Some(bound) = label(series, "le").map(|le| match le {
                "+Inf" => f64::INFINITY,
                other => other.parse().unwrap_or(f64::INFINITY),
            }) else {
                continue;
            };
            match by_bound.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, count)) => *count += value,
                None => by_bound.push((bound, *value)),
            }
        }
        by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_bound
    }
}

fn matches(series: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let (metric, rest) = match series.split_once('{') {
        Some((metric, rest)) => (metric, rest),
        None => (series, ""),
    };
    metric == name
        && labels
            .iter()
            .all(|(key, value)| label(rest, key) == Some(value))
}

/// The value of label `key` in `series` (`name{a="x",b="y"}` or just its label part).
fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = series.split_once('{').map_or(series, |(_, rest)| rest);
    loop {
        let (name, tail) = rest.split_once("=\"")?;
        let end = tail.find('"')?;
        if name.trim_start_matches(',').trim() == key {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
}

/// The samples of the last [`SPAN`], oldest first.
#[derive(Clone, Default)]
pub struct History {
    samples: Arc<Mutex<VecDeque<Arc<Sample>>>>,
}

impl History {
    /// Starts sampling `registry` every [`INTERVAL`] until the process ends.
    pub fn start(registry: Arc<Mutex<Registry>>) -> History {
        let history = History::default();
        let samples = history.samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let mut text = String::new();
                {
                    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
                    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
                        continue;
                    }
                }
                let sample = Arc::new(Sample::parse(chrono::Utc::now().timestamp_millis(), &text));
                let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
                let keep = (SPAN.as_millis() / INTERVAL.as_millis()) as usize + 1;
                while samples.len() >= keep {
                    samples.pop_front();
                }
                samples.push_back(sample);
            }
        });
        history
    }

    /// Every sample, oldest first.
    pub fn all(&self) -> Vec<Arc<Sample>> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The newest sample and the oldest one at most `window` older than it.
    pub fn window(&self, window: Duration) -> Option<(Arc<Sample>, Arc<Sample>)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let newest = samples.back()?.clone();
        let since = newest.at - window.as_millis() as i64;
        let oldest = samples.iter().find(|s| s.at >= since)?.clone();
        Some((oldest, newest))
    }
}

/// Per second over `(oldest, newest)`, for a counter; `None` before two samples exist.
pub fn rate(
    (oldest, newest): &(Arc<Sample>, Arc<Sample>),
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let seconds = (newest.at - oldest.at) as f64 / 1000.0;
    (seconds > 0.0).then(|| {
        let delta = newest.sum(name, labels) - oldest.sum(name, labels);
        delta.max(0.0) / seconds
    })
}

/// The `q` quantile (0–1) of the observations histogram `name` got within `(oldest, newest)`,
/// interpolated within its bucket as Prometheus' `histogram_quantile` does; `None` without any.
pub fn quantile(
    (oldest, newest): &(Arc<Sample>, Arc<Sample>),
    name: &str,
    labels: &[(&str, &str)],
    q: f64,
) -> Option<f64> {
    let before = oldest.buckets(name, labels);
    let after = newest.buckets(name, labels);
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            (*bound, (count - earlier).max(0.0))
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (bound, count) in counts {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            let share = if within > 0.0 {
                (rank - below) / within
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n\
        kinetic_broker_events_accepted_total{broker=\"default/a\"} 10\n\
        kinetic_broker_events_accepted_total{broker=\"default/b\"} 5\n\
        lat_bucket{revision=\"r\",le=\"0.1\"} 2\n\
        lat_bucket{revision=\"r\",le=\"1.0\"} 4\n\
        lat_bucket{revision=\"r\",le=\"+Inf\"} 4\n";

    #[test]
    fn samples_sum_series_by_labels() {
        let sample = Sample::parse(0, TEXT);
        assert_eq!(
            sample.sum("kinetic_broker_events_accepted_total", &[]),
            15.0
        );
        assert_eq!(
            sample.sum(
                "kinetic_broker_events_accepted_total",
                &[("broker", "default/b")]
            ),
            5.0
        );
        assert_eq!(
            sample.sum("kinetic_broker_events_accepted", &[("broker", "default/b")]),
            0.0
        );
        assert_eq!(
            sample.buckets("lat", &[("revision", "r")]),
            vec![(0.1, 2.0), (1.0, 4.0), (f64::INFINITY, 4.0)]
        );
    }

    #[test]
    fn rates_and_quantiles_cover_the_window_only() {
        let oldest = Arc::new(Sample::parse(0, TEXT));
        let newest = Arc::new(Sample::parse(
            2000,
            &TEXT
                .replace("} 10\n", "} 30\n")
                .replace("le=\"1.0\"} 4", "le=\"1.0\"} 12")
                .replace("le=\"+Inf\"} 4", "le=\"+Inf\"} 12"),
        ));
        let window = (oldest, newest);
        let accepted = "kinetic_broker_events_accepted_total";
        assert_eq!(
            rate(&window, accepted, &[("broker", "default/a")]),
            Some(10.0)
        );
        // 8 new observations, all between 0.1 and 1.0: the median is half-way.
        let median = quantile(&window, "lat", &[("revision", "r")], 0.5).unwrap();
        assert!((median - 0.55).abs() < 1e-9, "{median}");
        assert_eq!(quantile(&window, "lat", &[("revision", "x")], 0.5), None);
    }
}
