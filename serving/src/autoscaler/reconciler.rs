//! The KPA reconciler's half of a decision (Knative's `kpa/scaler.go` and `kpa/kpa.go`): min/max
//! bounds and initial scale over the autoscaler's proposal, the scale-to-zero timing
//! (`handleScaleToZero`), and the Active/Activating/Inactive condition that timing runs on
//! (`computeActiveCondition`).

use std::time::Duration;

use tokio::time::Instant;

use super::config::Config;
use super::kpa::{Activity, Observation, State};

pub(super) struct Scale {
    pub(super) want: Option<u32>,
    /// Whether `want` replaces the instance count, or only informs the condition and the
    /// activator while a timer runs.
    pub(super) apply: bool,
    pub(super) wake_at: Option<Instant>,
}

/// Knative's `scaler.scale`: bounds, initial scale, then scale-to-zero timing.
pub(super) fn reconcile_scale(
    config: &Config,
    state: &State,
    reachable: bool,
    now: Instant,
) -> Scale {
    let activating = state.activity == Activity::Activating;
    if state.proposed.is_none() && !activating {
        return Scale {
            want: None,
            apply: false,
            wake_at: None,
        };
    }
    let (mut min, max) = bounds(config, reachable);
    if config.initial_scale > 1 && !state.initialized && reachable {
        min = min.max(config.initial_scale);
    }
    // An unknown proposal while activating is held at the lower bound.
    let want = match state.proposed {
        Some(proposed) if proposed < min => min,
        Some(proposed) if max != 0 && proposed > max => max,
        Some(proposed) => proposed,
        None => min,
    };
    handle_scale_to_zero(config, state, reachable, want, now)
}

/// Knative's `ScaleBounds`: min-scale is ignored for revisions no route sends traffic to.
fn bounds(config: &Config, reachable: bool) -> (u32, u32) {
    let min = if reachable { config.min_scale } else { 0 };
    (min, config.max_scale)
}

/// Knative's `handleScaleToZero`.
fn handle_scale_to_zero(
    config: &Config,
    state: &State,
    reachable: bool,
    want: u32,
    now: Instant,
) -> Scale {
    let apply = |want: u32| Scale {
        want: Some(want),
        apply: true,
        wake_at: None,
    };
    if want != 0 {
        return apply(want);
    }
    if !config.enable_scale_to_zero {
        return apply(1);
    }
    let elapsed = now.saturating_duration_since(state.activity_since);
    match state.activity {
        // Stuck activating past the deadline: give up and scale to zero.
        Activity::Activating if elapsed >= config.activation_timeout => apply(0),
        Activity::Activating => Scale {
            want: None,
            apply: false,
            wake_at: Some(state.activity_since + config.activation_timeout),
        },
        // Idle for a stable window since becoming active: mark inactive, keep the instances.
        Activity::Active if elapsed >= config.stable_window => Scale {
            want: Some(0),
            apply: false,
            wake_at: None,
        },
        // Otherwise hold one instance for the rest of that window.
        Activity::Active => Scale {
            want: Some(1),
            apply: true,
            wake_at: Some(state.activity_since + config.stable_window),
        },
        Activity::Inactive => {
            let grace = config.scale_to_zero_grace_period;
            let retention = if reachable {
                config.scale_to_zero_pod_retention_period
            } else {
                Duration::ZERO
            };
            let wait = |until: Instant| Scale {
                want: Some(0),
                apply: false,
                wake_at: Some(until),
            };
            if elapsed >= grace.max(retention) {
                return apply(0);
            }
            if elapsed < retention {
                return wait(state.activity_since + retention);
            }
            let proxied = state
                .proxy_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
            if proxied >= grace {
                apply(0)
            } else {
                wait(now + (grace - proxied))
            }
        }
    }
}

