//! The containerConcurrency breaker: at most `capacity` requests in an instance at once, at most
//! `queue_depth` more waiting for a slot, and the rest refused at once (503) rather than piling up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Knative's queue depth: ten waiting requests per slot.
pub const QUEUE_DEPTH_PER_SLOT: usize = 10;

/// The breaker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all {capacity} request slots are busy and {queued} requests are already waiting")]
pub struct Overflow {
    pub capacity: usize,
    pub queued: usize,
}

/// Limits concurrent requests. `capacity` 0 means no limit (containerConcurrency 0).
#[derive(Debug)]
pub struct Breaker {
    capacity: usize,
    queue_depth: usize,
    slots: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
}

/// A held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Breaker {
    /// A breaker with Knative's queue depth (10 × capacity).
    pub fn new(capacity: usize) -> Breaker {
        Breaker::with_queue(capacity, capacity * QUEUE_DEPTH_PER_SLOT)
    }

    pub fn with_queue(capacity: usize, queue_depth: usize) -> Breaker {
        Breaker {
            capacity,
            queue_depth,
            slots: (capacity > 0).then(|| Arc::new(Semaphore::new(capacity))),
            waiting: AtomicUsize::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        match &self.slots {
            Some(slots) => self.capacity - slots.available_permits(),
            None => 0,
        }
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A slot if one is free now, without waiting.
    pub fn try_acquire(&self) -> Option<Slot> {
        match &self.slots {
            None => Some(Slot { _permit: None }),
            Some(slots) => slots.clone().try_acquire_owned().ok().map(|permit| Slot {
                _permit: Some(permit),
            }),
        }
    }

    /// Waits for a slot in arrival order, or fails at once when the queue is full.
    ///
    /// Cancellation safe: dropping the future leaves the queue.
    pub async fn acquire(&self) -> Result<Slot, Overflow> {
        let Some(slots) = &self.slots else {
            return Ok(Slot { _permit: None });
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Slot {
                _permit: Some(permit),
            });
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.waiting);
        if queued >= self.queue_depth {
            return Err(Overflow {
                capacity: self.capacity,
                queued,
            });
        }
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = slots.clone().acquire_owned().await.map_err(|_| Overflow {
            capacity: self.capacity,
            queued,
        })?;
        Ok(Slot {
            _permit: Some(permit),
        })
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Puts a [`Breaker`] in front of a service.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breaker: Arc<Breaker>,
}

impl BreakerLayer {
    pub fn new(breaker: Arc<Breaker>) -> BreakerLayer {
        BreakerLayer { breaker }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            breaker: self.breaker.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    breaker: Arc<Breaker>,
    inner: S,
}

impl<S, R> tower::Service<R> for BreakerService<S>
where
    S: tower::Service<R> + Clone + Send + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let breaker = self.breaker.clone();
        // The ready inner service is the one to call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _slot = breaker.acquire().await?;
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn holds_capacity_queues_then_overflows() {
        let breaker = Arc::new(Breaker::with_queue(1, 2));
        let first = breaker.acquire().await.unwrap();
        assert_eq!(breaker.in_flight(), 1);
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                tokio::spawn(async move { breaker.acquire().await.map(|_| ()) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(breaker.waiting(), 2);
        let overflow = breaker.acquire().await.unwrap_err();
        assert_eq!(overflow.queued, 2);
        drop(first);
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        assert_eq!((breaker.in_flight(), breaker.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let breaker = Breaker::new(0);
        let slots: Vec<_> = (0..1000).map(|_| breaker.try_acquire().unwrap()).collect();
        assert_eq!(slots.len(), 1000);
        assert!(breaker.acquire().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn layer_limits_a_service() {
        let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
        let service = BreakerLayer::new(Arc::new(Breaker::with_queue(1, 0))).layer(mock);
        handle.allow(10);
        let first = tokio::spawn(service.clone().oneshot(1));
        let (request, respond) = handle.next_request().await.unwrap();
        assert_eq!(request, 1);
        // The slot is taken and nothing may queue: the second request is refused.
        let error = service.clone().oneshot(2).await.unwrap_err();
        assert!(error.downcast_ref::<Overflow>().is_some(), "{error}");
        respond.send_response(10);
        assert_eq!(first.await.unwrap().unwrap(), 10);
    }
}
