//! The one error type of this crate: what is wrong with a resource, where, and how to fix it.

use std::fmt;

/// A resource a user wrote is wrong. Carries everything needed to find and fix the mistake: the file,
/// the document number inside a multi-document file, the resource's kind and name, the field path
/// (`spec.delivery.backoffDelay`), what is wrong and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub file: Option<String>,
    /// 1-based document number inside the file.
    pub document: Option<usize>,
    /// `Kind namespace/name` of the resource, when known.
    pub resource: Option<String>,
    /// Dotted field path, e.g. `spec.filters[1].cesql`. Empty for the whole document.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            document: None,
            resource: None,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn in_document(mut self, document: usize) -> Self {
        self.document = Some(document);
        self
    }

    pub fn in_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Prefixes the field path, for errors found inside a nested value.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = join_path(prefix, &self.path);
        self
    }
}

pub(crate) fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut located = false;
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            located = true;
        }
        if let Some(document) = self.document {
            write!(f, "{}document {document}", if located { ", " } else { "" })?;
            located = true;
        }
        if let Some(resource) = &self.resource {
            write!(f, "{}{resource}", if located { ", " } else { "" })?;
            located = true;
        }
        if located {
            write!(f, ": ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_every_location() {
        let error = Error::new("spec.retry", "must not be negative")
            .with_hint("use 0 to disable retries")
            .in_file("broker.yaml")
            .in_document(2)
            .in_resource("Trigger default/t1");
        assert_eq!(
            error.to_string(),
            "broker.yaml, document 2, Trigger default/t1: spec.retry: must not be negative (hint: use 0 to disable retries)"
        );
    }

    #[test]
    fn paths_join_with_dots_and_brackets() {
        assert_eq!(join_path("spec", "filters[0]"), "spec.filters[0]");
        assert_eq!(join_path("spec.filters", "[0]"), "spec.filters[0]");
        assert_eq!(join_path("", "spec"), "spec");
        assert_eq!(join_path("spec", ""), "spec");
    }
}
