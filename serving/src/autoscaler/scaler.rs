//! The per-tick autoscaler, Knative's `scaling/autoscaler.go`: from the windowed metric and the
//! ready instances to a desired instance count and excess burst capacity, with panic mode and the
//! scale-down delay. Scale-to-zero timing, bounds and initial scale are the reconciler's part, in
//! [`super::kpa`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::config::Config;
use super::kpa::TICK;

/// What one tick of the autoscaler proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleResult {
    /// Instances wanted, before min/max bounds and scale-to-zero timing.
    pub desired: u32,
    /// Spare capacity beyond the target burst capacity; negative means the instances cannot absorb
    /// the burst and the activator must stay in the path. -1 when the TBC is -1, 0 when it is 0.
    pub excess_burst_capacity: i32,
}

/// The autoscaler's memory between ticks: panic mode and the scale-down-delay window.
#[derive(Debug, Clone)]
pub struct Scaler {
    /// When the panic-window metric last asked for at least the panic threshold; `None` outside
    /// panic mode. Panic ends one stable window after this.
    panic_since: Option<Instant>,
    /// The largest count wanted during the current panic; panic mode never goes below it.
    max_panic_pods: u32,
    delay: Option<MaxWindow>,
}

impl Scaler {
    /// A fresh autoscaler. Like Knative's, one that finds more than one instance already ready (a
    /// restart) starts in panic mode, holding that count until the windows have data again.
    pub fn new(ready_instances: u32, now: Instant) -> Self {
        Self {
            panic_since: (ready_instances > 1).then_some(now),
            max_panic_pods: ready_instances,
            delay: None,
        }
    }

    pub fn in_panic(&self) -> bool {
        self.panic_since.is_some()
    }

    /// One tick. `metrics` is the (stable, panic) average of the config's metric, `None` when the
    /// window has no data, which yields `None`: no proposal, keep the last one (Knative's invalid
    /// scale result). `reachable` is false for revisions no route sends traffic to.
    pub fn scale(
        &mut self,
        config: &Config,
        ready_instances: u32,
        reachable: bool,
        metrics: Option<(f64, f64)>,
        now: Instant,
    ) -> Option<ScaleResult> {
        let (stable, panic) = metrics?;
        // With no instance ready, rates apply as if there were one, so scaling from zero can go
        // straight to `max-scale-up-rate` instances.
        let ready = f64::from(ready_instances.max(1));
        let max_scale_up = (config.max_scale_up_rate * ready).ceil();
        let max_scale_down = if reachable {
            (ready / config.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let stable_pods = (stable / config.target).ceil();
        let panic_pods = (panic / config.target).ceil();
        let mut desired_stable = to_count(stable_pods.max(max_scale_down).min(max_scale_up));
        let mut desired_panic = to_count(panic_pods.max(max_scale_down).min(max_scale_up));
        if config.activation_scale > 1 {
            if stable_pods > 0.0 {
                desired_stable = desired_stable.max(config.activation_scale);
            }
            if panic_pods > 0.0 {
                desired_panic = desired_panic.max(config.activation_scale);
            }
        }

        let over_threshold = panic_pods / ready >= config.panic_threshold;
        match self.panic_since {
            // Begin panicking, or extend the panic while still over the threshold.
            _ if over_threshold => self.panic_since = Some(now),
            // Stop once a whole stable window passed below the threshold: the surge has made its
            // way into the stable average by then.
            Some(since) if since + config.stable_window < now => {
                self.panic_since = None;
                self.max_panic_pods = 0;
            }
            _ => {}
        }

        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            // Provision for whichever window asks more, and never scale down while panicking.
            desired = desired.max(desired_panic).max(self.max_panic_pods);
            self.max_panic_pods = desired;
        }

        if reachable && !config.scale_down_delay.is_zero() {
            let delay = match &mut self.delay {
                Some(delay) if delay.duration == config.scale_down_delay => delay,
                slot => slot.insert(MaxWindow::new(config.scale_down_delay, now)),
            };
            delay.record(now, desired);
            desired = delay.current();
        }

        let tbc = config.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0
        } else if tbc > 0.0 {
            let capacity = f64::from(ready_instances) * config.total_value;
            to_i32((capacity - tbc - panic).floor())
        } else {
            -1
        };
        Some(ScaleResult {
            desired,
            excess_burst_capacity,
        })
    }
}

