//! Draining: once an instance is told to stop, new requests are refused while the ones in flight
//! finish; `drained()` resolves when none is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;

/// The instance is draining and takes no new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the instance is shutting down and takes no new requests")]
pub struct Draining;

#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One request in flight; dropping it may complete the drain.
#[derive(Debug)]
pub struct Request {
    drain: Arc<Drain>,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain::default())
    }

    /// Admits a request unless draining.
    pub fn enter(self: &Arc<Self>) -> Result<Request, Draining> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let request = Request {
            drain: self.clone(),
        };
        if self.draining.load(Ordering::Acquire) {
            return Err(Draining);
        }
        Ok(request)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops admitting requests and waits until every admitted one has finished.
    ///
    /// Cancellation safe; calling it again is harmless.
    pub async fn drained(&self) {
        self.draining.store(true, Ordering::Release);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.drain.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drain.idle.notify_waiters();
        }
    }
}

/// Tracks requests in a [`Drain`] and refuses new ones while draining.
#[derive(Debug, Clone)]
pub struct DrainLayer {
    drain: Arc<Drain>,
}

impl DrainLayer {
    pub fn new(drain: Arc<Drain>) -> DrainLayer {
        DrainLayer { drain }
    }
}

impl<S> tower::Layer<S> for DrainLayer {
    type Service = DrainService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DrainService {
            drain: self.drain.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DrainService<S> {
    drain: Arc<Drain>,
    inner: S,
}

impl<S, R> tower::Service<R> for DrainService<S>
where
    S: tower::Service<R>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let admitted = self.drain.enter();
        let future = self.inner.call(request);
        Box::pin(async move {
            let _request = admitted?;
            future.await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_requests_in_flight() {
        let drain = Drain::new();
        let request = drain.enter().unwrap();
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.drained().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        assert_eq!(drain.enter().unwrap_err(), Draining);
        drop(request);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained once the last request finished")
            .unwrap();
    }

    #[tokio::test]
    async fn idle_instance_drains_at_once() {
        Drain::new().drained().await;
    }
}
