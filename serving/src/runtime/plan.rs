//! What a revision's supervisor does next, as plain functions of its state and `now`: how many
//! instances to start, which to stop, and how long to wait after a crash.

use std::time::Duration;

use tokio::time::Instant;

/// Where an instance is in its life, as the supervisor tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Spawned (or spawning), not yet ready.
    Starting,
    /// In the ready set.
    Ready,
    /// Asked to stop; no longer counts towards the desired number.
    Stopping,
}

/// What [`plan`] needs to know about one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub id: u64,
    pub phase: Phase,
    pub in_flight: u64,
    pub started: Instant,
    /// It runs the revision's current spec. An instance of an older spec (a Service deleted and
    /// created again under its name, so its revisions' names come back with new templates) is
    /// replaced: it serves until instances of the current spec are ready to take over.
    pub current: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub start: u32,
    /// Instances to stop, best victim first.
    pub stop: Vec<u64>,
}

/// Moves the revision towards `desired` live (starting or ready) instances of its current spec.
/// Stopping ones are not counted, so a scale-up is never held back by a drain. When there are too
/// many, instances not yet ready go first (they serve nothing), newest first; then ready ones with
/// the fewest requests in flight, newest first among equals (the oldest have proven themselves).
/// Instances of an older spec count for nothing: those not ready stop at once, ready ones once as
/// many of the current spec are ready as are desired.
pub(crate) fn plan(desired: u32, slots: &[SlotView], may_start: bool) -> Plan {
    let ready_current = slots
        .iter()
        .filter(|s| s.current && s.phase == Phase::Ready)
        .count();
    let replaced = ready_current >= desired as usize;
    let stale = slots
        .iter()
        .filter(|s| !s.current && s.phase != Phase::Stopping)
        .filter(|s| s.phase == Phase::Starting || replaced)
        .map(|s| s.id);
    let mut plan = plan_current(desired, slots, may_start);
    plan.stop.extend(stale);
    plan
}

fn plan_current(desired: u32, slots: &[SlotView], may_start: bool) -> Plan {
    let mut live: Vec<&SlotView> = slots
        .iter()
        .filter(|s| s.current && s.phase != Phase::Stopping)
        .collect();
    let count = u32::try_from(live.len()).unwrap_or(u32::MAX);
    if count < desired {
        return Plan {
            start: if may_start { desired - count } else { 0 },
            stop: Vec::new(),
        };
    }
    live.sort_by(|a, b| {
        let rank = |s: &SlotView| u8::from(s.phase == Phase::Ready);
        rank(a)
            .cmp(&rank(b))
            .then(a.in_flight.cmp(&b.in_flight))
            .then(b.started.cmp(&a.started))
            .then(b.id.cmp(&a.id))
    });
    let excess = (count - desired) as usize;
    Plan {
        start: 0,
        stop: live.iter().take(excess).map(|s| s.id).collect(),
    }
}

/// Restart backoff settings: `initial` after the first crash, doubling up to `max`; a crash of an
/// instance that had been up for `reset_after` starts the schedule over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

/// The delay before the next start after `failures` consecutive crashes.
pub(crate) fn backoff_delay(config: &BackoffConfig, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    config
        .initial
        .checked_mul(factor)
        .unwrap_or(config.max)
        .min(config.max)
}

