//! `kinetic controller`'s reconcile against kube's mock API server (`tower-test`, as kube-rs and
//! controller-rs test theirs), with a real SQLite store: every request it makes is asserted,
//! method, path, query and body (finalizer patches with their resourceVersion, status patches,
//! server-side apply of a Service's children, Events), and what it does to the store.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kinetic_k8s::controller::{Context, Error, reconcile};
use kinetic_outbound::destination::Resolver;
use kinetic_resources::{Snapshot, Watch};
use kinetic_store::{Store, StoredResource, TriggerRef};
use kube::api::{ApiResource, DynamicObject};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// One request as the API server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

async fn next(server: &mut ApiServer) -> (Seen, SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), server.next_request())
        .await
        .expect("a request within 10 s")
        .expect("the client is alive");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
    };
    (seen, send)
}

fn answer(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap(),
    );
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": "Operation cannot be fulfilled: the object has been modified"})
}

fn api_resource(kind: &str) -> ApiResource {
    kinetic_k8s::feed::resources()
        .into_iter()
        .find(|r| r.kind == kind)
        .unwrap()
}

fn stored(kind: &str, body: Value) -> StoredResource {
    StoredResource {
        kind: kind.to_owned(),
        namespace: body["metadata"]["namespace"].as_str().unwrap().to_owned(),
        name: body["metadata"]["name"].as_str().unwrap().to_owned(),
        uid: format!("u-{kind}"),
        generation: 1,
        body,
        updated_at: 0,
    }
}

fn broker() -> StoredResource {
    stored(
        "Broker",
        json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
               "metadata": {"name": "default", "namespace": "team"}, "spec": {}}),
    )
}

fn trigger(extra_metadata: Value, spec: Value) -> DynamicObject {
    let mut metadata = json!({"name": "orders", "namespace": "team", "uid": "u-trigger",
                              "generation": 2, "resourceVersion": "11"});
    metadata
        .as_object_mut()
        .unwrap()
        .extend(extra_metadata.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": metadata, "spec": spec,
    }))
    .unwrap()
}

fn trigger_spec() -> Value {
    json!({"broker": "default", "subscriber": {"uri": "http://orders.team.svc.cluster.local/"}})
}

const TRIGGER_FINALIZER: &str = "triggers.eventing.knative.dev";

struct Harness {
    context: Arc<Context>,
    store: Arc<dyn Store>,
    server: ApiServer,
}

async fn harness(resources: Vec<StoredResource>) -> Harness {
    let (service, server) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let store = kinetic_store::open("sqlite::memory:").await.unwrap();
    let context = Arc::new(
        Context::new(
            client,
            store.clone(),
            Watch::fixed(Snapshot::new(resources)),
            Resolver {
                ingress_url: "http://kinetic-broker.kinetic-system.svc.cluster.local".to_owned(),
                gateway: None,
            },
            Some("kinetic-controller-0".to_owned()),
        )
        .with_gateway("kinetic-gateway.kinetic-system.svc.cluster.local"),
    );
    Harness {
        context,
        store,
        server,
    }
}

impl Harness {
    fn reconcile(
        &self,
        object: DynamicObject,
        kind: &str,
    ) -> tokio::task::JoinHandle<Result<Action, Error>> {
        tokio::spawn(reconcile(
            Arc::new(object),
            self.context.clone(),
            kinetic_api::Kind::of(kind).unwrap(),
            api_resource(kind),
        ))
    }

    /// Asserts the reconcile ends without another request.
    async fn ends(&mut self, task: tokio::task::JoinHandle<Result<Action, Error>>) -> Action {
        tokio::select! {
            done = task => done.unwrap().expect("the reconcile succeeds"),
            request = self.server.next_request() => {
                let (request, _) = request.unwrap();
                panic!("an unexpected request: {} {}", request.method(), request.uri());
            }
        }
    }
}

/// The conditions' times, which are the clock's, replaced by a mark.
fn timeless(mut status: Value) -> Value {
    if let Some(conditions) = status["status"]["conditions"].as_array_mut() {
        for condition in conditions {
            assert!(
                condition["lastTransitionTime"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z')),
                "{condition}"
            );
            condition["lastTransitionTime"] = json!("T");
        }
    }
    status
}

async fn cursors(store: &Arc<dyn Store>) -> Vec<String> {
    store
        .backlog()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.trigger_uid)
        .collect()
}

