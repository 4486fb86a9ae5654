//! Leader election with a `coordination.k8s.io/v1` Lease, as Knative's controllers do: of the
//! controller's replicas, the one holding the Lease reconciles; the others wait, and one takes
//! over within the Lease's duration when the leader stops renewing it. The Lease is kept by
//! `kube-lease-manager` (server-side apply, with a grace period for clock skew).

use std::future::Future;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;

/// The controller's Lease, in its namespace.
pub const LEASE: &str = "kinetic-controller";

/// The serving autoscaler's Lease, in its namespace.
pub const AUTOSCALER_LEASE: &str = "kinetic-autoscaler";

/// How the Lease is held.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's name ([`LEASE`], [`AUTOSCALER_LEASE`]).
    pub lease: String,
    pub namespace: String,
    /// This replica's name in the Lease (its pod's name).
    pub identity: String,
    /// Seconds a Lease not renewed stays held.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// Runs `lead` while this replica holds the Lease, with a token cancelled when it loses it (then
/// waits to hold it again), until `cancel`. The Lease is released on the way out, so a
/// successor takes over at once.
pub async fn run<F, Fut>(
    client: kube::Client,
    election: &Election,
    cancel: CancellationToken,
    mut lead: F,
) -> Result<(), LeaseManagerError>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration)
        .with_grace(election.grace)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    loop {
        // Wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                () = cancel.cancelled() => return release(leading, task).await,
                changed = leading.changed() => if changed.is_err() {
                    return finished(task).await;
                },
            }
        }
        tracing::info!(identity = %election.identity, "This replica holds the controller's Lease; reconciling.");
        let term = cancel.child_token();
        let reconciling = tokio::spawn(lead(term.clone()));
        // Lead until the Lease is lost or the process stops.
        let lost = loop {
            tokio::select! {
                () = cancel.cancelled() => break false,
                changed = leading.changed() => match changed {
                    Ok(()) if !*leading.borrow_and_update() => break true,
                    Ok(()) => {}
                    Err(_) => break true,
                },
            }
        };
        term.cancel();
        let _ = reconciling.await;
        if !lost {
            return release(leading, task).await;
        }
        tracing::warn!(identity = %election.identity, "This replica lost the controller's Lease; it stopped reconciling.");
        if task.is_finished() {
            return finished(task).await;
        }
    }
}

/// Dropping the receiver makes the manager release the Lease and end.
async fn release(
    leading: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
) -> Result<(), LeaseManagerError> {
    drop(leading);
    finished(task).await
}

async fn finished(
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
) -> Result<(), LeaseManagerError> {
    match task.await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Ok(()),
    }
}
