//! Revisions from Service templates: each change of `spec.template` creates a new immutable
//! Revision, named `{service}-00001`, `{service}-00002`, … or by `spec.template.metadata.name`.

use kinetic_api::serving::{CONFIGURATION_LABEL, SERVICE_LABEL, SERVING_API_VERSION};
use kinetic_api::{ObjectMeta, Revision, Service};

/// Label holding a revision's sequence number within its Service (Knative's configuration generation).
pub const GENERATION_LABEL: &str = "serving.knative.dev/configurationGeneration";

/// What applying a Service does to its revisions.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The latest revision already runs this template.
    Unchanged,
    /// A new revision to store.
    Create(Box<Revision>),
}

/// A template names a revision that already exists with a different spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "revision `{name}` already exists with a different template; revisions are immutable (hint: give `spec.template.metadata.name` a new name, or remove it to get numbered names)"
)]
pub struct NameTaken {
    pub name: String,
}

/// The sequence number of a revision within its Service.
pub fn generation(revision: &Revision) -> u64 {
    revision
        .metadata
        .labels
        .get(GENERATION_LABEL)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// The latest revision of a service among `revisions` (any services mixed in are ignored).
pub fn latest<'a>(service: &str, revisions: &'a [Revision]) -> Option<&'a Revision> {
    revisions
        .iter()
        .filter(|r| r.service() == service)
        .max_by_key(|r| generation(r))
}

/// Decides whether applying `service` creates a revision, given the revisions stored for it.
pub fn next(service: &Service, existing: &[Revision]) -> Result<Next, NameTaken> {
    let name = &service.metadata.name;
    let template = &service.spec.template;
    let own: Vec<&Revision> = existing.iter().filter(|r| r.service() == name).collect();
    let same_template = |revision: &Revision| {
        revision.spec == template.spec
            && revision.metadata.annotations == template.metadata.annotations
    };
    if let Some(wanted) = &template.metadata.name
        && let Some(found) = own.iter().find(|r| &r.metadata.name == wanted)
    {
        return if same_template(found) {
            Ok(Next::Unchanged)
        } else {
            Err(NameTaken {
                name: wanted.clone(),
            })
        };
    }
    let latest = own.iter().max_by_key(|r| generation(r));
    if template.metadata.name.is_none()
        && let Some(latest) = latest
        && same_template(latest)
    {
        return Ok(Next::Unchanged);
    }
    let number = latest.map_or(0, |r| generation(r)) + 1;
    let revision_name = template
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| format!("{name}-{number:05}"));
    let mut labels = template.metadata.labels.clone();
    labels.insert(SERVICE_LABEL.to_owned(), name.clone());
    labels.insert(CONFIGURATION_LABEL.to_owned(), name.clone());
    labels.insert(GENERATION_LABEL.to_owned(), number.to_string());
    Ok(Next::Create(Box::new(Revision {
        api_version: SERVING_API_VERSION.to_owned(),
        kind: "Revision".to_owned(),
        metadata: ObjectMeta {
            name: revision_name,
            namespace: service.metadata.namespace.clone(),
            labels,
            annotations: template.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    })))
}

/// Revisions of a Service kept without traffic, as Knative's `min-non-active-revisions`.
pub const KEPT_UNROUTED: usize = 20;

/// The revisions of `service` to delete: those no traffic target names, other than the latest,
/// beyond the newest `keep` of them (oldest first).
pub fn collectable(service: &Service, revisions: &[Revision], keep: usize) -> Vec<String> {
    let name = &service.metadata.name;
    let own: Vec<&Revision> = revisions.iter().filter(|r| r.service() == name).collect();
    let latest = own.iter().map(|r| generation(r)).max();
    let routed: Vec<&str> = service
        .spec
        .traffic
        .iter()
        .filter_map(|target| target.revision_name.as_deref())
        .collect();
    let mut unrouted: Vec<&Revision> = own
        .into_iter()
        .filter(|r| Some(generation(r)) != latest && !routed.contains(&r.metadata.name.as_str()))
        .collect();
    // Newest first; those past `keep` go.
    unrouted.sort_by_key(|r| std::cmp::Reverse(generation(r)));
    let mut gone: Vec<String> = unrouted
        .into_iter()
        .skip(keep)
        .map(|r| r.metadata.name.clone())
        .collect();
    gone.reverse();
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_api::Resource;

    #[test]
    fn unrouted_revisions_beyond_the_kept_ones_are_collected() {
        let mut revisions = Vec::new();
        for n in 1..=6 {
            let template = format!("{{template: {{spec: {{containers: [{{command: [v{n}]}}]}}}}}}");
            let revision = created(next(&service(&template), &revisions).unwrap());
            revisions.push(revision);
        }
        // hello-00002 takes traffic; hello-00006 is the latest.
        let routed = service(
            "{template: {spec: {containers: [{command: [v6]}]}}, traffic: [{revisionName: hello-00002, percent: 50}, {latestRevision: true, percent: 50}]}",
        );
        assert_eq!(
            collectable(&routed, &revisions, 2),
            ["hello-00001", "hello-00003"]
        );
        assert!(collectable(&routed, &revisions, KEPT_UNROUTED).is_empty());
        assert_eq!(collectable(&routed, &revisions, 0).len(), 4);
    }

    fn service(yaml_spec: &str) -> Service {
        let text = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: hello}}\nspec: {yaml_spec}\n"
        );
        match kinetic_api::parse_documents("f", &text).unwrap().remove(0) {
            Resource::Service(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn created(next: Next) -> Revision {
        match next {
            Next::Create(revision) => *revision,
            Next::Unchanged => panic!("expected a new revision"),
        }
    }

    #[test]
    fn every_template_change_creates_a_numbered_revision() {
        let v1 = service("{template: {spec: {containers: [{command: [a]}]}}}");
        let first = created(next(&v1, &[]).unwrap());
        assert_eq!(first.metadata.name, "hello-00001");
        assert_eq!(first.service(), "hello");
        assert_eq!(generation(&first), 1);
        let revisions = vec![first.clone()];
        assert_eq!(next(&v1, &revisions).unwrap(), Next::Unchanged);
        // A traffic-only change creates nothing.
        let traffic_only = service(
            "{template: {spec: {containers: [{command: [a]}]}}, traffic: [{revisionName: hello-00001, percent: 100}]}",
        );
        assert_eq!(next(&traffic_only, &revisions).unwrap(), Next::Unchanged);
        let v2 = service(
            "{template: {metadata: {annotations: {autoscaling.knative.dev/min-scale: '1'}}, spec: {containers: [{command: [a]}]}}}",
        );
        let second = created(next(&v2, &revisions).unwrap());
        assert_eq!(second.metadata.name, "hello-00002");
        assert_eq!(
            latest("hello", &[first, second.clone()])
                .unwrap()
                .metadata
                .name,
            second.metadata.name
        );
    }

    #[test]
    fn named_revisions_are_immutable() {
        let named = service(
            "{template: {metadata: {name: hello-blue}, spec: {containers: [{command: [a]}]}}}",
        );
        let blue = created(next(&named, &[]).unwrap());
        assert_eq!(blue.metadata.name, "hello-blue");
        assert_eq!(
            next(&named, std::slice::from_ref(&blue)).unwrap(),
            Next::Unchanged
        );
        let changed = service(
            "{template: {metadata: {name: hello-blue}, spec: {containers: [{command: [b]}]}}}",
        );
        let error = next(&changed, &[blue]).unwrap_err();
        assert!(
            error.to_string().contains("`hello-blue` already exists"),
            "{error}"
        );
    }
}
