//! The KPA decider: one pure [`decide`] per tick (or per poke) that turns the windowed metric and
//! the ready instances into how many instances a revision should run and whether the activator
//! must be in its request path.
//!
//! It chains Knative's two halves. First the autoscaler's tick ([`Scaler::scale`]): desired count
//! from the stable and panic averages, rate limits, panic mode, scale-down delay, excess burst
//! capacity. Then the KPA reconciler (`reconciler.rs`, Knative's `kpa/scaler.go` and
//! `kpa/kpa.go`): min/max bounds, initial
//! scale, the Active/Activating/Inactive condition, and the scale-to-zero timing: a revision goes
//! inactive only after a stable window of idleness counted from when it became active, and loses
//! its last instance only once the activator has been in the path for the grace period (or it has
//! been inactive that long) and the pod retention period has passed.
//!
//! Kinetic has no activator probe: the activator is in the path exactly when a decision says so,
//! so the "in proxy mode for" clock starts at the first decision with `activator_in_path`.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Config;
use super::reconciler::{Scale, reconcile_scale, update_activity};
use super::scaler::{Scaler, initial_excess_burst_capacity};

/// How often the autoscaler re-evaluates each revision, as Knative's `tick-interval`.
pub const TICK: Duration = Duration::from_secs(2);

/// Knative's PodAutoscaler `Active` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Instances were asked for and fewer than needed are ready (`Active=Unknown`).
    Activating,
    /// Enough instances are ready (`Active=True`).
    Active,
    /// Scaled, or scaling, to zero (`Active=False`).
    Inactive,
}

/// What the decider carries between calls for one revision.
#[derive(Debug, Clone)]
pub struct State {
    pub(super) scaler: Scaler,
    /// The autoscaler's last proposal (Knative's decider `DesiredScale`); `None` until it has had
    /// data, Knative's -1.
    pub(super) proposed: Option<u32>,
    pub(super) excess_burst_capacity: i32,
    /// Instances asked of the runtime (Knative's Deployment `replicas`).
    pub(super) desired: u32,
    pub(super) activity: Activity,
    pub(super) activity_since: Instant,
    /// Whether the revision has once had as many ready instances as its initial scale (Knative's
    /// `ScaleTargetInitialized`); from then on initial scale no longer applies.
    pub(super) initialized: bool,
    /// Since when the activator has been in the request path.
    pub(super) proxy_since: Option<Instant>,
}

impl State {
    /// A new revision: it runs `initial-scale` instances and is activating, as Knative creates the
    /// Deployment with `replicas = initial-scale` and the PodAutoscaler `Active=Unknown`.
    pub fn new(config: &Config, now: Instant) -> Self {
        Self {
            scaler: Scaler::new(0, now),
            proposed: None,
            excess_burst_capacity: initial_excess_burst_capacity(config),
            desired: config.initial_scale,
            activity: Activity::Activating,
            activity_since: now,
            initialized: false,
            proxy_since: None,
        }
    }

    /// A revision found running after kinetic restarted: it keeps `ready_instances`, counts as
    /// active and initialized, and (as Knative's autoscaler after a restart) starts in panic mode
    /// when more than one instance runs, so it does not scale down before its windows refill.
    pub fn restarted(config: &Config, ready_instances: u32, now: Instant) -> Self {
        Self {
            scaler: Scaler::new(ready_instances, now),
            proposed: None,
            excess_burst_capacity: initial_excess_burst_capacity(config),
            desired: ready_instances,
            activity: if ready_instances > 0 {
                Activity::Active
            } else {
                Activity::Inactive
            },
            activity_since: now,
            initialized: true,
            proxy_since: None,
        }
    }

    /// Instances currently asked of the runtime.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    pub fn activity(&self) -> Activity {
        self.activity
    }

    /// Whether a sample with this concurrency should trigger an immediate [`decide`] rather than
    /// wait for the next tick: the revision is at (or headed to) zero and a request arrived, as
    /// Knative's `MultiScaler.Poke`.
    pub fn wants_poke(&self, concurrency: f64) -> bool {
        concurrency > 0.0 && (self.desired == 0 || self.proposed == Some(0))
    }
}

