//! `deploy/` checked offline, as far as a machine without a Kubernetes API server can: every
//! overlay builds with `kubectl kustomize`, every object passes PyPI's `kubernetes-validate
//! --strict` for Kubernetes 1.30 and 1.33 (`scripts/ensure-k8s-tools.sh` installs both), the CRDs
//! are what `kinetic crds` prints, and every kinetic workload runs as the restricted Pod Security
//! Standard asks, with probes, limits, a disruption budget and (broker, dispatcher) an autoscaler.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const OVERLAYS: &[&str] = &["postgres", "kafka", "dev"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A tool from `variable` or `default`, or `None` (skipped, see `kinetic_testkit::required`).
fn tool(variable: &str, default: PathBuf, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map_or(default, PathBuf::from);
    let runs = Command::new(&path)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(path);
    }
    if kinetic_testkit::required() {
        panic!(
            "{what} is not installed ({}); run scripts/ensure-k8s-tools.sh",
            path.display()
        );
    }
    eprintln!(
        "skipped (KINETIC_TEST_SKIP_MISSING=1): {what} is not installed; run scripts/ensure-k8s-tools.sh"
    );
    None
}

fn kubectl() -> Option<PathBuf> {
    tool("KINETIC_KUBECTL", PathBuf::from("kubectl"), "kubectl")
}

fn kubernetes_validate() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    tool(
        "KINETIC_KUBERNETES_VALIDATE",
        home.join(".cache/kinetic-k8s/bin/kubernetes-validate"),
        "kubernetes-validate",
    )
}

/// `kubectl kustomize deploy/overlays/{overlay}`: the YAML text.
fn build(kubectl: &Path, overlay: &str) -> String {
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy().join("overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/overlays/{overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn objects(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[test]
fn every_overlay_builds_and_validates_for_kubernetes_1_30_and_1_33() {
    let Some(kubectl) = kubectl() else { return };
    let Some(validate) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, build(&kubectl, overlay)).unwrap();
        for version in ["1.30.0", "1.33.0"] {
            let output = Command::new(&validate)
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file)
                .output()
                .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                output.status.success() && !said.contains("ERROR"),
                "deploy/overlays/{overlay} for Kubernetes {version}:\n{said}"
            );
        }
    }
}

#[test]
fn the_crds_are_what_kinetic_prints() {
    let Some(kubectl) = kubectl() else { return };
    let built = objects(&build(&kubectl, "postgres"));
    let crds: Vec<&Value> = built
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    let printed = kinetic_k8s::crds::all();
    assert_eq!(crds.len(), printed.len());
    for crd in printed {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let found = named(&built, "CustomResourceDefinition", &name).expect(&name);
        // Read as the typed object, so `0` and `0.0` are the same number.
        let found: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_json::from_value(found.clone()).unwrap();
        assert!(
            found.spec == crd.spec,
            "{name} differs from what `kinetic crds` prints"
        );
    }
}

