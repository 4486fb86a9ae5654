//! Control groups for instances: a memory limit the kernel enforces (and reports as an OOM kill),
//! a CPU quota, and a kill that reaches every process of an instance even when one left its
//! process group with `setsid()`.
//!
//! At start the runtime looks for what this machine lets it use ([`Cgroups::detect`]):
//! - cgroup v2 (the unified hierarchy, at `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`): a group
//!   `kinetic-{pid}` under kinetic's own cgroup, with the `memory` and `cpu` controllers enabled
//!   for its children when the parent hands them down (the root cgroup of a container, or a
//!   systemd unit with `Delegate=yes`). Even without controllers, a v2 group gives `cgroup.kill`.
//! - cgroup v1 `memory` and `cpu` hierarchies, used for the limits that v2 cannot enforce here.
//!
//! Each instance gets its own group(s) `{revision}-{id}` below those; the shim joins them before it
//! becomes the program, so nothing the program does happens outside them. Writing needs the
//! directories to be writable, which in practice means kinetic runs as root or owns a delegated
//! subtree. Where nothing is usable, limits are not enforced and the revision says so.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use kinetic_api::serving::Limits;
use tracing::{debug, info};

/// CPU quotas are granted per this period (µs), as Kubernetes does.
const CPU_PERIOD_US: u64 = 100_000;

/// What the runtime can enforce on this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `resources.limits.memory`, as a cgroup memory limit.
    pub memory: bool,
    /// `resources.limits.cpu`, as a cgroup CPU quota.
    pub cpu: bool,
    /// Every process of an instance can be killed at once (v2 `cgroup.kill`), even those that left
    /// its process group.
    pub group_kill: bool,
    /// kinetic runs as root, so it can run programs as another user.
    pub switch_user: bool,
}

/// The cgroup directories this runtime creates instances' groups in.
#[derive(Debug, Default)]
pub(crate) struct Cgroups {
    v2: Option<V2>,
    v1_memory: Option<PathBuf>,
    v1_cpu: Option<PathBuf>,
    switch_user: bool,
}

#[derive(Debug)]
struct V2 {
    dir: PathBuf,
    memory: bool,
    cpu: bool,
}

impl Cgroups {
    /// None at all: nothing is enforced.
    pub fn none() -> Self {
        Self {
            switch_user: nix::unistd::geteuid().is_root(),
            ..Self::default()
        }
    }

