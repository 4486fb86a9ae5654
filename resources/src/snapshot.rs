//! Every resource at one moment, with its typed body.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use kinetic_api::Kind;
use kinetic_api::core::ConfigMap;
use kinetic_api::eventing::{Broker, Trigger};
use kinetic_api::policy::EventPolicy;
use kinetic_api::serving::{Revision, Service};
use kinetic_api::sources::{KafkaSource, PingSource, S3Source, WebhookSource};
use kinetic_store::StoredResource;

/// A resource type kept in snapshots: its kind, and how its stored body is read.
pub trait Typed: serde::de::DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;
}

macro_rules! typed {
    ($($kind:ident),* $(,)?) => {
        $(impl Typed for $kind {
            const KIND: Kind = Kind::$kind;
        })*

        /// The typed body of a stored resource of `kind`, or why it cannot be read.
        fn parse(kind: Kind, body: &serde_json::Value) -> Result<Parsed, String> {
            fn read<T: Typed>(body: &serde_json::Value) -> Result<Parsed, String> {
                T::deserialize(body)
                    .map(|typed| Arc::new(typed) as Parsed)
                    .map_err(|error| error.to_string())
            }
            match kind {
                $(Kind::$kind => read::<$kind>(body),)*
            }
        }
    };
}

typed!(
    Broker,
    Trigger,
    EventPolicy,
    Service,
    Revision,
    ConfigMap,
    S3Source,
    WebhookSource,
    PingSource,
    KafkaSource,
);

type Parsed = Arc<dyn Any + Send + Sync>;

/// A stored resource this kinetic cannot read: it exists, but nothing acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// As stored: a kind this kinetic does not know is unreadable too.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub problem: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} (generation {}): {}",
            self.kind, self.namespace, self.name, self.generation, self.problem
        )
    }
}

/// The resources of one kind: every stored one, in namespace and name order, and beside each its
/// typed body when it could be read.
#[derive(Debug, Default)]
struct Listed {
    stored: Vec<StoredResource>,
    typed: Vec<Option<Parsed>>,
}

/// Every resource at one moment. Cheap to share ([`Watch`](crate::Watch) hands out `Arc`s); never
/// changes once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    kinds: HashMap<Kind, Listed>,
    unreadable: Vec<Unreadable>,
}

impl Snapshot {
    /// A snapshot of `resources` (in any order), each body read into its typed form.
    pub fn new(resources: Vec<StoredResource>) -> Snapshot {
        Snapshot::reusing(resources, None)
    }

