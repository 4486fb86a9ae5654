//! Which programs a Service may run (`--exec-allow PREFIX`, repeatable). A program is found as
//! exec finds it (a name without `/` in `PATH`, a path relative to the working directory), then
//! made canonical (symbolic links and `..` resolved), and must lie under one of the prefixes.
//! Without prefixes every program is allowed.
//!
//! It is checked when a Service is applied, so a refused one never stores a revision, and again
//! before each instance starts, because the file system may have changed in between.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kinetic_api::Error;
use kinetic_api::serving::Container;

/// Directories (or files) whose programs Services may run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecAllow {
    prefixes: Vec<PathBuf>,
}

/// A program outside the allowed prefixes, or one that cannot be found to be checked.
#[derive(Debug, thiserror::Error)]
pub enum NotAllowed {
    #[error(
        "program `{program}` is `{}`, which is outside the directories kinetic may run programs from ({})",
        resolved.display(), list(prefixes)
    )]
    Outside {
        program: String,
        resolved: PathBuf,
        prefixes: Vec<PathBuf>,
    },
    #[error("program `{program}` cannot be found to check it is allowed: {source}")]
    NotFound {
        program: String,
        #[source]
        source: io::Error,
    },
}

fn list(prefixes: &[PathBuf]) -> String {
    prefixes
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl NotAllowed {
    /// How to make the program allowed.
    pub fn hint(&self) -> String {
        match self {
            NotAllowed::Outside { resolved, .. } => {
                let dir = resolved.parent().unwrap_or(resolved);
                format!(
                    "start kinetic with `--exec-allow {}` (or a directory above it), or run a program from an allowed directory",
                    dir.display()
                )
            }
            NotAllowed::NotFound { .. } => "give the program's full path, or install it in a directory of the container's PATH; with --exec-allow set, kinetic only runs programs it can find and check".to_owned(),
        }
    }
}

impl ExecAllow {
    /// Prefixes as given; each is made canonical when it exists, so that `/usr/bin` also allows
    /// programs where `/usr/bin` is a link. Relative prefixes are refused.
    pub fn new(prefixes: &[PathBuf]) -> Result<Self, String> {
        let mut canonical = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            if !prefix.is_absolute() {
                return Err(format!(
                    "--exec-allow `{}` is not an absolute path; write e.g. `--exec-allow /opt/functions`",
                    prefix.display()
                ));
            }
            canonical.push(std::fs::canonicalize(prefix).unwrap_or_else(|_| prefix.clone()));
        }
        Ok(Self {
            prefixes: canonical,
        })
    }

    /// Whether every program is allowed (no prefixes).
    pub fn is_open(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Finds `program` as exec would with `path_var` and `working_dir`, and checks it.
    pub fn check(
        &self,
        program: &str,
        path_var: &OsStr,
        working_dir: Option<&Path>,
    ) -> Result<(), NotAllowed> {
        if self.is_open() {
            return Ok(());
        }
        let resolved = resolve(program, path_var, working_dir)
            .and_then(std::fs::canonicalize)
            .map_err(|source| NotAllowed::NotFound {
                program: program.to_owned(),
                source,
            })?;
        if within(&self.prefixes, &resolved) {
            Ok(())
        } else {
            Err(NotAllowed::Outside {
                program: program.to_owned(),
                resolved,
                prefixes: self.prefixes.clone(),
            })
        }
    }

    /// Checks a Service's container at apply; the error names `command[0]`.
    pub fn check_container(&self, container: &Container) -> Result<(), Error> {
        if self.is_open() {
            return Ok(());
        }
        let Some(program) = container.command.first() else {
            return Ok(());
        };
        let path_var = container
            .env
            .iter()
            .rev()
            .find(|v| v.name == "PATH" && v.value_from.is_none())
            .map(|v| OsString::from(&v.value))
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from(super::env::DEFAULT_PATH));
        let working_dir = container.working_dir.as_deref().map(Path::new);
        self.check(program, &path_var, working_dir)
            .map_err(|refused| {
                Error::new("command[0]", refused.to_string()).with_hint(refused.hint())
            })
    }
}

/// Whether `path` is one of `prefixes` or lies below one, compared by whole components.
pub fn within(prefixes: &[PathBuf], path: &Path) -> bool {
    prefixes.iter().any(|prefix| path.starts_with(prefix))
}

/// The file exec would run for `program`: a name with a `/` relative to `working_dir` (or this
/// process's directory), a bare name the first executable file of that name in `path_var`.
pub fn resolve(program: &str, path_var: &OsStr, working_dir: Option<&Path>) -> io::Result<PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        let path = match working_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        std::fs::metadata(&path)?;
        return Ok(path);
    }
    for dir in std::env::split_paths(path_var) {
        let dir = match working_dir {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir,
        };
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("not found in PATH `{}`", path_var.to_string_lossy()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_components() {
        let prefixes = [PathBuf::from("/opt/fn"), PathBuf::from("/usr/bin/python3")];
        let cases = [
            ("/opt/fn/hello", true),
            ("/opt/fn", true),
            ("/opt/fn/sub/dir/x", true),
            ("/opt/fnord/x", false),
            ("/opt/x", false),
            ("/usr/bin/python3", true),
            ("/usr/bin/python3.11", false),
            ("/", false),
        ];
        for (path, want) in cases {
            assert_eq!(within(&prefixes, Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn resolves_like_exec_and_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let other = dir.path().join("other");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let real = other.join("tool");
        std::fs::write(&real, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&real, bin.join("tool")).unwrap();
        std::fs::write(bin.join("plain"), "").unwrap();
        let path_var = std::env::join_paths([&bin, &other]).unwrap();

        assert_eq!(resolve("tool", &path_var, None).unwrap(), bin.join("tool"));
        // Not executable: skipped, as exec skips it.
        assert!(resolve("plain", &path_var, None).is_err());
        assert_eq!(
            resolve("./other/tool", OsStr::new(""), Some(dir.path())).unwrap(),
            dir.path().join("./other/tool")
        );

        let only_bin = ExecAllow::new(std::slice::from_ref(&bin)).unwrap();
        let refused = only_bin.check("tool", &path_var, None).unwrap_err();
        assert!(
            refused.to_string().contains("outside the directories"),
            "the link's target decides: {refused}"
        );
        assert!(
            refused.hint().contains("--exec-allow"),
            "{}",
            refused.hint()
        );
        let both = ExecAllow::new(std::slice::from_ref(&other)).unwrap();
        both.check("tool", &path_var, None).unwrap();
        let missing = both.check("nope", &path_var, None).unwrap_err();
        assert!(matches!(missing, NotAllowed::NotFound { .. }), "{missing}");
        ExecAllow::default().check("nope", &path_var, None).unwrap();
        assert!(ExecAllow::new(&[PathBuf::from("relative")]).is_err());
    }
}
