//! One revision's data path as its scaling loop sees it, wherever the requests flow.
//!
//! In `kinetic up` the data path is a [`RevisionProxy`] in the same process: it holds requests, counts
//! them and forwards them to instances. Split across processes (`kinetic autoscaler` beside
//! gateways, activators and queue-proxies) it is a [`crate::split::RemoteRevision`]: the counts
//! arrive from activators and queue-proxies, and the instances, the activator's place in the path
//! and failed starts go out to the gateways and activators. The scaling loop
//! (`controller.rs`) is the same code for both.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::activator::RevisionProxy;
use crate::queue_proxy::stats::Sample;
use crate::runtime::Instance;

/// What the scaling loop of one revision reads from and tells its data path.
pub trait DataPath: Send + Sync {
    /// Closes the current statistics period at `now`: the requests' time-weighted average
    /// concurrency and how many arrived, over every replica of the data path.
    fn sample(&self, now: Instant) -> Sample;

    /// Requests waiting for an instance or in flight now, as a poke at zero counts them.
    fn in_flight(&self) -> u64;

    /// Notified when a request found no instance to take it: the autoscaler decides at once.
    fn wake(&self) -> &Notify;

    /// The revision's ready instances changed.
    fn set_instances(&self, ready: &[Arc<Instance>]);

    /// Ready instances the data path sends requests to.
    fn ready(&self) -> usize;

    /// Requests waiting for an instance now.
    fn waiting(&self) -> usize;

    /// The autoscaler's target-burst-capacity decision: whether the activator stays in the path.
    fn set_in_path(&self, in_path: bool);

    /// Failed starts so far and, when the last cannot mend itself, why (see
    /// [`RevisionProxy::set_failures`]).
    fn set_failures(&self, failed_starts: u64, permanent: Option<String>);

    /// The revision is no longer served: waiting and later requests are refused.
    fn close(&self);

    /// Requests that arrived at zero ready instances.
    fn cold_starts(&self) -> u64;
}

impl DataPath for RevisionProxy {
    fn sample(&self, now: Instant) -> Sample {
        self.stats.sample(now)
    }

    fn in_flight(&self) -> u64 {
        self.stats.in_flight()
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    fn set_instances(&self, ready: &[Arc<Instance>]) {
        RevisionProxy::set_instances(self, ready);
    }

    fn ready(&self) -> usize {
        RevisionProxy::ready(self)
    }

    fn waiting(&self) -> usize {
        RevisionProxy::waiting(self)
    }

    fn set_in_path(&self, in_path: bool) {
        RevisionProxy::set_in_path(self, in_path);
    }

    fn set_failures(&self, failed_starts: u64, permanent: Option<String>) {
        RevisionProxy::set_failures(self, failed_starts, permanent);
    }

    fn close(&self) {
        RevisionProxy::close(self);
    }

    fn cold_starts(&self) -> u64 {
        self.cold_starts
            .count
            .load(std::sync::atomic::Ordering::Relaxed) as u64
    }
}
