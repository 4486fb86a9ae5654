//! Adaptive concurrency per subscriber: how many deliveries may be in flight to one origin
//! (`scheme://host:port`) at once.
//!
//! A fixed parallelism drowns small subscribers: a Python `http.server` accepts 5 pending
//! connections, and 100 parallel deliveries overflow its accept queue, so the kernel drops their
//! SYNs and TCP retries after 1 s, 3 s, 7 s. Each origin gets a limit instead, learned from its
//! answers much as TCP Vegas sizes a congestion window:
//! - a **reference latency** is measured with one request in flight (the first requests to an
//!   origin, any quiet spell, and a short probe when it is a minute old);
//! - each round trip, two estimates of the requests **waiting** at the subscriber: from latency,
//!   `limit × (1 − reference / mean)` (a mean within two standard errors of the reference counts
//!   as no wait, so a subscriber whose latency merely varies from request to request still
//!   climbs); and, by Little's law, the requests in flight that the answers' rate and latency do
//!   not account for (a connection whose SYN was dropped answers only a second later, unseen
//!   until then);
//! - fewer than `α` waiting (2, growing with the log of the limit) while the limit was in use: it
//!   grows, doubling while nothing has waited yet (slow start), then by an eighth. More than
//!   `β = 2α` waiting by latency: it shrinks by the excess;
//! - **loss** shrinks it and holds growth below the point of loss for 10 s: unseen requests (by
//!   their number), and overload (by three tenths, once per round trip): connection failures,
//!   timeouts, `429`, `503`, and an answer more than 4 times (and 100 ms) slower than the
//!   reference.
//!
//! A parallel subscriber climbs to the maximum; one that serves a request at a time holds a few in
//! flight, which is as fast as it can go. The decision ([`Controller`]) is a plain function of the
//! samples and `now`; [`Limit`] applies it to a semaphore.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The most deliveries in flight to one origin, unless configured.
pub const DEFAULT_MAX: usize = 1000;
/// Origins not used for this long are forgotten (their limit is learned again).
const IDLE_FORGET: Duration = Duration::from_secs(600);
/// Past this many origins, idle ones are swept on the next new origin.
const SWEEP_ABOVE: usize = 1024;

/// The limit after the first reference: below the smallest listen backlog in common use (Python's
/// `socketserver` queues 5), so a first burst never overflows a subscriber's accept queue.
const INITIAL: f64 = 4.0;
/// Growth past slow start, per round trip in which the limit was in use and nothing queued: an
/// eighth (at least 1), so a parallel subscriber is reached in tens of round trips.
const GROWTH: f64 = 0.125;
/// `α` at limits up to 10; it and `β = 2α` grow with `log10(limit)` above.
const ALPHA: f64 = 2.0;
const OVERLOAD_DECREASE: f64 = 0.7;
/// Requests in flight that the answers do not account for (by Little's law) past which requests
/// count as lost (at least a tenth of the limit).
const UNSEEN: f64 = 1.5;
/// After requests were lost at a limit, growth stays below it this long (a subscriber's capacity
/// rarely changes faster; probing it again sooner would lose more).
const CEILING_HOLD: Duration = Duration::from_secs(10);
/// An answer this many times slower than the reference, and slower by more than the floor, is a
/// sign of overload.
const OUTLIER: f64 = 4.0;
const OUTLIER_FLOOR: Duration = Duration::from_millis(100);
/// Fewest samples a window's mean is taken from (fewer when the limit is lower).
const MIN_SAMPLES: usize = 4;
/// Shortest measurement window: below it, timer and scheduling noise dominate a round trip.
const MIN_WINDOW: Duration = Duration::from_millis(1);
/// The reference is measured again when it is this old...
const REPROBE: Duration = Duration::from_secs(60);
/// ...from this many requests sent alone, or what of them came back within `PROBE_LONGEST`.
const PROBE_SAMPLES: usize = 4;
const PROBE_LONGEST: Duration = Duration::from_millis(250);

/// How an attempt ended, for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The subscriber answered (whatever the status, other than overload).
    Answered,
    /// A sign of overload: `429`, `503`, a timeout, a connection that failed or broke.
    Overloaded,
    /// Says nothing about the subscriber's load (refused before sending, a local error).
    Ignored,
}

