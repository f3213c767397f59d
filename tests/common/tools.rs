//! External tools. Every one a test needs is found here, and a missing one
//! goes through [`skip_or_fail`]: the test is skipped with a printed reason,
//! or fails when `WSFAULT_REQUIRE_TOOLS=1` (set by scripts/test.sh, which
//! installs them all, so CI cannot pass by skipping).
//!
//! The finders return `None` only after [`skip_or_fail`], so a test writes
//! `let Some(python) = python() else { return };`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Skips a test whose tool is missing, or fails it when `WSFAULT_REQUIRE_TOOLS=1`.
pub fn skip_or_fail(why: &str) {
    if std::env::var("WSFAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("required tool missing: {why}");
    }
    eprintln!("note: skipping: {why}");
}

/// True when `program ARGS` starts and exits 0.
fn answers(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The first of `candidates` that can be started, probed with `probe`
/// (e.g. `--version`). One that starts but fails the probe is broken, not
/// missing: that fails the test. None (after [`skip_or_fail`]) when no
/// candidate starts; `install` says how to get it.
fn find(candidates: &[PathBuf], probe: &[&str], install: &str) -> Option<PathBuf> {
    for candidate in candidates {
        match Command::new(candidate)
            .args(probe)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "{} {} failed: {}",
                    candidate.display(),
                    probe.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                return Some(candidate.clone());
            }
            Err(_) => continue,
        }
    }
    let name = candidates
        .first()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    skip_or_fail(&format!("{name} is not installed ({install})"));
    None
}

/// A command on `PATH`, probed with `probe` (see [`find`]).
pub fn tool(name: &str, probe: &[&str]) -> Option<PathBuf> {
    find(&[PathBuf::from(name)], probe, "scripts/test.sh installs it")
}

/// `promtool` (Debian package `prometheus`).
pub fn promtool() -> Option<PathBuf> {
    tool("promtool", &["--version"])
}

/// The `prometheus` server (Debian package `prometheus`).
pub fn prometheus() -> Option<PathBuf> {
    tool("prometheus", &["--version"])
}

/// `openssl`.
pub fn openssl() -> Option<PathBuf> {
    tool("openssl", &["version"])
}

/// `debootstrap`, on `PATH` or in `/usr/sbin` (often not on a user's `PATH`).
pub fn debootstrap() -> Option<PathBuf> {
    find(
        &[
            PathBuf::from("debootstrap"),
            PathBuf::from("/usr/sbin/debootstrap"),
        ],
        &["--version"],
        "scripts/test.sh installs it",
    )
}

/// A working Docker engine (`docker info` answers) and a compose CLI:
/// `docker-compose` (v1) or the `docker compose` plugin, as the argv prefix
/// of a compose command.
pub fn docker_compose() -> Option<Vec<String>> {
    if !answers(
        Path::new("docker"),
        &["info", "--format", "{{.ServerVersion}}"],
    ) {
        skip_or_fail("no working docker (docker info failed)");
        return None;
    }
    if answers(Path::new("docker-compose"), &["version"]) {
        Some(vec!["docker-compose".into()])
    } else if answers(Path::new("docker"), &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else {
        skip_or_fail("neither docker-compose nor docker compose");
        None
    }
}

/// The Python interpreter with `websockets`: `$WSFAULT_PYTHON`, then the
/// repository's `.venv/bin/python`, then `python3`.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("WSFAULT_PYTHON").ok().map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    for candidate in candidates.into_iter().flatten() {
        if answers(&candidate, &["-c", "import websockets"]) {
            return Some(candidate);
        }
    }
    skip_or_fail("no Python with `websockets` (scripts/test.sh installs it into .venv; or set WSFAULT_PYTHON)");
    None
}

/// The interpreter of [`python`], which must also import `module` (from
/// tests/requirements.txt): `interpreter_with("kosoku")`.
pub fn interpreter_with(module: &str) -> Option<PathBuf> {
    let python = python()?;
    if !answers(&python, &["-c", &format!("import {module}")]) {
        skip_or_fail(&format!(
            "{} has no `{module}` module (scripts/test.sh installs tests/requirements.txt)",
            python.display()
        ));
        return None;
    }
    Some(python)
}

/// What `docker/build-base-image.sh` needs besides docker: nothing when the
/// base image (`$WSFAULT_BASE_IMAGE`, default `wsfault-base:bookworm`) is
/// already in the engine, else [`debootstrap`]. False only after
/// [`skip_or_fail`].
pub fn base_image_buildable() -> bool {
    let image =
        std::env::var("WSFAULT_BASE_IMAGE").unwrap_or_else(|_| "wsfault-base:bookworm".into());
    answers(Path::new("docker"), &["image", "inspect", &image]) || debootstrap().is_some()
}

/// What `docker/build-base-image.sh --rust` needs besides docker: nothing
/// when the toolchain image (`$WSFAULT_RUST_IMAGE`, default
/// `wsfault-rust:bookworm`) is already in the engine, else [`debootstrap`]
/// and a Rust toolchain to copy in (`rustc --print sysroot`, or
/// `$WSFAULT_RUST_SYSROOT`). False only after [`skip_or_fail`].
pub fn rust_image_buildable() -> bool {
    let image =
        std::env::var("WSFAULT_RUST_IMAGE").unwrap_or_else(|_| "wsfault-rust:bookworm".into());
    if answers(Path::new("docker"), &["image", "inspect", &image]) {
        return true;
    }
    if std::env::var_os("WSFAULT_RUST_SYSROOT").is_none()
        && !answers(Path::new("rustc"), &["--print", "sysroot"])
    {
        skip_or_fail(&format!(
            "{image} is missing and there is no rustc on PATH to copy into it"
        ));
        return false;
    }
    debootstrap().is_some()
}
