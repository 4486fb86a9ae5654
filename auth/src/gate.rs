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
    /// The process's `--default-authorization-mode`.
    mode: Mode,
    current: RwLock<Arc<Current>>,
}

/// The policies and the mode in force.
#[derive(Default)]
struct Current {
    policies: Snapshot,
    /// `config-features`' `default-authorization-mode`, over the process's.
    mode: Option<Mode>,
}

impl Gate {
    pub fn new(verifier: Arc<Verifier>, mode: Mode) -> Self {
        Self {
            verifier,
            mode,
            current: RwLock::new(Arc::new(Current::default())),
        }
    }

    /// The default authorization mode in force: `config-features`' when the resources have it,
    /// else the process's.
    pub fn mode(&self) -> Mode {
        self.current().mode.unwrap_or(self.mode)
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
        let mode = resources
            .get::<kinetic_api::core::ConfigMap>(
                kinetic_api::config::SYSTEM_NAMESPACE,
                kinetic_api::config::FEATURES,
            )
            .and_then(|(_, map)| {
                // Applying refuses a bad one; one that reached the API server without the
                // webhook leaves the process's mode in force.
                let features = kinetic_api::config::Features::from_config_map(map)
                    .inspect_err(|error| {
                        tracing::error!(%error, "config-features does not read; the process's default authorization mode applies.");
                    })
                    .ok()?;
                features.default_authorization_mode?.parse::<Mode>().ok()
            });
        let current = Arc::new(Current {
            policies: Snapshot::build(&policies, &brokers),
            mode,
        });
        if let Ok(mut slot) = self.current.write() {
            *slot = current;
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

    fn current(&self) -> Arc<Current> {
        self.current.read().map(|s| s.clone()).unwrap_or_default()
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
        let current = self.current();
        let mode = current.mode.unwrap_or(self.mode);
        let applying = current.policies.applying(namespace, broker);
        if !needs_token(&applying, mode) {
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
        decide(&applying, mode, namespace, broker, &verified.sub, events).map_err(Denied::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use kinetic_store::StoredResource;
    use serde_json::json;

    use super::*;

    fn stored(kind: &str, namespace: &str, name: &str, body: serde_json::Value) -> StoredResource {
        StoredResource {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            body,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn config_features_sets_the_default_authorization_mode_while_it_is_there() {
        let gate = Gate::new(Arc::new(Verifier::new(None, &[]).unwrap()), Mode::AllowAll);
        let broker = stored(
            "Broker",
            "team",
            "default",
            json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                   "metadata": {"name": "default", "namespace": "team"}}),
        );
        let features = |mode: &str| {
            stored(
                "ConfigMap",
                "kinetic-system",
                "config-features",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "config-features", "namespace": "kinetic-system"},
                       "data": {"default-authorization-mode": mode}}),
            )
        };
        gate.update(&kinetic_resources::Snapshot::new(vec![broker.clone()]));
        assert_eq!(gate.mode(), Mode::AllowAll);
        assert!(gate.admit("team", "default", None, &[]).await.is_ok());

        gate.update(&kinetic_resources::Snapshot::new(vec![
            broker.clone(),
            features("deny-all"),
        ]));
        assert_eq!(gate.mode(), Mode::DenyAll);
        assert!(matches!(
            gate.admit("team", "default", None, &[]).await,
            Err(Denied::NoToken(_))
        ));

        // One that does not read leaves the process's mode; removing it restores it too.
        gate.update(&kinetic_resources::Snapshot::new(vec![
            broker.clone(),
            features("maybe"),
        ]));
        assert_eq!(gate.mode(), Mode::AllowAll);
        gate.update(&kinetic_resources::Snapshot::new(vec![broker]));
        assert!(gate.admit("team", "default", None, &[]).await.is_ok());
    }
}