/// The limit's decision core: samples in, a limit out. No clock, no I/O.
#[derive(Debug, Clone)]
pub struct Controller {
    limit: f64,
    max: f64,
    slow_start: bool,
    /// Latency with one request in flight: (mean, its noise) in seconds, and when measured.
    reference: Option<(f64, f64, Instant)>,
    /// Measuring the reference: one request at a time, then back to the limit kept here.
    probe: Option<(f64, Window)>,
    /// Where requests were last lost (overload, or requests in flight that went unanswered),
    /// and until when growth stays below it.
    ceiling: Option<(f64, Instant)>,
    last_decrease: Option<Instant>,
    /// A limit set by the operator: samples change nothing.
    fixed: bool,
    window: Window,
    /// Counts decreases; an overload from a request sent before the last decrease is not counted
    /// again.
    epoch: u64,
}

#[derive(Debug, Clone)]
struct Window {
    started: Instant,
    samples: usize,
    rtt_sum: f64,
    rtt_squares: f64,
    /// Most requests in flight when one of this window's started.
    peak: usize,
    /// Sum of the requests in flight as each of this window's started (what they found, not
    /// what the limit became since: a limit that just grew is no loss).
    in_flight_sum: f64,
    /// When its last answer came.
    last: Instant,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            samples: 0,
            rtt_sum: 0.0,
            rtt_squares: 0.0,
            peak: 0,
            in_flight_sum: 0.0,
            last: now,
        }
    }

    fn add(&mut self, seconds: f64, started_with: usize) {
        self.samples += 1;
        self.rtt_sum += seconds;
        self.rtt_squares += seconds * seconds;
        self.peak = self.peak.max(started_with);
        self.in_flight_sum += started_with as f64;
    }

    /// The mean latency and its noise (two standard errors: requests whose latency varies make
    /// noisy means).
    fn mean(&self) -> (f64, f64) {
        let samples = self.samples.max(1) as f64;
        let mean = self.rtt_sum / samples;
        let variance = (self.rtt_squares / samples - mean * mean).max(0.0);
        (mean, 2.0 * (variance / samples).sqrt())
    }
}

impl Controller {
    /// A controller that first measures the reference, then starts at [`INITIAL`].
    pub fn new(max: usize, now: Instant) -> Self {
        let max = max.max(1) as f64;
        Self {
            limit: INITIAL.min(max),
            max,
            slow_start: true,
            reference: None,
            probe: Some((INITIAL.min(max), Window::new(now))),
            ceiling: None,
            last_decrease: None,
            fixed: false,
            window: Window::new(now),
            epoch: 0,
        }
    }

    /// A controller that keeps `limit` whatever the answers.
    pub fn fixed(limit: usize, now: Instant) -> Self {
        let limit = limit.max(1);
        Self {
            probe: None,
            slow_start: false,
            fixed: true,
            ..Self::new(limit, now)
        }
        .with_limit(limit as f64)
    }

    fn with_limit(mut self, limit: f64) -> Self {
        self.limit = limit;
        self
    }