    /// Finds and prepares the groups this process may use. Blocking file-system calls; run once at
    /// start.
    pub fn detect() -> Self {
        let mut found = Self::none();
        let (Ok(mountinfo), Ok(own)) = (
            std::fs::read_to_string("/proc/self/mountinfo"),
            std::fs::read_to_string("/proc/self/cgroup"),
        ) else {
            return found;
        };
        let mounts = parse_mounts(&mountinfo);
        let own = parse_own(&own);
        let name = format!("kinetic-{}", std::process::id());
        if let Some(base) = hierarchy(&mounts, &own, None) {
            let dir = base.join(&name);
            if make_group(&dir).is_ok() {
                // Hands the controllers down from kinetic's own group when it may (it may not when
                // kinetic's process is in it and it is not the root); then on to the instances.
                for controller in ["+memory", "+cpu"] {
                    let _ = std::fs::write(base.join("cgroup.subtree_control"), controller);
                }
                let available =
                    std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                let enabled = |controller: &str| {
                    available.split_whitespace().any(|c| c == controller)
                        && std::fs::write(
                            dir.join("cgroup.subtree_control"),
                            format!("+{controller}"),
                        )
                        .is_ok()
                };
                let (memory, cpu) = (enabled("memory"), enabled("cpu"));
                found.v2 = Some(V2 { dir, memory, cpu });
            }
        }
        let v1 = |controller: &str| {
            let dir = hierarchy(&mounts, &own, Some(controller))?.join(&name);
            make_group(&dir).ok().map(|()| dir)
        };
        if !found.v2.as_ref().is_some_and(|v2| v2.memory) {
            found.v1_memory = v1("memory");
        }
        if !found.v2.as_ref().is_some_and(|v2| v2.cpu) {
            found.v1_cpu = v1("cpu");
        }
        info!(capabilities = ?found.capabilities(), v2 = ?found.v2.as_ref().map(|v| &v.dir), v1_memory = ?found.v1_memory, v1_cpu = ?found.v1_cpu, "Instance isolation detected.");
        found
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            memory: self.v2.as_ref().is_some_and(|v| v.memory) || self.v1_memory.is_some(),
            cpu: self.v2.as_ref().is_some_and(|v| v.cpu) || self.v1_cpu.is_some(),
            group_kill: self.v2.is_some(),
            switch_user: self.switch_user,
        }
    }

    /// Creates the groups of one instance, with its limits written. `None` when this machine has
    /// no group to give it.
    pub fn create(&self, name: &str, limits: Limits) -> io::Result<Option<InstanceCgroup>> {
        let mut group = InstanceCgroup::default();
        let result = self.fill(&mut group, name, limits);
        if let Err(error) = result {
            group.remove();
            return Err(error);
        }
        Ok((!group.dirs.is_empty()).then_some(group))
    }

    fn fill(&self, group: &mut InstanceCgroup, name: &str, limits: Limits) -> io::Result<()> {
        if let Some(v2) = &self.v2 {
            let dir = v2.dir.join(name);
            make_dir(&dir)?;
            group.dirs.push(dir.clone());
            group.kill_file = Some(dir.join("cgroup.kill"));
            group.events_file = Some(dir.join("cgroup.events"));
            if let Some(bytes) = limits.memory_bytes.filter(|_| v2.memory) {
                std::fs::write(dir.join("memory.max"), bytes.to_string())?;
                // No swapping around the limit, where swap is accounted at all.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                group.oom = Some(Oom::V2(dir.join("memory.events")));
            }
            if let Some(millis) = limits.cpu_millis.filter(|_| v2.cpu) {
                std::fs::write(
                    dir.join("cpu.max"),
                    format!("{} {CPU_PERIOD_US}", quota(millis)),
                )?;
            }
        }
        if let (Some(bytes), Some(base)) = (limits.memory_bytes, &self.v1_memory)
            && group.oom.is_none()
        {
            let dir = base.join(name);
            make_dir(&dir)?;
            group.dirs.push(dir.clone());
            std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
            let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
            group.oom = Some(Oom::V1(dir.join("memory.oom_control")));
        }
        if let (Some(millis), Some(base)) = (limits.cpu_millis, &self.v1_cpu)
            && !self.v2.as_ref().is_some_and(|v| v.cpu)
        {
            let dir = base.join(name);
            make_dir(&dir)?;
            group.dirs.push(dir.clone());
            std::fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota(millis).to_string())?;
        }
        Ok(())
    }

    /// Removes the runtime's own groups; they must be empty by then. Best effort.
    pub fn remove(&self) {
        let dirs = [
            self.v2.as_ref().map(|v| &v.dir),
            self.v1_memory.as_ref(),
            self.v1_cpu.as_ref(),
        ];
        for dir in dirs.into_iter().flatten() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The CPU quota per period for `millis` millicores.
fn quota(millis: u64) -> u64 {
    (millis * CPU_PERIOD_US / 1000).max(1000)
}

/// Creates kinetic's own group `dir` (`kinetic-{pid}`) after removing the groups that kinetic
/// processes no longer running left beside it (a SIGKILLed kinetic cannot remove its own; its
/// instances died with it, so those groups are empty).
fn make_group(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent()
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("kinetic-"))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let stale = entry.path();
            if let Ok(children) = std::fs::read_dir(&stale) {
                for child in children.flatten() {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&stale);
        }
    }
    make_dir(dir)
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}

/// Where the OOM killer's count of an instance's group is read.
#[derive(Debug, Clone)]
enum Oom {
    /// `memory.events`, line `oom_kill N`.
    V2(PathBuf),
    /// `memory.oom_control`, line `oom_kill N`.
    V1(PathBuf),
}

/// One instance's groups.
#[derive(Debug, Default)]
pub(crate) struct InstanceCgroup {
    dirs: Vec<PathBuf>,
    kill_file: Option<PathBuf>,
    events_file: Option<PathBuf>,
    oom: Option<Oom>,
}