#[cfg(test)]
impl State {
    /// A state as the reconciler would find it: `desired` instances running, the autoscaler's
    /// last proposal, the Active condition for `for_secs`, initialized, and (as kinetic does) the
    /// activator in the path since the revision went inactive.
    pub(super) fn settled(
        now: Instant,
        desired: u32,
        proposed: Option<u32>,
        activity: Activity,
        for_secs: u64,
    ) -> State {
        let mut state = State::new(&Config::default(), now);
        let since = now - Duration::from_secs(for_secs);
        state.desired = desired;
        state.proposed = proposed;
        state.activity = activity;
        state.activity_since = since;
        state.initialized = true;
        state.proxy_since = (activity == Activity::Inactive).then_some(since);
        state
    }
}

/// What the runtime and router observe of a revision at decision time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Instances ready to take requests.
    pub ready_instances: u32,
    /// The (stable, panic) averages from [`super::MetricWindow::stable_and_panic`]; `None` when no
    /// data arrived within the stable window.
    pub metrics: Option<(f64, f64)>,
    /// False when no route sends traffic to the revision: min-scale, initial scale, scale-down
    /// delay and pod retention then no longer hold it up (Knative's `Reachability: Unreachable`).
    pub reachable: bool,
}

impl Observation {
    /// A routed revision.
    pub fn new(ready_instances: u32, metrics: Option<(f64, f64)>) -> Self {
        Self {
            ready_instances,
            metrics,
            reachable: true,
        }
    }
}

/// The outcome of one [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Instances the runtime should run.
    pub desired: u32,
    /// The scale the KPA wants this round (Knative's PodAutoscaler `desiredScale`); `None` while
    /// unknown (no metrics yet, or waiting out an activation). May differ from `desired` while a
    /// scale to zero waits for the grace or retention period.
    pub want: Option<u32>,
    pub excess_burst_capacity: i32,
    pub panic: bool,
    /// Whether requests must go through the activator (Knative's SKS proxy mode): always for
    /// TBC -1, at zero for TBC 0, and whenever the excess burst capacity is negative otherwise;
    /// in every case while no instance is ready.
    pub activator_in_path: bool,
    /// When a pending scale-to-zero timer expires; the caller should decide again at the earlier
    /// of this and its next tick.
    pub wake_at: Option<Instant>,
    pub activity: Activity,
}

/// Decides how many instances a revision should run now.
///
/// Call it every [`TICK`] with the window's averages, and also right away when a request reaches
/// a revision at zero (see [`State::wants_poke`]): record the activator's sample in the window
/// first, and a concurrency above zero then yields `desired >= 1` (or `activation-scale`) at once.
///
/// With no metrics yet, the autoscaler proposes nothing (Knative's -1): `desired` stays what it
/// was, except that an activating revision is held at its min-scale and initial scale.
pub fn decide(
    config: &Config,
    state: &mut State,
    observation: &Observation,
    now: Instant,
) -> Decision {
    if let Some(result) = state.scaler.scale(
        config,
        observation.ready_instances,
        observation.reachable,
        observation.metrics,
        now,
    ) {
        state.proposed = Some(result.desired);
        state.excess_burst_capacity = result.excess_burst_capacity;
    }

    let Scale {
        want,
        apply,
        wake_at,
    } = reconcile_scale(config, state, observation.reachable, now);
    if apply && let Some(want) = want {
        state.desired = want;
    }

    let activator_in_path = activator_in_path(
        want,
        state.excess_burst_capacity,
        observation.ready_instances,
    );
    state.proxy_since = activator_in_path.then(|| state.proxy_since.unwrap_or(now));

    update_activity(config, state, observation, want, now);

    Decision {
        desired: state.desired,
        want,
        excess_burst_capacity: state.excess_burst_capacity,
        panic: state.scaler.in_panic(),
        activator_in_path,
        wake_at,
        activity: state.activity,
    }
}