#[test]
fn kinetic_workloads_are_restricted_probed_limited_and_kept_available() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in OVERLAYS {
        let built = objects(&build(&kubectl, overlay));
        let at = |what: &str| format!("deploy/overlays/{overlay}: {what}");
        for component in ["broker", "dispatcher", "sources", "controller", "webhook"] {
            let name = format!("kinetic-{component}");
            let deployment =
                named(&built, "Deployment", &name).unwrap_or_else(|| panic!("{}", at(&name)));
            assert_eq!(deployment["metadata"]["namespace"], "kinetic-system");
            let pod = &deployment["spec"]["template"]["spec"];
            // Each reads kinetic's resources from the API (the controller also writes).
            assert_eq!(pod["automountServiceAccountToken"], true, "{}", at(&name));
            assert_eq!(pod["serviceAccountName"], name.as_str(), "{}", at(&name));
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"],
                true,
                "{}",
                at(&name)
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            let container = &pod["containers"][0];
            assert_eq!(container["args"], json!([component]), "{}", at(&name));
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{}", at(&name));
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            assert!(container["resources"]["limits"]["memory"].is_string());
            assert!(container["resources"]["requests"]["cpu"].is_string());
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
            if component == "webhook" {
                assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
            }
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
            let env: Vec<&str> = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap())
                .collect();
            // The webhook judges objects alone; everything else shares the store.
            assert_eq!(
                env.contains(&"KINETIC_STORE"),
                component != "webhook",
                "{}",
                at(&name)
            );
            if component != "controller" && component != "webhook" {
                let resources = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "KINETIC_RESOURCES");
                assert_eq!(
                    resources.map(|e| &e["value"]),
                    Some(&json!("kubernetes")),
                    "{}",
                    at(&name)
                );
            }
            assert!(
                named(&built, "ServiceAccount", &name).is_some(),
                "{}",
                at(&name)
            );
            assert!(
                named(&built, "PodDisruptionBudget", &name).is_some(),
                "{}",
                at(&name)
            );
            assert!(named(&built, "Service", &name).is_some(), "{}", at(&name));
            if ["broker", "dispatcher", "sources"].contains(&component) {
                // Scraped by Prometheus on a port the pod declares, without a token.
                let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
                assert_eq!(annotations["prometheus.io/scrape"], "true", "{}", at(&name));
                let port: u64 = annotations["prometheus.io/port"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    container["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["containerPort"] == port),
                    "{}",
                    at(&name)
                );
                let public = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "KINETIC_METRICS_PUBLIC");
                assert_eq!(
                    public.map(|e| &e["value"]),
                    Some(&json!("true")),
                    "{}",
                    at(&name)
                );
            }
            if component == "broker" || component == "dispatcher" {
                assert!(
                    named(&built, "HorizontalPodAutoscaler", &name).is_some(),
                    "{}",
                    at(&name)
                );
            }
            let signing_key = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "kinetic-issuer");
            // A shared signing key, except in the one-pod dev overlay; the controller and the
            // webhook sign nothing.
            assert_eq!(
                signing_key,
                *overlay != "dev" && component != "controller" && component != "webhook",
                "{}",
                at(&name)
            );
        }
        least_privilege(&built, &at);
        if *overlay == "kafka" {
            let broker = named(&built, "Deployment", "kinetic-broker").unwrap();
            let env = broker["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
            assert!(env.contains("KINETIC_KAFKA_BOOTSTRAP_SERVERS"), "{env}");
        }
    }
}

/// The verbs `role` grants on `group`/`resource`.
fn verbs<'a>(role: &'a Value, group: &str, resource: &str) -> Vec<&'a str> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| {
            rule["apiGroups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == group)
                && rule["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == resource)
        })
        .flat_map(|rule| rule["verbs"].as_array().unwrap().iter())
        .map(|verb| verb.as_str().unwrap())
        .collect()
}

