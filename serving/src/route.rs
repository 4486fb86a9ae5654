//! Routes: which revision serves a request, from the Host it was sent to and the Service's traffic
//! split. Pure: the gateway passes in the roll of the dice.

use std::collections::HashMap;

use kinetic_api::Service;

/// The resolved traffic of one Service.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub namespace: String,
    pub service: String,
    /// `(revision, percent)` with percent > 0, percentages adding up to 100.
    pub split: Vec<(String, u32)>,
    /// Tag → revision.
    pub tags: HashMap<String, String>,
}

/// A traffic target names a revision that does not exist (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.traffic[{index}].revisionName: revision `{revision}` does not exist")]
pub struct UnknownRevision {
    pub index: usize,
    pub revision: String,
}

impl Route {
    /// Resolves `latestRevision` to `latest` and checks that every named revision exists.
    pub fn resolve(
        service: &Service,
        latest: Option<&str>,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Route, UnknownRevision> {
        let mut totals: Vec<(String, u32)> = Vec::new();
        let mut tags = HashMap::new();
        for (index, target) in service.traffic().iter().enumerate() {
            let revision = match (&target.revision_name, latest) {
                (Some(name), _) if exists(name) => name.clone(),
                (Some(name), _) => {
                    return Err(UnknownRevision {
                        index,
                        revision: name.clone(),
                    });
                }
                (None, Some(latest)) => latest.to_owned(),
                (None, None) => {
                    return Err(UnknownRevision {
                        index,
                        revision: format!("{}-00001", service.metadata.name),
                    });
                }
            };
            if let Some(tag) = &target.tag {
                tags.insert(tag.clone(), revision.clone());
            }
            let percent = target.percent.unwrap_or(0);
            if percent == 0 {
                continue;
            }
            match totals.iter_mut().find(|(r, _)| *r == revision) {
                Some((_, total)) => *total += percent,
                None => totals.push((revision, percent)),
            }
        }
        Ok(Route {
            namespace: service.metadata.namespace.clone(),
            service: service.metadata.name.clone(),
            split: totals,
            tags,
        })
    }

    /// The revision for a roll in `0..100`.
    pub fn pick(&self, roll: u32) -> Option<&str> {
        let mut acc = 0;
        for (revision, percent) in &self.split {
            acc += percent;
            if roll < acc {
                return Some(revision);
            }
        }
        self.split.last().map(|(r, _)| r.as_str())
    }

    /// Every revision this route can send requests to.
    pub fn revisions(&self) -> impl Iterator<Item = &str> {
        self.split
            .iter()
            .map(|(r, _)| r.as_str())
            .chain(self.tags.values().map(String::as_str))
    }
}

/// The part of a Host header that names a route: `{label}.{namespace}` out of
/// `{label}.{namespace}.{domain}[:port]`, where the label is `{service}` or `{tag}-{service}`.
/// `None` when the host is not under `domain` or has another shape. Borrowed from `host`, so the
/// gateway looks routes up without allocating.
pub fn host_key<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (label, namespace) = rest.split_once('.')?;
    if label.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some(rest)
}

/// The key [`host_key`] finds for a service (`tag: None`) or one of its tags.
pub fn key_of(namespace: &str, service: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{tag}-{service}.{namespace}"),
        None => format!("{service}.{namespace}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_api::Resource;

    fn service(spec: &str) -> Service {
        let text = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {{name: my-fn, namespace: ns}}\nspec: {spec}\n"
        );
        match kinetic_api::parse_documents("f", &text).unwrap().remove(0) {
            Resource::Service(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn splits_by_percent_and_resolves_latest() {
        let svc = service(
            "{template: {spec: {containers: [{command: [a]}]}}, traffic: [{latestRevision: true, percent: 80}, {revisionName: my-fn-00001, percent: 20, tag: old}]}",
        );
        let route = Route::resolve(&svc, Some("my-fn-00002"), |_| true).unwrap();
        let picks: Vec<_> = (0..100).map(|roll| route.pick(roll).unwrap()).collect();
        assert_eq!(picks.iter().filter(|r| **r == "my-fn-00002").count(), 80);
        assert_eq!(picks.iter().filter(|r| **r == "my-fn-00001").count(), 20);
        assert_eq!(route.tags["old"], "my-fn-00001");
        let missing = Route::resolve(&svc, Some("my-fn-00002"), |r| r != "my-fn-00001");
        assert_eq!(missing.unwrap_err().index, 1);
    }

    #[test]
    fn zero_percent_targets_only_serve_their_tag() {
        let svc = service(
            "{template: {spec: {containers: [{command: [a]}]}}, traffic: [{latestRevision: true, percent: 100}, {revisionName: my-fn-00001, percent: 0, tag: canary}]}",
        );
        let route = Route::resolve(&svc, Some("my-fn-00002"), |_| true).unwrap();
        assert!((0..100).all(|roll| route.pick(roll) == Some("my-fn-00002")));
        assert_eq!(route.tags["canary"], "my-fn-00001");
        assert_eq!(
            route.revisions().collect::<Vec<_>>(),
            ["my-fn-00002", "my-fn-00001"]
        );
    }

    #[test]
    fn hosts_outside_the_domain_are_not_routes() {
        fn key(host: &str) -> Option<&str> {
            host_key(host, "kinetic.localhost")
        }
        assert_eq!(
            key("canary-my-fn.ns.kinetic.localhost:8081"),
            Some("canary-my-fn.ns")
        );
        assert_eq!(key("my-fn.ns.kinetic.localhost"), Some("my-fn.ns"));
        assert_eq!(key("a.b.kinetic.localhost."), Some("a.b"));
        assert_eq!(key("example.com"), None);
        assert_eq!(key("a.kinetic.localhost"), None);
        assert_eq!(key("a.b.c.kinetic.localhost"), None);
        assert_eq!(key("a.bkinetic.localhost"), None);
        assert_eq!(key_of("ns", "my-fn", Some("canary")), "canary-my-fn.ns");
    }
}
