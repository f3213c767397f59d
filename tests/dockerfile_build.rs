//! The README's `Dockerfile`, built for real (issue 15): `docker build` of
//! the repository exactly as a user runs it, with its two build args pointed
//! at local images, then the compose stack on the image it made.
//!
//! No image can be pulled here, so the two bases are made the way
//! tests/compose_stack.rs makes its base (each only when missing, minutes):
//!
//! - `RUNTIME_IMAGE`: `wsfault-base:bookworm` (`docker/build-base-image.sh`,
//!   debootstrap);
//! - `RUST_IMAGE`: `wsfault-rust:bookworm` (`docker/build-base-image.sh
//!   --rust`: debootstrap + gcc + this machine's Rust toolchain), plus one
//!   image on top, `wsfault-rust-crates:<hash>`, with this repository's
//!   crates from `cargo vendor` and a `$CARGO_HOME/config.toml` that
//!   replaces crates.io with them: a build container here cannot reach the
//!   crate registry (its TLS is intercepted by a CA only the host trusts).
//!   That is how an air-gapped site points builds at its mirror; the vendored
//!   crates never enter the repository or the build context, and the
//!   Dockerfile needs no test-only switch. The hash covers Cargo.lock and
//!   the toolchain image, so the image is reused until either changes.
//!
//! Checks: the build succeeds (its time is printed); the image runs as
//! 10001:10001 with `wsfault` as entrypoint and adds under 20 MB to its base
//! (the stripped binary; sizes printed); its own `HEALTHCHECK` turns healthy
//! for `wsfault proxy`; `docker-compose.yml` with `WSFAULT_IMAGE` set to it
//! and `--no-build`: backend and proxy come up healthy and the `load`
//! service passes its verdict (resume mode, `loss==0 dup==0 reorder==0`)
//! through the `mobile-network` scenario.
//!
//! Time: a cold build compiles ~170 crates (5–6.5 min on 2 shared cores);
//! the Dockerfile keeps them in a layer keyed on Cargo.toml and Cargo.lock,
//! and this test keeps that layer, so a rerun after a change to src/
//! compiles wsfault alone (~1.5–2 min), and one with src/ unchanged takes
//! seconds. With the legacy builder (no BuildKit) the build stage's layers
//! are untagged images that carry the crates image's `wsfault.test.crates`
//! label; before the build and on every path after it, the test removes
//! them all but the newest dependency layer, the last build stage and their
//! ancestors (one set of layers, ~450 MB over the crates image), and with
//! them any crates image of another hash. The image under test, the
//! healthcheck container and the compose project (`down -v`) go too.
//!
//! Needs `docker`, `docker-compose` (v1) or `docker compose`, and, for a
//! missing base, `debootstrap` (and `rustc` for the toolchain image);
//! skipped without them unless `WSFAULT_REQUIRE_TOOLS=1`.

mod common;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const RUNTIME_BASE: &str = "wsfault-base:bookworm";
const RUST_BASE: &str = "wsfault-rust:bookworm";
const CRATES_REPO: &str = "wsfault-rust-crates";
/// Label of the crates image, inherited by every layer of the build stage.
const CRATES_LABEL: &str = "wsfault.test.crates";
/// In the command of the Dockerfile's dependency layer (its stub main.rs).
const DEPS_LAYER_MARK: &str = "fn main() {}";
/// What the image may add to its base: the stripped binary (~12 MB) and a
/// user. A binary with debug info is ~95 MB.
const MAX_ADDED: u64 = 20_000_000;