/// Knative's excess burst capacity before the first tick: the initial instances' capacity minus
/// the target burst capacity.
pub fn initial_excess_burst_capacity(config: &Config) -> i32 {
    let tbc = config.target_burst_capacity;
    if tbc == 0.0 || tbc == -1.0 {
        return tbc as i32;
    }
    to_i32((f64::from(config.initial_scale) * config.total_value - tbc).trunc())
}

fn to_count(value: f64) -> u32 {
    // `as` saturates: negatives and NaN become 0, huge values u32::MAX.
    value as u32
}

fn to_i32(value: f64) -> i32 {
    value as i32
}

/// The maximum of the values recorded over the last `duration`, in buckets of one tick: Knative's
/// scale-down delay (`aggregation/max.TimeWindow`). Kept as a descending run of (bucket, value)
/// so the maximum is the front.
#[derive(Debug, Clone)]
struct MaxWindow {
    duration: Duration,
    origin: Instant,
    buckets: u64,
    maxima: VecDeque<(u64, u32)>,
}

impl MaxWindow {
    fn new(duration: Duration, origin: Instant) -> Self {
        Self {
            duration,
            origin,
            buckets: duration.as_nanos().div_ceil(TICK.as_nanos()).max(1) as u64,
            maxima: VecDeque::new(),
        }
    }

    fn record(&mut self, now: Instant, value: u32) {
        let bucket =
            (now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos()) as u64;
        let mut value = value;
        // A newer value at least as large makes older smaller ones irrelevant.
        while self.maxima.back().is_some_and(|&(_, old)| old <= value) {
            self.maxima.pop_back();
        }
        while self
            .maxima
            .front()
            .is_some_and(|&(old, _)| bucket.saturating_sub(old) >= self.buckets)
        {
            self.maxima.pop_front();
        }
        // Two records in one bucket keep the larger.
        if let Some(&(old_bucket, old_value)) = self.maxima.back()
            && old_bucket == bucket
        {
            value = value.max(old_value);
            self.maxima.pop_back();
        }
        self.maxima.push_back((bucket, value));
    }

