//! `kinetic __exec [--cgroup=DIR]... [--gid=N] [--uid=N] -- PROGRAM ARGS...`: the few steps between
//! kinetic's fork and the function's program that must happen inside the new process. It asks
//! Linux for SIGKILL when kinetic dies, joins the instance's cgroups (so nothing the program does
//! escapes its limits), drops to the Service's user and group, removes kinetic's own variable
//! from the environment, and execs the program.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use nix::sys::signal::Signal;

use super::process::PARENT_PID_ENV;

/// The hidden subcommand of the kinetic binary that runs [`exec_shim`].
pub const SHIM_SUBCOMMAND: &str = "__exec";

/// What the shim does before it execs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShimOptions {
    /// `cgroup.procs` files to write the shim's pid to.
    pub cgroups: Vec<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ShimOptions {
    /// The shim's arguments: `__exec OPTIONS -- PROGRAM ARGS...`.
    pub fn args(&self, program_and_args: &[String]) -> Vec<OsString> {
        let mut args = vec![OsString::from(SHIM_SUBCOMMAND)];
        for file in &self.cgroups {
            let mut arg = OsString::from("--cgroup=");
            arg.push(file);
            args.push(arg);
        }
        if let Some(gid) = self.gid {
            args.push(format!("--gid={gid}").into());
        }
        if let Some(uid) = self.uid {
            args.push(format!("--uid={uid}").into());
        }
        args.push("--".into());
        args.extend(program_and_args.iter().map(OsString::from));
        args
    }

    /// Splits the shim's arguments (after `__exec`) into options and the program with its
    /// arguments. Without options, a leading `--` is optional.
    pub fn parse(argv: &[OsString]) -> io::Result<(ShimOptions, &[OsString])> {
        let mut options = ShimOptions::default();
        let invalid = |arg: &OsString| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "kinetic __exec: `{}` is not an option (usage: kinetic __exec [--cgroup=FILE]... [--gid=N] [--uid=N] -- PROGRAM [ARGS...])",
                    arg.to_string_lossy()
                ),
            )
        };
        for (index, arg) in argv.iter().enumerate() {
            if arg == "--" {
                return Ok((options, &argv[index + 1..]));
            }
            let Some(text) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
                // No options: everything is the program.
                return if index == 0 {
                    Ok((options, argv))
                } else {
                    Err(invalid(arg))
                };
            };
            let number = |value: &str| value.parse::<u32>().map_err(|_| invalid(arg));
            match text.split_once('=') {
                Some(("cgroup", file)) => options.cgroups.push(PathBuf::from(file)),
                Some(("uid", value)) => options.uid = Some(number(value)?),
                Some(("gid", value)) => options.gid = Some(number(value)?),
                _ => return Err(invalid(arg)),
            }
        }
        Ok((options, &[]))
    }
}

