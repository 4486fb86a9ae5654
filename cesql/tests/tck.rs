//! Runs every case of the CloudEvents SQL v1 TCK against `kinetic_cesql`.
//!
//! The cases are the YAML files in `tests/tck/cesql/` (copied unchanged from cloudevents/spec,
//! see ORIGIN.md there; the format is in README.md there). Every failing case is collected
//! and reported in one assertion, so a single run shows everything that is wrong.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use chrono::DateTime;
use cloudevents::Event;
use kinetic_cesql::{Expression, Value, eval_report};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

/// The TCK has 18 files; fewer means the copy is incomplete.
const MIN_FILES: usize = 18;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    tests: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    expression: String,
    /// Absent: the result is not checked.
    result: Option<Json>,
    /// Absent: no error is expected.
    error: Option<String>,
    /// A structured-mode CloudEvent in JSON; absent: any valid event.
    event: Option<Json>,
    /// Attributes and extensions set on the event.
    event_overrides: Option<Map<String, Json>>,
}

#[test]
fn every_tck_case_passes() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tck/cesql");
    let files = yaml_files(&dir)?;
    ensure!(
        files.len() >= MIN_FILES,
        "found {} TCK files in {}, expected at least {MIN_FILES}",
        files.len(),
        dir.display()
    );

    let mut cases = 0;
    let mut failures = Vec::new();
    for path in &files {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {file}"))?;
        let suite: Suite =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {file}"))?;
        ensure!(
            !suite.tests.is_empty(),
            "{file} ({}) has no cases",
            suite.name
        );
        for case in &suite.tests {
            cases += 1;
            if let Err(problem) = check(case) {
                failures.push(format!(
                    "{file} / {}: `{}`: {problem:#}",
                    case.name, case.expression
                ));
            }
        }
    }

    ensure!(
        failures.is_empty(),
        "{} of {cases} TCK cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{cases} TCK cases in {} files passed", files.len());
    Ok(())
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn check(case: &Case) -> Result<()> {
    let event = event(case)?;
    let (value, error) = match Expression::parse(&case.expression) {
        Ok(expression) => {
            let evaluation = expression.evaluate(&event);
            (evaluation.value, evaluation.error.map(|e| e.kind.as_str()))
        }
        // A parse error yields no value; eval_report prints `false`, the TCK's choice.
        Err(_) => (Value::Boolean(false), Some("parse")),
    };

    let mut problems = Vec::new();
    if let Some(expected) = &case.result {
        let expected = expected_value(expected)?;
        if !same_result(&expected, &value) {
            problems.push(format!("expected result {expected:?}, got {value:?}"));
        }
    }
    if case.error.as_deref() != error {
        problems.push(format!(
            "expected error {:?}, got {error:?}",
            case.error.as_deref()
        ));
    }

    // The CLI's report must say the same as the typed API.
    let report = eval_report(&case.expression, &event);
    if report.get("result") != Some(&Json::from(value.clone())) {
        problems.push(format!("eval_report result differs: {report}"));
    }
    if report.get("error").and_then(Json::as_str) != error {
        problems.push(format!("eval_report error differs: {report}"));
    }

    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// The case's event: `event` if given, else a minimal valid one, with `eventOverrides` set.
fn event(case: &Case) -> Result<Event> {
    let mut event = case.event.clone().unwrap_or_else(|| {
        json!({
            "specversion": "1.0",
            "id": "tck-id",
            "source": "tck-source",
            "type": "tck.type",
        })
    });
    if let Some(overrides) = &case.event_overrides {
        let attributes = event.as_object_mut().context("`event` is not an object")?;
        attributes.extend(overrides.clone());
    }
    serde_json::from_value(event).context("building the event")
}

fn expected_value(expected: &Json) -> Result<Value> {
    Ok(match expected {
        Json::Bool(b) => Value::Boolean(*b),
        Json::String(s) => Value::String(s.clone()),
        Json::Number(n) => {
            let n = n.as_i64().context("result is not an integer")?;
            Value::Integer(i32::try_from(n).context("result is outside the 32-bit range")?)
        }
        other => bail!("result {other} is not a boolean, integer or string"),
    })
}

/// Equal results, or the same instant: the SDK keeps `time` as a UTC instant, so an event
/// sent with `2018-04-26T14:48:09+02:00` reads back as `2018-04-26T12:48:09Z`.
fn same_result(expected: &Value, actual: &Value) -> bool {
    if expected == actual {
        return true;
    }
    let (Value::String(expected), Value::String(actual)) = (expected, actual) else {
        return false;
    };
    match (
        DateTime::parse_from_rfc3339(expected),
        DateTime::parse_from_rfc3339(actual),
    ) {
        (Ok(expected), Ok(actual)) => expected == actual,
        _ => false,
    }
}
