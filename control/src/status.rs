//! A stored resource as users see it: its body with `metadata.generation`, and a `status` composed
//! of what this process knows now (a Broker's audience and the EventPolicies that apply to it, a
//! Trigger's delivery state, a Service's URL, traffic and instances).

use kinetic_api::Kind;
use kinetic_store::StoredResource;
use serde_json::{Value, json};

use crate::Control;

impl Control {
    /// A stored resource as the API shows it: with its generation and live status.
    pub async fn shown(&self, stored: StoredResource) -> Result<Value, kinetic_store::Error> {
        if stored.kind == Kind::Broker.as_str() || stored.kind == Kind::EventPolicy.as_str() {
            let status = self.policy_status(&stored).await?;
            let mut body = with_status(stored.body, stored.generation);
            if let Some(object) = body.as_object_mut() {
                object.insert("status".into(), status);
            }
            return Ok(body);
        }
        if stored.kind == Kind::Trigger.as_str() {
            let status = self.trigger_status(&stored).await?;
            let mut body = with_status(stored.body, stored.generation);
            if let Some(object) = body.as_object_mut() {
                object.insert("status".into(), status);
            }
            return Ok(body);
        }
        Ok(self.live_status(with_status(stored.body, stored.generation)))
    }

    /// A Broker's audience and the EventPolicies that apply to it (Knative's `status.address.audience`
    /// and `status.policies`); an EventPolicy's resolved subjects (`status.from`).
    async fn policy_status(&self, stored: &StoredResource) -> Result<Value, kinetic_store::Error> {
        use kinetic_api::policy::{EventPolicy, POLICY_API_VERSION, broker_audience};
        if stored.kind == Kind::EventPolicy.as_str() {
            let from = serde_json::from_value::<EventPolicy>(stored.body.clone())
                .map(|policy| policy.subjects())
                .unwrap_or_default();
            return Ok(json!({"ready": true, "from": from}));
        }
        let policies: Vec<EventPolicy> = self
            .store
            .list_resources(Kind::EventPolicy.as_str(), Some(&stored.namespace))
            .await?
            .into_iter()
            .filter_map(|p| serde_json::from_value(p.body).ok())
            .collect();
        let brokers: Vec<kinetic_api::Broker> = serde_json::from_value(stored.body.clone())
            .into_iter()
            .collect();
        let snapshot = kinetic_auth::policy::Snapshot::build(&policies, &brokers);
        let applying: Vec<Value> = snapshot
            .applying(&stored.namespace, &stored.name)
            .iter()
            .map(|p| json!({"apiVersion": POLICY_API_VERSION, "name": p.name}))
            .collect();
        Ok(json!({
            "address": {
                "url": format!("/{}/{}", stored.namespace, stored.name),
                "audience": broker_audience(&stored.namespace, &stored.name),
            },
            "policies": applying,
        }))
    }

    /// A trigger's delivery state: `disabled` (its subscriber answered 410; from the store, so every
    /// process agrees) and, where this process delivers, `ready` and the `problem` that stops it.
    async fn trigger_status(&self, stored: &StoredResource) -> Result<Value, kinetic_store::Error> {
        let disabled = kinetic_triggers::disable::read(
            &*self.store,
            &stored.namespace,
            &stored.name,
            &stored.uid,
            stored.generation,
        )
        .await?;
        let problem = self
            .triggers
            .as_ref()
            .map(|problems| problems.get(&format!("{}/{}", stored.namespace, stored.name)));
        let mut status = serde_json::Map::new();
        match (&disabled, problem) {
            (Some(disabled), _) => {
                status.insert("ready".into(), json!(false));
                status.insert("problem".into(), json!(disabled.reason()));
            }
            (None, Some(Some(problem))) => {
                status.insert("ready".into(), json!(false));
                status.insert("problem".into(), json!(problem));
            }
            (None, Some(None)) => {
                status.insert("ready".into(), json!(true));
            }
            // This process does not deliver: it cannot tell.
            (None, None) => {}
        }
        if let Some(disabled) = disabled {
            status.insert("disabled".into(), disabled.to_json());
        }
        // kinetic's own: how many deliveries the subscriber is given at once (learned from its
        // answers) and how many are in flight.
        if let Some((limit, in_flight)) = self
            .subscriber_limits
            .as_ref()
            .and_then(|limits| limits.of(&stored.uid))
        {
            status.insert("concurrencyLimit".into(), json!(limit));
            status.insert("inFlight".into(), json!(in_flight));
        }
        Ok(Value::Object(status))
    }

    /// Adds what serving knows now (URL, traffic, instances) to a Service or Revision.
    fn live_status(&self, mut body: Value) -> Value {
        let Some(serving) = &self.serving else {
            return body;
        };
        let kind = body["kind"].as_str().and_then(Kind::of);
        let namespace = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let status = match kind {
            Some(Kind::Service) => serving
                .services()
                .into_iter()
                .find(|s| s.namespace == namespace && s.name == name)
                .and_then(|s| serde_json::to_value(s).ok()),
            Some(Kind::Revision) => Some(
                serving
                    .revisions()
                    .into_iter()
                    .find(|r| r.namespace == namespace && r.name == name)
                    .and_then(|r| serde_json::to_value(r).ok())
                    .unwrap_or_else(|| json!({"desired": 0, "ready": 0, "served": false})),
            ),
            _ => None,
        };
        if let (Some(status), Some(object)) = (status, body.as_object_mut()) {
            object.insert("status".into(), status);
        }
        body
    }
}

fn with_status(mut body: Value, generation: i64) -> Value {
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("generation".into(), json!(generation));
    }
    body
}
