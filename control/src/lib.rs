//! kinetic's control plane, apart from how it is reached: what `kinetic apply`, `get` and
//! `delete` do, whoever asks (the admin HTTP API in `src/api.rs`, `kinetic up -f` and its file
//! watcher).
//!
//! - [`validate`]: checking resources before any is stored;
//! - [`apply`]: storing them, with what goes with each change (revisions, cursors, cascades on
//!   delete);
//! - [`status`]: a stored resource as users see it, with the live status this process knows.
//!
//! [`Control`] holds what these need of one process: the store, its resource watch (told to read
//! again after every change, so the process acts on it at once), and the components whose live
//! state the status shows, where the process runs them.

pub mod apply;
pub mod status;
pub mod validate;

use std::sync::Arc;

use kinetic_api::{Kind, Resource};
use kinetic_store::Store;
use serde_json::Value;

pub use apply::Applied;
pub use validate::ServiceChecks;

/// The control plane of one process.
#[derive(Clone)]
pub struct Control {
    pub store: Arc<dyn Store>,
    /// The resources as this process's components read them.
    pub resources: kinetic_resources::Watch,
    /// Present in processes that serve functions.
    pub serving: Option<Arc<kinetic_serving::Serving>>,
    /// Present in processes that run sources.
    pub sources: Option<Arc<kinetic_sources::Sources>>,
    /// Why triggers are not ready; present in processes that deliver.
    pub triggers: Option<kinetic_triggers::plan::ProblemTable>,
    /// Each trigger's subscriber concurrency; present in processes that deliver.
    pub subscriber_limits: Option<kinetic_triggers::dispatcher::SubscriberLimits>,
    /// Set where the resources are not this process's to write (on Kubernetes they live in the
    /// API server): applying and deleting are refused with this hint, and listings show the
    /// resources as this process's watch last read them.
    pub written_elsewhere: Option<&'static str>,
}

/// Why an apply stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A document is not valid, or refers to what does not exist: the user's to fix.
    #[error("{0}")]
    Invalid(kinetic_api::Error),
    /// The resources are written elsewhere (see [`Control::written_elsewhere`]).
    #[error("resources are not applied here: {0}")]
    WrittenElsewhere(&'static str),
    #[error(transparent)]
    Store(#[from] kinetic_store::Error),
}

/// Why a delete did nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// Revisions are kinetic's, not the user's: they go with their Service.
    #[error(
        "revisions go with their Service; delete the Service, or stop routing traffic to the revision"
    )]
    Revision,
    /// The resources are written elsewhere (see [`Control::written_elsewhere`]).
    #[error("resources are not deleted here: {0}")]
    WrittenElsewhere(&'static str),
    #[error(transparent)]
    Store(#[from] kinetic_store::Error),
}

impl Control {
    /// A control plane of `store` alone: no live status, nothing of serving checked.
    pub fn new(store: Arc<dyn Store>, resources: kinetic_resources::Watch) -> Control {
        Control {
            store,
            resources,
            serving: None,
            sources: None,
            triggers: None,
            subscriber_limits: None,
            written_elsewhere: None,
        }
    }

    /// What this process's serving allows of a Service. `None` when this process serves no
    /// functions: the process that does (`kinetic autoscaler`, with its own settings) checks
    /// them when it starts the revision, and the revision's status says what it refused.
    pub fn checks(&self) -> Option<ServiceChecks> {
        self.serving.as_ref().map(|serving| ServiceChecks {
            autoscaler: serving.config().autoscaler.clone(),
            exec_allow: serving.config().exec_allow.clone(),
            containers: serving.config().containers,
        })
    }

    /// Checks the documents of `text` (named `file` in errors) and, when every one is valid,
    /// applies them all.
    pub async fn apply_text(&self, file: &str, text: &str) -> Result<Vec<Applied>, ApplyError> {
        // Parsing YAML can cost tens of MB for a small document full of aliases (the parser's
        // budgets stop worse): a few at a time.
        static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let parsing = PARSING.acquire().await;
        let parsed = validate::parse_and_validate(file, text, self.checks().as_ref());
        drop(parsing);
        let resources = parsed.map_err(ApplyError::Invalid)?;
        self.apply(file, &resources).await
    }

    /// Checks `resources` (from `file`) against what is stored, then applies them.
    pub async fn apply(
        &self,
        file: &str,
        resources: &[Resource],
    ) -> Result<Vec<Applied>, ApplyError> {
        if let Some(hint) = self.written_elsewhere {
            return Err(ApplyError::WrittenElsewhere(hint));
        }
        validate::check_references(&self.store, file, resources)
            .await?
            .map_err(ApplyError::Invalid)?;
        let applied = apply::apply(&self.store, resources).await;
        self.resources.refresh();
        Ok(applied?)
    }

    /// Deletes `namespace/name` of `kind` and what goes with it; `false` when it did not exist.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, DeleteError> {
        if let Some(hint) = self.written_elsewhere {
            return Err(DeleteError::WrittenElsewhere(hint));
        }
        if kind == Kind::Revision {
            return Err(DeleteError::Revision);
        }
        let deleted = apply::delete(&self.store, kind, namespace, name).await;
        self.resources.refresh();
        Ok(deleted?)
    }

    /// The resources of `kind` (in `namespace`, or all), as users see them.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, kinetic_store::Error> {
        let stored = match self.written_elsewhere {
            Some(_) => self
                .watched(kind)
                .into_iter()
                .filter(|stored| namespace.is_none_or(|namespace| stored.namespace == namespace))
                .collect(),
            None => self.store.list_resources(kind.as_str(), namespace).await?,
        };
        let mut shown = Vec::with_capacity(stored.len());
        for stored in stored {
            shown.push(self.shown(stored).await?);
        }
        Ok(shown)
    }

    /// The resource `namespace/name` of `kind`, as users see it.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, kinetic_store::Error> {
        let stored = match self.written_elsewhere {
            Some(_) => self
                .watched(kind)
                .into_iter()
                .find(|stored| stored.namespace == namespace && stored.name == name),
            None => {
                self.store
                    .get_resource(kind.as_str(), namespace, name)
                    .await?
            }
        };
        match stored {
            Some(stored) => Ok(Some(self.shown(stored).await?)),
            None => Ok(None),
        }
    }

    /// The resources of `kind` as this process's watch last read them.
    fn watched(&self, kind: Kind) -> Vec<kinetic_store::StoredResource> {
        self.resources
            .latest()
            .map(|snapshot| snapshot.stored(kind).to_vec())
            .unwrap_or_default()
    }
}