#[tokio::test]
async fn a_new_trigger_gets_its_cursor_then_its_finalizer_then_its_status() {
    let mut h = harness(vec![broker()]).await;
    let task = h.reconcile(trigger(json!({}), trigger_spec()), "Trigger");

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/eventing.knative.dev/v1/namespaces/team/triggers/orders"
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        seen.body,
        json!({"metadata": {"finalizers": [TRIGGER_FINALIZER], "resourceVersion": "11"}})
    );
    // The cursor exists before the finalizer is written.
    assert_eq!(cursors(&h.store).await, vec!["u-trigger".to_owned()]);
    answer(send, 200, &json!({}));

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/eventing.knative.dev/v1/namespaces/team/triggers/orders/status"
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        timeless(seen.body),
        json!({"status": {
            "observedGeneration": 2,
            "subscriberUri": "http://orders.team.svc.cluster.local/",
            "conditions": [
                {"type": "BrokerReady", "status": "True", "lastTransitionTime": "T"},
                {"type": "DeadLetterSinkResolved", "status": "True", "lastTransitionTime": "T",
                 "reason": "DeadLetterSinkNotConfigured", "message": "No dead letter sink is configured."},
                {"type": "Ready", "status": "True", "lastTransitionTime": "T"},
                {"type": "SubscriberResolved", "status": "True", "lastTransitionTime": "T"},
            ],
        }})
    );
    answer(send, 200, &json!({}));
    assert_eq!(
        h.ends(task).await,
        Action::requeue(Duration::from_secs(600))
    );
}

#[tokio::test]
async fn a_status_that_did_not_change_is_not_written_again() {
    let mut h = harness(vec![broker()]).await;
    let task = h.reconcile(
        trigger(json!({"finalizers": [TRIGGER_FINALIZER]}), trigger_spec()),
        "Trigger",
    );
    let (seen, send) = next(&mut h.server).await;
    assert!(seen.path.ends_with("/status"), "{seen:?}");
    let written = seen.body["status"].clone();
    answer(send, 200, &json!({}));
    h.ends(task).await;

    let mut object = trigger(json!({"finalizers": [TRIGGER_FINALIZER]}), trigger_spec());
    object.data["status"] = written;
    let task = h.reconcile(object, "Trigger");
    h.ends(task).await;
}

#[tokio::test]
async fn a_trigger_whose_broker_is_missing_is_not_ready_and_a_warning_is_recorded() {
    let mut h = harness(vec![]).await;
    let task = h.reconcile(
        trigger(json!({"finalizers": [TRIGGER_FINALIZER]}), trigger_spec()),
        "Trigger",
    );
    let (seen, send) = next(&mut h.server).await;
    assert!(seen.path.ends_with("/triggers/orders/status"), "{seen:?}");
    let conditions = seen.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "BrokerDoesNotExist");
    assert_eq!(ready["message"], "Broker \"default\" does not exist");
    answer(send, 200, &json!({}));

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/apis/events.k8s.io/v1/namespaces/team/events");
    assert_eq!(seen.body["type"], "Warning");
    assert_eq!(seen.body["reason"], "BrokerDoesNotExist");
    assert_eq!(seen.body["note"], "Broker \"default\" does not exist");
    assert_eq!(seen.body["reportingController"], "kinetic-controller");
    assert_eq!(seen.body["reportingInstance"], "kinetic-controller-0");
    assert_eq!(seen.body["regarding"]["kind"], "Trigger");
    assert_eq!(seen.body["regarding"]["name"], "orders");
    assert_eq!(seen.body["regarding"]["uid"], "u-trigger");
    answer(send, 201, &seen.body);
    assert_eq!(h.ends(task).await, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_trigger_kinetic_refuses_says_why_in_its_status() {
    let mut h = harness(vec![broker()]).await;
    let mut spec = trigger_spec();
    spec["filters"] = json!([{"cesql": "type = = 'x'"}]);
    let task = h.reconcile(
        trigger(json!({"finalizers": [TRIGGER_FINALIZER]}), spec),
        "Trigger",
    );
    let (seen, send) = next(&mut h.server).await;
    let conditions = seen.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Invalid");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.filters[0].cesql: is not valid CESQL"),
        "{message}"
    );
    answer(send, 200, &json!({}));
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.body["reason"], "Invalid");
    answer(send, 201, &seen.body);
    h.ends(task).await;
    assert!(
        cursors(&h.store).await.is_empty(),
        "a refused trigger gets no cursor"
    );
}

