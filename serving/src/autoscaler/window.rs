//! The metric windows: per-second buckets of a revision's concurrency and request count, averaged
//! over the stable and panic windows the way Knative's `TimedFloat64Buckets.WindowAverage` does.
//!
//! Averaging rules (Knative's): a window that started filling less than its length ago averages
//! over the seconds since its first sample; seconds missing *between* samples count as zero;
//! seconds missing *after* the last sample shrink the window instead (data that stopped arriving
//! is not news of idleness); a window with no sample for its whole length restarts from scratch.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Config;
use super::revision::Metric;

/// One second of a revision's traffic. Samples recorded in the same second add up, so each
/// instance (and the activator, while it holds requests) can record its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    concurrency: f64,
    requests: f64,
}

/// The stable and panic windows of one revision. Memory is one bucket per second of each window;
/// older seconds are overwritten.
#[derive(Debug, Clone)]
pub struct MetricWindow {
    /// Second 0 of the bucket index; set by the first sample.
    origin: Option<Instant>,
    stable: Ring,
    panic: Ring,
}

impl MetricWindow {
    /// Empty windows sized for the config's stable and panic windows.
    pub fn new(config: &Config) -> Self {
        let (stable, panic) = lengths(config);
        Self {
            origin: None,
            stable: Ring::new(stable),
            panic: Ring::new(panic),
        }
    }

    /// Records one second's sample: the average number of in-flight requests over that second and
    /// the number of requests that arrived in it. Samples older than the stable window are dropped.
    pub fn record(&mut self, now: Instant, concurrency: f64, requests: f64) {
        let origin = *self.origin.get_or_insert(now);
        let second = seconds_since(origin, now);
        let sample = Bucket {
            concurrency,
            requests,
        };
        self.stable.record(second, sample);
        self.panic.record(second, sample);
    }

    /// The (stable, panic) averages of the config's metric at `now`, or `None` when no sample
    /// arrived within the stable window (Knative's `ErrNoData`). Requests per second is the mean
    /// of the per-second request counts. Resizes the windows first if the config's changed.
    pub fn stable_and_panic(&mut self, now: Instant, config: &Config) -> Option<(f64, f64)> {
        let origin = self.origin?;
        let now = seconds_since(origin, now);
        let (stable, panic) = lengths(config);
        self.stable.resize(now, stable);
        self.panic.resize(now, panic);
        if now - self.stable.last? > self.stable.len() {
            return None;
        }
        let pick = |bucket: &Bucket| match config.metric {
            Metric::Concurrency => bucket.concurrency,
            Metric::Rps => bucket.requests,
        };
        Some((
            self.stable.average(now, pick),
            self.panic.average(now, pick),
        ))
    }
}

/// Knative's `TimedFloat64Buckets` with one-second buckets: a ring indexed by second modulo its
/// length.
#[derive(Debug, Clone)]
struct Ring {
    buckets: Vec<Bucket>,
    /// The first second of the current run of samples: the ring restarts when no sample arrived
    /// for its whole length.
    first: i64,
    /// The second of the newest sample.
    last: Option<i64>,
}

impl Ring {
    fn new(len: i64) -> Self {
        Self {
            buckets: vec![Bucket::default(); len as usize],
            first: 0,
            last: None,
        }
    }

    fn len(&self) -> i64 {
        self.buckets.len() as i64
    }

    fn index(&self, second: i64) -> usize {
        second.rem_euclid(self.len()) as usize
    }

    fn record(&mut self, second: i64, sample: Bucket) {
        match self.last {
            None => {
                self.first = second;
                self.last = Some(second);
            }
            Some(last) if second > last => {
                if second - last >= self.len() {
                    self.buckets.fill(Bucket::default());
                    self.first = second;
                } else {
                    for gap in last + 1..=second {
                        let index = self.index(gap);
                        self.buckets[index] = Bucket::default();
                    }
                }
                self.last = Some(second);
            }
            Some(last) if second < last => {
                // A late sample counts while its second is still inside the window.
                if second + self.len() <= last {
                    return;
                }
                self.first = self.first.min(second);
            }
            Some(_) => {}
        }
        let index = self.index(second);
        self.buckets[index].concurrency += sample.concurrency;
        self.buckets[index].requests += sample.requests;
    }