/// A `docker` command that must exit 0; its stdout, trimmed.
fn docker_ok(args: &[&str], limit: Duration) -> String {
    let ran = docker(args, limit);
    assert!(ran.ok(), "docker {args:?}: {}", ran.both());
    ran.stdout.trim().to_string()
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn hex_hash(parts: &[&[u8]]) -> String {
    // SipHash with fixed keys: stable from run to run on one toolchain,
    // which is all a cache key needs.
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// A base image made by `docker/build-base-image.sh ARGS` (which skips an
/// image that exists).
fn base_image(args: &[&str]) {
    let t = Instant::now();
    let ran = run(
        Command::new(format!("{ROOT}/docker/build-base-image.sh"))
            .args(args)
            .current_dir(ROOT),
        "build-base-image.sh",
        Duration::from_secs(1800),
    );
    assert!(
        ran.ok(),
        "docker/build-base-image.sh {args:?}: {}",
        ran.both()
    );
    eprintln!(
        "build-base-image.sh {args:?} in {:.1?}: {}",
        t.elapsed(),
        ran.stdout.lines().last().unwrap_or("").trim()
    );
}

/// An RFC 3339 time from `docker inspect` (`2026-12-02T03:35:10.53219Z`:
/// UTC, trailing zeros of the fraction dropped) as a string that sorts in
/// time order: the fraction padded to nine digits.
fn sortable_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{secs}.{frac:0<9}")
}

/// One image carrying [`CRATES_LABEL`]: the crates image or a layer of a
/// build stage on top of it.
struct Labeled {
    id: String,
    hash: String,
    created: String,
    tags: Vec<String>,
}

fn labeled_images() -> Vec<Labeled> {
    let ids = docker_ok(
        &[
            "images",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={CRATES_LABEL}"),
        ],
        Duration::from_secs(60),
    );
    let mut seen = HashSet::new();
    ids.lines()
        .filter(|id| seen.insert(id.to_string()))
        .filter_map(|id| {
            // Gone in between (another teardown): skip it.
            let ran = docker(
                &[
                    "image",
                    "inspect",
                    "-f",
                    &format!(
                        "{{{{index .Config.Labels \"{CRATES_LABEL}\"}}}} {{{{.Created}}}} {{{{join .RepoTags \",\"}}}}"
                    ),
                    id,
                ],
                Duration::from_secs(30),
            );
            let out = ran.stdout.trim().to_string();
            let mut parts = out.split(' ');
            let hash = parts.next()?.to_string();
            let created = sortable_time(parts.next()?);
            let tags = parts
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            ran.ok().then(|| Labeled {
                id: id.to_string(),
                hash,
                created,
                tags,
            })
        })
        .collect()
}

/// Removes the labeled images that are not the build cache worth keeping:
/// every image of another crates hash, and of `keep_hash` every one but the
/// newest dependency layer, the newest image (the last build's build stage,
/// reused while src/ is unchanged) and their ancestors (the crates image
/// among them). One image per `rmi --no-prune` (a plain `rmi` also deletes
/// untagged parents, the dependency layer with them), children first; an
/// image tagged by someone else is left.
fn prune_build_cache(keep_hash: &str) {
    let mut images = labeled_images();
    let first_step = |id: &str| {
        let ran = docker(
            &["history", "--no-trunc", "--format", "{{.CreatedBy}}", id],
            Duration::from_secs(30),
        );
        ran.stdout.lines().next().unwrap_or("").to_string()
    };
    let current = || images.iter().filter(|i| i.hash == keep_hash);
    let newest = current().max_by(|a, b| a.created.cmp(&b.created));
    let newest_deps = current()
        .filter(|i| first_step(&i.id).contains(DEPS_LAYER_MARK))
        .max_by(|a, b| a.created.cmp(&b.created));
    let mut keep: HashSet<String> = HashSet::new();
    for top in [newest, newest_deps].into_iter().flatten() {
        let history = docker(
            &["history", "-q", "--no-trunc", &top.id],
            Duration::from_secs(30),
        );
        keep.extend(history.stdout.lines().map(str::to_string));
        keep.insert(top.id.clone());
    }
    images.retain(|i| !keep.contains(&i.id));
    images.sort_by(|a, b| a.created.cmp(&b.created));
    let mut targets: Vec<String> = Vec::new();
    for i in &images {
        if i.tags.is_empty() {
            targets.push(i.id.clone());
        } else if i
            .tags
            .iter()
            .all(|t| t.starts_with(&format!("{CRATES_REPO}:")))
        {
            // By tag: rmi by id refuses an image with several tags.
            targets.extend(i.tags.iter().cloned());
        } else {
            eprintln!("leaving {} (tagged {:?})", i.id, i.tags);
        }
    }
    // Children before parents: newest first, then more passes for any
    // image a child still held.
    targets.reverse();
    let mut removed = 0;
    for _pass in 0..4 {
        let before = targets.len();
        targets.retain(|t| {
            let gone = docker(&["rmi", "--no-prune", t], Duration::from_secs(120)).ok();
            removed += usize::from(gone);
            !gone
        });
        if targets.is_empty() || targets.len() == before {
            break;
        }
    }
    if removed > 0 {
        eprintln!(
            "build cache: removed {removed} image(s), kept {}",
            keep.len()
        );
    }
}

/// The crates image for this Cargo.lock and toolchain image: made when
/// missing from `cargo vendor` output in a scratch context. Returns its tag
/// and hash.
fn crates_image() -> (String, String) {
    let lock = std::fs::read(Path::new(ROOT).join("Cargo.lock")).expect("Cargo.lock");
    let toolchain = inspect(RUST_BASE, "{{.Id}}");
    let hash = hex_hash(&[&lock, toolchain.as_bytes()]);
    let tag = format!("{CRATES_REPO}:{hash}");
    prune_build_cache(&hash);
    if docker(&["image", "inspect", &tag], Duration::from_secs(30)).ok() {
        eprintln!("crates image {tag} already there");
        return (tag, hash);
    }
    let t = Instant::now();
    let ctx = tempfile::tempdir().expect("scratch context");
    let vendor = run(
        Command::new(env!("CARGO"))
            .args(["vendor", "--locked", "--versioned-dirs", "--manifest-path"])
            .arg(Path::new(ROOT).join("Cargo.toml"))
            .arg(ctx.path().join("vendor"))
            .current_dir(ROOT),
        "cargo vendor",
        Duration::from_secs(600),
    );
    assert!(vendor.ok(), "cargo vendor: {}", vendor.both());
    std::fs::write(
        ctx.path().join("config.toml"),
        "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
         [source.vendored-sources]\ndirectory = \"/usr/local/cargo/vendor\"\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {RUST_BASE}\n\
             LABEL {CRATES_LABEL}={hash}\n\
             ENV CARGO_HOME=/usr/local/cargo\n\
             COPY vendor /usr/local/cargo/vendor\n\
             COPY config.toml /usr/local/cargo/config.toml\n"
        ),
    )
    .unwrap();
    let build = docker(
        &["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()],
        Duration::from_secs(900),
    );
    assert!(build.ok(), "crates image: {}", build.both());
    eprintln!("crates image {tag} made in {:.1?}", t.elapsed());
    (tag, hash)
}

/// What this test made and removes on drop, on every path: the image under
/// test, the healthcheck container, the build stage's layers but the cache
/// ([`prune_build_cache`]).
struct Made {
    image: String,
    container: String,
    crates_hash: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container], Duration::from_secs(60));
        let _ = docker(&["rmi", "-f", &self.image], Duration::from_secs(120));
        prune_build_cache(&self.crates_hash);
    }
}