/// Knative's SKS mode: the activator leaves the path only when instances are wanted, they can
/// absorb the target burst capacity, and at least one is ready to take the requests.
pub fn activator_in_path(
    want: Option<u32>,
    excess_burst_capacity: i32,
    ready_instances: u32,
) -> bool {
    let serve = matches!(want, Some(want) if want > 0 && excess_burst_capacity >= 0);
    !serve || ready_instances == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscaler::config::Defaults;
    use proptest::prelude::*;

    const GRACE: Duration = Duration::from_secs(30);
    const WINDOW: Duration = Duration::from_secs(60);

    fn state(
        now: Instant,
        desired: u32,
        proposed: Option<u32>,
        activity: Activity,
        for_secs: u64,
    ) -> State {
        State::settled(now, desired, proposed, activity, for_secs)
    }

    #[test]
    fn the_activator_leaves_the_path_only_with_spare_capacity() {
        let now = Instant::now();
        // (TBC, ready, panic concurrency, proposal wanted) -> in path.
        #[rustfmt::skip] // one row per case reads as a table
        let cases = [
            (-1.0, 5, 0.0, true),
            (0.0, 1, 50.0, false),
            (0.0, 0, 0.0, true),
            (211.0, 1, 0.0, true),
            (211.0, 3, 0.0, false),
            (211.0, 3, 100.0, true),
            (10.0, 1, 50.0, false),
        ];
        for (tbc, ready, panic, in_path) in cases {
            let config = Config {
                target_burst_capacity: tbc,
                ..Config::default()
            };
            let mut state = state(now, ready, None, Activity::Active, 100);
            let decision = decide(
                &config,
                &mut state,
                &Observation::new(ready, Some((panic, panic))),
                now,
            );
            assert_eq!(
                decision.activator_in_path, in_path,
                "tbc {tbc}, ready {ready}, panic {panic}: {decision:?}"
            );
        }
        assert!(
            activator_in_path(None, 100, 1),
            "unknown scale keeps the activator"
        );
        assert!(activator_in_path(Some(0), 100, 1));
        assert!(!activator_in_path(Some(1), 0, 1));
        assert!(activator_in_path(Some(1), 0, 0), "nothing ready to serve");
        assert!(activator_in_path(Some(1), -1, 1));
    }

    #[test]
    fn a_request_at_zero_scales_up_at_once() {
        let now = Instant::now();
        for (activation, tbc, want) in [(1, 211.0, 1), (3, 211.0, 3), (1, 0.0, 1), (1, -1.0, 1)] {
            let config = Config {
                activation_scale: activation,
                target_burst_capacity: tbc,
                ..Config::default()
            };
            let mut state = state(now, 0, Some(0), Activity::Inactive, 500);
            assert!(state.wants_poke(1.0));
            assert!(!state.wants_poke(0.0));
            let decision = decide(
                &config,
                &mut state,
                &Observation::new(0, Some((1.0 / 60.0, 1.0))),
                now,
            );
            assert_eq!(decision.desired, want, "activation {activation}");
            assert!(
                decision.activator_in_path,
                "requests wait at the activator until an instance is ready"
            );
            assert_eq!(decision.activity, Activity::Activating);
        }
        // A new revision created at zero likewise.
        let defaults = Defaults {
            allow_zero_initial_scale: true,
            initial_scale: 0,
            ..Defaults::default()
        };
        let config = Config::from_defaults(&defaults, 0);
        let mut state = State::new(&config, now);
        assert_eq!(
            decide(&config, &mut state, &Observation::new(0, None), now).desired,
            0
        );
        assert!(state.wants_poke(2.0));
        assert_eq!(
            decide(
                &config,
                &mut state,
                &Observation::new(0, Some((2.0, 2.0))),
                now
            )
            .desired,
            1
        );
    }

    #[test]
    fn a_new_revision_without_traffic_scales_to_zero_after_window_and_grace() {
        let t0 = Instant::now();
        let config = Config {
            target_burst_capacity: 0.0,
            ..Config::default()
        };
        let mut state = State::new(&config, t0);
        let mut zero_at = None;
        for tick in 0..100u64 {
            let now = t0 + TICK * tick as u32;
            // The instance is ready from the second tick and reports idleness.
            let ready = u32::from(tick >= 1 && state.desired() > 0);
            let metrics = (ready > 0).then_some((0.0, 0.0));
            let decision = decide(&config, &mut state, &Observation::new(ready, metrics), now);
            if decision.desired == 0 && zero_at.is_none() {
                zero_at = Some(now - t0);
            }
            if now - t0 < WINDOW + GRACE {
                assert_eq!(decision.desired, 1, "at {:?}", now - t0);
            }
        }
        // Active from 2 s, inactive a window later, zero a grace period after that.
        assert_eq!(zero_at, Some(Duration::from_secs(2) + WINDOW + GRACE));
    }

    #[test]
    fn a_restarted_revision_keeps_its_instances_until_the_windows_refill() {
        let t0 = Instant::now();
        let config = Config::default();
        let mut state = State::restarted(&config, 5, t0);
        let decision = decide(
            &config,
            &mut state,
            &Observation::new(5, Some((10.0, 10.0))),
            t0,
        );
        assert_eq!(decision.desired, 5);
        assert!(decision.panic);
        let later = t0 + WINDOW + TICK;
        let decision = decide(
            &config,
            &mut state,
            &Observation::new(5, Some((10.0, 10.0))),
            later,
        );
        assert_eq!(
            decision.desired, 2,
            "panic over; halved by max-scale-down-rate"
        );
    }

    fn config_strategy() -> impl Strategy<Value = Config> {
        (
            0u32..4,
            prop::sample::select(vec![0u32, 3, 6, 20]),
            1u32..4,
            prop::sample::select(vec![-1.0, 0.0, 50.0, 211.0]),
            prop::sample::select(vec![0u64, 10, 45]),
            prop::sample::select(vec![6u64, 30]),
            prop::sample::select(vec![6u64, 60]),
            prop::sample::select(vec![0u64, 4, 20]),
            any::<bool>(),
        )
            .prop_filter_map(
                "valid settings",
                |(min, max, initial, tbc, retention, grace, window, delay, to_zero)| {
                    let defaults = Defaults {
                        min_scale: min,
                        max_scale: max,
                        initial_scale: initial,
                        target_burst_capacity: tbc,
                        scale_to_zero_pod_retention_period: Duration::from_secs(retention),
                        scale_to_zero_grace_period: Duration::from_secs(grace),
                        stable_window: Duration::from_secs(window),
                        scale_down_delay: Duration::from_secs(delay),
                        enable_scale_to_zero: to_zero,
                        ..Defaults::default()
                    };
                    defaults.validate().ok()?;
                    Some(Config {
                        activation_timeout: Duration::from_secs(3600),
                        ..Config::from_defaults(&defaults, 0)
                    })
                },
            )
    }

    /// Seconds to advance, ready instances, the window's averages.
    type Step = (u64, u32, Option<(f64, f64)>);

    fn steps_strategy() -> impl Strategy<Value = Vec<Step>> {
        let metrics = prop_oneof![
            1 => Just(None),
            2 => Just(Some((0.0, 0.0))),
            3 => (0.0f64..1500.0, 0.0f64..1500.0).prop_map(Some),
        ];
        prop::collection::vec((1u64..8, 0u32..25, metrics), 1..120)
    }

    proptest! {
        /// min <= desired <= max; the last instance goes only after the activator has been in
        /// the path for the grace period and the revision inactive for the retention period; the
        /// count never shrinks in panic mode; a request at zero always brings an instance.
        #[test]
        fn decisions_keep_knatives_invariants(config in config_strategy(), steps in steps_strategy(), poke in 0.001f64..100.0) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut state = State::new(&config, now);
            let mut previous: Option<Decision> = None;
            let mut in_path_since: Option<Instant> = None;
            let mut last_not_inactive = t0;
            let mut last_wanted = t0;
            for (advance, ready, metrics) in steps {
                now += Duration::from_secs(advance);
                let decision = decide(&config, &mut state, &Observation::new(ready, metrics), now);
                prop_assert!(decision.desired >= config.min_scale, "{decision:?} below min {}", config.min_scale);
                if config.max_scale > 0 {
                    prop_assert!(decision.desired <= config.max_scale, "{decision:?} above max {}", config.max_scale);
                }
                if let Some(previous) = previous {
                    if previous.desired > 0 && decision.desired == 0 {
                        let proxied = in_path_since.map_or(Duration::ZERO, |since| now - since);
                        prop_assert!(proxied >= config.scale_to_zero_grace_period,
                            "zero after {proxied:?} with the activator in path");
                        prop_assert!(now - last_not_inactive >= config.scale_to_zero_pod_retention_period,
                            "zero {:?} after going inactive", now - last_not_inactive);
                        if config.target_burst_capacity == 0.0 {
                            prop_assert!(now - last_wanted >= config.scale_to_zero_grace_period,
                                "zero {:?} after instances were last wanted", now - last_wanted);
                        }
                    }
                    if previous.panic && decision.panic && config.scale_down_delay.is_zero() {
                        prop_assert!(decision.desired >= previous.desired, "panic shrank {} -> {}", previous.desired, decision.desired);
                    }
                }
                in_path_since = if decision.activator_in_path { in_path_since.or(Some(now)) } else { None };
                if decision.activity != Activity::Inactive {
                    last_not_inactive = now;
                }
                if decision.want.is_some_and(|want| want > 0) {
                    last_wanted = now;
                }
                previous = Some(decision);
            }
            // Whatever happened before, a request reaching the revision with nothing ready
            // brings an instance at once.
            let mut poked = state.clone();
            let decision = decide(&config, &mut poked, &Observation::new(0, Some((poke, poke))), now + Duration::from_secs(1));
            prop_assert!(decision.desired >= 1, "{decision:?}");
        }
    }
}