    /// The current limit: how many requests may be in flight.
    pub fn limit(&self) -> usize {
        if self.probe.is_some() {
            return 1;
        }
        // The limit is kept within [1, max], so the cast neither wraps nor truncates past max.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let limit = self.limit.floor() as usize;
        limit.max(1)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes one finished request: its latency, how many were in flight when it started (itself
    /// included), the epoch it started in, and how it ended.
    pub fn sample(
        &mut self,
        rtt: Duration,
        in_flight: usize,
        epoch: u64,
        outcome: Outcome,
        now: Instant,
    ) {
        if self.fixed {
            return;
        }
        let seconds = rtt.as_secs_f64();
        let outlier = self.reference.is_some_and(|(reference, _, _)| {
            seconds > OUTLIER * reference && seconds - reference > OUTLIER_FLOOR.as_secs_f64()
        });
        if outcome == Outcome::Ignored {
            return;
        }
        if outcome == Outcome::Overloaded || outlier {
            // An outlier is far slower than usual: a connection that waited for TCP to send its
            // SYN again (the subscriber's accept queue was full), or a subscriber stalling. One
            // decrease per round trip: what was sent before it, or within a round trip after
            // (while those still in flight drain), is not counted again.
            let round_trip = self
                .reference
                .map_or(MIN_WINDOW.as_secs_f64(), |(r, _, _)| r);
            let settled = self.last_decrease.is_none_or(|at| {
                now.saturating_duration_since(at).as_secs_f64() > 2.0 * round_trip
            });
            if epoch == self.epoch && settled {
                self.decrease(now);
            }
            return;
        }
        if let Some((restore, probe)) = &mut self.probe {
            if in_flight <= 1 {
                probe.add(seconds, in_flight);
            }
            let done = probe.samples >= PROBE_SAMPLES
                || (probe.samples > 0
                    && now.saturating_duration_since(probe.started) >= PROBE_LONGEST);
            if done {
                let (mean, noise) = probe.mean();
                self.reference = Some((mean, noise, now));
                self.limit = *restore;
                self.probe = None;
                self.window = Window::new(now);
            }
            return;
        }
        let enough = MIN_SAMPLES.min(self.limit());
        let running = self.window.rtt_sum / self.window.samples.max(1) as f64;
        let idle = now
            .saturating_duration_since(self.window.last)
            .as_secs_f64()
            > 2.0 * running + MIN_WINDOW.as_secs_f64();
        if self.window.samples == 0 || idle {
            // The window runs from its first answer: an idle spell before (no answer for two
            // round trips) is no part of it.
            self.window = Window::new(now);
        }
        self.window.last = now;
        self.window.add(seconds, in_flight);
        let length =
            (self.window.rtt_sum / self.window.samples as f64).max(MIN_WINDOW.as_secs_f64());
        // A round trip (at the window's latency), and enough samples that their mean says
        // something.
        if now
            .saturating_duration_since(self.window.started)
            .as_secs_f64()
            >= length
            && self.window.samples >= enough
        {
            self.close_window(now);
        }
    }

    fn close_window(&mut self, now: Instant) {
        let window = std::mem::replace(&mut self.window, Window::new(now));
        let (mean, noise) = window.mean();
        if window.peak <= 1 {
            // Requests one at a time: a reference, measured for free.
            self.reference = Some((mean, noise, now));
            return;
        }
        let Some((reference, reference_noise, measured)) = self.reference else {
            self.reference = Some((mean, noise, now));
            return;
        };
        let limit = self.limit;
        // Requests waiting at the subscriber, two ways: latency above the reference (they queue
        // and are served late), and requests in flight beyond what the answers account for by
        // Little's law (throughput × latency): those wait unseen, e.g. connections whose SYN the
        // kernel dropped from a full accept queue, which answer only after TCP's 1 s
        // retransmission.
        let queued = if mean > 0.0 {
            limit * (1.0 - (reference + reference_noise + noise) / mean).max(0.0)
        } else {
            0.0
        };
        let elapsed = now.saturating_duration_since(window.started).as_secs_f64();
        let samples = window.samples.max(1) as f64;
        let unseen = if elapsed > 0.0 && window.samples > 1 {
            // Answers per second: between the first answer and the last.
            let rate = (samples - 1.0) / elapsed;
            (window.in_flight_sum / samples - rate * (mean + noise)).max(0.0)
        } else {
            0.0
        };
        let alpha = ALPHA * limit.log10().max(1.0);
        let beta = 2.0 * alpha;
        if unseen > UNSEEN.max(0.1 * limit) {
            // Requests are lost, not served late: as many fewer, and no higher for a while.
            self.hold_below(limit, now);
            self.limit = (limit - unseen.clamp(1.0, (0.3 * limit).max(1.0))).max(1.0);
            self.slow_start = false;
        } else if queued > beta {
            // Requests wait at the subscriber: as many fewer as wait past β (at most 3 tenths).
            self.limit = (limit - (queued - beta).clamp(1.0, (0.3 * limit).max(1.0))).max(1.0);
            self.slow_start = false;
        } else if queued < alpha && window.peak >= self.limit() {
            // The whole limit was in use and hardly anything waited: room for more, up to
            // where requests were lost lately.
            let grown = if self.slow_start {
                limit * 2.0
            } else {
                limit + (limit * GROWTH).max(1.0)
            };
            let cap = match self.ceiling {
                Some((ceiling, until)) if now < until => (ceiling - 1.0).max(limit),
                _ => self.max,
            };
            self.limit = grown.min(cap).min(self.max);
        } else if queued >= alpha {
            self.slow_start = false;
        }
        if now.saturating_duration_since(measured) >= REPROBE {
            self.probe = Some((self.limit, Window::new(now)));
        }
    }

    /// Requests were lost at `limit`: growth stays below it for [`CEILING_HOLD`].
    fn hold_below(&mut self, limit: f64, now: Instant) {
        self.ceiling = Some((limit, now + CEILING_HOLD));
    }

    fn decrease(&mut self, now: Instant) {
        let kept = self.probe.take().map_or(self.limit, |(restore, _)| restore);
        self.hold_below(kept, now);
        self.limit = (kept * OVERLOAD_DECREASE).max(1.0);
        self.last_decrease = Some(now);
        self.slow_start = false;
        self.epoch += 1;
        self.window = Window::new(now);
    }
}

/// One origin's limit, applied: a semaphore with as many permits as the limit.
pub struct Limit {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
}

struct State {
    controller: Controller,
    /// Permits the semaphore stands for (the limit last applied).
    granted: usize,
    /// Permits to take back as requests finish (the limit fell below what is in flight).
    owed: usize,
    in_flight: usize,
    last_used: Instant,
}

/// Room for one request to an origin; give it back with [`Permit::finish`] (dropping it gives it
/// back without a sample).
pub struct Permit {
    limit: Arc<Limit>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    in_flight: usize,
    epoch: u64,
}

impl Limit {
    #[cfg(test)]
    fn new(max: usize, now: Instant) -> Self {
        Self::with(Controller::new(max, now), now)
    }

    fn with(controller: Controller, now: Instant) -> Self {
        let granted = controller.limit();
        Self {
            semaphore: Arc::new(Semaphore::new(granted)),
            state: Mutex::new(State {
                controller,
                granted,
                owed: 0,
                in_flight: 0,
                last_used: now,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for room under the limit. Cancellation-safe: a dropped wait takes nothing.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        // The semaphore is never closed; without a permit, the request would go unlimited.
        let permit = self.semaphore.clone().acquire_owned().await.ok();
        let now = Instant::now();
        let mut state = self.state();
        state.in_flight += 1;
        state.last_used = now;
        Permit {
            limit: self.clone(),
            permit,
            started: now,
            in_flight: state.in_flight,
            epoch: state.controller.epoch(),
        }
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.state().controller.limit()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Makes the semaphore stand for the controller's limit.
    fn apply(&self, state: &mut State) {
        let wanted = state.controller.limit();
        if wanted > state.granted {
            let mut more = wanted - state.granted;
            let repaid = more.min(state.owed);
            state.owed -= repaid;
            more -= repaid;
            self.semaphore.add_permits(more);
        } else if wanted < state.granted {
            let fewer = state.granted - wanted;
            let taken = self.semaphore.forget_permits(fewer);
            state.owed += fewer - taken;
        }
        state.granted = wanted;
    }
}

impl Permit {
    /// Gives the room back, with what the request's end says about the subscriber's load.
    pub fn finish(mut self, outcome: Outcome) {
        let now = Instant::now();
        let limit = self.limit.clone();
        let mut state = limit.state();
        state.controller.sample(
            now.saturating_duration_since(self.started),
            self.in_flight,
            self.epoch,
            outcome,
            now,
        );
        limit.apply(&mut state);
        self.release(&mut state);
    }

    fn release(&mut self, state: &mut State) {
        state.in_flight = state.in_flight.saturating_sub(1);
        // Dropping the permit returns it to the semaphore, unless the limit fell meanwhile.
        if let Some(permit) = self.permit.take()
            && state.owed > 0
        {
            state.owed -= 1;
            permit.forget();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.permit.is_some() {
            let limit = self.limit.clone();
            let mut state = limit.state();
            self.release(&mut state);
        }
    }
}

/// The limits of every origin this process delivers to.
pub struct Limits {
    origins: Mutex<HashMap<Arc<str>, Arc<Limit>>>,
    policy: Mutex<Policy>,
}

/// How origins' limits are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Learned from each origin's answers, up to this many in flight.
    Adaptive { max: usize },
    /// The same for every origin, whatever its answers.
    Fixed(usize),
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// `adaptive` or a number of requests in flight (1 to 10,000).
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "adaptive" => Ok(Policy::Adaptive { max: DEFAULT_MAX }),
            number => match number.parse::<usize>() {
                Ok(n @ 1..=10_000) => Ok(Policy::Fixed(n)),
                _ => Err(format!(
                    "`{text}` is neither `adaptive` nor a number of deliveries in flight from 1 to 10000"
                )),
            },
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(Policy::Adaptive { max: DEFAULT_MAX })
    }
}

impl Limits {
    pub fn new(policy: Policy) -> Self {
        Self {
            origins: Mutex::default(),
            policy: Mutex::new(policy),
        }
    }

    /// Sets how limits are made from now on (origins already seen keep theirs).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// The limit of `origin`, made when first asked for.
    pub fn of(&self, origin: &str) -> Arc<Limit> {
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(limit) = origins.get(origin) {
            return limit.clone();
        }
        let now = Instant::now();
        if origins.len() >= SWEEP_ABOVE {
            origins.retain(|_, limit| {
                let state = limit.state();
                state.in_flight > 0 || now.saturating_duration_since(state.last_used) < IDLE_FORGET
            });
        }
        let policy = *self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        let controller = match policy {
            Policy::Adaptive { max } => Controller::new(max, now),
            Policy::Fixed(limit) => Controller::fixed(limit, now),
        };
        let limit = Arc::new(Limit::with(controller, now));
        origins.insert(Arc::from(origin), limit.clone());
        limit
    }

    /// Every origin's (limit, in flight), for metrics and status.
    pub fn snapshot(&self) -> Vec<(String, usize, usize)> {
        let origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(String, usize, usize)> = origins
            .iter()
            .map(|(origin, limit)| {
                let state = limit.state();
                (
                    origin.to_string(),
                    state.controller.limit(),
                    state.in_flight,
                )
            })
            .collect();
        all.sort();
        all
    }

    /// The current limit of `origin` and the requests in flight to it, if anything was sent to
    /// it.
    pub fn current(&self, origin: &str) -> Option<(usize, usize)> {
        let origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        origins.get(origin).map(|limit| {
            let state = limit.state();
            (state.controller.limit(), state.in_flight)
        })
    }
}

/// `scheme://host:port` of a URL, the key of its limit (the port always written).
pub fn origin_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(format!("{scheme}://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    //! Scenario simulations in paused time: simulated subscribers, deliveries as tasks that take
    //! a permit, call the subscriber and give the permit back with the outcome.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A subscriber, as the deliveries see it.
    trait Subscriber: Send + Sync + 'static {
        fn call(&self, request: usize) -> impl Future<Output = Outcome> + Send;
    }

    /// Python's `http.server`: one request at a time (FIFO), a listen backlog of 5 (the kernel
    /// queues 6), and a connection beyond that waits for TCP's SYN retransmission (1 s) first.
    struct OneAtATime {
        service: Duration,
        worker: tokio::sync::Mutex<()>,
        at_server: AtomicUsize,
        dropped_syns: AtomicUsize,
    }

    impl Subscriber for OneAtATime {
        async fn call(&self, _: usize) -> Outcome {
            // One being served and 6 waiting to be accepted.
            while self.at_server.fetch_add(1, Ordering::SeqCst) >= 7 {
                self.at_server.fetch_sub(1, Ordering::SeqCst);
                self.dropped_syns.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _served = self.worker.lock().await;
            tokio::time::sleep(self.service).await;
            self.at_server.fetch_sub(1, Ordering::SeqCst);
            Outcome::Answered
        }
    }

    /// A parallel subscriber whose latency varies from 5 to 50 ms from request to request and
    /// does not grow with load.
    struct Varied;

    impl Subscriber for Varied {
        async fn call(&self, request: usize) -> Outcome {
            // A fixed pseudo-random spread (Knuth's multiplicative hash).
            let spread = (request.wrapping_mul(2_654_435_761) % 46) as u64;
            tokio::time::sleep(Duration::from_millis(5 + spread)).await;
            Outcome::Answered
        }
    }

    /// A subscriber that serves 10 requests at a time in 5 ms and answers `503` at once to more.
    struct Shedding {
        busy: AtomicUsize,
        refused: AtomicUsize,
    }

    impl Subscriber for Shedding {
        async fn call(&self, _: usize) -> Outcome {
            if self.busy.fetch_add(1, Ordering::SeqCst) >= 10 {
                self.busy.fetch_sub(1, Ordering::SeqCst);
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Outcome::Overloaded;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.busy.fetch_sub(1, Ordering::SeqCst);
            Outcome::Answered
        }
    }

    /// Delivers `requests` through `lanes` parallel senders (the dispatcher's parallelism per
    /// trigger); a refused request is sent again after 10 ms. Returns how long it took and the highest limit
    /// seen.
    async fn deliver<S: Subscriber>(
        subscriber: Arc<S>,
        limit: Arc<Limit>,
        requests: usize,
        lanes: usize,
    ) -> (Duration, usize) {
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let highest = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..lanes {
            let (subscriber, limit, next, highest) = (
                subscriber.clone(),
                limit.clone(),
                next.clone(),
                highest.clone(),
            );
            tasks.spawn(async move {
                let mut request = next.fetch_add(1, Ordering::SeqCst);
                while request < requests {
                    let permit = limit.acquire().await;
                    let outcome = subscriber.call(request).await;
                    permit.finish(outcome);
                    highest.fetch_max(limit.current(), Ordering::SeqCst);
                    if outcome == Outcome::Answered {
                        request = next.fetch_add(1, Ordering::SeqCst);
                    } else {
                        // The retry's backoff.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        (started.elapsed(), highest.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_serves_one_at_a_time_is_never_flooded() {
        let subscriber = Arc::new(OneAtATime {
            service: Duration::from_millis(1),
            worker: tokio::sync::Mutex::new(()),
            at_server: AtomicUsize::new(0),
            dropped_syns: AtomicUsize::new(0),
        });
        let limit = Arc::new(Limit::new(DEFAULT_MAX, Instant::now()));
        let (took, highest) = deliver(subscriber.clone(), limit, 400, 100).await;
        // At most the slow start's one overshoot, which the limit learns from.
        let dropped = subscriber.dropped_syns.load(Ordering::SeqCst);
        assert!(
            dropped <= 2,
            "{dropped} SYNs dropped (the limit reached {highest})"
        );
        // 400 requests of 1 ms, one at a time, is 400 ms of work; an overshoot costs 1 s.
        assert!(took < Duration::from_millis(1600), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_fixed_parallelism_the_same_subscriber_drowns() {
        // What the limit prevents: 100 at once overflow the accept queue.
        let subscriber = Arc::new(OneAtATime {
            service: Duration::from_millis(1),
            worker: tokio::sync::Mutex::new(()),
            at_server: AtomicUsize::new(0),
            dropped_syns: AtomicUsize::new(0),
        });
        let mut fixed = Controller::new(100, Instant::now());
        fixed.limit = 100.0;
        fixed.slow_start = false;
        let limit = Arc::new(Limit {
            semaphore: Arc::new(Semaphore::new(100)),
            state: Mutex::new(State {
                controller: fixed,
                granted: 100,
                owed: 0,
                in_flight: 0,
                last_used: Instant::now(),
            }),
        });
        // Only the semaphore is used: no sample reaches the controller.
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for request in 0..400 {
            let (subscriber, limit) = (subscriber.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                subscriber.call(request).await
            });
        }
        while tasks.join_next().await.is_some() {}
        assert!(subscriber.dropped_syns.load(Ordering::SeqCst) > 100);
        assert!(started.elapsed() > Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_parallel_subscriber_with_varied_latency_gets_the_parallelism() {
        let limit = Arc::new(Limit::new(DEFAULT_MAX, Instant::now()));
        let (took, highest) = deliver(Arc::new(Varied), limit.clone(), 4000, 100).await;
        assert!(
            highest >= 64,
            "the limit reached only {highest} in {took:?}"
        );
        // At 100 in flight: 4,000 × 27.5 ms / 100 = 1.1 s.
        assert!(took < Duration::from_millis(1600), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_sheds_load_with_503_is_backed_off() {
        let subscriber = Arc::new(Shedding {
            busy: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let limit = Arc::new(Limit::new(DEFAULT_MAX, Instant::now()));
        let (took, highest) = deliver(subscriber.clone(), limit.clone(), 2000, 100).await;
        let refused = subscriber.refused.load(Ordering::SeqCst);
        assert!(refused < 200, "{refused} of 2,000 were refused");
        assert!(
            limit.current() <= 16,
            "the limit ended at {}",
            limit.current()
        );
        // 10 at a time, 5 ms each: 1 s at best.
        assert!(
            took < Duration::from_millis(1500),
            "took {took:?} (limit up to {highest})"
        );
    }

    /// A controller past its first probe: reference `reference`, limit `limit`, slow start done.
    fn measured(limit: f64, reference: Duration, now: Instant) -> Controller {
        let mut controller = Controller::new(1000, now);
        controller.probe = None;
        controller.reference = Some((reference.as_secs_f64(), 0.0, now));
        controller.limit = limit;
        controller.slow_start = false;
        controller
    }

    #[test]
    fn one_burst_of_overload_is_one_decrease() {
        let start = Instant::now();
        let mut controller = measured(100.0, Duration::from_millis(10), start);
        let epoch = controller.epoch();
        for _ in 0..50 {
            controller.sample(
                Duration::from_millis(10),
                100,
                epoch,
                Outcome::Overloaded,
                start,
            );
        }
        assert_eq!(controller.limit(), 70);
        // Nor does one of a request sent after it, within the round trip after it (those sent
        // before still drain).
        let later = start + Duration::from_millis(15);
        controller.sample(
            Duration::from_millis(10),
            70,
            controller.epoch(),
            Outcome::Overloaded,
            later,
        );
        assert_eq!(controller.limit(), 70);
        // Past that, an overload counts.
        let later = start + Duration::from_millis(30);
        controller.sample(
            Duration::from_millis(10),
            70,
            controller.epoch(),
            Outcome::Overloaded,
            later,
        );
        assert_eq!(controller.limit(), 49);
        // So does an answer a hundred times slower than the reference (a SYN sent again).
        let later = later + Duration::from_secs(1);
        controller.sample(
            Duration::from_secs(1),
            49,
            controller.epoch(),
            Outcome::Answered,
            later,
        );
        assert_eq!(controller.limit(), 34);
    }

    /// Feeds one window: answers of `rtt` every `rtt / in_flight` (at least 4 a round trip) for
    /// one round trip, as requests in flight all along come back (Little's law holds: none wait
    /// unseen).
    fn window(controller: &mut Controller, now: &mut Instant, rtt: Duration, in_flight: usize) {
        let epoch = controller.epoch();
        let count = in_flight.max(4);
        for _ in 0..=count {
            // (A microsecond more, so the last one ends the round trip whatever the rounding.)
            *now += rtt / u32::try_from(count).unwrap() + Duration::from_micros(1);
            controller.sample(rtt, in_flight, epoch, Outcome::Answered, *now);
        }
    }

    #[test]
    fn requests_waiting_at_the_subscriber_shrink_the_limit() {
        let mut now = Instant::now();
        let ms = Duration::from_millis;
        let mut controller = measured(20.0, ms(10), now);
        // At the reference latency with the limit in use: it grows by an eighth per round trip.
        window(&mut controller, &mut now, ms(10), 20);
        assert_eq!(controller.limit(), 22);
        // At 11 ms, 2 of 22 wait (22 × (1 − 10/11)): fewer than α = 2·log10(22) ≈ 2.7, growth.
        window(&mut controller, &mut now, ms(11), 22);
        assert_eq!(controller.limit(), 25);
        // At 20 ms half of them wait (12.7): past β (5.6), it gives back the excess (7).
        window(&mut controller, &mut now, ms(20), 25);
        assert_eq!(controller.limit(), 18);
        // Not in use (5 in flight of 18): no growth, however fast.
        for _ in 0..5 {
            window(&mut controller, &mut now, ms(10), 5);
        }
        assert_eq!(controller.limit(), 18);
    }

    #[test]
    fn the_first_requests_go_one_at_a_time_then_slow_start_doubles() {
        let mut now = Instant::now();
        let ms = Duration::from_millis;
        let mut controller = Controller::new(1000, now);
        // The reference: 4 answers with one in flight.
        assert_eq!(controller.limit(), 1);
        window(&mut controller, &mut now, ms(10), 1);
        assert_eq!(controller.limit(), 4);
        for expected in [8, 16, 32] {
            window(&mut controller, &mut now, ms(10), expected / 2);
            assert_eq!(controller.limit(), expected);
        }
        // With 32 in flight, a subscriber that serves a request at a time answers twice as
        // slowly: 16 wait, far past β (6); it gives back 3 tenths.
        window(&mut controller, &mut now, ms(20), 32);
        let shrunk = controller.limit();
        assert!((20..=24).contains(&shrunk), "{shrunk}");
        // A minute on, the reference is measured again, one request at a time, and the limit
        // comes back after.
        now += REPROBE;
        window(&mut controller, &mut now, ms(10), 22);
        assert_eq!(controller.limit(), 1);
        window(&mut controller, &mut now, ms(10), 1);
        assert!(controller.limit() >= shrunk);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_limit_takes_back_permits_as_requests_finish() {
        let limit = Arc::new(Limit::new(DEFAULT_MAX, Instant::now()));
        {
            let mut state = limit.state();
            state.controller.probe = None;
            state.controller.limit = 4.0;
            limit.apply(&mut state);
        }
        let permits: Vec<Permit> = futures_permits(&limit, 4).await;
        assert_eq!(limit.in_flight(), 4);
        {
            let mut state = limit.state();
            state.controller.limit = 2.0;
            limit.apply(&mut state);
        }
        drop(permits);
        assert_eq!(limit.in_flight(), 0);
        assert_eq!(limit.semaphore.available_permits(), 2);
    }

    async fn futures_permits(limit: &Arc<Limit>, count: usize) -> Vec<Permit> {
        let mut permits = Vec::new();
        for _ in 0..count {
            permits.push(limit.acquire().await);
        }
        permits
    }

    #[test]
    fn any_samples_keep_the_limit_within_its_bounds() {
        // A fixed pseudo-random walk (xorshift) over latencies, in-flight counts, outcomes and
        // time steps, including zeros and extremes.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for max in [1, 2, 7, 1000] {
            let mut now = Instant::now();
            let mut controller = Controller::new(max, now);
            for _ in 0..20_000 {
                now += Duration::from_micros(next() % 5_000);
                let rtt = Duration::from_micros(match next() % 10 {
                    0 => 0,
                    1 => 2_000_000,
                    _ => next() % 50_000,
                });
                let in_flight = usize::try_from(next() % 1200).unwrap();
                let outcome = match next() % 20 {
                    0 => Outcome::Overloaded,
                    1 => Outcome::Ignored,
                    _ => Outcome::Answered,
                };
                let epoch = controller.epoch().saturating_sub(next() % 2);
                controller.sample(rtt, in_flight, epoch, outcome, now);
                let limit = controller.limit();
                assert!((1..=max).contains(&limit), "limit {limit} of max {max}");
            }
        }
    }

    #[test]
    fn a_fixed_limit_stays_whatever_the_answers() {
        let now = Instant::now();
        let mut controller = Controller::fixed(12, now);
        assert_eq!(controller.limit(), 12);
        controller.sample(Duration::from_secs(5), 12, 0, Outcome::Overloaded, now);
        controller.sample(Duration::from_secs(5), 12, 0, Outcome::Answered, now);
        assert_eq!(controller.limit(), 12);
        assert_eq!(
            "adaptive".parse(),
            Ok(Policy::Adaptive { max: DEFAULT_MAX })
        );
        assert_eq!("12".parse(), Ok(Policy::Fixed(12)));
        assert!(
            "0".parse::<Policy>()
                .unwrap_err()
                .contains("from 1 to 10000")
        );
        assert!("lots".parse::<Policy>().is_err());
    }

    #[test]
    fn origins_name_scheme_host_and_port() {
        let origin = |url: &str| origin_of(&url.parse().unwrap());
        assert_eq!(
            origin("http://Example.com/a?b").as_deref(),
            Some("http://example.com:80")
        );
        assert_eq!(
            origin("https://example.com:8443/").as_deref(),
            Some("https://example.com:8443")
        );
        assert_eq!(origin("/relative"), None);
    }
}