/// The compose project on the image under test, torn down on drop.
struct Project {
    cli: Vec<String>,
    name: String,
    vars: Vec<(String, String)>,
}

impl Project {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli[0]);
        cmd.args(&self.cli[1..])
            .args([
                "--project-directory",
                ROOT,
                "-f",
                &format!("{ROOT}/docker-compose.yml"),
                "-p",
                &self.name,
            ])
            .args(args)
            .current_dir(ROOT);
        // Variables of the caller's shell must not leak into the stack.
        for var in [
            "WSFAULT_SCENARIO",
            "WSFAULT_ADMIN_TOKEN",
            "WSFAULT_DOCKERFILE",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    fn ok(&self, args: &[&str], limit: Duration) -> Ran {
        let ran = run(&mut self.cmd(args), &format!("compose {args:?}"), limit);
        assert!(ran.ok(), "compose {args:?} ({}): {}", self.name, ran.both());
        ran
    }

    fn logs(&self) -> String {
        let ran = run(
            &mut self.cmd(&["logs", "--no-color", "--tail", "60"]),
            "compose logs",
            Duration::from_secs(60),
        );
        format!("{}{}", ran.stdout, ran.stderr)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} logs\n{}", self.name, self.logs());
        }
        let ran = run(
            &mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "2"]),
            "compose down",
            Duration::from_secs(120),
        );
        if !ran.ok() {
            eprintln!("teardown of {} failed: {}", self.name, ran.both());
        }
    }
}