impl InstanceCgroup {
    /// The `cgroup.procs` files a process writes its pid to, to join every group of the instance.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves `pid` into the groups (when there is no shim to join them itself).
    pub fn join(&self, pid: u32) -> io::Result<()> {
        for file in self.procs_files() {
            std::fs::write(file, pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of this instance.
    pub fn oom_killed(&self) -> bool {
        let (Oom::V2(file) | Oom::V1(file)) = match &self.oom {
            Some(oom) => oom,
            None => return false,
        };
        std::fs::read_to_string(file).is_ok_and(|text| oom_kills(&text) > 0)
    }

    /// SIGKILLs every process of the instance: `cgroup.kill` on v2, each listed pid otherwise.
    pub fn kill(&self) {
        if let Some(file) = &self.kill_file
            && std::fs::write(file, "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Whether a process of the instance is still in its groups.
    pub fn populated(&self) -> bool {
        if let Some(file) = &self.events_file
            && let Ok(text) = std::fs::read_to_string(file)
        {
            return text.lines().any(|l| l.trim() == "populated 1");
        }
        !self.pids().is_empty()
    }

    fn pids(&self) -> Vec<i32> {
        self.procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }

    /// Removes the groups; they must be empty. Best effort.
    pub fn remove(&self) {
        for dir in &self.dirs {
            if let Err(error) = std::fs::remove_dir(dir)
                && error.kind() != io::ErrorKind::NotFound
            {
                debug!(dir = %dir.display(), %error, "Could not remove an instance's cgroup.");
            }
        }
    }
}

/// The `oom_kill N` count of a `memory.events` or `memory.oom_control` file.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// A cgroup file system mount: where, its root within the hierarchy, and for v1 its controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    root: String,
    /// `None` for cgroup2.
    controllers: Option<Vec<String>>,
}

/// The cgroup mounts of `/proc/self/mountinfo`.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut tail = after.split(' ');
            let fstype = tail.next()?;
            let options = tail.nth(1).unwrap_or("");
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(options.split(',').map(str::to_owned).collect()),
                _ => return None,
            };
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                root: unescape(root),
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(char::from(byte)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// This process's cgroup per hierarchy from `/proc/self/cgroup`: `""` for v2, each controller of a
/// v1 line for v1.
fn parse_own(text: &str) -> HashMap<String, String> {
    let mut own = HashMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            own.insert(String::new(), path.to_owned());
        } else {
            for controller in controllers.split(',') {
                own.insert(controller.to_owned(), path.to_owned());
            }
        }
    }
    own
}

/// The directory of this process's own cgroup in the v2 hierarchy (`controller: None`) or in the v1
/// hierarchy of `controller`.
fn hierarchy(
    mounts: &[Mount],
    own: &HashMap<String, String>,
    controller: Option<&str>,
) -> Option<PathBuf> {
    let mount = mounts.iter().find(|m| match (controller, &m.controllers) {
        (None, None) => true,
        (Some(c), Some(list)) => list.iter().any(|l| l == c),
        _ => false,
    })?;
    let path = own.get(controller.unwrap_or(""))?;
    // With a cgroup namespace the mount's root is where this process's view begins.
    let relative = path
        .strip_prefix(mount.root.as_str())
        .unwrap_or(path)
        .trim_start_matches('/');
    Some(mount.point.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
25 24 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
26 24 0:24 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
27 24 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
28 30 8:1 / / rw - ext4 /dev/sda1 rw
";

    const OWN: &str = "\
4:memory:/process_api/abc
3:cpu,cpuacct:/
0::/user.slice/session-1.scope
";

    #[test]
    fn finds_each_hierarchy_of_this_process() {
        let mounts = parse_mounts(MOUNTINFO);
        assert_eq!(mounts.len(), 3);
        let own = parse_own(OWN);
        assert_eq!(
            hierarchy(&mounts, &own, None),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/user.slice/session-1.scope"
            ))
        );
        assert_eq!(
            hierarchy(&mounts, &own, Some("memory")),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"))
        );
        assert_eq!(
            hierarchy(&mounts, &own, Some("cpu")),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(hierarchy(&mounts, &own, Some("pids")), None);
    }

    #[test]
    fn a_namespaced_mount_root_is_stripped() {
        let mounts =
            parse_mounts("25 24 0:23 /kubepods/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let own = parse_own("0::/kubepods/x/app\n");
        assert_eq!(
            hierarchy(&mounts, &own, None),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    #[test]
    fn reads_oom_kills_and_quotas() {
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 1);
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
        assert_eq!(quota(500), 50_000);
        assert_eq!(quota(2000), 200_000);
        assert_eq!(quota(1), 1000);
    }
}
