//! The broker ingress's [`Admission`]: the token of a request verified for the broker's audience,
//! then [`crate::policy::decide`] on the policies last read from the store (every second, like
//! the broker directory, so a policy applied anywhere takes effect within about a second).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudevents::Event;
use kinetic_api::Broker;
use kinetic_api::policy::{EventPolicy, broker_audience};
use kinetic_broker::{Admission, Denied};
use kinetic_store::Store;
use tokio_util::sync::CancellationToken;

use crate::policy::{Mode, Snapshot, decide, needs_token};
use crate::verify::Verifier;

/// Who may send to the brokers of this process.
pub struct Gate {
    verifier: Arc<Verifier>,
    mode: Mode,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Gate {
    pub fn new(verifier: Arc<Verifier>, mode: Mode) -> Self {
        Self {
            verifier,
            mode,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Reads every EventPolicy and Broker again. Bodies that do not parse are skipped (with a
    /// warning); apply never stores one.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), kinetic_store::Error> {
        let policies: Vec<EventPolicy> = store
            .list_resources("EventPolicy", None)
            .await?
            .into_iter()
            .filter_map(|stored| {
                serde_json::from_value(stored.body)
                    .inspect_err(|error| tracing::warn!(policy = %format!("{}/{}", stored.namespace, stored.name), %error, "A stored EventPolicy does not parse; it is ignored."))
                    .ok()
            })
            .collect();
        let brokers: Vec<Broker> = store
            .list_resources("Broker", None)
            .await?
            .into_iter()
            .filter_map(|stored| serde_json::from_value(stored.body).ok())
            .collect();
        let snapshot = Arc::new(Snapshot::build(&policies, &brokers));
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = snapshot;
        }
        Ok(())
    }

    /// Refreshes every `interval` until `cancel`.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.refresh(store.as_ref()).await {
                tracing::warn!(%error, "Reading EventPolicies failed; the last ones read stay in force.");
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Admission for Gate {
    async fn admit(
        &self,
        namespace: &str,
        broker: &str,
        authorization: Option<&str>,
        events: &[Event],
    ) -> Result<(), Denied> {
        let snapshot = self.snapshot();
        let applying = snapshot.applying(namespace, broker);
        if !needs_token(&applying, self.mode) {
            return Ok(());
        }
        let audience = broker_audience(namespace, broker);
        let token = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Denied::NoToken(format!(
                    "broker `{namespace}/{broker}` needs a token: send `Authorization: Bearer JWT` with audience `{audience}` (e.g. from `kinetic token create --sub NAME --audience {audience}`)"
                ))
            })?;
        let verified = self
            .verifier
            .verify(token, &audience)
            .await
            .map_err(|invalid| Denied::InvalidToken(invalid.0))?;
        decide(
            &applying,
            self.mode,
            namespace,
            broker,
            &verified.sub,
            events,
        )
        .map_err(Denied::Forbidden)
    }
}