/// A revision's crash history, as far as restarts care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// Records a crash of an instance that had been up for `uptime` (zero if it never started).
    pub fn crashed(&mut self, config: &BackoffConfig, uptime: Duration, now: Instant) {
        if uptime >= config.reset_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + backoff_delay(config, self.failures));
    }

    pub fn may_start(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }

    /// When a start held back by the backoff becomes allowed.
    pub fn not_before(&self) -> Option<Instant> {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(id: u64, phase: Phase, in_flight: u64, started_ms: u64, base: Instant) -> SlotView {
        SlotView {
            id,
            phase,
            in_flight,
            started: base + Duration::from_millis(started_ms),
            current: true,
        }
    }

    fn stale(slot: SlotView) -> SlotView {
        SlotView {
            current: false,
            ..slot
        }
    }

    #[test]
    fn plan_table() {
        use Phase::*;
        let t = Instant::now();
        let cases: Vec<(&str, u32, Vec<SlotView>, bool, Plan)> = vec![
            ("empty, none wanted", 0, vec![], true, Plan::default()),
            (
                "scale from zero",
                3,
                vec![],
                true,
                Plan {
                    start: 3,
                    stop: vec![],
                },
            ),
            ("backoff holds starts", 3, vec![], false, Plan::default()),
            (
                "stopping ones do not count",
                2,
                vec![slot(1, Stopping, 5, 0, t), slot(2, Ready, 0, 1, t)],
                true,
                Plan {
                    start: 1,
                    stop: vec![],
                },
            ),
            (
                "starting ones go first, newest first",
                1,
                vec![
                    slot(1, Ready, 9, 0, t),
                    slot(2, Starting, 0, 1, t),
                    slot(3, Starting, 0, 2, t),
                ],
                true,
                Plan {
                    start: 0,
                    stop: vec![3, 2],
                },
            ),
            (
                "then the least loaded",
                1,
                vec![
                    slot(1, Ready, 0, 0, t),
                    slot(2, Ready, 4, 1, t),
                    slot(3, Ready, 1, 2, t),
                ],
                true,
                Plan {
                    start: 0,
                    stop: vec![1, 3],
                },
            ),
            (
                "newest among equally loaded",
                2,
                vec![
                    slot(1, Ready, 0, 0, t),
                    slot(2, Ready, 0, 5, t),
                    slot(3, Ready, 0, 2, t),
                ],
                true,
                Plan {
                    start: 0,
                    stop: vec![2],
                },
            ),
            (
                "to zero stops all",
                0,
                vec![slot(1, Ready, 0, 0, t), slot(2, Starting, 0, 1, t)],
                false,
                Plan {
                    start: 0,
                    stop: vec![2, 1],
                },
            ),
            (
                "an older spec's instances do not count; its ready one serves until replaced",
                1,
                vec![
                    stale(slot(1, Ready, 2, 0, t)),
                    stale(slot(2, Starting, 0, 1, t)),
                ],
                true,
                Plan {
                    start: 1,
                    stop: vec![2],
                },
            ),
            (
                "while the new one starts the old one still serves",
                1,
                vec![stale(slot(1, Ready, 2, 0, t)), slot(3, Starting, 0, 2, t)],
                true,
                Plan::default(),
            ),
            (
                "once the new one is ready the old one stops",
                1,
                vec![stale(slot(1, Ready, 2, 0, t)), slot(3, Ready, 0, 2, t)],
                true,
                Plan {
                    start: 0,
                    stop: vec![1],
                },
            ),
            (
                "at zero an older spec's instances stop",
                0,
                vec![stale(slot(1, Ready, 0, 0, t))],
                true,
                Plan {
                    start: 0,
                    stop: vec![1],
                },
            ),
        ];
        for (name, desired, slots, may_start, want) in cases {
            assert_eq!(plan(desired, &slots, may_start), want, "{name}");
        }
    }

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_table() {
        let c = config();
        let ms = |n| backoff_delay(&c, n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(7), ms(8), ms(40)],
            [0, 100, 200, 400, 6400, 10_000, 10_000]
        );
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let c = config();
        let now = Instant::now();
        let mut b = Backoff::default();
        assert!(b.may_start(now));
        b.crashed(&c, Duration::ZERO, now);
        b.crashed(&c, Duration::ZERO, now);
        b.crashed(&c, Duration::ZERO, now);
        assert_eq!(b.not_before(), Some(now + Duration::from_millis(400)));
        assert!(!b.may_start(now + Duration::from_millis(399)));
        assert!(b.may_start(now + Duration::from_millis(400)));
        b.crashed(&c, Duration::from_secs(61), now);
        assert_eq!(b.not_before(), Some(now + Duration::from_millis(100)));
    }

    proptest! {
        #[test]
        fn backoff_is_monotone_and_capped(failures in 0u32..200, initial_ms in 1u64..5_000, max_ms in 1u64..100_000) {
            let c = BackoffConfig {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                reset_after: Duration::from_secs(60),
            };
            let d = backoff_delay(&c, failures);
            prop_assert!(d <= c.max);
            prop_assert!(d <= backoff_delay(&c, failures + 1));
        }

        #[test]
        fn plan_reaches_desired(desired in 0u32..8, phases in proptest::collection::vec((0u8..3, 0u64..4, any::<bool>()), 0..10)) {
            let t = Instant::now();
            let slots: Vec<SlotView> = phases.iter().enumerate().map(|(i, (p, load, current))| SlotView {
                id: i as u64,
                phase: [Phase::Starting, Phase::Ready, Phase::Stopping][*p as usize],
                in_flight: *load,
                started: t + Duration::from_millis(i as u64),
                current: *current,
            }).collect();
            let live = |current: bool| slots.iter().filter(|s| s.current == current && s.phase != Phase::Stopping).count() as u32;
            let p = plan(desired, &slots, true);
            let stopped = |current: bool| p.stop.iter().filter(|id| slots[**id as usize].current == current).count() as u32;
            prop_assert!(p.start == 0 || stopped(true) == 0);
            prop_assert_eq!(live(true) + p.start - stopped(true), desired);
            let ready_current = slots.iter().filter(|s| s.current && s.phase == Phase::Ready).count() as u32;
            for id in &p.stop {
                let s = &slots[*id as usize];
                prop_assert!(s.phase != Phase::Stopping);
                // No ready instance is stopped while a starting one of its spec is kept.
                if s.phase == Phase::Ready {
                    prop_assert!(slots.iter().filter(|o| o.current == s.current && o.phase == Phase::Starting).all(|o| p.stop.contains(&o.id)));
                }
                // A ready instance of an older spec is stopped only once it is replaced.
                if !s.current && s.phase == Phase::Ready {
                    prop_assert!(ready_current >= desired);
                }
            }
            // Every instance of an older spec is on its way out once enough are ready.
            if ready_current >= desired {
                prop_assert_eq!(stopped(false), live(false));
            }
        }
    }
}
