//! Which secrets a resource may name, and the one place their values are read.
//!
//! A [`SecretRef`] names an environment variable or a file of the kinetic process (a
//! `secretKeyRef` `{name, key}` is the file `{name}/{key}` in the first secrets directory). Unconfined, any
//! caller of the API could read any file kinetic can (`{file: /proc/self/environ}`) or any of its
//! variables, and send it to a server of their choosing as a password. So the process sets a
//! [`SecretScope`] at start ([`confine`]): files must lie in one of its directories
//! (`--secrets-dir`, default `{state-dir}/secrets`; a relative path is taken inside the first) and
//! variables must match its names or `PREFIX*` patterns (`--secret-env`). Resources are checked
//! against it when applied ([`SecretScope::check`], an error saying how to allow the secret), and
//! every read checks again ([`read`]), following symbolic links, so a resource stored under a wider
//! scope, or a link placed in the directory, reads nothing outside it.
//!
//! Reading is this crate's one piece of I/O: it happens here so that every reader (webhook
//! verification, source credentials, delivery signing, function environments) obeys the same rules.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

use crate::error::Error;
use crate::sources::SecretRef;

/// The secrets a process may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretScope {
    /// Absolute directories; a relative `file` is taken inside the first.
    dirs: Vec<PathBuf>,
    /// Variable names, or prefixes (a pattern `PREFIX*`).
    env: Vec<String>,
}

/// Why a secret was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("the file `{path}` cannot be read: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Outside(String),
}

static SCOPE: OnceLock<SecretScope> = OnceLock::new();

/// Sets the process's scope (once; later calls are ignored). Until it is set, every secret may be
/// read, as in a library's own tests.
pub fn confine(scope: SecretScope) {
    let _ = SCOPE.set(scope);
}

/// The process's scope, if set.
pub fn scope() -> Option<&'static SecretScope> {
    SCOPE.get()
}

impl SecretScope {
    /// `dirs` made absolute against the current directory; `env` names or `PREFIX*` patterns.
    pub fn new(dirs: Vec<PathBuf>, env: Vec<String>) -> Self {
        let dirs = dirs
            .into_iter()
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
            .map(|dir| normalized(&dir).unwrap_or(dir))
            .collect();
        Self { dirs, env }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The path a `file` reference reads: inside the first directory when relative.
    pub fn path_of(&self, file: &str) -> PathBuf {
        let path = Path::new(file);
        match self.dirs.first() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    fn env_allowed(&self, name: &str) -> bool {
        self.env
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            })
    }

    /// Whether `reference` is within the scope, judged from its text (see [`read`] for what the
    /// file system says). The error names the reference and the flag that would allow it.
    pub fn check(&self, reference: &SecretRef) -> Result<(), Error> {
        match reference {
            SecretRef::Env(name) if self.env_allowed(name) => Ok(()),
            SecretRef::Env(name) => Err(Error::new(
                "env",
                format!("the environment variable `{name}` is not one kinetic may read for resources"),
            )
            .with_hint(format!(
                "start kinetic with `--secret-env {name}` (or a pattern such as `--secret-env {}*`), or put the secret in a file in the secrets directory{}",
                name.split('_').next().unwrap_or(name),
                self.dirs_text()
            ))),
            SecretRef::SecretKeyRef(selector) => {
                selector.validate().map_err(|e| e.under("secretKeyRef"))?;
                if self.dirs.is_empty() {
                    return Err(Error::new(
                        "secretKeyRef",
                        "is read from the secrets directory, and none is set",
                    )
                    .with_hint("start kinetic with `--secrets-dir DIR`"));
                }
                Ok(())
            }
            SecretRef::File(file) => {
                let path = self.path_of(file);
                if normalized(&path).is_some_and(|path| self.dirs.iter().any(|dir| path.starts_with(dir))) {
                    Ok(())
                } else {
                    Err(Error::new(
                        "file",
                        format!("`{file}` is outside the secrets directory{}", self.dirs_text()),
                    )
                    .with_hint("put the secret's file in the secrets directory (a relative path is taken inside it), or start kinetic with another `--secrets-dir`"))
                }
            }
        }
    }