/// Knative's `computeActiveCondition`.
pub(super) fn update_activity(
    config: &Config,
    state: &mut State,
    observation: &Observation,
    want: Option<u32>,
    now: Instant,
) {
    let (min, _) = bounds(config, observation.reachable);
    let min_ready = if state.initialized {
        min.max(1)
    } else {
        min.max(config.initial_scale)
    };
    let ready = observation.ready_instances;
    if ready >= min_ready {
        state.initialized = true;
    }
    let wanted = want.is_some_and(|want| want > 0);
    let inactive = state.activity == Activity::Inactive;
    let next = if want == Some(0) || min_ready == 0 {
        Activity::Inactive
    } else if ready < min_ready {
        if wanted || !inactive {
            Activity::Activating
        } else {
            Activity::Inactive
        }
    } else if wanted || !inactive {
        Activity::Active
    } else {
        state.activity
    };
    if next != state.activity {
        state.activity = next;
        state.activity_since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::kpa::decide;

    fn state(
        now: Instant,
        desired: u32,
        proposed: Option<u32>,
        activity: Activity,
        for_secs: u64,
    ) -> State {
        State::settled(now, desired, proposed, activity, for_secs)
    }

    struct Case {
        label: &'static str,
        state: State,
        config: Config,
        reachable: bool,
        want_desired: u32,
        want: Option<u32>,
        wake_in: Option<u64>,
    }

    /// Knative's `TestScaler` (kpa/scaler_test.go): the reconciler's half, with the autoscaler's
    /// proposal given and no new metrics.
    #[test]
    fn reconciles_like_knative() {
        let now = Instant::now();
        let base = Config::default();
        let with = |f: &dyn Fn(&mut Config)| {
            let mut config = base.clone();
            f(&mut config);
            config
        };
        let retention = |seconds| {
            with(&|c| c.scale_to_zero_pod_retention_period = Duration::from_secs(seconds))
        };
        use Activity::*;
        let case = |label, state, config, want_desired, want, wake_in| Case {
            label,
            state,
            config,
            reachable: true,
            want_desired,
            want,
            wake_in,
        };
        #[rustfmt::skip] // one row per case reads as a table
        let mut cases = vec![
            case("waits to scale to zero (just before idle period)", state(now, 1, Some(0), Active, 59), base.clone(), 1, Some(1), Some(1)),
            case("scale to 1 waiting for idle expires", state(now, 10, Some(0), Active, 59), base.clone(), 1, Some(1), Some(1)),
            case("goes inactive after the idle period, keeping the instance", state(now, 1, Some(0), Active, 60), base.clone(), 1, Some(0), None),
            case("scale to zero after grace period", state(now, 1, Some(0), Inactive, 30), base.clone(), 0, Some(0), None),
            case("waits to scale to zero (just before grace period)", state(now, 1, Some(0), Inactive, 29), base.clone(), 1, Some(0), Some(1)),
            case("can't scale to zero after grace period, before last pod retention", state(now, 1, Some(0), Inactive, 30), retention(60), 1, Some(0), Some(30)),
            case("scale to zero after grace period and last pod retention", state(now, 1, Some(0), Inactive, 30), retention(30), 0, Some(0), None),
            case("retention shorter than grace waits for grace", state(now, 1, Some(0), Inactive, 29), retention(20), 1, Some(0), Some(1)),
            case("waits while activating until the deadline", state(now, 1, Some(0), Activating, 315), base.clone(), 1, None, Some(315)),
            case("scale to zero while activating after the deadline", state(now, 1, Some(0), Activating, 631), base.clone(), 0, Some(0), None),
            case("scale down to min-scale before grace period", state(now, 10, Some(0), Inactive, 29), with(&|c| c.min_scale = 2), 2, Some(2), None),
            case("scales up", state(now, 1, Some(10), Active, 100), base.clone(), 10, Some(10), None),
            case("scales up to max-scale", state(now, 1, Some(10), Active, 100), with(&|c| c.max_scale = 8), 8, Some(8), None),
            case("scale up inactive revision", state(now, 1, Some(10), Inactive, 15), base.clone(), 10, Some(10), None),
            case("does not scale up from zero with no metrics", state(now, 0, None, Inactive, 0), base.clone(), 0, None, None),
            case("scales up from zero to desired one", state(now, 0, Some(1), Activating, 0), base.clone(), 1, Some(1), None),
            case("scales up from zero to desired high scale", state(now, 0, Some(10), Activating, 0), base.clone(), 10, Some(10), None),
            case("unknown scale does not scale", state(now, 12, None, Active, 0), base.clone(), 12, None, None),
            case("initial scale attained, now time to scale down", state(now, 2, Some(0), Active, 30), with(&|c| c.initial_scale = 2), 1, Some(1), Some(30)),
            case("enable-scale-to-zero false keeps one", state(now, 3, Some(0), Inactive, 100), with(&|c| c.enable_scale_to_zero = false), 1, Some(1), None),
            case("enable-scale-to-zero false observes min-scale", state(now, 3, Some(0), Inactive, 100), with(&|c| {c.enable_scale_to_zero = false; c.min_scale = 2}), 2, Some(2), None),
            case("enable-scale-to-zero false with no proposal yet", state(now, 0, None, Activating, 0), with(&|c| c.enable_scale_to_zero = false), 1, Some(1), None),
        ];

        let mut not_initialized =
            |label, desired, proposed, initial, reachable, want_desired, want, wake_in| {
                let mut state = state(now, desired, proposed, Activating, 0);
                state.initialized = false;
                cases.push(Case {
                    label,
                    state,
                    config: with(&|c| c.initial_scale = initial),
                    reachable,
                    want_desired,
                    want,
                    wake_in,
                });
            };
        not_initialized(
            "initial scale overrides a smaller proposal",
            0,
            Some(1),
            2,
            true,
            2,
            Some(2),
            None,
        );
        not_initialized(
            "initial scale reached for the first time",
            5,
            Some(1),
            5,
            true,
            5,
            Some(5),
            None,
        );
        not_initialized(
            "initial scale holds before metrics",
            5,
            None,
            5,
            true,
            5,
            Some(5),
            None,
        );
        not_initialized(
            "unreachable revisions ignore initial scale",
            2,
            Some(0),
            2,
            false,
            2,
            None,
            Some(630),
        );

        let mut unreachable = |label, state, config, want_desired, want, wake_in| {
            cases.push(Case {
                label,
                state,
                config,
                reachable: false,
                want_desired,
                want,
                wake_in,
            });
        };
        unreachable(
            "unreachable ignores last pod retention",
            state(now, 1, Some(0), Inactive, 30),
            retention(300),
            0,
            Some(0),
            None,
        );
        unreachable(
            "unreachable still waits for grace",
            state(now, 1, Some(0), Inactive, 29),
            retention(300),
            1,
            Some(0),
            Some(1),
        );
        unreachable(
            "unreachable ignores min-scale",
            state(now, 10, Some(0), Inactive, 30),
            with(&|c| c.min_scale = 2),
            0,
            Some(0),
            None,
        );

        for mut case in cases {
            let observation = Observation {
                ready_instances: case.state.desired,
                metrics: None,
                reachable: case.reachable,
            };
            let decision = decide(&case.config, &mut case.state, &observation, now);
            assert_eq!(
                decision.desired, case.want_desired,
                "{}: desired",
                case.label
            );
            assert_eq!(decision.want, case.want, "{}: want", case.label);
            let wake = decision.wake_at.map(|at| (at - now).as_secs());
            assert_eq!(wake, case.wake_in, "{}: wake_at", case.label);
        }
    }

    /// Knative's `computeActiveCondition` table: (want, ready, min-scale, before) -> after.
    #[test]
    fn active_condition_follows_knatives_table() {
        use Activity::*;
        let now = Instant::now();
        #[rustfmt::skip] // one row per case reads as a table
        let cases = [
            (Some(0), 5, 0, Active, Inactive),
            (Some(2), 0, 0, Inactive, Activating),
            (Some(2), 1, 0, Activating, Active),
            (Some(2), 1, 2, Activating, Activating),
            (None, 0, 0, Inactive, Inactive),
            (None, 0, 0, Activating, Activating),
            (None, 0, 0, Active, Activating),
            (None, 1, 0, Inactive, Inactive),
            (None, 1, 0, Activating, Active),
            (None, 1, 0, Active, Active),
        ];
        for (want, ready, min, before, after) in cases {
            let config = Config {
                min_scale: min,
                ..Config::default()
            };
            let mut state = state(now, ready, None, before, 10);
            let since = state.activity_since;
            update_activity(
                &config,
                &mut state,
                &Observation::new(ready, None),
                want,
                now,
            );
            assert_eq!(
                state.activity, after,
                "want {want:?}, ready {ready}, min {min}, from {before:?}"
            );
            let expected_since = if before == after { since } else { now };
            assert_eq!(
                state.activity_since, expected_since,
                "the clock restarts only on a change"
            );
        }
        // Before initialization the threshold is the initial scale; zero initial scale is inactive.
        let config = Config {
            initial_scale: 0,
            ..Config::default()
        };
        let mut state = State::new(&config, now);
        update_activity(&config, &mut state, &Observation::new(0, None), None, now);
        assert_eq!(state.activity, Inactive);
    }
}