    fn current(&self) -> u32 {
        self.maxima.front().map_or(0, |&(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Knative's test spec: the given target and TBC at 75 % utilization, panic at 200 %, rates 10.
    fn spec(target: f64, tbc: f64) -> Config {
        Config {
            target,
            total_value: target / 0.75,
            target_burst_capacity: tbc,
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
            max_scale_down_rate: 10.0,
            stable_window: Duration::from_secs(60),
            scale_down_delay: Duration::ZERO,
            activation_scale: 1,
            ..Config::default()
        }
    }

    /// Knative's `expectedEBC`.
    fn ebc(target: f64, tbc: f64, panic: f64, ready: u32) -> i32 {
        (target / 0.75 * f64::from(ready) - tbc - panic).floor() as i32
    }

    fn result(desired: u32, excess_burst_capacity: i32) -> Option<ScaleResult> {
        Some(ScaleResult {
            desired,
            excess_burst_capacity,
        })
    }

    fn secs(t0: Instant, seconds: u64) -> Instant {
        t0 + Duration::from_secs(seconds)
    }

    /// (label, config, ready, metrics, panicking with max pods, reachable, want).
    type Row = (
        &'static str,
        Config,
        u32,
        Option<(f64, f64)>,
        Option<u32>,
        bool,
        Option<ScaleResult>,
    );

    /// Knative's `TestAutoscalerScale` table.
    #[test]
    fn scales_like_knative() {
        let now = Instant::now();
        let small_up = Config {
            max_scale_up_rate: 1.1,
            ..spec(1.0, 1982.0)
        };
        let small_down = Config {
            max_scale_down_rate: 1.1,
            ..spec(10.0, 1982.0)
        };
        #[rustfmt::skip] // one row per case reads as a table
        let cases: &[Row] = &[
            ("no data, no proposal", spec(10.0, 100.0), 1, None, None, true, None),
            ("zero traffic scales to zero", spec(10.0, 100.0), 1, Some((0.0, 0.0)), None, true, result(0, ebc(10.0, 100.0, 0.0, 1))),
            ("unlimited TBC", spec(181.0, -1.0), 1, Some((21.0, 26.0)), None, true, result(1, -1)),
            ("zero TBC", spec(10.0, 0.0), 1, Some((50.0, 49.0)), None, true, result(5, 0)),
            ("stable, no change", spec(10.0, 100.0), 1, Some((50.0, 50.0)), None, true, result(5, ebc(10.0, 100.0, 50.0, 1))),
            ("panic uses the stable count when larger", spec(1.0, 100.0), 5, Some((50.0, 30.0)), Some(5), true, result(50, ebc(1.0, 100.0, 30.0, 5))),
            ("panic uses the panic count when larger", spec(1.0, 100.0), 5, Some((20.0, 30.0)), Some(5), true, result(30, ebc(1.0, 100.0, 30.0, 5))),
            ("stable, already scaled", spec(10.0, 100.0), 5, Some((50.0, 50.0)), None, true, result(5, ebc(10.0, 100.0, 50.0, 5))),
            ("small scale-up rate still grows by one", small_up, 2, Some((3.0, 3.1)), None, true, result(3, ebc(1.0, 1982.0, 3.1, 2))),
            ("small scale-down rate", small_down.clone(), 100, Some((1.0, 1.0)), None, true, result(90, ebc(10.0, 1982.0, 1.0, 100))),
            ("unreachable scales down at once", small_down, 100, Some((1.0, 1.0)), None, false, result(1, ebc(10.0, 1982.0, 1.0, 100))),
            ("panic doubles the count", spec(10.0, 84.0), 1, Some((50.0, 100.0)), None, true, result(10, ebc(10.0, 84.0, 100.0, 1))),
            ("rate-limited scale-up", spec(10.0, 61.0), 1, Some((1000.0, 1001.0)), None, true, result(10, ebc(10.0, 61.0, 1001.0, 1))),
            ("rate-limited scale-down", spec(10.0, 61.0), 100, Some((1.0, 1.0)), None, true, result(10, ebc(10.0, 61.0, 1.0, 100))),
            ("no ready instance counts as one", spec(10.0, 81.0), 0, Some((1000.0, 888.0)), None, true, result(10, ebc(10.0, 81.0, 888.0, 0))),
        ];
        for (label, config, ready, metrics, panic, reachable, want) in cases {
            let mut scaler = Scaler::new(0, now);
            if let Some(pods) = panic {
                scaler.panic_since = Some(now - Duration::from_secs(5));
                scaler.max_panic_pods = *pods;
            }
            let got = scaler.scale(config, *ready, *reachable, *metrics, now);
            assert_eq!(got, *want, "{label}");
        }
    }

    #[test]
    fn panic_starts_extends_and_ends_a_stable_window_later() {
        // Knative's TestAutoscalerUnpanicAfterSlowIncrease.
        let config = spec(1.0, 98.0);
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        assert_eq!(
            scaler.scale(&config, 10, true, Some((11.0, 25.0)), t0),
            result(25, ebc(1.0, 98.0, 25.0, 10))
        );
        assert_eq!(scaler.panic_since, Some(t0));
        // Half a window later, below the threshold: still panicking, from the same start.
        assert_eq!(
            scaler.scale(&config, 40, true, Some((30.0, 41.0)), secs(t0, 30)),
            result(41, ebc(1.0, 98.0, 41.0, 40))
        );
        assert_eq!(scaler.panic_since, Some(t0));
        // A stable window and a tick after the start: panic is over.
        assert_eq!(
            scaler.scale(&config, 55, true, Some((50.0, 56.0)), secs(t0, 62)),
            result(50, ebc(1.0, 98.0, 56.0, 55))
        );
        assert!(!scaler.in_panic());

        // Knative's TestAutoscalerExtendPanicWindow.
        let mut scaler = Scaler::new(0, t0);
        scaler.scale(&config, 10, true, Some((11.0, 25.0)), t0);
        assert_eq!(
            scaler.scale(&config, 40, true, Some((30.0, 80.0)), secs(t0, 30)),
            result(80, ebc(1.0, 98.0, 80.0, 40))
        );
        assert_eq!(scaler.panic_since, Some(secs(t0, 30)));
    }

    #[test]
    fn panic_holds_the_count_until_it_ends() {
        // Knative's TestAutoscalerPanicThenUnPanicScaleDown.
        let config = spec(10.0, 93.0);
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        assert_eq!(
            scaler
                .scale(&config, 1, true, Some((100.0, 100.0)), t0)
                .unwrap()
                .desired,
            10
        );
        let panic = secs(t0, 1);
        assert_eq!(
            scaler
                .scale(&config, 10, true, Some((100.0, 1000.0)), panic)
                .unwrap()
                .desired,
            100
        );
        let quiet = Some((1.0, 1.0));
        assert_eq!(
            scaler
                .scale(&config, 10, true, quiet, panic + Duration::from_secs(30))
                .unwrap()
                .desired,
            100
        );
        assert_eq!(
            scaler
                .scale(&config, 10, true, quiet, panic + Duration::from_secs(60))
                .unwrap()
                .desired,
            100,
            "not yet past the window"
        );
        assert_eq!(
            scaler
                .scale(&config, 10, true, quiet, panic + Duration::from_secs(61))
                .unwrap()
                .desired,
            1
        );
    }

    #[test]
    fn exponential_growth_is_tracked() {
        // Knative's TestAutoscalerPanicModeExponentialTrackAndStabilize.
        let config = spec(1.0, 101.0);
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        for (ready, load) in [
            (1, 6.0),
            (6, 36.0),
            (36, 216.0),
            (216, 1296.0),
            (1296, 1296.0),
        ] {
            let got = scaler.scale(&config, ready, true, Some((load, load)), t0);
            assert_eq!(
                got,
                result(load as u32, ebc(1.0, 101.0, load, ready)),
                "ready {ready}"
            );
        }
    }

    #[test]
    fn activation_scale_applies_only_to_non_zero_counts() {
        let config = Config {
            activation_scale: 2,
            ..spec(10.0, 75.0)
        };
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        assert_eq!(
            scaler
                .scale(&config, 1, true, Some((0.0, 0.0)), t0)
                .unwrap()
                .desired,
            0
        );
        assert_eq!(
            scaler
                .scale(&config, 1, true, Some((1.0, 0.0)), t0)
                .unwrap()
                .desired,
            2
        );
    }

    #[test]
    fn scale_down_waits_out_the_delay() {
        // Knative's TestAutoscalerScaleDownDelay, panic disabled by a huge threshold.
        let config = Config {
            panic_threshold: 100.0,
            scale_down_delay: Duration::from_secs(300),
            ..spec(10.0, 0.0)
        };
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        let mut at = |seconds: u64, load: f64| {
            scaler
                .scale(&config, 0, true, Some((load, load)), secs(t0, seconds))
                .unwrap()
                .desired
        };
        assert_eq!(at(2, 40.0), 4);
        assert_eq!(at(300, 0.0), 4, "less than the delay at the lower count");
        assert_eq!(at(302, 0.0), 0);
        // Gradual: each count holds for the delay after it was last wanted.
        assert_eq!(at(540, 40.0), 4);
        assert_eq!(at(600, 30.0), 4);
        assert_eq!(at(660, 0.0), 4);
        assert_eq!(at(840, 0.0), 3, "4 scrolled out");
        assert_eq!(at(900, 0.0), 0, "everything scrolled out");
    }

    #[test]
    fn scale_down_delay_does_not_hold_unreachable_revisions() {
        let config = Config {
            scale_down_delay: Duration::from_secs(300),
            ..spec(10.0, 0.0)
        };
        let t0 = Instant::now();
        let mut scaler = Scaler::new(0, t0);
        assert_eq!(
            scaler
                .scale(&config, 4, false, Some((40.0, 40.0)), t0)
                .unwrap()
                .desired,
            4
        );
        assert_eq!(
            scaler
                .scale(&config, 4, false, Some((0.0, 0.0)), secs(t0, 2))
                .unwrap()
                .desired,
            0
        );
        // Without delay, a lower count applies at once even within one tick.
        let config = spec(10.0, 0.0);
        let mut scaler = Scaler::new(0, t0);
        assert_eq!(
            scaler
                .scale(&config, 4, true, Some((40.0, 40.0)), t0)
                .unwrap()
                .desired,
            4
        );
        assert_eq!(
            scaler
                .scale(
                    &config,
                    4,
                    true,
                    Some((20.0, 20.0)),
                    t0 + Duration::from_millis(500)
                )
                .unwrap()
                .desired,
            2
        );
    }

    #[test]
    fn a_restart_with_instances_starts_in_panic() {
        let now = Instant::now();
        for ready in [0, 1] {
            let scaler = Scaler::new(ready, now);
            assert!(!scaler.in_panic());
            assert_eq!(scaler.max_panic_pods, ready);
        }
        let mut scaler = Scaler::new(2, now);
        assert!(scaler.in_panic());
        // It keeps both instances though the windows are nearly empty.
        let got = scaler
            .scale(&spec(10.0, 0.0), 2, true, Some((1.0, 1.0)), now)
            .unwrap();
        assert_eq!(got.desired, 2);
    }

    #[test]
    fn initial_excess_burst_capacity_follows_initial_scale() {
        let config = Config {
            initial_scale: 3,
            ..spec(75.0, 211.0)
        };
        assert_eq!(initial_excess_burst_capacity(&config), 300 - 211);
        assert_eq!(initial_excess_burst_capacity(&spec(75.0, -1.0)), -1);
        assert_eq!(initial_excess_burst_capacity(&spec(75.0, 0.0)), 0);
        let mut window = MaxWindow::new(Duration::from_secs(3), Instant::now());
        assert_eq!(window.buckets, 2, "3 s of 2 s ticks round up");
        window.record(window.origin, 5);
        window.record(window.origin + Duration::from_millis(100), 3);
        assert_eq!(
            window.current(),
            5,
            "two records in one tick keep the larger"
        );
    }

    proptest! {
        /// Per tick the count grows by at most the scale-up rate, except to reach the activation
        /// scale or to hold an earlier count (panic mode, scale-down delay); in panic mode it
        /// never shrinks.
        #[test]
        fn growth_is_rate_limited_and_panic_never_shrinks(
            steps in prop::collection::vec((0u32..50, 0.0f64..2000.0, 0.0f64..2000.0, 1u64..5), 1..60),
            up_rate in 1.1f64..20.0,
            delay in prop::sample::select(vec![0u64, 10, 60]),
            activation in 1u32..4,
        ) {
            let config = Config {
                max_scale_up_rate: up_rate,
                scale_down_delay: Duration::from_secs(delay),
                activation_scale: activation,
                ..Config::default()
            };
            let mut now = Instant::now();
            let mut scaler = Scaler::new(0, now);
            let mut highest = 0;
            let mut previous: Option<(bool, u32)> = None;
            for (ready, stable, panic, advance) in steps {
                now += Duration::from_secs(advance);
                let was_panicking = scaler.in_panic();
                let got = scaler.scale(&config, ready, true, Some((stable, panic)), now).unwrap().desired;
                let bound = (up_rate * f64::from(ready.max(1))).ceil() as u32;
                prop_assert!(got <= bound.max(activation).max(highest), "{got} > max({bound}, {activation}, {highest})");
                if let Some((true, before)) = previous && was_panicking && scaler.in_panic() && delay == 0 {
                    prop_assert!(got >= before, "panic mode shrank {before} -> {got}");
                }
                previous = Some((scaler.in_panic(), got));
                highest = highest.max(got);
            }
        }
    }
}