    fn dirs_text(&self) -> String {
        match self.dirs.as_slice() {
            [] => " (none is set)".to_owned(),
            dirs => format!(
                " ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Checks every secret reference in a resource's JSON: the error's path says where it is.
    pub fn check_resource(&self, resource: &Value) -> Result<(), Error> {
        for (path, reference) in references(resource) {
            self.check(&reference).map_err(|error| error.under(&path))?;
        }
        Ok(())
    }
}

/// `path` with `.` removed, or `None` if it has a `..` (which could leave a directory).
fn normalized(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => return None,
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Every secret reference in a resource's JSON, with its field path: the objects of exactly one
/// key, `env` or `file` holding a string, or `secretKeyRef` holding `{name, key}` (how a
/// [`SecretRef`] is written, and a function's `env[].valueFrom`).
pub fn references(value: &Value) -> Vec<(String, SecretRef)> {
    let mut found = Vec::new();
    walk(value, String::new(), &mut found);
    found
}

fn walk(value: &Value, path: String, found: &mut Vec<(String, SecretRef)>) {
    match value {
        Value::Object(object) => {
            if object.len() == 1 {
                match object.iter().next() {
                    Some((key, Value::String(name))) if key == "env" => {
                        found.push((path, SecretRef::Env(name.clone())));
                        return;
                    }
                    Some((key, Value::String(file))) if key == "file" => {
                        found.push((path, SecretRef::File(file.clone())));
                        return;
                    }
                    Some((key, selector @ Value::Object(_))) if key == "secretKeyRef" => {
                        if let Ok(selector) = serde_json::from_value(selector.clone()) {
                            found.push((path, SecretRef::SecretKeyRef(selector)));
                            return;
                        }
                    }
                    _ => {}
                }
            }
            for (key, value) in object {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(value, inner, found);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// Reads a secret: an environment variable, or a file's contents with surrounding white space
/// (its trailing newline, usually) removed. Within the process's scope, when one is set: a file
/// is resolved (links followed) and must still lie in a secrets directory.
pub fn read(reference: &SecretRef) -> Result<Vec<u8>, ReadError> {
    let scope = scope();
    if let Some(scope) = scope
        && let Err(error) = scope.check(reference)
    {
        return Err(ReadError::Outside(error.to_string()));
    }
    let file = match reference {
        SecretRef::Env(name) => {
            return std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| ReadError::MissingEnv(name.clone()));
        }
        SecretRef::File(file) => file.clone(),
        SecretRef::SecretKeyRef(selector) => selector.relative_path(),
    };
    let path = scope.map_or_else(|| PathBuf::from(&file), |s| s.path_of(&file));
    let file_error = |source| ReadError::File {
        path: path.clone(),
        source,
    };
    if let Some(scope) = scope {
        let real = std::fs::canonicalize(&path).map_err(file_error)?;
        let inside = scope
            .dirs
            .iter()
            .any(|dir| std::fs::canonicalize(dir).is_ok_and(|dir| real.starts_with(dir)));
        if !inside {
            return Err(ReadError::Outside(format!(
                "`{file}` leads to {} (a link?), outside the secrets directory",
                real.display()
            )));
        }
    }
    std::fs::read(&path)
        .map(|bytes| bytes.trim_ascii().to_vec())
        .map_err(file_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> SecretScope {
        SecretScope::new(
            vec!["/var/lib/kinetic/secrets".into()],
            vec!["GITHUB_WEBHOOK_SECRET".into(), "KINETIC_SECRET_*".into()],
        )
    }

    fn key(name: &str, key: &str) -> SecretRef {
        SecretRef::SecretKeyRef(crate::sources::SecretKeySelector {
            name: name.into(),
            key: key.into(),
            optional: None,
        })
    }

    #[test]
    fn what_the_scope_allows() {
        let scope = scope();
        for allowed in [
            SecretRef::Env("GITHUB_WEBHOOK_SECRET".into()),
            SecretRef::Env("KINETIC_SECRET_S3".into()),
            SecretRef::File("github".into()),
            SecretRef::File("./team/github".into()),
            SecretRef::File("/var/lib/kinetic/secrets/github".into()),
            key("db", "password"),
            key("kafka.prod", "ca.crt"),
        ] {
            scope.check(&allowed).unwrap();
        }
        for (refused, says) in [
            (
                SecretRef::Env("KINETIC_STORE".into()),
                "--secret-env KINETIC_STORE",
            ),
            (
                SecretRef::Env("GITHUB_WEBHOOK_SECRETX".into()),
                "--secret-env",
            ),
            (
                SecretRef::File("/etc/shadow".into()),
                "outside the secrets directory",
            ),
            (SecretRef::File("../state.db".into()), "outside"),
            (
                SecretRef::File("/var/lib/kinetic/secrets/../state.db".into()),
                "outside",
            ),
            (
                SecretRef::File("/var/lib/kinetic/secrets-other/x".into()),
                "outside",
            ),
            (key("..", "x"), "not a secret name"),
            (key("db", ".."), "not a secret key"),
            (key("db", "a/b"), "not a secret key"),
            (key("db/x", "k"), "not a secret name"),
        ] {
            let error = scope.check(&refused).unwrap_err().to_string();
            assert!(error.contains(says), "{refused:?}: {error}");
        }
    }

    #[test]
    fn references_are_found_with_their_paths() {
        let resource = serde_json::json!({
            "spec": {
                "verify": {"github": {"secret": {"env": "GH"}}},
                "delivery": {"signing": {"standardWebhooks": {"secrets": [{"file": "a"}, {"env": "B"}]}}},
                "template": {"spec": {"containers": [{"env": [
                    {"name": "env", "value": "file"},
                    {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                ]}]}},
                "other": {"env": "X", "also": 1},
            }
        });
        let found = references(&resource);
        assert_eq!(
            found,
            [
                (
                    "spec.delivery.signing.standardWebhooks.secrets[0]".to_owned(),
                    SecretRef::File("a".into())
                ),
                (
                    "spec.delivery.signing.standardWebhooks.secrets[1]".to_owned(),
                    SecretRef::Env("B".into())
                ),
                (
                    "spec.template.spec.containers[0].env[1].valueFrom".to_owned(),
                    key("db", "password")
                ),
                (
                    "spec.verify.github.secret".to_owned(),
                    SecretRef::Env("GH".into())
                ),
            ]
        );
    }

    #[test]
    fn reads_follow_links_and_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        std::fs::write(secrets.join("token"), "t0ken\n").unwrap();
        // A mounted Kubernetes secret: `db/password` links to `db/..data/password`.
        std::fs::create_dir_all(secrets.join("db/..2026_12_06")).unwrap();
        std::fs::write(secrets.join("db/..2026_12_06/password"), "hunter2").unwrap();
        std::os::unix::fs::symlink("..2026_12_06", secrets.join("db/..data")).unwrap();
        std::os::unix::fs::symlink("..data/password", secrets.join("db/password")).unwrap();
        std::fs::write(dir.path().join("outside"), "private").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), secrets.join("link")).unwrap();
        // The scope is process-wide once set: this test module's reads only.
        confine(SecretScope::new(vec![secrets.clone()], vec![]));
        assert_eq!(read(&SecretRef::File("token".into())).unwrap(), b"t0ken");
        assert_eq!(read(&key("db", "password")).unwrap(), b"hunter2");
        assert!(matches!(
            read(&key("db", "user")).unwrap_err(),
            ReadError::File { .. }
        ));
        let linked = read(&SecretRef::File("link".into())).unwrap_err();
        assert!(matches!(linked, ReadError::Outside(_)), "{linked}");
        let absolute = read(&SecretRef::File(
            dir.path().join("outside").display().to_string(),
        ))
        .unwrap_err();
        assert!(matches!(absolute, ReadError::Outside(_)), "{absolute}");
        assert!(matches!(
            read(&SecretRef::Env("PATH".into())).unwrap_err(),
            ReadError::Outside(_)
        ));
    }
}