#[tokio::test]
async fn a_conflict_on_the_finalizer_fails_the_reconcile_before_the_status() {
    let mut h = harness(vec![broker()]).await;
    let task = h.reconcile(trigger(json!({}), trigger_spec()), "Trigger");
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.body["metadata"]["resourceVersion"], "11");
    answer(send, 409, &conflict());
    let error = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&error, Error::Kube(kube::Error::Api(status)) if status.code == 409),
        "{error}"
    );
}

#[tokio::test]
async fn a_deleted_trigger_leaves_nothing_in_the_store_then_loses_its_finalizer() {
    let mut h = harness(vec![broker()]).await;
    let reference = TriggerRef {
        uid: "u-trigger".to_owned(),
        namespace: "team".to_owned(),
        name: "orders".to_owned(),
        broker: "team/default".to_owned(),
    };
    kinetic_triggers::lifecycle::bound(&*h.store, &reference, false, 0)
        .await
        .unwrap();
    // Where a Kafka-class trigger's consumption began.
    h.store
        .put_checkpoint("trigger/team/orders/p0", &json!(1), None, 0)
        .await
        .unwrap();
    assert_eq!(cursors(&h.store).await, vec!["u-trigger".to_owned()]);
    let task = h.reconcile(
        trigger(
            json!({"finalizers": ["example.com/other", TRIGGER_FINALIZER],
                   "deletionTimestamp": "2026-12-07T00:00:00Z", "resourceVersion": "12"}),
            trigger_spec(),
        ),
        "Trigger",
    );
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/eventing.knative.dev/v1/namespaces/team/triggers/orders"
    );
    assert_eq!(
        seen.body,
        json!({"metadata": {"finalizers": ["example.com/other"], "resourceVersion": "12"}})
    );
    assert!(cursors(&h.store).await.is_empty());
    assert!(
        h.store
            .get_checkpoint("trigger/team/orders/p0")
            .await
            .unwrap()
            .is_none()
    );
    answer(send, 200, &json!({}));
    assert_eq!(h.ends(task).await, Action::await_change());
}

#[tokio::test]
async fn a_deleted_ping_source_forgets_its_last_tick() {
    let mut h = harness(vec![]).await;
    h.store
        .put_checkpoint("ping/team/beat", &json!({"last": 1}), None, 0)
        .await
        .unwrap();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
        "metadata": {"name": "beat", "namespace": "team", "uid": "u-ping", "resourceVersion": "5",
                     "finalizers": ["pingsources.sources.knative.dev"],
                     "deletionTimestamp": "2026-12-07T00:00:00Z"},
        "spec": {"schedule": "* * * * *", "sink": {"uri": "http://display.team.svc.cluster.local/"}},
    }))
    .unwrap();
    let task = h.reconcile(object, "PingSource");
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        seen.path,
        "/apis/sources.knative.dev/v1/namespaces/team/pingsources/beat"
    );
    assert_eq!(
        seen.body,
        json!({"metadata": {"finalizers": [], "resourceVersion": "5"}})
    );
    assert!(
        h.store
            .get_checkpoint("ping/team/beat")
            .await
            .unwrap()
            .is_none()
    );
    answer(send, 200, &json!({}));
    h.ends(task).await;
}

