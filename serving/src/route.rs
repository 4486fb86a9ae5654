//! Routes: which revision serves a request, from the Host it was sent to and the Service's traffic
//! split. Pure: the gateway passes in the roll of the dice.

use std::collections::HashMap;

use kinetic_api::Service;

/// The resolved traffic of one Service.
#[derive(Debug, Clone, PartialEq)]
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

/// What a Host header addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName<'a> {
    /// The first DNS label: `{service}` or `{tag}-{service}`.
    pub label: &'a str,
    pub namespace: &'a str,
}

/// Splits `{label}.{namespace}.{domain}[:port]`; `None` when the host is not under `domain`.
pub fn parse_host<'a>(host: &'a str, domain: &str) -> Option<HostName<'a>> {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.strip_suffix('.').unwrap_or(host);
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    let (label, namespace) = rest.split_once('.')?;
    if label.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some(HostName { label, namespace })
}

/// Finds the route and revision a host label addresses: a service name, or `{tag}-{service}`.
/// Returns the route and, for a tag, the tagged revision.
pub fn lookup<'r>(
    routes: &'r HashMap<(String, String), Route>,
    name: &HostName<'_>,
) -> Option<(&'r Route, Option<&'r str>)> {
    let namespace = name.namespace.to_owned();
    if let Some(route) = routes.get(&(namespace.clone(), name.label.to_owned())) {
        return Some((route, None));
    }
    // Tags and service names may both contain `-`: try every split.
    for (at, _) in name.label.match_indices('-') {
        let (tag, service) = (&name.label[..at], &name.label[at + 1..]);
        if let Some(route) = routes.get(&(namespace.clone(), service.to_owned()))
            && let Some(revision) = route.tags.get(tag)
        {
            return Some((route, Some(revision.as_str())));
        }
    }
    None
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
        let mut routes = HashMap::new();
        routes.insert(("ns".to_owned(), "my-fn".to_owned()), route);
        let host = parse_host(
            "canary-my-fn.ns.kinetic.localhost:8081",
            "kinetic.localhost",
        )
        .unwrap();
        let (found, revision) = lookup(&routes, &host).unwrap();
        assert_eq!(
            (found.service.as_str(), revision),
            ("my-fn", Some("my-fn-00001"))
        );
        let plain = parse_host("my-fn.ns.kinetic.localhost", "kinetic.localhost").unwrap();
        assert_eq!(lookup(&routes, &plain).unwrap().1, None);
        let unknown = parse_host("nope-my-fn.ns.kinetic.localhost", "kinetic.localhost").unwrap();
        assert!(lookup(&routes, &unknown).is_none());
    }

    #[test]
    fn hosts_outside_the_domain_are_not_routes() {
        assert_eq!(parse_host("example.com", "kinetic.localhost"), None);
        assert_eq!(parse_host("a.kinetic.localhost", "kinetic.localhost"), None);
        assert_eq!(
            parse_host("a.b.c.kinetic.localhost", "kinetic.localhost"),
            None
        );
        assert_eq!(
            parse_host("a.b.kinetic.localhost.", "kinetic.localhost"),
            Some(HostName {
                label: "a",
                namespace: "b"
            })
        );
    }
}