    /// Knative's `WindowAverage` over the ring's length ending at `now`.
    fn average(&self, now: i64, pick: impl Fn(&Bucket) -> f64) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let since_last = now - last;
        if since_last >= self.len() {
            return 0.0;
        }
        let start = now.max(last) - self.len() + 1;
        let sum: f64 = (start..=last)
            .map(|second| pick(&self.buckets[self.index(second)]))
            .sum();
        let seconds = (last - self.first + 1).min(self.len() - since_last.max(0));
        round6(sum / seconds as f64)
    }

    /// Knative's `ResizeWindow`: keeps the newest seconds that fit and treats the ring as having
    /// been full before, so a config change does not make the averages jump; data older than the
    /// old length is dropped.
    fn resize(&mut self, now: i64, len: i64) {
        let old = self.len();
        if len == old {
            return;
        }
        let mut buckets = vec![Bucket::default(); len as usize];
        match self.last {
            Some(last) if now - last <= old => {
                for second in (last - len.min(old) + 1)..=last {
                    buckets[second.rem_euclid(len) as usize] = self.buckets[self.index(second)];
                }
                self.first = last - (old - 1);
            }
            // Nothing to keep: every second of the new ring reads as zero.
            Some(last) => self.first = last - len,
            None => {}
        }
        self.buckets = buckets;
    }
}

/// The windows in whole seconds; the panic window never exceeds the stable one.
fn lengths(config: &Config) -> (i64, i64) {
    let stable = whole_seconds(config.stable_window).max(1);
    let panic = whole_seconds(config.panic_window).clamp(1, stable);
    (stable, panic)
}

fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Whole seconds from `origin` to `now`, rounded down (negative before the origin).
fn seconds_since(origin: Instant, now: Instant) -> i64 {
    if now >= origin {
        whole_seconds(now - origin)
    } else {
        let before = origin - now;
        -whole_seconds(before) - i64::from(before.subsec_nanos() > 0)
    }
}

