//! An instance's environment, built from nothing: a function gets the few variables every program
//! expects from kinetic's own environment (`PATH`, `HOME`, `LANG`, `TZ`), then its Service's `env`,
//! then Knative's `PORT`, `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION`, and nothing else. Later
//! entries win. kinetic's secrets (store URL, cloud keys, tokens) never reach a function.
//!
//! A variable with `valueFrom.secretKeyRef` is read when the instance starts, through the one
//! secret reader ([`kinetic_api::secret::read`], so within `--secrets-dir`): a rotated secret
//! reaches the next instance, and the value lives only in the new process's environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use kinetic_api::secret::ReadError;
use kinetic_api::sources::SecretRef;

use super::{EnvValue, Error, InstanceSpec};

/// The variables passed through from kinetic's environment unless the Service sets them.
pub const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// `PATH` when kinetic has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The whole environment of an instance listening on `port`. `inherited` looks a variable up in
/// kinetic's environment; `home` replaces `HOME` when the instance runs as another user; `secret`
/// reads a secret (in kinetic, [`kinetic_api::secret::read`]).
pub fn build(
    spec: &InstanceSpec,
    port: u16,
    inherited: impl Fn(&str) -> Option<OsString>,
    home: Option<OsString>,
    secret: impl Fn(&SecretRef) -> Result<Vec<u8>, ReadError>,
) -> Result<BTreeMap<OsString, OsString>, Error> {
    let mut env = BTreeMap::new();
    for name in PASSED_THROUGH {
        if let Some(value) = inherited(name) {
            env.insert(OsString::from(name), value);
        }
    }
    env.entry(OsString::from("PATH"))
        .or_insert_with(|| OsString::from(DEFAULT_PATH));
    if let Some(home) = home {
        env.insert(OsString::from("HOME"), home);
    }
    for (name, value) in &spec.env {
        let value = match value {
            EnvValue::Value(value) => OsString::from(value),
            EnvValue::Secret(selector) => {
                let reference = SecretRef::SecretKeyRef(selector.clone());
                let failed = |problem: String, hint| Error::Secret {
                    variable: name.clone(),
                    secret: reference.to_string(),
                    problem,
                    hint,
                };
                match secret(&reference) {
                    Ok(bytes) if bytes.contains(&0) => {
                        return Err(failed(
                            "the value holds a NUL byte, which no environment variable can".into(),
                            "store the value as text, e.g. base64-encoded",
                        ));
                    }
                    Ok(bytes) => OsString::from_vec(bytes),
                    Err(ReadError::File { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound
                            && selector.optional == Some(true) =>
                    {
                        continue;
                    }
                    Err(error @ ReadError::File { .. }) => {
                        let hint = "put the value in the file NAME/KEY of the secrets directory (`--secrets-dir`), readable by kinetic, or mark the reference `optional: true`";
                        return Err(failed(error.to_string(), hint));
                    }
                    Err(error) => {
                        let hint = "the file NAME/KEY must lie in the secrets directory, or link to a file within it";
                        return Err(failed(error.to_string(), hint));
                    }
                }
            }
        };
        env.insert(OsString::from(name), value);
    }
    for (name, value) in [
        ("PORT", port.to_string()),
        ("K_SERVICE", spec.service.clone()),
        ("K_REVISION", spec.revision.clone()),
        ("K_CONFIGURATION", spec.configuration.clone()),
    ] {
        env.insert(OsString::from(name), OsString::from(value));
    }
    Ok(env)
}

/// The `PATH` an instance of `spec` searches its program in: the Service's (written, not read
/// from a secret), else kinetic's, else [`DEFAULT_PATH`].
pub fn path_of(spec: &InstanceSpec, inherited: impl Fn(&str) -> Option<OsString>) -> OsString {
    spec.env
        .iter()
        .rev()
        .find_map(|(name, value)| match value {
            EnvValue::Value(value) if name == "PATH" => Some(OsString::from(value)),
            _ => None,
        })
        .or_else(|| inherited("PATH"))
        .unwrap_or_else(|| OsString::from(DEFAULT_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[(&str, &str)]) -> InstanceSpec {
        InstanceSpec {
            namespace: "ns".into(),
            service: "svc".into(),
            configuration: "svc".into(),
            revision: "svc-00001".into(),
            command: vec!["fn".into()],
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), EnvValue::from(*v)))
                .collect(),
            ..InstanceSpec::default()
        }
    }

    fn no_secrets(reference: &SecretRef) -> Result<Vec<u8>, ReadError> {
        panic!("read {reference}")
    }

    fn secret(name: &str, key: &str, optional: bool) -> EnvValue {
        EnvValue::Secret(kinetic_api::sources::SecretKeySelector {
            name: name.into(),
            key: key.into(),
            optional: optional.then_some(true),
        })
    }

    /// Secrets as the store holds them: `db/password` exists, everything else is missing.
    fn secrets(reference: &SecretRef) -> Result<Vec<u8>, ReadError> {
        match reference.to_string().as_str() {
            "secret db key password" => Ok(b"hunter2".to_vec()),
            "secret bin key blob" => Ok(b"a\0b".to_vec()),
            "secret link key x" => Err(ReadError::Outside("leads outside".into())),
            _ => Err(ReadError::File {
                path: "/secrets/missing".into(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
    }

    fn kinetic(name: &str) -> Option<OsString> {
        let vars = [
            ("PATH", "/kinetic/bin"),
            ("HOME", "/root"),
            ("TZ", "UTC"),
            ("KINETIC_STORE", "postgres://secret"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ];
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| OsString::from(v))
    }

    fn pairs(env: BTreeMap<OsString, OsString>) -> Vec<(String, String)> {
        env.into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect()
    }

    #[test]
    fn only_the_allow_list_the_service_and_knative() {
        let env = build(
            &spec(&[("GREETING", "hi"), ("TZ", "Europe/Paris")]),
            4000,
            kinetic,
            None,
            no_secrets,
        )
        .unwrap();
        assert_eq!(
            pairs(env),
            [
                ("GREETING", "hi"),
                ("HOME", "/root"),
                ("K_CONFIGURATION", "svc"),
                ("K_REVISION", "svc-00001"),
                ("K_SERVICE", "svc"),
                ("PATH", "/kinetic/bin"),
                ("PORT", "4000"),
                ("TZ", "Europe/Paris"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn knative_variables_win_and_home_follows_the_user() {
        let env = build(
            &spec(&[("PORT", "1")]),
            4000,
            |_| None,
            Some("/home/app".into()),
            no_secrets,
        )
        .unwrap();
        let env = pairs(env);
        assert!(env.contains(&("PORT".into(), "4000".into())));
        assert!(env.contains(&("HOME".into(), "/home/app".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }

    #[test]
    fn secrets_are_read_at_start_and_failures_name_the_variable_not_the_value() {
        let mut with_secrets = spec(&[("A", "1")]);
        with_secrets.env.extend([
            ("DB_PASSWORD".to_owned(), secret("db", "password", false)),
            ("OPTIONAL".to_owned(), secret("gone", "key", true)),
        ]);
        let env = pairs(build(&with_secrets, 4000, |_| None, None, secrets).unwrap());
        assert!(env.contains(&("DB_PASSWORD".into(), "hunter2".into())));
        assert!(env.contains(&("A".into(), "1".into())));
        assert!(!env.iter().any(|(name, _)| name == "OPTIONAL"));

        for (value, says) in [
            (secret("gone", "key", false), "optional: true"),
            (secret("bin", "blob", false), "NUL byte"),
            (secret("link", "x", false), "leads outside"),
            // Optional covers a missing secret only, not one that leads outside.
            (secret("link", "x", true), "leads outside"),
        ] {
            let mut failing = spec(&[]);
            failing.env.push(("TOKEN".to_owned(), value));
            let error = build(&failing, 4000, |_| None, None, secrets).unwrap_err();
            assert_eq!(error.reason(), "CreateContainerConfigError");
            let text = error.to_string();
            assert!(text.starts_with("env `TOKEN` reads secret "), "{text}");
            assert!(text.contains(says), "{text}");
        }
    }

    #[test]
    fn the_program_is_searched_in_the_services_path_first() {
        assert_eq!(path_of(&spec(&[("PATH", "/opt/fn")]), kinetic), "/opt/fn");
        assert_eq!(path_of(&spec(&[]), kinetic), "/kinetic/bin");
        assert_eq!(path_of(&spec(&[]), |_| None), DEFAULT_PATH);
    }
}
