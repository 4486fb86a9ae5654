//! An instance's environment, built from nothing: a function gets the few variables every program
//! expects from kinetic's own environment (`PATH`, `HOME`, `LANG`, `TZ`), then its Service's `env`,
//! then Knative's `PORT`, `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION`, and nothing else. Later
//! entries win. kinetic's secrets (store URL, cloud keys, tokens) never reach a function.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::InstanceSpec;

/// The variables passed through from kinetic's environment unless the Service sets them.
pub const PASSED_THROUGH: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// `PATH` when kinetic has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The whole environment of an instance listening on `port`. `inherited` looks a variable up in
/// kinetic's environment; `home` replaces `HOME` when the instance runs as another user.
pub fn build(
    spec: &InstanceSpec,
    port: u16,
    inherited: impl Fn(&str) -> Option<OsString>,
    home: Option<OsString>,
) -> BTreeMap<OsString, OsString> {
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
        env.insert(OsString::from(name), OsString::from(value));
    }
    for (name, value) in [
        ("PORT", port.to_string()),
        ("K_SERVICE", spec.service.clone()),
        ("K_REVISION", spec.revision.clone()),
        ("K_CONFIGURATION", spec.configuration.clone()),
    ] {
        env.insert(OsString::from(name), OsString::from(value));
    }
    env
}

/// The `PATH` an instance of `spec` searches its program in: the Service's, else kinetic's, else
/// [`DEFAULT_PATH`].
pub fn path_of(spec: &InstanceSpec, inherited: impl Fn(&str) -> Option<OsString>) -> OsString {
    spec.env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| OsString::from(value))
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
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..InstanceSpec::default()
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
        );
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
        );
        let env = pairs(env);
        assert!(env.contains(&("PORT".into(), "4000".into())));
        assert!(env.contains(&("HOME".into(), "/home/app".into())));
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }

    #[test]
    fn the_program_is_searched_in_the_services_path_first() {
        assert_eq!(path_of(&spec(&[("PATH", "/opt/fn")]), kinetic), "/opt/fn");
        assert_eq!(path_of(&spec(&[]), kinetic), "/kinetic/bin");
        assert_eq!(path_of(&spec(&[]), |_| None), DEFAULT_PATH);
    }
}
