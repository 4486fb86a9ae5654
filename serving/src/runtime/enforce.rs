//! What of a revision's `resources` and `securityContext` this machine cannot enforce, as
//! conditions on the revision (`ResourcesEnforced`, `SecurityContextEnforced`), so nothing a user
//! asked for is ignored without a word. A plain function of the spec and the runtime's
//! [`Capabilities`].

use super::{Capabilities, Condition, InstanceSpec};

/// The condition types, as shown in `kinetic get revisions`.
pub const RESOURCES_ENFORCED: &str = "ResourcesEnforced";
pub const SECURITY_CONTEXT_ENFORCED: &str = "SecurityContextEnforced";

/// Conditions with status "False" for every field of `spec` that cannot be enforced; none when all
/// can. `uid`/`gid` are kinetic's own.
pub fn unenforced(spec: &InstanceSpec, can: Capabilities, uid: u32, gid: u32) -> Vec<Condition> {
    // A container's limits and user are the engine's to enforce.
    let can = if spec.image.is_some() {
        Capabilities {
            memory: true,
            cpu: true,
            switch_user: true,
            ..can
        }
    } else {
        can
    };
    let runtime = if spec.image.is_some() {
        "the container runtime"
    } else {
        "the local process runtime"
    };
    let mut conditions = Vec::new();
    let mut resources = Vec::new();
    if spec.limits.memory_bytes.is_some() && !can.memory {
        resources.push(
            "resources.limits.memory: no cgroup memory controller is writable by kinetic here (rlimits cannot bound a program's memory faithfully, so none is set)",
        );
    }
    if spec.limits.cpu_millis.is_some() && !can.cpu {
        resources
            .push("resources.limits.cpu: no cgroup cpu controller is writable by kinetic here");
    }
    if !resources.is_empty() {
        conditions.push(Condition {
            kind: RESOURCES_ENFORCED,
            status: "False",
            reason: "NoCgroup",
            message: format!(
                "{}; run kinetic as root, or in a cgroup v2 subtree delegated to it, to enforce them",
                resources.join("; ")
            ),
        });
    }
    let mut security: Vec<String> = Vec::new();
    if !can.switch_user {
        if let Some(wanted) = spec.run_as_user.filter(|u| *u != uid) {
            security.push(format!(
                "runAsUser {wanted}: kinetic runs as uid {uid}, not root, and cannot switch users"
            ));
        }
        if let Some(wanted) = spec.run_as_group.filter(|g| *g != gid) {
            security.push(format!(
                "runAsGroup {wanted}: kinetic runs as gid {gid}, not root, and cannot switch groups"
            ));
        }
    }
    for field in &spec.unenforced_security {
        security.push(format!("{field}: not enforced by {runtime}"));
    }
    if !security.is_empty() {
        conditions.push(Condition {
            kind: SECURITY_CONTEXT_ENFORCED,
            status: "False",
            reason: "Unsupported",
            message: security.join("; "),
        });
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetic_api::serving::Limits;

    fn spec(memory: bool, cpu: bool, user: Option<u32>, fields: &[&str]) -> InstanceSpec {
        InstanceSpec {
            limits: Limits {
                memory_bytes: memory.then_some(64 << 20),
                cpu_millis: cpu.then_some(500),
            },
            run_as_user: user,
            unenforced_security: fields.iter().map(|f| (*f).to_owned()).collect(),
            ..InstanceSpec::default()
        }
    }

    fn all() -> Capabilities {
        Capabilities {
            memory: true,
            cpu: true,
            group_kill: true,
            switch_user: true,
        }
    }

    #[test]
    fn everything_enforceable_gives_no_condition() {
        assert!(unenforced(&spec(true, true, Some(1000), &[]), all(), 0, 0).is_empty());
        assert!(
            unenforced(
                &spec(false, false, None, &[]),
                Capabilities::default(),
                1000,
                1000
            )
            .is_empty()
        );
        // Asking for the user kinetic already is needs no switch.
        assert!(
            unenforced(
                &spec(false, false, Some(1000), &[]),
                Capabilities::default(),
                1000,
                1000
            )
            .is_empty()
        );
    }

    #[test]
    fn each_missing_capability_is_named() {
        let none = Capabilities::default();
        let conditions = unenforced(
            &spec(true, true, Some(0), &["capabilities"]),
            none,
            1000,
            1000,
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].kind, RESOURCES_ENFORCED);
        assert!(conditions[0].message.contains("resources.limits.memory"));
        assert!(conditions[0].message.contains("resources.limits.cpu"));
        assert_eq!(conditions[1].kind, SECURITY_CONTEXT_ENFORCED);
        assert!(conditions[1].message.contains("runAsUser 0"));
        assert!(conditions[1].message.contains("capabilities"));
        let cpu_only = Capabilities {
            memory: true,
            ..none
        };
        let conditions = unenforced(&spec(true, true, None, &[]), cpu_only, 0, 0);
        assert!(!conditions[0].message.contains("memory"), "{conditions:?}");
    }
}
