//! Every seed of the fuzzers and every input they once crashed on (`fuzz/regressions/<target>/`),
//! run through its target on each `cargo test`, without the fuzzer's instrumentation.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("cloudevent_http", kinetic_fuzz::cloudevent_http),
    ("cesql", kinetic_fuzz::cesql),
    ("resources", kinetic_fuzz::resources),
    ("webhook", kinetic_fuzz::webhook),
    ("s3_notification", kinetic_fuzz::s3_notification),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The files of `fuzz/{kind}/{target}`, sorted; none when the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (target, run) in TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn every_seed_passes_its_target() {
    for (target, _) in TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "fuzz/seeds/{target} has no seeds"
        );
    }
    assert!(replay("seeds") > 0);
}

#[test]
fn every_past_finding_stays_fixed() {
    replay("regressions");
}

/// Seeds are only useful if they reach past the first check: each event seed decodes, each
/// resource seed parses, each notification seed makes events.
#[test]
fn seeds_are_accepted_inputs() {
    for path in inputs("seeds", "cloudevent_http") {
        let (headers, body) = kinetic_fuzz::request(&std::fs::read(&path).unwrap());
        let decoded = kinetic_api::cloudevent::decode(&headers, &body);
        assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
    }
    for path in inputs("seeds", "resources") {
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = kinetic_api::parse_documents("seed.yaml", &text);
        assert!(parsed.is_ok(), "{}: {parsed:?}", path.display());
    }
    let spec: kinetic_api::sources::S3SourceSpec = serde_json::from_str(
        r#"{"bucket":"photos","region":"us-east-1","sink":{"uri":"http://127.0.0.1:1/"}}"#,
    )
    .unwrap();
    for name in ["aws.json", "moto.json", "minio.json", "cos.json"] {
        let body = std::fs::read(fuzz_dir().join("seeds/s3_notification").join(name)).unwrap();
        let parsed = kinetic_sources::s3::to_events(&spec, &body);
        assert!(
            matches!(&parsed, Ok(kinetic_sources::s3::Parsed::Events(events)) if !events.is_empty()),
            "{name}: {parsed:?}"
        );
    }
}