/// The `kinetic __exec` subcommand: arranges for SIGKILL when its parent (kinetic) dies, checks
/// kinetic did not die already, joins the instance's cgroups, and becomes the program as the
/// Service's user.
///
/// The parent-death signal fires when the *thread* that spawned this process exits, not the whole
/// parent process. The runtime therefore spawns instances from Tokio worker tasks, which live as
/// long as the runtime, and never from `spawn_blocking`, whose threads exit when idle.
///
/// Returns only on failure: the caller prints the error on stderr (which the runtime records as
/// the instance's last error) and exits, with 127 when the program was not found, like a shell:
///
/// ```text
/// // kinetic's main, for `kinetic __exec ARGS...`:
/// let error = kinetic_serving::runtime::exec_shim(&args);
/// eprintln!("{error}");
/// std::process::exit(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
/// ```
///
/// and the runtime is built with `ProcessConfig { shim: Some(std::env::current_exe()?), .. }`.
pub fn exec_shim(argv: &[OsString]) -> io::Error {
    let (options, program_and_args) = match ShimOptions::parse(argv) {
        Ok(parsed) => parsed,
        Err(error) => return error,
    };
    let Some((program, args)) = program_and_args.split_first() else {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: kinetic __exec [OPTIONS] -- PROGRAM [ARGS...]",
        );
    };
    // Joined while still kinetic's user, who may write there; the program starts inside.
    for file in &options.cgroups {
        if let Err(error) = std::fs::write(file, std::process::id().to_string()) {
            return io::Error::new(
                error.kind(),
                format!(
                    "cannot join the instance's cgroup `{}`: {error}",
                    file.display()
                ),
            );
        }
    }
    // The user is switched before the parent-death signal is asked for: Linux clears that signal
    // whenever the process's uid or gid changes. Supplementary groups go first (kinetic's are
    // root's), then the group, then the user, which ends the right to change the others.
    if let Err(error) = switch_user(&options) {
        return error;
    }
    // Linux only; elsewhere instances outlive a SIGKILLed kinetic.
    #[cfg(target_os = "linux")]
    if let Err(errno) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return io::Error::from(errno);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = Signal::SIGKILL;
    // kinetic may have died between spawning us and the line above, when the signal was not yet
    // asked for; then we are someone else's child and must not run.
    if let Some(expected) = std::env::var_os(PARENT_PID_ENV) {
        let expected = expected.to_str().and_then(|pid| pid.parse::<i32>().ok());
        if expected != Some(nix::unistd::getppid().as_raw()) {
            return io::Error::other("kinetic exited before the instance could start");
        }
    }
    let mut command = std::process::Command::new(program);
    command.args(args).env_remove(PARENT_PID_ENV);
    let error = command.exec();
    io::Error::new(
        error.kind(),
        format!("cannot start `{}`: {error}", program.to_string_lossy()),
    )
}

/// Becomes `options.gid` and `options.uid`, with no supplementary groups.
fn switch_user(options: &ShimOptions) -> io::Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let failed = |what: &str, errno: nix::errno::Errno| {
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("cannot switch to the Service's {what}: {errno}"),
        )
    };
    if options.uid.is_some() || options.gid.is_some() {
        setgroups(&[]).map_err(|e| failed("groups", e))?;
    }
    if let Some(gid) = options.gid {
        setgid(Gid::from_raw(gid)).map_err(|e| failed("runAsGroup", e))?;
    }
    if let Some(uid) = options.uid {
        setuid(Uid::from_raw(uid)).map_err(|e| failed("runAsUser", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_round_trip() {
        let options = ShimOptions {
            cgroups: vec![PathBuf::from("/sys/fs/cgroup/a/cgroup.procs")],
            uid: Some(1000),
            gid: Some(100),
        };
        let args = options.args(&["prog".into(), "--flag".into(), "--".into()]);
        assert_eq!(
            args,
            os(&[
                "__exec",
                "--cgroup=/sys/fs/cgroup/a/cgroup.procs",
                "--gid=100",
                "--uid=1000",
                "--",
                "prog",
                "--flag",
                "--"
            ])
        );
        let (parsed, program) = ShimOptions::parse(&args[1..]).unwrap();
        assert_eq!(parsed, options);
        assert_eq!(program, os(&["prog", "--flag", "--"]).as_slice());
    }

    #[test]
    fn plain_and_bad_arguments() {
        let argv = os(&["prog", "--x"]);
        let (options, program) = ShimOptions::parse(&argv).unwrap();
        assert_eq!(options, ShimOptions::default());
        assert_eq!(program, argv.as_slice());
        let argv = os(&["--", "prog"]);
        assert_eq!(
            ShimOptions::parse(&argv).unwrap().1,
            os(&["prog"]).as_slice()
        );
        assert!(ShimOptions::parse(&os(&["--uid=root", "--", "prog"])).is_err());
        assert!(ShimOptions::parse(&os(&["--nope=1", "--", "prog"])).is_err());
    }
}
