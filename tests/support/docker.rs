//! The container engine the container tests use, and images built from the repository's
//! Dockerfiles with this build's binaries.

use std::path::Path;
use std::process::Command;

use kinetic_serving::runtime::container::Engine;

/// The engine the tests use, or `None` (skipped, see `kinetic_testkit::required`).
pub async fn engine() -> Option<Engine> {
    match Engine::detect().await {
        Some(engine) => Some(engine),
        None if kinetic_testkit::required() => {
            panic!("no container engine answers; run scripts/ensure-docker.sh")
        }
        None => {
            eprintln!(
                "skipped (KINETIC_TEST_SKIP_MISSING=1): no container engine answers (run scripts/ensure-docker.sh)"
            );
            None
        }
    }
}

/// Builds `dockerfile` (relative to the repository's root) as a user builds it, from the same
/// `COPY target/…` lines, with this build's `binary`: the context holds only
/// `target/{profile}/{binary}` (as the root `.dockerignore` keeps it), debug info stripped when
/// `strip` is there (an image needs none). `stage` picks a build stage. Tagged `image` and
/// labelled `dev.kinetic.test={binary}`; the image an earlier run built is pruned.
pub fn build(dockerfile: &str, binary: &str, stage: Option<&str>, image: &str) {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let built_binary = super::binary()
        .parent()
        .expect("target directory")
        .join(binary);
    assert!(
        built_binary.exists(),
        "{} is missing; build it with `cargo build --bins`",
        built_binary.display()
    );
    let context = tempfile::tempdir().unwrap();
    let target = context.path().join("target").join(profile);
    std::fs::create_dir_all(&target).unwrap();
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(target.join(binary))
        .arg(&built_binary)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&built_binary, target.join(binary)).unwrap();
    }
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join(dockerfile);
    let label = format!("dev.kinetic.test={binary}");
    let mut command = Command::new("docker");
    command.args(["build", "-q", "-t", image, "--label", &label]);
    if let Some(stage) = stage {
        command.args(["--target", stage]);
    }
    let built = command
        .args(["--build-arg", &format!("PROFILE={profile}"), "-f"])
        .arg(&dockerfile)
        .arg(context.path())
        // The classic builder: the one Debian's docker.io has without buildx.
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("run docker build");
    assert!(
        built.status.success(),
        "docker build -f {}: {}",
        dockerfile.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    let _ = Command::new("docker")
        .args([
            "image",
            "prune",
            "-f",
            "--filter",
            &format!("label={label}"),
        ])
        .output();
}
