//! The Kubernetes runtime against kube's mock API server (`tower-test`, as kube-rs tests its own):
//! the Deployment and Service it applies (the sidecar, ports, probes, env, resources, owner
//! references), the scale patches the autoscaler's decisions produce, readiness from
//! EndpointSlice events, and cleanup when a revision stops being routed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use kinetic_serving::runtime::{InstanceSpec, KubernetesConfig, KubernetesRuntime, Runtime};
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, body: &Value) {
    send.send_response(
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .unwrap(),
    );
}

fn slice(endpoints: Value, resource_version: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "hello-00001-abcde", "namespace": "team", "resourceVersion": resource_version,
            "labels": {"kubernetes.io/service-name": "hello-00001"}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8012, "protocol": "TCP"}, {"name": "queue-admin", "port": 8022, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn endpoint(ip: &str, pod: &str, ready: bool) -> Value {
    json!({
        "addresses": [ip],
        "conditions": {"ready": ready},
        "targetRef": {"kind": "Pod", "name": pod, "namespace": "team", "uid": format!("uid-{pod}")},
    })
}

/// Answers the runtime's requests and records them: applies and patches are echoed, the
/// EndpointSlice list has one ready and one starting pod, the first watch reports both ready,
/// later watches stay open.
fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut watches = 0;
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let request = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            record.lock().unwrap().push(request.clone());
            let path = request.path.as_str();
            if path.ends_with("/endpointslices") {
                if request.query.contains("watch=true") {
                    watches += 1;
                    if watches == 1 {
                        let event = json!({
                            "type": "MODIFIED",
                            "object": slice(json!([
                                endpoint("10.0.0.1", "a", true),
                                endpoint("10.0.0.2", "b", true),
                            ]), "2"),
                        });
                        respond(send, &event);
                    } else {
                        held.push(send);
                    }
                } else {
                    let list = json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                        "metadata": {"resourceVersion": "1"},
                        "items": [slice(json!([
                            endpoint("10.0.0.1", "a", true),
                            endpoint("10.0.0.2", "b", false),
                        ]), "1")],
                    });
                    respond(send, &list);
                }
            } else if path.ends_with("/scale") {
                respond(
                    send,
                    &json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                            "metadata": {"name": "hello-00001-deployment", "namespace": "team"},
                            "spec": request.body["spec"]}),
                );
            } else if request.method == "DELETE" {
                respond(
                    send,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                );
            } else {
                let mut echoed = request.body.clone();
                echoed["metadata"]["resourceVersion"] = json!("5");
                echoed["metadata"]["uid"] = json!("u");
                respond(send, &echoed);
            }
        }
    });
    seen
}

