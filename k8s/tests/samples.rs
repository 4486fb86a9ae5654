//! The CRDs' schemas accept the YAML users bring: every resource in `examples/` and the shapes of
//! Knative's own samples (`tests/knative/`: the hello-world Service, Broker + Trigger +
//! event-display, a PingSource, a KafkaSource), which kinetic also reads as they are. And they
//! refuse what kinetic could not read, saying where.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The `openAPIV3Schema` of every CRD, by `(apiVersion, kind)`.
fn schemas() -> Vec<((String, String), Value)> {
    kinetic_k8s::crds::documents()
        .into_iter()
        .map(|crd| {
            let group = crd["spec"]["group"].as_str().unwrap().to_owned();
            let version = &crd["spec"]["versions"][0];
            let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            (
                (api_version, kind),
                version["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}

/// The schema errors of `resource`, or `None` when no CRD has its kind.
fn errors(schemas: &[((String, String), Value)], resource: &Value) -> Option<Vec<String>> {
    let key = (
        resource["apiVersion"].as_str()?.to_owned(),
        resource["kind"].as_str()?.to_owned(),
    );
    let (_, schema) = schemas.iter().find(|(k, _)| *k == key)?;
    let validator = jsonschema::validator_for(schema).expect("a CRD schema compiles");
    Some(
        validator
            .iter_errors(resource)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect(),
    )
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // Process settings (`kinetic up --config`), not resources.
            if path.file_name().is_some_and(|n| n != "config") {
                yaml_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

#[test]
fn every_example_and_knative_sample_fits_its_crd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    yaml_files(&root.join("../examples"), &mut files);
    yaml_files(&root.join("tests/knative"), &mut files);
    files.sort();
    let schemas = schemas();
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.display().to_string();
        // kinetic reads them as they are.
        if let Err(error) = kinetic_api::parse_documents(&name, &text) {
            problems.push(format!("{name}: kinetic refuses it: {error}"));
        }
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for document in documents.iter().filter(|d| !d.is_null()) {
            let kind = document["kind"].as_str().unwrap_or_default();
            match errors(&schemas, document) {
                Some(errors) => {
                    checked += 1;
                    problems.extend(errors.into_iter().map(|e| format!("{name}: {kind}{e}")));
                }
                None if kind == "ConfigMap" => {}
                None => problems.push(format!("{name}: no CRD for {kind}")),
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 30, "only {checked} resources found in {files:?}");
}

#[test]
fn a_resource_kinetic_could_not_read_is_refused_where_it_is_wrong() {
    let schemas = schemas();
    let cases = [
        (
            json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "t"},
                   "spec": {"broker": 7, "subscriber": {"uri": "https://example.com/"}}}),
            "/spec/broker",
        ),
        (
            json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "t"},
                   "spec": {"subscriber": {"uri": "https://example.com/"}}}),
            "/spec",
        ),
        (
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "s"},
                   "spec": {"template": {"spec": {"containerConcurrency": "many", "containers": [{"image": "x"}]}}}}),
            "/spec/template/spec/containerConcurrency",
        ),
        (
            json!({"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "metadata": {"name": "p"},
                   "spec": {"schedule": ["*/1 * * * *"], "sink": {"uri": "https://example.com/"}}}),
            "/spec/schedule",
        ),
    ];
    for (resource, at) in cases {
        let errors = errors(&schemas, &resource).expect("a CRD for it");
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "{resource}: {errors:?}"
        );
    }
}