/// Knative rounds averages to 6 decimals so float noise does not keep an idle revision at 1.
fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(stable: u64, panic: u64) -> Config {
        Config {
            stable_window: Duration::from_secs(stable),
            panic_window: Duration::from_secs(panic),
            ..Config::default()
        }
    }

    fn at(t0: Instant, millis: i64) -> Instant {
        if millis >= 0 {
            t0 + Duration::from_millis(millis as u64)
        } else {
            t0 - Duration::from_millis(millis.unsigned_abs())
        }
    }

    fn stable(window: &mut MetricWindow, now: Instant, config: &Config) -> Option<f64> {
        window
            .stable_and_panic(now, config)
            .map(|(stable, _)| stable)
    }

    /// Knative's `TestTimedFloat64BucketsWindowAverage`, on a 5 s window.
    #[test]
    fn averages_like_knative() {
        let config = config(5, 5);
        let mut w = MetricWindow::new(&config);
        let t0 = Instant::now();
        let s = |secs: i64| at(t0, secs * 1000);
        assert_eq!(w.stable_and_panic(t0, &config), None, "no data yet");

        w.record(t0, 1.0, 0.0);
        assert_eq!(
            stable(&mut w, t0, &config),
            Some(1.0),
            "a partial window averages its own seconds"
        );
        for i in 1..5 {
            w.record(s(i), (i + 1) as f64, 0.0);
        }
        assert_eq!(stable(&mut w, s(4), &config), Some(15.0 / 5.0));
        assert_eq!(
            stable(&mut w, at(t0, 3600), &config),
            Some(15.0 / 5.0),
            "now lags the last sample"
        );
        assert_eq!(
            stable(&mut w, s(6), &config),
            Some((15.0 - 1.0 - 2.0) / 3.0),
            "a trailing gap shrinks the window"
        );
        assert_eq!(
            stable(&mut w, s(10), &config),
            None,
            "no sample for more than a window"
        );

        w.record(s(6), 91.0, 0.0);
        assert_eq!(
            stable(&mut w, s(6), &config),
            Some((15.0 - 1.0 - 2.0 + 91.0) / 5.0),
            "a gap between samples counts as zero"
        );

        let t1 = s(60);
        let s1 = |secs: i64| at(t1, secs * 1000);
        w.record(t1, 1984.0, 0.0);
        assert_eq!(
            stable(&mut w, t1, &config),
            Some(1984.0),
            "the window restarts after a long gap"
        );
        w.record(s1(-3), 4.0, 0.0);
        assert_eq!(
            stable(&mut w, t1, &config),
            Some((4.0 + 1984.0) / 4.0),
            "a late sample extends the window back"
        );
        w.record(s1(1), 5.0, 0.0);
        assert_eq!(
            stable(&mut w, s1(1), &config),
            Some((4.0 + 1984.0 + 5.0) / 5.0)
        );
        w.record(s1(-2), 10.0, 0.0);
        assert_eq!(
            stable(&mut w, s1(1), &config),
            Some((4.0 + 10.0 + 1984.0 + 5.0) / 5.0)
        );
        w.record(s1(-5), 10.0, 0.0);
        w.record(s1(-4), 10.0, 0.0);
        assert_eq!(
            stable(&mut w, s1(1), &config),
            Some((4.0 + 10.0 + 1984.0 + 5.0) / 5.0),
            "samples a window old are dropped"
        );
        w.record(s1(6), 10.0, 0.0);
        assert_eq!(
            stable(&mut w, s1(6), &config),
            Some(10.0),
            "exactly a window without data restarts it"
        );
    }

    #[test]
    fn panic_window_averages_its_own_tail() {
        let config = config(10, 3);
        let mut w = MetricWindow::new(&config);
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        w.record(s(0), 0.0, 0.0);
        w.record(s(1), 1.0, 0.0);
        assert_eq!(w.stable_and_panic(s(1), &config), Some((0.5, 0.5)));
        for i in 2..10 {
            w.record(s(i), i as f64, 0.0);
        }
        assert_eq!(w.stable_and_panic(s(9), &config), Some((4.5, 8.0)));
        assert_eq!(
            w.stable_and_panic(s(11), &config),
            Some((44.0 / 8.0, 9.0)),
            "trailing gap, both windows"
        );
        assert_eq!(
            w.stable_and_panic(s(12), &config),
            Some((42.0 / 7.0, 0.0)),
            "the panic window ran dry"
        );
        // A gap longer than the panic window restarts only the panic window.
        w.record(s(14), 6.0, 0.0);
        assert_eq!(w.stable_and_panic(s(14), &config), Some((41.0 / 10.0, 6.0)));
    }

    #[test]
    fn rps_averages_request_counts_and_samples_in_one_second_add_up() {
        let mut config = config(6, 2);
        config.metric = Metric::Rps;
        let mut w = MetricWindow::new(&config);
        let t0 = Instant::now();
        w.record(t0, 3.0, 30.0);
        w.record(t0 + Duration::from_millis(400), 2.0, 20.0);
        w.record(t0 + Duration::from_secs(1), 1.0, 10.0);
        assert_eq!(
            w.stable_and_panic(t0 + Duration::from_secs(1), &config),
            Some((30.0, 30.0))
        );
        config.metric = Metric::Concurrency;
        assert_eq!(
            w.stable_and_panic(t0 + Duration::from_secs(1), &config),
            Some((3.0, 3.0))
        );
    }

    #[test]
    fn no_data_only_after_more_than_a_window() {
        let config = config(6, 2);
        let mut w = MetricWindow::new(&config);
        let t0 = Instant::now();
        w.record(t0, 7.0, 0.0);
        assert_eq!(
            w.stable_and_panic(t0 + Duration::from_secs(6), &config),
            Some((0.0, 0.0))
        );
        assert_eq!(
            w.stable_and_panic(t0 + Duration::from_secs(7), &config),
            None
        );
    }

    #[test]
    fn resizing_keeps_recent_data() {
        let small = config(10, 1);
        let mut w = MetricWindow::new(&small);
        let t0 = Instant::now();
        for i in 0..10 {
            w.record(t0 + Duration::from_secs(i), 1.0, 0.0);
        }
        let now = t0 + Duration::from_secs(9);
        let large = config(20, 2);
        assert_eq!(w.stable_and_panic(now, &large), Some((1.0, 1.0)));
        assert_eq!(w.stable.len(), 20);
        assert_eq!(w.stable_and_panic(now, &config(6, 1)), Some((1.0, 1.0)));
        assert_eq!(w.stable.len(), 6);
        // Data older than the old window is not resurrected by growing it.
        let later = now + Duration::from_secs(8);
        assert_eq!(w.stable_and_panic(later, &config(60, 6)), Some((0.0, 0.0)));
    }

    #[test]
    fn seconds_before_the_origin_round_down() {
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(seconds_since(t0, t0), 0);
        assert_eq!(seconds_since(t0, t0 + Duration::from_millis(1999)), 1);
        assert_eq!(seconds_since(t0, t0 - Duration::from_millis(1)), -1);
        assert_eq!(seconds_since(t0, t0 - Duration::from_millis(1000)), -1);
        assert_eq!(seconds_since(t0, t0 - Duration::from_millis(1001)), -2);
    }

    proptest! {
        /// Without gaps, both averages lie within the recorded samples, wherever `now` falls
        /// inside the window after the last sample.
        #[test]
        fn averages_lie_within_the_samples(
            samples in prop::collection::vec(0.0f64..1000.0, 1..150),
            stable in 6u64..90,
            panic_percent in 1u64..=100,
            wait in 0u64..90,
        ) {
            let panic = (stable * panic_percent / 100).max(1);
            let config = config(stable, panic);
            let wait = wait % stable;
            let mut w = MetricWindow::new(&config);
            let t0 = Instant::now();
            for (i, value) in samples.iter().enumerate() {
                w.record(t0 + Duration::from_millis(i as u64 * 1000 + 300), *value, 0.0);
            }
            let last = t0 + Duration::from_millis((samples.len() as u64 - 1) * 1000 + 300);
            let (s, p) = w.stable_and_panic(last + Duration::from_secs(wait), &config).unwrap();
            let low = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let high = samples.iter().copied().fold(0.0, f64::max);
            prop_assert!(s >= low - 1e-6 && s <= high + 1e-6, "stable {s} outside [{low}, {high}]");
            if wait < panic {
                prop_assert!(p >= low - 1e-6 && p <= high + 1e-6, "panic {p} outside [{low}, {high}]");
            } else {
                prop_assert_eq!(p, 0.0);
            }
        }

        /// With gaps (counted as zeros) and late samples, averages stay within [0, max sample].
        #[test]
        fn averages_are_bounded_with_gaps(
            samples in prop::collection::btree_map(0u64..500, 0.0f64..1000.0, 1..100),
            order in any::<prop::sample::Index>(),
            query in 0u64..500,
        ) {
            let config = config(60, 6);
            let mut w = MetricWindow::new(&config);
            let t0 = Instant::now();
            // One sample per second, in an arbitrary rotation of time order so some arrive late.
            let mut seconds: Vec<(u64, f64)> = samples.into_iter().collect();
            let split = order.index(seconds.len());
            seconds.rotate_left(split);
            for (second, value) in &seconds {
                w.record(t0 + Duration::from_secs(*second), *value, 0.0);
            }
            let high = seconds.iter().map(|(_, v)| *v).fold(0.0, f64::max);
            if let Some((s, p)) = w.stable_and_panic(t0 + Duration::from_secs(query), &config) {
                prop_assert!((0.0..=high + 1e-6).contains(&s), "stable {s} above {high}");
                prop_assert!((0.0..=high + 1e-6).contains(&p), "panic {p} above {high}");
            }
        }
    }
}