#[test]
fn readme_dockerfile_builds_a_small_image_that_runs_the_compose_stack() {
    let Some(cli) = docker_compose() else {
        return;
    };
    if !base_image_buildable() || !rust_image_buildable() {
        return;
    }
    let started = Instant::now();
    base_image(&[]);
    base_image(&["--rust"]);
    let (crates, crates_hash) = crates_image();

    let suffix = run_suffix();
    let made = Made {
        image: format!("wsfault:dockerfile-test-{suffix}"),
        container: format!("wsfault-dockerfile-test-{suffix}"),
        crates_hash,
    };

    // The README's command (`docker build -t wsfault:local .`) plus the two
    // build args.
    let t = Instant::now();
    let build = docker(
        &[
            "build",
            "-t",
            &made.image,
            "--build-arg",
            &format!("RUST_IMAGE={crates}"),
            "--build-arg",
            &format!("RUNTIME_IMAGE={RUNTIME_BASE}"),
            ROOT,
        ],
        Duration::from_secs(2400),
    );
    assert!(build.ok(), "docker build: {}", build.both());
    let cached = build.stdout.matches("Using cache").count();
    eprintln!(
        "docker build in {:.1?} ({cached} step(s) from the layer cache)",
        t.elapsed()
    );

    // Small, non-root, wsfault as entrypoint, a healthcheck.
    assert_eq!(inspect(&made.image, "{{.Config.User}}"), "10001:10001");
    assert_eq!(
        inspect(&made.image, "{{json .Config.Entrypoint}}"),
        r#"["wsfault"]"#
    );
    assert!(
        inspect(&made.image, "{{json .Config.Healthcheck.Test}}").contains("health"),
        "no healthcheck"
    );
    let size: u64 = inspect(&made.image, "{{.Size}}").parse().unwrap();
    let base_size: u64 = inspect(RUNTIME_BASE, "{{.Size}}").parse().unwrap();
    let version = docker_ok(
        &["run", "--rm", &made.image, "--version"],
        Duration::from_secs(60),
    );
    eprintln!(
        "runtime image {}: {} = base {RUNTIME_BASE} {} + wsfault {} ({version})",
        made.image,
        megabytes(size),
        megabytes(base_size),
        megabytes(size.saturating_sub(base_size))
    );
    assert!(
        size.saturating_sub(base_size) < MAX_ADDED,
        "the image adds {} to its base (limit {}): is the binary stripped?",
        megabytes(size.saturating_sub(base_size)),
        megabytes(MAX_ADDED)
    );

    // The image's own HEALTHCHECK (compose overrides it) for `wsfault proxy`.
    let t = Instant::now();
    docker_ok(
        &[
            "run",
            "-d",
            "--name",
            &made.container,
            "--network",
            "none",
            &made.image,
            "proxy",
            "--listen",
            "127.0.0.1:8080",
            "--upstream",
            "127.0.0.1:9",
            "--admin",
            "127.0.0.1:8474",
        ],
        Duration::from_secs(60),
    );
    wait_healthy(&made.container, Duration::from_secs(60), || {
        let logs = docker(&["logs", &made.container], Duration::from_secs(30));
        logs.both()
    });
    eprintln!("image HEALTHCHECK healthy in {:.1?}", t.elapsed());
    let _ = docker(&["rm", "-f", &made.container], Duration::from_secs(60));

    // docker-compose.yml on the image: backend + proxy, then the load
    // client's verdict.
    let reports = tempfile::tempdir().expect("reports dir");
    let admin_port = free_port();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let uid = run(Command::new("id").arg("-u"), "id", Duration::from_secs(5));
    let gid = run(Command::new("id").arg("-g"), "id", Duration::from_secs(5));
    let project = Project {
        cli,
        name: format!("wsfault-dockerfile-test-{suffix}"),
        vars: [
            ("WSFAULT_IMAGE", made.image.clone()),
            ("WSFAULT_SCENARIO", "mobile-network".into()),
            ("WSFAULT_PROXY_PORT", free_port().to_string()),
            ("WSFAULT_ADMIN_PORT", admin_port.to_string()),
            ("WSFAULT_REPORTS", reports.path().display().to_string()),
            (
                "WSFAULT_LOAD_USER",
                format!("{}:{}", uid.stdout.trim(), gid.stdout.trim()),
            ),
            ("LOAD_DURATION", "15s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    let t = Instant::now();
    project.ok(
        &["up", "-d", "--no-build", "backend", "proxy"],
        Duration::from_secs(180),
    );
    let proxy = project.ok(&["ps", "-q", "proxy"], Duration::from_secs(60));
    let proxy_id = proxy.stdout.trim().to_string();
    assert!(!proxy_id.is_empty(), "no proxy container: {}", proxy.both());
    wait_healthy(&proxy_id, Duration::from_secs(90), || project.logs());
    eprintln!("backend + proxy healthy in {:.1?}", t.elapsed());

    let t = Instant::now();
    let load = run(
        &mut project.cmd(&["run", "-T", "--rm", "--no-deps", "load"]),
        "compose run load",
        Duration::from_secs(180),
    );
    eprintln!("load ran {:.1?} (exit {:?})", t.elapsed(), load.code());
    assert!(load.ok(), "load verdict: {}", load.both());
    let report = read_report(&reports.path().join("report.json"));
    assert_clean_report(&report, "compose stack on the Dockerfile's image");
    let metrics = admin(admin_addr, "GET", "/metrics", None, 200);
    let actions = metric_sum(
        &metrics,
        "wsfault_toxic_actions_total",
        &[("proxy", "app"), ("toxic", "downlink-latency")],
    );
    assert!(actions > 0.0, "scenario toxics never acted:\n{metrics}");
    eprintln!(
        "verdict pass: sent {} received {}; downlink-latency actions {actions}",
        report["messages"]["sent"], report["messages"]["received"]
    );
    drop(project);
    let left = docker_ok(
        &["ps", "-aq", "--filter", &format!("ancestor={}", made.image)],
        Duration::from_secs(30),
    );
    assert!(left.is_empty(), "containers left: {left}");
    drop(made);
    eprintln!("whole test {:.1?}", started.elapsed());
}
