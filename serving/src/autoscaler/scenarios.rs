//! Whole-revision simulations: traffic driven second by second through the metric window and the
//! decider, with instances that take a few seconds to start, the activator reporting the requests
//! it holds while nothing is ready, ticks every 2 s, pokes and wake-ups as the runtime loop will
//! do them. Time is simulated: instants advance by whole seconds from a fixed start.

use std::time::Duration;

use tokio::time::Instant;

use super::{Config, Decision, MetricWindow, Observation, State, TICK, decide};

/// Seconds from asking for an instance to its being ready.
const BOOT: u64 = 3;
/// Each request takes 100 ms, so requests per second are ten times the concurrency.
const REQUESTS_PER_CONCURRENT: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
struct Step {
    second: u64,
    ready: u32,
    decision: Decision,
}

struct Simulation {
    config: Config,
    window: MetricWindow,
    state: State,
    t0: Instant,
    ready: u32,
    /// The second each starting instance becomes ready.
    starting: Vec<u64>,
    wake_at: Option<Instant>,
    trace: Vec<Step>,
}

impl Simulation {
    fn new(config: Config) -> Self {
        let t0 = Instant::now();
        Self {
            window: MetricWindow::new(&config),
            state: State::new(&config, t0),
            config,
            t0,
            ready: 0,
            starting: Vec::new(),
            wake_at: None,
            trace: Vec::new(),
        }
    }

    /// Runs seconds `from..until` with `load(second)` concurrent requests.
    fn run(&mut self, from: u64, until: u64, load: impl Fn(u64) -> f64) {
        for second in from..until {
            let now = self.t0 + Duration::from_secs(second);
            let booted = self.starting.iter().filter(|&&at| at <= second).count() as u32;
            self.starting.retain(|&at| at > second);
            self.ready += booted;
            let load = load(second);
            // Queue-proxies report while instances run; the activator reports what it holds.
            if self.ready > 0 || load > 0.0 {
                self.window
                    .record(now, load, load * REQUESTS_PER_CONCURRENT);
            }
            let poke = self.ready == 0 && self.state.wants_poke(load);
            let tick = Duration::from_secs(second)
                .as_nanos()
                .is_multiple_of(TICK.as_nanos());
            let woken = self.wake_at.is_some_and(|at| at <= now);
            if tick || poke || woken {
                self.decide(second, now);
            }
        }
    }

    fn decide(&mut self, second: u64, now: Instant) {
        let metrics = self.window.stable_and_panic(now, &self.config);
        let observation = Observation::new(self.ready, metrics);
        let decision = decide(&self.config, &mut self.state, &observation, now);
        self.wake_at = decision.wake_at;
        let running = self.ready + self.starting.len() as u32;
        if decision.desired > running {
            let more = decision.desired - running;
            self.starting.extend((0..more).map(|_| second + BOOT));
        } else {
            for _ in decision.desired..running {
                // Stop instances still starting first, as a runtime would.
                if self.starting.pop().is_none() {
                    self.ready -= 1;
                }
            }
        }
        self.trace.push(Step {
            second,
            ready: self.ready,
            decision,
        });
    }

    fn steps(&self, from: u64, until: u64) -> impl Iterator<Item = &Step> {
        self.trace
            .iter()
            .filter(move |step| (from..until).contains(&step.second))
    }

    /// The first second in `from..` at which the decision is zero instances.
    fn zero_at(&self, from: u64) -> u64 {
        self.steps(from, u64::MAX)
            .find(|step| step.decision.desired == 0)
            .map(|step| step.second)
            .expect("the revision scales to zero")
    }

    /// How long the activator had been in the path, continuously, when `second` was decided.
    fn in_path_for(&self, second: u64) -> u64 {
        let since = self
            .trace
            .iter()
            .take_while(|step| step.second < second)
            .fold(None, |since, step| {
                match (since, step.decision.activator_in_path) {
                    (_, false) => None,
                    (None, true) => Some(step.second),
                    (since, true) => since,
                }
            });
        since.map_or(0, |since| second - since)
    }
}

/// 0 → 500 concurrent over 20 s from `start`, held until `stop`, then nothing.
fn ramp(start: u64, stop: u64) -> impl Fn(u64) -> f64 {
    move |second| match second {
        s if s <= start || s >= stop => 0.0,
        s if s < start + 20 => 500.0 * (s - start) as f64 / 20.0,
        _ => 500.0,
    }
}

const IDLE_UNTIL: u64 = 200;
const TRAFFIC_FROM: u64 = 200;
const TRAFFIC_UNTIL: u64 = 350;
const LAST_TRAFFIC: u64 = TRAFFIC_UNTIL - 1;
const END: u64 = 700;

/// The life of a revision: created without traffic, then a ramp to 500 concurrent, then idle.
fn simulate(config: Config) -> Simulation {
    let mut sim = Simulation::new(config);
    sim.run(0, IDLE_UNTIL, |_| 0.0);
    sim.run(IDLE_UNTIL, END, ramp(TRAFFIC_FROM, TRAFFIC_UNTIL));
    sim
}