#[tokio::test]
async fn a_new_service_gets_its_revision_configuration_and_route_by_server_side_apply() {
    let mut h = harness(vec![]).await;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "team", "uid": "u-service", "generation": 1,
                     "resourceVersion": "3"},
        "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest",
                                                          "env": [{"name": "TARGET", "value": "Go Sample v1"}]}]}}},
    }))
    .unwrap();
    let task = h.reconcile(object, "Service");
    let owner = json!([{"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello",
                        "uid": "u-service", "controller": true, "blockOwnerDeletion": true}]);

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/revisions/hello-00001"
    );
    assert_eq!(seen.query, "&force=true&fieldManager=kinetic-controller");
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(seen.body["kind"], "Revision");
    assert_eq!(seen.body["metadata"]["ownerReferences"], owner);
    assert_eq!(
        seen.body["metadata"]["labels"]["serving.knative.dev/service"],
        "hello"
    );
    assert_eq!(
        seen.body["spec"]["containers"][0]["image"],
        "ghcr.io/knative/helloworld-go:latest"
    );
    answer(send, 200, &seen.body);

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/configurations/hello"
    );
    assert_eq!(seen.query, "&force=true&fieldManager=kinetic-controller");
    assert_eq!(seen.body["metadata"]["ownerReferences"], owner);
    assert_eq!(
        seen.body["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "Go Sample v1"
    );
    answer(send, 200, &seen.body);

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/routes/hello"
    );
    assert_eq!(
        seen.body["spec"],
        json!({"traffic": [{"latestRevision": true, "percent": 100, "configurationName": "hello"}]})
    );
    answer(send, 200, &seen.body);

    // Its cluster-local name, pointing at the gateway: none of that name exists yet.
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/api/v1/namespaces/team/services/hello");
    answer(
        send,
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    );
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.path, "/api/v1/namespaces/team/services/hello");
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(seen.body["metadata"]["ownerReferences"], owner);
    assert_eq!(seen.body["spec"]["type"], "ExternalName");
    assert_eq!(
        seen.body["spec"]["externalName"],
        "kinetic-gateway.kinetic-system.svc.cluster.local"
    );
    answer(send, 200, &seen.body);

    // Whether its Revisions are ready: the autoscaler has not said yet.
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/revisions"
    );
    assert!(
        seen.query
            .contains("labelSelector=serving.knative.dev%2Fservice%3Dhello"),
        "{}",
        seen.query
    );
    answer(send, 200, &revision_list(None));

    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/services/hello/status"
    );
    let status = timeless(seen.body)["status"].clone();
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["latestCreatedRevisionName"], "hello-00001");
    assert_eq!(status["url"], "http://hello.team.svc.cluster.local");
    assert_eq!(
        status["traffic"],
        json!([{"revisionName": "hello-00001", "latestRevision": true, "percent": 100}])
    );
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown", "never falsely ready: {status}");
    answer(send, 200, &json!({}));
    h.ends(task).await;
}

#[tokio::test]
async fn a_kubernetes_service_of_the_same_name_that_is_not_kinetics_is_left_alone() {
    let mut h = harness(vec![]).await;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "team", "uid": "u-service", "generation": 1,
                     "resourceVersion": "3"},
        "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest"}]}}},
    }))
    .unwrap();
    let task = h.reconcile(object, "Service");
    for child in [
        "revisions/hello-00001",
        "configurations/hello",
        "routes/hello",
    ] {
        let (seen, send) = next(&mut h.server).await;
        assert!(seen.path.ends_with(child), "{}", seen.path);
        answer(send, 200, &seen.body);
    }
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/api/v1/namespaces/team/services/hello")
    );
    answer(
        send,
        200,
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "hello", "namespace": "team", "uid": "u-theirs"},
                "spec": {"type": "ClusterIP", "selector": {"app": "hello"}}}),
    );
    // No apply of the user's Service: the revisions' readiness (ready now), then the status.
    let (seen, send) = next(&mut h.server).await;
    assert!(
        seen.path.ends_with("/namespaces/team/revisions"),
        "{}",
        seen.path
    );
    answer(send, 200, &revision_list(Some("True")));
    let (seen, send) = next(&mut h.server).await;
    assert_eq!(
        seen.path,
        "/apis/serving.knative.dev/v1/namespaces/team/services/hello/status"
    );
    // Its Revision is ready: so are its configuration, its route and the Service.
    let status = timeless(seen.body)["status"].clone();
    assert_eq!(status["latestReadyRevisionName"], "hello-00001", "{status}");
    for kind in ["ConfigurationsReady", "RoutesReady", "Ready"] {
        let condition = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
            .clone();
        assert_eq!(condition["status"], "True", "{kind}: {status}");
    }
    answer(send, 200, &json!({}));
    h.ends(task).await;
}

/// The Service's Revision list as the API server answers it, its Ready condition `ready`.
fn revision_list(ready: Option<&str>) -> Value {
    let mut revision = json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": "hello-00001", "namespace": "team", "uid": "u-rev",
                     "labels": {"serving.knative.dev/service": "hello"}},
        "spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest"}]},
    });
    if let Some(ready) = ready {
        revision["status"] = json!({"conditions": [{"type": "Ready", "status": ready}]});
    }
    json!({"apiVersion": "serving.knative.dev/v1", "kind": "RevisionList",
           "metadata": {"resourceVersion": "9"}, "items": [revision]})
}