async fn wait_for(seen: &Arc<Mutex<Vec<Seen>>>, what: &str, found: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(request) = seen.lock().unwrap().iter().find(|r| found(r)) {
            return request.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} among {:#?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spec() -> Arc<InstanceSpec> {
    Arc::new(InstanceSpec {
        namespace: "team".into(),
        service: "hello".into(),
        configuration: "hello".into(),
        revision: "hello-00001".into(),
        revision_uid: "uid-rev".into(),
        container_port: Some(9000),
        readiness_path: Some("/healthz".into()),
        container_concurrency: 1,
        timeout: Duration::from_secs(300),
        container: Some(json!({
            "image": "ghcr.io/knative/helloworld-go:latest",
            "env": [
                {"name": "TARGET", "value": "kinetic"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
            ],
            "ports": [{"containerPort": 9000}],
            "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}, "requests": {"cpu": "100m"}},
            "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false},
            "readinessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 9000}},
        })),
        ..InstanceSpec::default()
    })
}

#[tokio::test]
async fn a_revision_runs_as_a_deployment_scaled_by_the_autoscaler_and_ready_from_its_endpoint_slices()
 {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let seen = api_server(handle);
    let runtime = KubernetesRuntime::new(
        client,
        KubernetesConfig {
            queue_proxy_image: "kinetic:test".into(),
            termination_grace: Duration::from_secs(30),
        },
    );
    let mut ready = runtime.instances("team", "hello-00001");
    runtime.scale(spec(), 2);

    // The Deployment, server-side applied, owned by the Revision.
    let applied = wait_for(&seen, "Deployment apply", |r| {
        r.method == "PATCH"
            && r.path == "/apis/apps/v1/namespaces/team/deployments/hello-00001-deployment"
    })
    .await;
    assert!(
        applied.query.contains("fieldManager=kinetic-autoscaler")
            && applied.query.contains("force=true"),
        "{}",
        applied.query
    );
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    let deployment = &applied.body;
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["kind"],
        "Revision"
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "uid-rev"
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "replicas belong to the scale subresource: {deployment}"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["serving.knative.dev/revisionUID"],
        "uid-rev"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 330);
    // The user's container as written, with Knative's variables.
    let user = &pod["containers"][0];
    assert_eq!(user["name"], "user-container");
    assert_eq!(user["image"], "ghcr.io/knative/helloworld-go:latest");
    assert_eq!(user["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(user["resources"]["requests"]["cpu"], "100m");
    assert_eq!(user["securityContext"]["runAsNonRoot"], true);
    assert_eq!(user["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(user["livenessProbe"]["tcpSocket"]["port"], 9000);
    assert_eq!(user["ports"][0]["containerPort"], 9000);
    let env = user["env"].as_array().unwrap();
    let variable = |name: &str| env.iter().find(|v| v["name"] == name).cloned();
    assert_eq!(
        variable("TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"],
        "api"
    );
    assert_eq!(variable("PORT").unwrap()["value"], "9000");
    assert_eq!(variable("K_REVISION").unwrap()["value"], "hello-00001");
    assert_eq!(variable("K_SERVICE").unwrap()["value"], "hello");
    // The queue-proxy sidecar in front of it.
    let sidecar = &pod["containers"][1];
    assert_eq!(sidecar["name"], "queue-proxy");
    assert_eq!(sidecar["image"], "kinetic:test");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for pair in [
        ["--upstream", "127.0.0.1:9000"],
        ["--container-concurrency", "1"],
        ["--timeout-seconds", "300"],
        ["--readiness-path", "/healthz"],
        ["--listen", "0.0.0.0:8012"],
        ["--admin-listen", "0.0.0.0:8022"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }
    assert_eq!(sidecar["ports"][0]["containerPort"], 8012);
    assert_eq!(sidecar["ports"][1]["containerPort"], 8022);
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], 8022);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);

    // The Service selecting the revision's pods.
    let service = wait_for(&seen, "Service apply", |r| {
        r.method == "PATCH" && r.path == "/api/v1/namespaces/team/services/hello-00001"
    })
    .await;
    assert_eq!(
        service.body["spec"]["selector"]["serving.knative.dev/revisionUID"],
        "uid-rev"
    );
    assert_eq!(service.body["spec"]["ports"][0]["targetPort"], 8012);
    assert_eq!(
        service.body["metadata"]["ownerReferences"][0]["name"],
        "hello-00001"
    );

    // The decision goes to the scale subresource.
    let scale = wait_for(&seen, "scale patch", |r| r.path.ends_with("/scale")).await;
    assert_eq!(scale.method, "PATCH");
    assert_eq!(
        scale.path,
        "/apis/apps/v1/namespaces/team/deployments/hello-00001-deployment/scale"
    );
    assert_eq!(scale.content_type, "application/merge-patch+json");
    assert_eq!(scale.body, json!({"spec": {"replicas": 2}}));

    // Ready instances from the EndpointSlices: the listed one, then both after the watch event,
    // each at its queue-proxy with its admin port for /stats.
    let listed = wait_for(&seen, "EndpointSlice list", |r| {
        r.path == "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices"
    })
    .await;
    assert!(
        listed
            .query
            .contains("labelSelector=kubernetes.io%2Fservice-name%3Dhello-00001"),
        "{}",
        listed.query
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let both = loop {
        let now = ready.borrow_and_update().clone();
        if now.len() == 2 {
            break now;
        }
        assert!(Instant::now() < deadline, "instances: {now:?}");
        let _ = tokio::time::timeout(Duration::from_millis(200), ready.changed()).await;
    };
    let addresses: Vec<String> = both.iter().map(|i| i.address().to_string()).collect();
    assert_eq!(addresses, ["10.0.0.1:8012", "10.0.0.2:8012"]);
    assert_eq!(both[0].admin().unwrap().to_string(), "10.0.0.1:8022");
    let status = runtime.status("team", "hello-00001");
    assert_eq!((status.desired, status.ready), (2, 2));
    // The Revision's status says it is ready and active.
    let ready = wait_for(&seen, "a ready revision status", |r| {
        r.path == "/apis/serving.knative.dev/v1/namespaces/team/revisions/hello-00001/status"
            && r.body["status"]["actualReplicas"] == 2
    })
    .await;
    assert_eq!(ready.content_type, "application/merge-patch+json");
    let conditions = ready.body["status"]["conditions"].as_array().unwrap();
    let condition =
        |kind: &str| conditions.iter().find(|c| c["type"] == kind).unwrap()["status"].clone();
    assert_eq!(condition("Ready"), "True");
    assert_eq!(condition("Active"), "True");

    // Scale to zero: one patch, not one per decision.
    runtime.scale(spec(), 0);
    runtime.scale(spec(), 0);
    wait_for(&seen, "scale to zero", |r| {
        r.path.ends_with("/scale") && r.body == json!({"spec": {"replicas": 0}})
    })
    .await;
    // Still ready, no longer active.
    let idle = wait_for(&seen, "an inactive revision status", |r| {
        r.path.ends_with("/revisions/hello-00001/status")
            && r.body["status"]["desiredReplicas"] == 0
    })
    .await;
    assert!(
        idle.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Active" && c["status"] == "False" && c["reason"] == "NoTraffic"),
        "{idle:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let scales = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with("/scale"))
        .count();
    assert_eq!(scales, 2);

    // No longer routed: the Deployment and the Service go.
    runtime.release("team", "hello-00001");
    for path in [
        "/apis/apps/v1/namespaces/team/deployments/hello-00001-deployment",
        "/api/v1/namespaces/team/services/hello-00001",
    ] {
        let deleted = wait_for(&seen, path, |r| r.method == "DELETE" && r.path == path).await;
        assert_eq!(
            deleted.body["propagationPolicy"], "Background",
            "{deleted:?}"
        );
    }
    runtime.shutdown().await;
}

#[test]
fn a_revision_without_an_image_cannot_run_on_kubernetes() {
    let mut spec = (*spec()).clone();
    spec.container = Some(json!({"command": ["/bin/hello"]}));
    let error =
        kinetic_serving::runtime::kubernetes::deployment(&spec, &KubernetesConfig::default())
            .unwrap_err();
    assert!(error.is_permanent());
    assert!(error.to_string().contains("`image`"), "{error}");
}

#[test]
fn a_revision_refused_by_the_api_is_not_ready_and_says_why() {
    use kinetic_serving::runtime::kubernetes::{Readiness, revision_status};
    let status = revision_status(&Readiness {
        ready: false,
        failed: Some((
            "StartError".into(),
            "the Kubernetes API refused the revision's Deployment: forbidden".into(),
        )),
        desired: 1,
        actual: 0,
    });
    let ready = &status["status"]["conditions"][0];
    assert_eq!(
        (ready["type"].as_str(), ready["status"].as_str()),
        (Some("Ready"), Some("False"))
    );
    assert!(ready["message"].as_str().unwrap().contains("forbidden"));
    // Before its first instance: Unknown, never falsely True.
    let deploying = revision_status(&Readiness {
        desired: 1,
        ..Readiness::default()
    });
    assert_eq!(deploying["status"]["conditions"][0]["status"], "Unknown");
}