/// What holds for every configuration: the revision goes to zero when created idle, wakes on
/// the first request, panics up to 500/70 → 8 instances within seconds, holds them, then returns
/// to zero no sooner than a stable window after the last request, only once the activator has
/// been in the path for the grace period, and within `zero_within` seconds of the last request.
fn assert_life_cycle(sim: &Simulation, zero_within: u64) {
    let window = sim.config.stable_window.as_secs();
    let grace = sim.config.scale_to_zero_grace_period.as_secs();
    let slack = 2 * TICK.as_secs() + BOOT;
    // The longest the last instance may stay once the proposal reached zero.
    let hold = sim.config.scale_down_delay.as_secs()
        + grace.max(sim.config.scale_to_zero_pod_retention_period.as_secs());

    let idle_zero = sim.zero_at(0);
    assert!(
        idle_zero >= window,
        "idle revision at zero after {idle_zero}s"
    );
    assert!(
        idle_zero <= BOOT + window + hold + slack,
        "idle revision still up at {idle_zero}s"
    );
    assert!(sim.in_path_for(idle_zero) >= grace);
    assert!(
        sim.steps(idle_zero, TRAFFIC_FROM + 1)
            .all(|s| s.decision.desired == 0)
    );

    let woken = sim
        .steps(TRAFFIC_FROM + 1, TRAFFIC_FROM + 2)
        .next()
        .expect("the first request pokes");
    assert!(
        woken.decision.desired >= 1,
        "the first request scales up at once: {woken:?}"
    );
    assert!(
        woken.decision.activator_in_path,
        "requests wait at the activator"
    );

    assert!(
        sim.steps(TRAFFIC_FROM, TRAFFIC_FROM + 40)
            .any(|s| s.decision.panic),
        "the ramp panics"
    );
    let full = sim
        .steps(TRAFFIC_FROM, TRAFFIC_UNTIL)
        .find(|s| s.decision.desired >= 8)
        .expect("reaches 8 instances");
    assert!(
        full.second <= TRAFFIC_FROM + 24,
        "8 instances only at {}s",
        full.second
    );

    for step in sim.steps(TRAFFIC_FROM + 40, TRAFFIC_UNTIL) {
        assert_eq!(step.decision.desired, 8, "holds 8 instances: {step:?}");
    }
    for step in sim.steps(TRAFFIC_FROM + 100, TRAFFIC_UNTIL) {
        assert!(!step.decision.panic, "panic is over: {step:?}");
    }

    let zero = sim.zero_at(TRAFFIC_UNTIL);
    assert!(
        zero >= LAST_TRAFFIC + window,
        "zero {}s after the last request",
        zero - LAST_TRAFFIC
    );
    assert!(
        zero <= LAST_TRAFFIC + zero_within,
        "still up {}s after the last request",
        zero - LAST_TRAFFIC
    );
    assert!(
        sim.in_path_for(zero) >= grace,
        "activator in path for {}s",
        sim.in_path_for(zero)
    );
    for step in sim.steps(TRAFFIC_UNTIL, zero) {
        assert!(step.decision.desired >= 1);
        assert!(
            2 * step.decision.desired >= step.ready,
            "at most halves per decision: {step:?}"
        );
    }
    assert!(sim.steps(zero, END).all(|s| s.decision.desired == 0));
}

#[test]
fn ramp_to_500_and_back_with_knatives_defaults() {
    let sim = simulate(Config::default());
    assert_life_cycle(&sim, 60 + 30 + 2 * TICK.as_secs());
    // With 8 instances of capacity 100 the 211 burst capacity fits: the activator leaves.
    for step in sim.steps(TRAFFIC_FROM + 40, TRAFFIC_UNTIL) {
        assert!(!step.decision.activator_in_path, "{step:?}");
    }
    // One instance cannot absorb 211, so the activator was already in the path while the last
    // instance idled: it goes without an extra grace period (Knative's fast path).
    let zero = sim.zero_at(TRAFFIC_UNTIL);
    assert!(
        zero <= LAST_TRAFFIC + 60 + 2 * TICK.as_secs() + 20,
        "zero at {zero}"
    );
}

#[test]
fn ramp_with_zero_burst_capacity_waits_out_the_grace_period() {
    let config = Config {
        target_burst_capacity: 0.0,
        ..Config::default()
    };
    let sim = simulate(config);
    assert_life_cycle(&sim, 60 + 30 + 2 * TICK.as_secs());
    // The activator joins only when the revision goes inactive, so the grace period follows the
    // stable window in full.
    let zero = sim.zero_at(TRAFFIC_UNTIL);
    assert!(zero >= LAST_TRAFFIC + 60 + 30, "zero at {zero}");
    assert!(sim.zero_at(0) >= BOOT + 60 + 30);
}

#[test]
fn scale_down_delay_and_retention_hold_instances_longer() {
    let config = Config {
        scale_down_delay: Duration::from_secs(30),
        scale_to_zero_pod_retention_period: Duration::from_secs(45),
        ..Config::default()
    };
    let sim = simulate(config);
    // Each halving allowed by max-scale-down-rate (8, 4, 2, 1, 0) waits out the delay, then the
    // last instance stays the retention period.
    assert_life_cycle(&sim, 60 + 4 * 30 + 45 + 2 * TICK.as_secs());
    let zero = sim.zero_at(TRAFFIC_UNTIL);
    assert!(zero >= LAST_TRAFFIC + 60 + 30 + 45, "zero at {zero}");
    // The delay also slows the way down: still 8 instances half a delay after traffic stopped
    // and the stable average started to fall.
    let held = sim
        .steps(LAST_TRAFFIC + 15, LAST_TRAFFIC + 16)
        .next()
        .unwrap();
    assert_eq!(held.decision.desired, 8, "{held:?}");
}
