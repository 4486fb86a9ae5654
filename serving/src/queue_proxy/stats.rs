//! Request statistics for the autoscaler: time-weighted average concurrency and request count per
//! sampling period (Knative's queue-proxy reports these every second).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::Instant;

/// One sampling period's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Requests in flight, averaged over the period weighted by time.
    pub average_concurrency: f64,
    /// Requests that arrived during the period.
    pub requests: u64,
    /// Requests in flight at the end of the period.
    pub in_flight: u64,
}

#[derive(Debug)]
struct Counters {
    in_flight: u64,
    requests: u64,
    /// ∫ in_flight dt since `period_start`, in request-seconds.
    area: f64,
    last_change: Instant,
    period_start: Instant,
}

/// Shared counters updated by every request and read once per period.
#[derive(Debug)]
pub struct Stats {
    counters: Mutex<Counters>,
}

/// Counts one request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
}

impl Stats {
    pub fn new(now: Instant) -> Arc<Stats> {
        Arc::new(Stats {
            counters: Mutex::new(Counters {
                in_flight: 0,
                requests: 0,
                area: 0.0,
                last_change: now,
                period_start: now,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        // The counters stay consistent even if a holder panicked: every update is one step.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request arrived.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.begin_at(Instant::now())
    }

    pub fn begin_at(self: &Arc<Self>, now: Instant) -> InFlight {
        let mut counters = self.lock();
        counters.advance(now);
        counters.in_flight += 1;
        counters.requests += 1;
        drop(counters);
        InFlight {
            stats: self.clone(),
        }
    }

    fn end_at(&self, now: Instant) {
        let mut counters = self.lock();
        counters.advance(now);
        counters.in_flight = counters.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }

    /// Closes the current period at `now` and starts the next.
    pub fn sample(&self, now: Instant) -> Sample {
        let mut counters = self.lock();
        counters.advance(now);
        let elapsed = now
            .saturating_duration_since(counters.period_start)
            .as_secs_f64();
        let average_concurrency = if elapsed > 0.0 {
            counters.area / elapsed
        } else {
            counters.in_flight as f64
        };
        let sample = Sample {
            average_concurrency,
            requests: counters.requests,
            in_flight: counters.in_flight,
        };
        counters.area = 0.0;
        counters.requests = 0;
        counters.period_start = now;
        sample
    }
}

impl Counters {
    fn advance(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.area += self.in_flight as f64 * elapsed;
        self.last_change = self.last_change.max(now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.end_at(Instant::now());
    }
}

/// Counts every request passing through in a [`Stats`].
#[derive(Debug, Clone)]
pub struct StatsLayer {
    stats: Arc<Stats>,
}

impl StatsLayer {
    pub fn new(stats: Arc<Stats>) -> StatsLayer {
        StatsLayer { stats }
    }
}

impl<S> tower::Layer<S> for StatsLayer {
    type Service = StatsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatsService {
            stats: self.stats.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StatsService<S> {
    stats: Arc<Stats>,
    inner: S,
}

impl<S, R> tower::Service<R> for StatsService<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = self.stats.begin();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            drop(in_flight);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{Layer, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn averages_concurrency_over_time() {
        let start = Instant::now();
        let stats = Stats::new(start);
        // Two requests for the whole second, a third for half of it: 2.5 on average.
        let a = stats.begin_at(start);
        let b = stats.begin_at(start);
        tokio::time::advance(Duration::from_millis(500)).await;
        let c = stats.begin();
        tokio::time::advance(Duration::from_millis(500)).await;
        let sample = stats.sample(Instant::now());
        assert!(
            (sample.average_concurrency - 2.5).abs() < 1e-6,
            "{sample:?}"
        );
        assert_eq!((sample.requests, sample.in_flight), (3, 3));
        drop((a, b, c));
        tokio::time::advance(Duration::from_secs(1)).await;
        let idle = stats.sample(Instant::now());
        assert_eq!(idle.average_concurrency, 0.0);
        assert_eq!((idle.requests, idle.in_flight), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn layer_counts_until_the_response() {
        let stats = Stats::new(Instant::now());
        let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
        handle.allow(1);
        let service = StatsLayer::new(stats.clone()).layer(mock);
        let call = tokio::spawn(service.oneshot(()));
        let (_, respond) = handle.next_request().await.unwrap();
        assert_eq!(stats.in_flight(), 1);
        respond.send_response(());
        call.await.unwrap().unwrap();
        assert_eq!(stats.in_flight(), 0);
    }
}