/// The data plane only reads kinetic's kinds; the controller writes what it reconciles and
/// nothing else (no wildcard, no Secrets, its Lease in its own namespace only).
fn least_privilege(built: &[Value], at: &dyn Fn(&str) -> String) {
    let reader = named(built, "ClusterRole", "kinetic-reader").expect("ClusterRole kinetic-reader");
    let controller =
        named(built, "ClusterRole", "kinetic-controller").expect("ClusterRole kinetic-controller");
    for role in [reader, controller] {
        let text = role["rules"].to_string();
        assert!(!text.contains('*'), "{}: {text}", at("no wildcard"));
        assert!(!text.contains("secrets"), "{}: {text}", at("no secrets"));
    }
    for (group, plural) in kinetic_k8s::feed::resources()
        .iter()
        .map(|r| (r.group.clone(), r.plural.clone()))
    {
        assert_eq!(
            verbs(reader, &group, &plural),
            ["get", "list", "watch"],
            "{}",
            at(&format!("kinetic-reader on {plural}.{group}"))
        );
        let granted = verbs(controller, &group, &plural);
        for verb in ["get", "list", "watch", "patch"] {
            assert!(
                granted.contains(&verb),
                "{}",
                at(&format!("kinetic-controller {verb} {plural}.{group}"))
            );
        }
        if plural != "revisions" {
            assert!(
                verbs(controller, &group, &format!("{plural}/status")).contains(&"patch"),
                "{}",
                at(&format!("kinetic-controller patch {plural}/status"))
            );
        }
    }
    for child in ["revisions", "configurations", "routes"] {
        let granted = verbs(controller, "serving.knative.dev", child);
        assert!(
            granted.contains(&"patch") && granted.contains(&"delete"),
            "{}",
            at(child)
        );
    }
    assert!(verbs(controller, "events.k8s.io", "events").contains(&"create"));
    assert!(verbs(reader, "events.k8s.io", "events").is_empty());
    let subjects = |binding: &str| -> Vec<String> {
        named(built, "ClusterRoleBinding", binding)
            .unwrap_or_else(|| panic!("{}", at(binding)))["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{}/{}", s["namespace"].as_str().unwrap(), s["name"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(
        subjects("kinetic-reader"),
        [
            "kinetic-system/kinetic-broker",
            "kinetic-system/kinetic-dispatcher",
            "kinetic-system/kinetic-sources",
            "kinetic-system/kinetic-webhook"
        ]
    );
    assert_eq!(
        subjects("kinetic-controller"),
        ["kinetic-system/kinetic-controller"]
    );
    // Leases: a namespaced Role, never cluster-wide.
    let leader = named(built, "Role", "kinetic-controller-leader").expect("the leader Role");
    assert_eq!(leader["metadata"]["namespace"], "kinetic-system");
    assert!(verbs(leader, "coordination.k8s.io", "leases").contains(&"update"));
    assert!(verbs(controller, "coordination.k8s.io", "leases").is_empty());
    // kinetic's configuration: read in kinetic-system only, by the components that read resources.
    let config = named(built, "Role", "kinetic-config-reader").expect("the config Role");
    assert_eq!(config["metadata"]["namespace"], "kinetic-system");
    assert_eq!(verbs(config, "", "configmaps"), ["get", "list", "watch"]);
    let readers: Vec<&str> = named(built, "RoleBinding", "kinetic-config-reader")
        .expect("the config RoleBinding")["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        readers,
        [
            "kinetic-broker",
            "kinetic-dispatcher",
            "kinetic-sources",
            "kinetic-controller",
            "kinetic-webhook"
        ]
    );
    // The webhook: its own certificate Secret and configuration, by name where Kubernetes allows.
    let certs = named(built, "Role", "kinetic-webhook-certs").expect("the webhook's Role");
    assert_eq!(certs["metadata"]["namespace"], "kinetic-system");
    for rule in certs["rules"].as_array().unwrap() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        if verbs != ["create"] {
            assert_eq!(
                rule["resourceNames"],
                json!(["kinetic-webhook-certs"]),
                "{}",
                at("webhook Role")
            );
        }
    }
    let webhook =
        named(built, "ClusterRole", "kinetic-webhook").expect("the webhook's ClusterRole");
    assert_eq!(
        webhook["rules"],
        json!([{"apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
                "resourceNames": ["kinetic-webhook"], "verbs": ["get", "update"]}])
    );
    // Every kind users apply is validated on create and update.
    let configuration = named(built, "ValidatingWebhookConfiguration", "kinetic-webhook")
        .expect("the ValidatingWebhookConfiguration");
    let rules = configuration["webhooks"][0]["rules"].as_array().unwrap();
    for resource in kinetic_k8s::feed::resources()
        .iter()
        .filter(|r| r.kind != "Revision")
    {
        assert!(
            rules.iter().any(|rule| {
                rule["apiGroups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| *g == resource.group)
                    && rule["apiVersions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| *v == resource.version)
                    && rule["resources"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| *r == resource.plural)
                    && rule["operations"] == json!(["CREATE", "UPDATE"])
            }),
            "{}",
            at(&format!("admission of {}", resource.plural))
        );
    }
    assert_eq!(
        configuration["webhooks"][0]["clientConfig"]["service"],
        json!({"name": "kinetic-webhook", "namespace": "kinetic-system", "path": "/validate", "port": 443})
    );
    // Defaulting: new Brokers only.
    let defaulting = named(built, "MutatingWebhookConfiguration", "kinetic-webhook")
        .expect("the MutatingWebhookConfiguration");
    assert_eq!(
        defaulting["webhooks"][0]["clientConfig"]["service"]["path"],
        "/default"
    );
    assert_eq!(
        defaulting["webhooks"][0]["rules"],
        json!([{"apiGroups": ["eventing.knative.dev"], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["brokers"], "scope": "Namespaced"}])
    );
}

#[test]
fn the_shipped_configuration_reads() {
    let Some(kubectl) = kubectl() else { return };
    let built = objects(&build(&kubectl, "postgres"));
    for name in kinetic_api::config::NAMES {
        let object = named(&built, "ConfigMap", name).unwrap_or_else(|| panic!("ConfigMap {name}"));
        assert_eq!(object["metadata"]["namespace"], "kinetic-system");
        let config: kinetic_api::core::ConfigMap = serde_json::from_value(object.clone()).unwrap();
        kinetic_api::config::validate(&config).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let defaults = named(&built, "ConfigMap", "config-br-defaults").unwrap();
    let defaults: kinetic_api::core::ConfigMap = serde_json::from_value(defaults.clone()).unwrap();
    let defaults = kinetic_api::config::BrokerDefaults::from_config_map(&defaults).unwrap();
    // The same as the process's own defaults: shipping it changes nothing until it is edited.
    let delivery = defaults
        .for_namespace("any")
        .unwrap()
        .delivery
        .clone()
        .unwrap();
    assert_eq!(delivery.retry, Some(10));
    assert_eq!(delivery.timeout.as_deref(), Some("PT30S"));
}

/// Serving's components: restricted, probed and limited like the rest; the gateways and the
/// activators without any API access (they follow the autoscaler), the autoscaler allowed what
/// running revisions takes and nothing more, its sidecars on its own image.
#[test]
fn serving_workloads_run_revisions_with_no_more_access_than_that_takes() {
    let Some(kubectl) = kubectl() else { return };
    for overlay in OVERLAYS {
        let built = objects(&build(&kubectl, overlay));
        let at = |what: &str| format!("deploy/overlays/{overlay}: {what}");
        for component in ["autoscaler", "activator", "gateway"] {
            let name = format!("kinetic-{component}");
            let deployment =
                named(&built, "Deployment", &name).unwrap_or_else(|| panic!("{}", at(&name)));
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["serviceAccountName"], name.as_str(), "{}", at(&name));
            assert_eq!(
                pod["automountServiceAccountToken"],
                component == "autoscaler",
                "{}",
                at(&name)
            );
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            let container = &pod["containers"][0];
            assert_eq!(container["args"], json!([component]), "{}", at(&name));
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{}", at(&name));
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            assert!(container["resources"]["limits"]["memory"].is_string());
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
            for kind in ["Service", "PodDisruptionBudget", "ServiceAccount"] {
                assert!(named(&built, kind, &name).is_some(), "{}", at(&name));
            }
            if component != "autoscaler" {
                assert!(
                    named(&built, "HorizontalPodAutoscaler", &name).is_some(),
                    "{}",
                    at(&name)
                );
                let env = container["env"].to_string();
                assert!(
                    env.contains("http://kinetic-autoscaler.kinetic-system.svc:8090"),
                    "{}",
                    at(&name)
                );
            }
        }
        let autoscaler = named(&built, "Deployment", "kinetic-autoscaler").unwrap();
        let container = &autoscaler["spec"]["template"]["spec"]["containers"][0];
        let env = |variable: &str| {
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == variable)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("KINETIC_QUEUE_PROXY_IMAGE"),
            Some(container["image"].clone()),
            "{}",
            at("the sidecars' image")
        );
        assert_eq!(env("KINETIC_RUNTIME"), Some(json!("kubernetes")));
        assert_eq!(env("KINETIC_RESOURCES"), Some(json!("kubernetes")));
        let gateway = named(&built, "Deployment", "kinetic-gateway").unwrap();
        assert!(
            gateway["spec"]["template"]["spec"]["containers"][0]["env"]
                .to_string()
                .contains("kinetic-activator.kinetic-system.svc:80"),
            "{}",
            at("the gateway's activators")
        );
        let role = named(&built, "ClusterRole", "kinetic-autoscaler").expect("its ClusterRole");
        for (group, resource, verb) in [
            ("apps", "deployments", "patch"),
            ("apps", "deployments", "delete"),
            ("apps", "deployments/scale", "patch"),
            ("", "services", "patch"),
            ("discovery.k8s.io", "endpointslices", "watch"),
            ("serving.knative.dev", "revisions/status", "patch"),
        ] {
            assert!(
                verbs(role, group, resource).contains(&verb),
                "{}",
                at(&format!("kinetic-autoscaler {verb} {resource}"))
            );
        }
        for (group, resource) in [("", "secrets"), ("", "pods"), ("", "configmaps")] {
            assert!(
                verbs(role, group, resource).is_empty(),
                "{}",
                at(&format!("kinetic-autoscaler may not touch {resource}"))
            );
        }
        let leader = named(&built, "Role", "kinetic-autoscaler-leader").expect("its Lease Role");
        assert!(verbs(leader, "coordination.k8s.io", "leases").contains(&"update"));
    }
}
