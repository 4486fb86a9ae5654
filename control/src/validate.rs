//! Checking resources before they are stored: each document on its own (Knative's rules, CESQL
//! syntax, which the API crate cannot check, the secrets a process may read, and what this
//! process's serving allows), then what needs the stored state (a Service's traffic must name
//! revisions that exist). All documents of a file are checked before any is applied, so a file
//! with a mistake changes nothing.

use std::sync::Arc;

use kinetic_api::Resource;
use kinetic_serving::autoscaler::Defaults;
use kinetic_serving::revision::{self, Next};
use kinetic_serving::runtime::ExecAllow;
use kinetic_store::Store;
use kinetic_triggers::Filter;

use crate::apply::stored_revisions;

/// What the serving process checks of a Service beyond its own validation.
#[derive(Debug, Clone, Default)]
pub struct ServiceChecks {
    /// Autoscaling annotations must make sense with these settings.
    pub autoscaler: Defaults,
    /// The program must be one these prefixes allow (`--exec-allow`).
    pub exec_allow: ExecAllow,
    /// A container engine runs Services that name only an `image`.
    pub containers: bool,
}

/// Parses and validates one file's text. Errors name the file, document, resource and field path.
/// With the process's `checks`, autoscaling annotations and programs are checked against them (the
/// CLI, which does not know them, leaves that to the server).
pub fn parse_and_validate(
    file: &str,
    text: &str,
    checks: Option<&ServiceChecks>,
) -> Result<Vec<Resource>, kinetic_api::Error> {
    let resources = kinetic_api::parse_documents(file, text)?;
    for (index, resource) in resources.iter().enumerate() {
        document(resource, checks).map_err(|error| {
            error
                .in_file(file)
                .in_document(index + 1)
                .in_resource(resource.key().to_string())
        })?;
    }
    Ok(resources)
}

/// Checks one parsed resource beyond its own validation: CESQL filters, the secrets it names and,
/// with `checks`, what this process's serving allows. Errors carry the field path; callers add the
/// file, document and resource (the admission webhook and the Kubernetes controller check objects
/// that come from no file).
pub fn document(
    resource: &Resource,
    checks: Option<&ServiceChecks>,
) -> Result<(), kinetic_api::Error> {
    if let Resource::Service(service) = resource
        && let Some(checks) = checks
    {
        let template = &service.spec.template;
        kinetic_serving::autoscaler::revision_config(
            &checks.autoscaler,
            &template.metadata.annotations,
            template.spec.container_concurrency(),
        )
        .map_err(|error| error.under("spec.template"))?;
        checks
            .exec_allow
            .check_container(template.spec.container())
            .map_err(|error| error.under("spec.template.spec.containers[0]"))?;
        if let Some(image) = template.spec.container().container_image()
            && !checks.containers
        {
            return Err(kinetic_api::Error::new(
                "image",
                format!("`{image}` runs on a container engine, and this kinetic has none"),
            )
            .with_hint(
                "start Docker Engine (or Podman's socket) and restart kinetic, name it with --container-engine unix:///var/run/docker.sock, or give the container a `command` to run as a local process",
            )
            .under("spec.template.spec.containers[0]"));
        }
    }
    // The secrets a resource names must be ones this process may read.
    if let Some(scope) = kinetic_api::secret::scope() {
        scope.check_resource(&resource.to_json())?;
    }
    let compiled = match resource {
        Resource::Trigger(trigger) => Some(Filter::compile(trigger)),
        Resource::EventPolicy(policy) => {
            Some(Filter::compile_all(&policy.spec.filters, "spec.filters"))
        }
        _ => None,
    };
    if let Some(Err(error)) = compiled {
        return Err(kinetic_api::Error::new(error.path, error.message).with_hint(
            "see the CloudEvents SQL spec; e.g. `type LIKE 'com.example.%' AND source = '/shop'`",
        ));
    }
    Ok(())
}

/// Checks what needs the stored state: a Service's traffic must name revisions that exist (or that
/// this apply creates), and a named revision must not change its template.
pub async fn check_references(
    store: &Arc<dyn Store>,
    file: &str,
    resources: &[Resource],
) -> Result<Result<(), kinetic_api::Error>, kinetic_store::Error> {
    for (index, resource) in resources.iter().enumerate() {
        let Resource::Service(service) = resource else {
            continue;
        };
        let locate = |error: kinetic_api::Error| {
            error
                .in_file(file)
                .in_document(index + 1)
                .in_resource(resource.key().to_string())
        };
        let existing = stored_revisions(store, &service.metadata.namespace).await?;
        let created = match revision::next(service, &existing) {
            Ok(Next::Create(revision)) => Some(revision.metadata.name),
            Ok(Next::Unchanged) => None,
            Err(taken) => {
                return Ok(Err(locate(
                    kinetic_api::Error::new("spec.template.metadata.name", taken.to_string())
                        .with_hint("give the changed template a new revision name"),
                )));
            }
        };
        for (position, target) in service.traffic().iter().enumerate() {
            let Some(name) = &target.revision_name else {
                continue;
            };
            let known = created.as_deref() == Some(name.as_str())
                || existing
                    .iter()
                    .any(|r| &r.metadata.name == name && r.service() == service.metadata.name);
            if !known {
                let mut names: Vec<&str> = existing
                    .iter()
                    .filter(|r| r.service() == service.metadata.name)
                    .map(|r| r.metadata.name.as_str())
                    .collect();
                names.extend(created.as_deref());
                let hint = if names.is_empty() {
                    "this service has no revisions yet; use `latestRevision: true`".to_owned()
                } else {
                    format!("existing revisions: {}", names.join(", "))
                };
                return Ok(Err(locate(
                    kinetic_api::Error::new(
                        format!("spec.traffic[{position}].revisionName"),
                        format!("revision `{name}` does not exist"),
                    )
                    .with_hint(hint),
                )));
            }
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cesql_is_refused_with_its_location() {
        let text = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: b\n  subscriber: {uri: 'http://127.0.0.1:1/'}\n  filters: [{cesql: \"type = = 'x'\"}]\n";
        let error = parse_and_validate("f.yaml", text, None).unwrap_err();
        assert_eq!(error.document, Some(2));
        assert_eq!(error.path, "spec.filters[0].cesql");
        assert!(
            error.to_string().starts_with(
                "f.yaml, document 2, Trigger default/t: spec.filters[0].cesql: is not valid CESQL"
            ),
            "{error}"
        );
    }
}
