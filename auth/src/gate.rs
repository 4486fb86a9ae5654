//! The broker ingress's [`Admission`]: the token of a request verified for the broker's audience,
//! then [`crate::policy::decide`] on the policies of the latest resource snapshot (a policy
//! applied anywhere takes effect within the snapshot's period, about a second).

use std::sync::{Arc, RwLock};

use cloudevents::Event;
use kinetic_api::Broker;
use kinetic_api::policy::{EventPolicy, broker_audience};
use kinetic_broker::{Admission, Denied};
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

    /// Takes the EventPolicies and Brokers of `resources`. Bodies that cannot be read are left
    /// out (the snapshot lists them); apply never stores one.
    pub fn update(&self, resources: &kinetic_resources::Snapshot) {
        let policies: Vec<EventPolicy> = resources
            .typed::<EventPolicy>()
            .map(|(_, policy)| policy.clone())
            .collect();
        let brokers: Vec<Broker> = resources
            .typed::<Broker>()
            .map(|(_, broker)| broker.clone())
            .collect();
        let snapshot = Arc::new(Snapshot::build(&policies, &brokers));
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = snapshot;
        }
    }

    /// Takes every new snapshot of `resources` until `cancel` (or until the snapshots end).
    pub async fn run(
        self: Arc<Self>,
        mut resources: kinetic_resources::Watch,
        cancel: CancellationToken,
    ) {
        if let Some(latest) = resources.latest() {
            self.update(&latest);
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                latest = resources.changed() => match latest {
                    Some(latest) => self.update(&latest),
                    None => return,
                },
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