    /// [`Snapshot::new`], taking the typed bodies of resources unchanged since `previous` (same
    /// uid and generation) from it instead of reading them again.
    pub fn reusing(mut resources: Vec<StoredResource>, previous: Option<&Snapshot>) -> Snapshot {
        resources.sort_by(|a, b| {
            (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name))
        });
        let mut snapshot = Snapshot::default();
        for stored in resources {
            let Some(kind) = Kind::of(&stored.kind) else {
                snapshot.unreadable.push(Unreadable {
                    kind: stored.kind.clone(),
                    namespace: stored.namespace.clone(),
                    name: stored.name.clone(),
                    generation: stored.generation,
                    problem: "a kind this kinetic does not know".to_owned(),
                });
                continue;
            };
            let kept = previous.and_then(|previous| {
                let (found, typed) = previous.entry(kind, &stored.namespace, &stored.name)?;
                (found.uid == stored.uid && found.generation == stored.generation)
                    .then(|| typed.cloned())?
            });
            let typed = match kept {
                Some(typed) => Some(typed),
                None => match parse(kind, &stored.body) {
                    Ok(typed) => Some(typed),
                    Err(problem) => {
                        snapshot.unreadable.push(Unreadable {
                            kind: stored.kind.clone(),
                            namespace: stored.namespace.clone(),
                            name: stored.name.clone(),
                            generation: stored.generation,
                            problem,
                        });
                        None
                    }
                },
            };
            let listed = snapshot.kinds.entry(kind).or_default();
            listed.stored.push(stored);
            listed.typed.push(typed);
        }
        snapshot
    }

    /// Every stored resource of `kind`, readable or not, in namespace and name order.
    pub fn stored(&self, kind: Kind) -> &[StoredResource] {
        self.kinds.get(&kind).map_or(&[], |l| l.stored.as_slice())
    }

    /// The resources of `T`'s kind that could be read, in namespace and name order.
    pub fn typed<T: Typed>(&self) -> impl Iterator<Item = (&StoredResource, &T)> {
        self.kinds.get(&T::KIND).into_iter().flat_map(|listed| {
            listed
                .stored
                .iter()
                .zip(&listed.typed)
                .filter_map(|(stored, typed)| Some((stored, typed.as_ref()?.downcast_ref::<T>()?)))
        })
    }

    /// The resource `namespace/name` of `T`'s kind, if it exists and could be read.
    pub fn get<T: Typed>(&self, namespace: &str, name: &str) -> Option<(&StoredResource, &T)> {
        let (stored, typed) = self.entry(T::KIND, namespace, name)?;
        Some((stored, typed?.downcast_ref::<T>()?))
    }

    /// The stored resource `namespace/name` of `kind`, readable or not.
    pub fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<&StoredResource> {
        self.entry(kind, namespace, name).map(|(stored, _)| stored)
    }

    fn entry(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<(&StoredResource, Option<&Parsed>)> {
        let listed = self.kinds.get(&kind)?;
        let at = listed
            .stored
            .binary_search_by(|s| (s.namespace.as_str(), s.name.as_str()).cmp(&(namespace, name)))
            .ok()?;
        Some((&listed.stored[at], listed.typed[at].as_ref()))
    }

    /// The resources whose bodies could not be read, and why.
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// Whether `other` holds the same resources at the same generations (and so the same bodies).
    pub fn same_as(&self, other: &Snapshot) -> bool {
        self.versions().eq(other.versions()) && self.unreadable == other.unreadable
    }

    fn versions(&self) -> impl Iterator<Item = (Kind, &str, &str, &str, i64)> {
        let mut kinds: Vec<&Kind> = self.kinds.keys().collect();
        kinds.sort_unstable();
        kinds.into_iter().flat_map(move |kind| {
            self.kinds[kind].stored.iter().map(move |s| {
                (
                    *kind,
                    s.namespace.as_str(),
                    s.name.as_str(),
                    s.uid.as_str(),
                    s.generation,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn stored(
        kind: &str,
        namespace: &str,
        name: &str,
        body: serde_json::Value,
    ) -> StoredResource {
        StoredResource {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: format!("uid-{kind}-{namespace}-{name}"),
            generation: 1,
            body,
            updated_at: 0,
        }
    }

    fn broker(namespace: &str, name: &str) -> StoredResource {
        stored(
            "Broker",
            namespace,
            name,
            json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": name, "namespace": namespace}, "spec": {}}),
        )
    }

    #[test]
    fn resources_are_typed_sorted_and_found() {
        let snapshot = Snapshot::new(vec![
            broker("b", "one"),
            broker("a", "two"),
            broker("a", "one"),
        ]);
        let names: Vec<String> = snapshot
            .typed::<Broker>()
            .map(|(stored, broker)| {
                assert_eq!(stored.name, broker.metadata.name);
                format!("{}/{}", stored.namespace, stored.name)
            })
            .collect();
        assert_eq!(names, ["a/one", "a/two", "b/one"]);
        assert!(snapshot.get::<Broker>("a", "two").is_some());
        assert!(snapshot.get::<Broker>("a", "three").is_none());
        assert!(
            snapshot.get::<Trigger>("a", "two").is_none(),
            "another kind"
        );
        assert_eq!(snapshot.stored(Kind::Trigger), &[]);
        assert!(snapshot.unreadable().is_empty());
    }

    #[test]
    fn an_unreadable_body_exists_but_is_not_typed() {
        let bad = stored("Trigger", "a", "bad", json!({"spec": {"broker": 7}}));
        let unknown = stored("Gadget", "a", "g", json!({}));
        let snapshot = Snapshot::new(vec![bad, unknown, broker("a", "one")]);
        assert_eq!(snapshot.stored(Kind::Trigger).len(), 1, "it still exists");
        assert!(snapshot.find(Kind::Trigger, "a", "bad").is_some());
        assert_eq!(snapshot.typed::<Trigger>().count(), 0, "nothing acts on it");
        let unreadable: Vec<String> = snapshot
            .unreadable()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");
        assert!(
            unreadable[0]
                .starts_with("Gadget a/g (generation 1): a kind this kinetic does not know"),
            "{unreadable:?}"
        );
        assert!(
            unreadable[1].starts_with("Trigger a/bad (generation 1): "),
            "{unreadable:?}"
        );
    }

    #[test]
    fn unchanged_resources_keep_their_typed_body_and_a_new_generation_is_read_again() {
        let first = Snapshot::new(vec![broker("a", "one"), broker("a", "two")]);
        let mut changed = broker("a", "two");
        changed.generation = 2;
        let second = Snapshot::reusing(vec![broker("a", "one"), changed], Some(&first));
        let typed = |s: &Snapshot, name: &str| {
            let listed = &s.kinds[&Kind::Broker];
            let at = listed.stored.iter().position(|r| r.name == name).unwrap();
            Arc::clone(listed.typed[at].as_ref().unwrap())
        };
        assert!(Arc::ptr_eq(&typed(&first, "one"), &typed(&second, "one")));
        assert!(!Arc::ptr_eq(&typed(&first, "two"), &typed(&second, "two")));
        assert!(!first.same_as(&second));
        assert!(second.same_as(
            &Snapshot::new(vec![broker("a", "two"), broker("a", "one")]).with_generation("two", 2)
        ));
    }

    impl Snapshot {
        fn with_generation(mut self, name: &str, generation: i64) -> Snapshot {
            for listed in self.kinds.values_mut() {
                for stored in &mut listed.stored {
                    if stored.name == name {
                        stored.generation = generation;
                    }
                }
            }
            self
        }
    }
}
