//! Turning resource files into stored resources: parse, validate (including CESQL syntax, which the
//! API crate cannot check), then apply each document. All documents of a file are validated before
//! any is applied, so a file with a mistake changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kinetic_api::{Kind, Resource, ResourceKey, Revision};
use kinetic_serving::autoscaler::Defaults;
use kinetic_serving::revision::{self, Next};
use kinetic_serving::runtime::ExecAllow;
use kinetic_store::{ApplyOutcome, Store, TriggerRef};
use kinetic_triggers::Filter;
use serde::Serialize;

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
        if let Resource::Service(service) = resource
            && let Some(checks) = checks
        {
            let template = &service.spec.template;
            let located = |error: kinetic_api::Error, under: &str| {
                error
                    .under(under)
                    .in_file(file)
                    .in_document(index + 1)
                    .in_resource(resource.key().to_string())
            };
            kinetic_serving::autoscaler::revision_config(
                &checks.autoscaler,
                &template.metadata.annotations,
                template.spec.container_concurrency(),
            )
            .map_err(|error| located(error, "spec.template"))?;
            checks
                .exec_allow
                .check_container(template.spec.container())
                .map_err(|error| located(error, "spec.template.spec.containers[0]"))?;
            if let Some(image) = template.spec.container().container_image()
                && !checks.containers
            {
                return Err(located(
                    kinetic_api::Error::new(
                        "image",
                        format!("`{image}` runs on a container engine, and this kinetic has none"),
                    )
                    .with_hint(
                        "start Docker Engine (or Podman's socket) and restart kinetic, name it with --container-engine unix:///var/run/docker.sock, or give the container a `command` to run as a local process",
                    ),
                    "spec.template.spec.containers[0]",
                ));
            }
        }
        // The secrets a resource names must be ones this process may read.
        if let Some(scope) = kinetic_api::secret::scope() {
            scope.check_resource(&resource.to_json()).map_err(|error| {
                error
                    .in_file(file)
                    .in_document(index + 1)
                    .in_resource(resource.key().to_string())
            })?;
        }
        let compiled = match resource {
            Resource::Trigger(trigger) => Some(Filter::compile(trigger)),
            Resource::EventPolicy(policy) => {
                Some(Filter::compile_all(&policy.spec.filters, "spec.filters"))
            }
            _ => None,
        };
        if let Some(compiled) = compiled {
            compiled.map_err(|error| {
                kinetic_api::Error::new(error.path, error.message)
                    .with_hint("see the CloudEvents SQL spec; e.g. `type LIKE 'com.example.%' AND source = '/shop'`")
                    .in_file(file)
                    .in_document(index + 1)
                    .in_resource(resource.key().to_string())
            })?;
        }
    }
    Ok(resources)
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

async fn stored_revisions(
    store: &Arc<dyn Store>,
    namespace: &str,
) -> Result<Vec<Revision>, kinetic_store::Error> {
    Ok(store
        .list_resources("Revision", Some(namespace))
        .await?
        .into_iter()
        .filter_map(|stored| serde_json::from_value(stored.body).ok())
        .collect())
}

/// One applied resource, as reported to users.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// created, updated or unchanged
    pub outcome: String,
}

/// Stores validated resources. A new trigger (or one moved to another broker) gets its cursor now,
/// at the broker's head, so it sees every event accepted from this moment.
pub async fn apply(
    store: &Arc<dyn Store>,
    resources: &[Resource],
) -> Result<Vec<Applied>, kinetic_store::Error> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut applied = Vec::with_capacity(resources.len());
    for resource in resources {
        let ResourceKey {
            kind,
            namespace,
            name,
        } = resource.key();
        let previous_broker = match resource {
            Resource::Trigger(_) => store
                .get_resource(kind.as_str(), &namespace, &name)
                .await?
                .and_then(|r| r.body.pointer("/spec/broker")?.as_str().map(str::to_owned)),
            _ => None,
        };
        let (outcome, stored) = store
            .apply_resource(kind.as_str(), &namespace, &name, &resource.to_json(), now)
            .await?;
        if let Resource::Service(service) = resource {
            let existing = stored_revisions(store, &namespace).await?;
            // A named revision whose template changed was refused by `check_references`.
            if let Ok(Next::Create(revision)) = revision::next(service, &existing) {
                let body = serde_json::to_value(&*revision).unwrap_or_default();
                store
                    .apply_resource(
                        Kind::Revision.as_str(),
                        &namespace,
                        &revision.metadata.name,
                        &body,
                        now,
                    )
                    .await?;
                applied.push(Applied {
                    kind: Kind::Revision.as_str().to_owned(),
                    namespace: namespace.clone(),
                    name: revision.metadata.name.clone(),
                    outcome: "created".to_owned(),
                });
                // As Knative: a Service keeps its newest unrouted revisions, not all of them.
                let mut all = existing;
                all.push(*revision);
                for gone in revision::collectable(service, &all, revision::KEPT_UNROUTED) {
                    if store.delete_resource("Revision", &namespace, &gone).await? {
                        applied.push(Applied {
                            kind: Kind::Revision.as_str().to_owned(),
                            namespace: namespace.clone(),
                            name: gone,
                            outcome: "deleted".to_owned(),
                        });
                    }
                }
            }
        }
        if let Resource::Trigger(trigger) = resource {
            let moved = previous_broker.is_some_and(|previous| previous != trigger.spec.broker);
            if moved || outcome == ApplyOutcome::Created {
                let reference = TriggerRef {
                    uid: stored.uid.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    broker: format!("{namespace}/{}", trigger.spec.broker),
                };
                kinetic_triggers::lifecycle::bound(&**store, &reference, moved, now).await?;
            }
        }
        applied.push(Applied {
            kind: kind.as_str().to_owned(),
            namespace,
            name,
            outcome: match outcome {
                ApplyOutcome::Created => "created",
                ApplyOutcome::Updated => "updated",
                ApplyOutcome::Unchanged => "unchanged",
            }
            .to_owned(),
        });
    }
    Ok(applied)
}

/// Deletes a resource; a trigger's cursor and pending deliveries go with it (its dead letters stay).
pub async fn delete(
    store: &Arc<dyn Store>,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<bool, kinetic_store::Error> {
    let existing = store.get_resource(kind.as_str(), namespace, name).await?;
    let deleted = store
        .delete_resource(kind.as_str(), namespace, name)
        .await?;
    if deleted
        && kind == Kind::Trigger
        && let Some(existing) = existing
    {
        kinetic_triggers::lifecycle::deleted(&**store, &existing.uid, namespace, name).await?;
    }
    if deleted && kind.is_source() {
        kinetic_sources::forget(&**store, kind.as_str(), namespace, name).await?;
    }
    if deleted && kind == Kind::Service {
        for revision in stored_revisions(store, namespace).await? {
            if revision.service() == name {
                store
                    .delete_resource("Revision", namespace, &revision.metadata.name)
                    .await?;
            }
        }
    }
    Ok(deleted)
}

/// The YAML/JSON files named by `paths`: files as given, directories expanded to their `.yaml`,
/// `.yml` and `.json` files (sorted, not recursive).
pub fn expand_paths(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_resource_file(p))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            ));
        }
    }
    Ok(files)
}

fn is_resource_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
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
