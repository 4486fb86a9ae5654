//! `kinetic webhook`: Kubernetes' validating admission for kinetic's kinds, so that `kubectl
//! apply` of a resource kinetic would refuse fails at once with the message `kinetic apply`
//! gives (resource, field path, what is wrong, hint), instead of being stored and reported in its
//! status later.
//!
//! - [`review`]: one AdmissionReview in, its answer out (pure but for the checks' secret scope);
//! - [`certs`]: the webhook's serving certificate, made and kept in a Secret, and its CA put in
//!   the ValidatingWebhookConfiguration, as Knative's webhook does, so installing needs no
//!   certificate tooling.

pub mod certs;

use kinetic_api::{Kind, Resource};
use kinetic_control::ServiceChecks;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

/// The path the API server posts AdmissionReviews to for validation.
pub const PATH: &str = "/validate";
/// The path of defaulting (the MutatingWebhookConfiguration's).
pub const DEFAULT_PATH: &str = "/default";

/// What kinetic checks of an object, as [`crate::controller`] does.
pub fn checks() -> ServiceChecks {
    ServiceChecks {
        containers: true,
        ..ServiceChecks::default()
    }
}

/// The answer to one AdmissionReview (`admission.k8s.io/v1`) body. A body that is no review is
/// answered as invalid; an object of a kind kinetic does not implement, a delete, or a write to a
/// subresource (status, finalizers through `/status`) is allowed: it is not kinetic's to judge.
pub fn review(body: &[u8], checks: &ServiceChecks) -> AdmissionReview<DynamicObject> {
    let request = match request_of(body) {
        Ok(request) => request,
        Err(why) => return AdmissionResponse::invalid(why).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    match refusal(&request, checks) {
        None => response.into_review(),
        Some(message) => {
            let mut response = response.deny(message);
            response.result.code = 400;
            response.result.reason = "BadRequest".to_owned();
            response.into_review()
        }
    }
}

/// The answer to one AdmissionReview for defaulting: as Knative's webhook does, a Broker created
/// without a class gets the class `config-br-defaults` names for its namespace (`resources`, when
/// this webhook reads them), written into the object, so it keeps that class whatever the
/// defaults say later. Everything is allowed here; validation is [`review`]'s.
pub fn default(
    body: &[u8],
    resources: Option<&kinetic_resources::Snapshot>,
) -> AdmissionReview<DynamicObject> {
    let request = match request_of(body) {
        Ok(request) => request,
        Err(why) => return AdmissionResponse::invalid(why).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    let Some(patch) = resources.and_then(|resources| broker_class_patch(&request, resources))
    else {
        return response.into_review();
    };
    match response.with_patch(patch) {
        Ok(response) => response.into_review(),
        Err(error) => AdmissionResponse::invalid(error.to_string()).into_review(),
    }
}

/// The request of an AdmissionReview body, or why the body is none.
fn request_of(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|error| format!("not an AdmissionReview: {error}"))?;
    review
        .try_into()
        .map_err(|error: kube::core::admission::ConvertAdmissionReviewError| error.to_string())
}

/// The JSON patch that gives a new classless Broker its namespace's default class.
fn broker_class_patch(
    request: &AdmissionRequest<DynamicObject>,
    resources: &kinetic_resources::Snapshot,
) -> Option<json_patch::Patch> {
    use kinetic_api::config::{BR_DEFAULTS, BrokerDefaults, SYSTEM_NAMESPACE};
    use kinetic_api::eventing::BROKER_CLASS_ANNOTATION;
    if request.operation != Operation::Create || request.kind.kind != "Broker" {
        return None;
    }
    let object = request.object.as_ref()?;
    let annotations = object.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| a.contains_key(BROKER_CLASS_ANNOTATION)) {
        return None;
    }
    let namespace = object
        .metadata
        .namespace
        .clone()
        .or_else(|| request.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let (_, config) =
        resources.get::<kinetic_api::core::ConfigMap>(SYSTEM_NAMESPACE, BR_DEFAULTS)?;
    let defaults = BrokerDefaults::from_config_map(config).ok()?;
    let class = defaults.for_namespace(&namespace)?.broker_class.clone()?;
    // `/` in a JSON pointer segment is written `~1`.
    let key = BROKER_CLASS_ANNOTATION
        .replace('~', "~0")
        .replace('/', "~1");
    let operations = match annotations {
        Some(_) => serde_json::json!([
            {"op": "add", "path": format!("/metadata/annotations/{key}"), "value": class}
        ]),
        None => serde_json::json!([
            {"op": "add", "path": "/metadata/annotations", "value": {BROKER_CLASS_ANNOTATION: class}}
        ]),
    };
    serde_json::from_value(operations).ok()
}

/// Why kinetic refuses the request's object, if it does.
fn refusal(request: &AdmissionRequest<DynamicObject>, checks: &ServiceChecks) -> Option<String> {
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.sub_resource.is_some()
    {
        return None;
    }
    let kind = Kind::of(&request.kind.kind)?;
    // Revisions are written by the controller from a Service kinetic checked.
    if kind == Kind::Revision {
        return None;
    }
    let object = request.object.as_ref()?;
    // A deleted object's last writes (finalizers coming off) are not judged again.
    if object.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let mut object = object.clone();
    // `generateName` objects get their name after admission.
    if object.metadata.name.is_none() {
        object.metadata.name = Some(request.name.clone()).filter(|n| !n.is_empty());
    }
    if object.metadata.namespace.is_none() {
        object.metadata.namespace = request.namespace.clone();
    }
    let body = crate::feed::stored(kind.as_str(), &object)?.body;
    let checked = Resource::from_value(body).and_then(|resource| {
        kinetic_control::validate::document(&resource, Some(checks))?;
        Ok(resource)
    });
    match checked {
        Ok(_) => None,
        Err(error) => {
            let key = format!(
                "{kind} {}/{}",
                object.metadata.namespace.as_deref().unwrap_or("default"),
                object.metadata.name.as_deref().unwrap_or_default()
            );
            Some(error.in_resource(key).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn admission(operation: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "eventing.knative.dev", "version": "v1", "kind": object["kind"]},
                "resource": {"group": "eventing.knative.dev", "version": "v1", "resource": "triggers"},
                "name": object["metadata"]["name"],
                "namespace": "team",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": object,
                "dryRun": false
            }
        })
        .to_string()
        .into_bytes()
    }

    fn trigger(filters: Value) -> Value {
        json!({
            "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": "orders", "namespace": "team"},
            "spec": {"broker": "default", "subscriber": {"uri": "http://display.team.svc.cluster.local/"},
                     "filters": filters}
        })
    }

    fn answer(body: &[u8]) -> Value {
        serde_json::to_value(review(body, &checks())).unwrap()
    }

    #[test]
    fn a_trigger_kinetic_accepts_is_allowed() {
        let answer = answer(&admission(
            "CREATE",
            trigger(json!([{"exact": {"type": "a"}}])),
        ));
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }

    #[test]
    fn a_trigger_kinetic_refuses_is_denied_with_kinetics_message() {
        let answer = answer(&admission(
            "CREATE",
            trigger(json!([{"cesql": "type = = 'x'"}])),
        ));
        assert_eq!(answer["response"]["allowed"], false, "{answer}");
        assert_eq!(answer["response"]["status"]["code"], 400);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Trigger team/orders: spec.filters[0].cesql: is not valid CESQL"),
            "{message}"
        );
        assert!(message.contains("hint:"), "{message}");
    }

    fn broker_create(annotations: Option<Value>) -> Vec<u8> {
        let mut broker = json!({
            "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": "default", "namespace": "team"}, "spec": {}
        });
        if let Some(annotations) = annotations {
            broker["metadata"]["annotations"] = annotations;
        }
        admission("CREATE", broker)
    }

    fn defaults(text: &str) -> kinetic_resources::Snapshot {
        kinetic_resources::Snapshot::new(vec![kinetic_store::StoredResource {
            kind: "ConfigMap".into(),
            namespace: "kinetic-system".into(),
            name: "config-br-defaults".into(),
            uid: "u".into(),
            generation: 1,
            body: json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "config-br-defaults", "namespace": "kinetic-system"},
                         "data": {"default-br-config": text}}),
            updated_at: 0,
        }])
    }

    fn patch_of(answer: &AdmissionReview<DynamicObject>) -> Option<Value> {
        let response = answer.response.as_ref().unwrap();
        assert!(response.allowed);
        response
            .patch
            .as_ref()
            .map(|bytes| serde_json::from_slice(bytes).unwrap())
    }

    #[test]
    fn a_new_classless_broker_gets_its_namespaces_default_class() {
        let resources = defaults(
            "clusterDefault: {brokerClass: MTChannelBasedBroker}\nnamespaceDefaults:\n  team: {brokerClass: Kafka}\n",
        );
        assert_eq!(
            patch_of(&default(&broker_create(None), Some(&resources))),
            Some(json!([{"op": "add", "path": "/metadata/annotations",
                         "value": {"eventing.knative.dev/broker.class": "Kafka"}}]))
        );
        assert_eq!(
            patch_of(&default(
                &broker_create(Some(json!({"owner": "me"}))),
                Some(&resources)
            )),
            Some(
                json!([{"op": "add", "path": "/metadata/annotations/eventing.knative.dev~1broker.class",
                         "value": "Kafka"}])
            )
        );
        // A class of its own, no configuration, or no class configured: untouched.
        let own = broker_create(Some(
            json!({"eventing.knative.dev/broker.class": "Kinetic"}),
        ));
        assert_eq!(patch_of(&default(&own, Some(&resources))), None);
        assert_eq!(patch_of(&default(&broker_create(None), None)), None);
        let no_class = defaults("clusterDefault: {delivery: {retry: 2}}\n");
        assert_eq!(
            patch_of(&default(&broker_create(None), Some(&no_class))),
            None
        );
    }

    #[test]
    fn deletes_and_other_kinds_are_not_judged_and_garbage_is_invalid() {
        let answer_delete = answer(&admission(
            "DELETE",
            trigger(json!([{"cesql": "type = = 'x'"}])),
        ));
        assert_eq!(answer_delete["response"]["allowed"], true);
        let mut other = trigger(json!([]));
        other["kind"] = json!("Widget");
        assert_eq!(
            answer(&admission("CREATE", other))["response"]["allowed"],
            true
        );
        let garbage = answer(b"{\"kind\": 3}");
        assert_eq!(garbage["response"]["allowed"], false);
    }
}
