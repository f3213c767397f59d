//! The Kubernetes manifests of `deploy/kubernetes/` (docs/kubernetes.md),
//! checked without a cluster:
//!
//! - every file parses as YAML (multi-document), every object has
//!   `apiVersion`, `kind` and `metadata.name`; `kustomization.yaml` lists
//!   every file but the two Jobs started by hand; selectors, named ports,
//!   ConfigMaps and claims refer to things that exist; every container runs
//!   as non-root with requests and limits;
//! - every container's command line, after Kubernetes' `$(VAR)` expansion,
//!   is accepted by the real binary (`wsfault ARGV --help` exits 0: clap
//!   parses every flag and value before it honours `--help`), the merge
//!   Job's shell script included;
//! - the proxy reads its scenario from the ConfigMap mounted as a directory
//!   (no `subPath`, so a ConfigMap update reaches it), its probes ask the
//!   admin port for `/healthz`, the admin port is in no public Service and
//!   the NetworkPolicy lets only pods of the namespace reach it;
//! - the load Job is Indexed with `parallelism == completions`, each worker
//!   writes its own report on the shared claim, the merge reads them all;
//! - and the whole run on loopback as the manifests describe it: the echo
//!   backend, the proxy with the ConfigMap's scenario in a kubelet-style
//!   `..data` layout (swapped mid-run: the proxy reloads it), N load
//!   workers with the Job's argv, then the merge Job's script on their
//!   reports to a passing verdict (and exit 2 naming a missing report).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The manifests, relative to the repository root.
const DIR: &str = "deploy/kubernetes";
/// The Jobs started with `kubectl create` after the stack (not in the
/// kustomization).
const RUN_FILES: [&str; 2] = ["load-job.yaml", "merge-job.yaml"];
/// The downward-API field of an Indexed Job's pod index.
const INDEX_FIELD: &str = "metadata.annotations['batch.kubernetes.io/job-completion-index']";
/// Where the Jobs mount the reports claim.
const REPORTS: &str = "/reports";

/// One object of one file.
struct Manifest {
    file: String,
    obj: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.obj["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.obj["metadata"]["name"].as_str().unwrap_or("")
    }

    fn what(&self) -> String {
        format!("{} {}/{}", self.file, self.kind(), self.name())
    }

    /// The pod template's spec of a Deployment or Job.
    fn pod(&self) -> Option<&Value> {
        matches!(self.kind(), "Deployment" | "Job").then(|| &self.obj["spec"]["template"]["spec"])
    }

    /// The pod template's labels of a Deployment or Job.
    fn pod_labels(&self) -> &Value {
        &self.obj["spec"]["template"]["metadata"]["labels"]
    }
}

fn dir() -> PathBuf {
    Path::new(ROOT).join(DIR)
}

/// The `.yaml` files of the directory, sorted.
fn yaml_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    names
}

/// Every document of `file`, parsed.
fn documents(file: &str) -> Vec<Value> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{DIR}/{file} is not valid YAML: {e}"));
    assert!(!docs.is_empty(), "{DIR}/{file} holds no document");
    docs
}

/// Every object of every file but the kustomization.
fn manifests() -> Vec<Manifest> {
    yaml_files()
        .into_iter()
        .filter(|f| f != "kustomization.yaml")
        .flat_map(|file| {
            documents(&file).into_iter().map(move |obj| Manifest {
                file: file.clone(),
                obj,
            })
        })
        .collect()
}

fn find<'a>(all: &'a [Manifest], kind: &str, name: &str) -> &'a Manifest {
    all.iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in {DIR}"))
}

/// A string at a JSON pointer, or a panic naming it.
fn string<'a>(v: &'a Value, pointer: &str, what: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: no string at {pointer}"))
}

/// An array at a JSON pointer (empty when absent).
fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Init containers and containers of a pod spec.
fn containers(pod: &Value) -> Vec<&Value> {
    array(pod, "/initContainers")
        .iter()
        .chain(array(pod, "/containers"))
        .collect()
}

/// The container named `name` of a pod spec.
fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// True when every `matchLabels` entry of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector.as_object() else {
        return false;
    };
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container port that `port` (a number or a port name) designates in
/// a pod spec.
fn resolve_port(pod: &Value, port: &Value) -> Option<u64> {
    let ports = containers(pod)
        .into_iter()
        .flat_map(|c| array(c, "/ports"))
        .collect::<Vec<_>>();
    match port {
        Value::Number(n) => n.as_u64().filter(|n| {
            ports
                .iter()
                .any(|p| p["containerPort"].as_u64() == Some(*n))
        }),
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

/// A C identifier, the form of a Kubernetes variable reference.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Kubernetes' expansion of `command` and `args` (the kubelet's
/// third_party/forked/golang/expansion): `$$` is `$`, `$(NAME)` is the
/// value of the container's variable NAME, and a reference to a variable
/// the container does not declare is left as written. Such a reference to
/// an identifier, and one to a variable whose value is not known here,
/// panics: Kubernetes would pass the text through unexpanded.
fn expand(input: &str, vars: &BTreeMap<String, Option<String>>, what: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match vars.get(name) {
                            Some(Some(value)) => out.push_str(value),
                            Some(None) => panic!("{what}: $({name}) has no value in this test"),
                            None => {
                                assert!(
                                    !is_identifier(name),
                                    "{what}: $({name}) refers to a variable the container does not declare; \
                                     Kubernetes would pass it on unexpanded"
                                );
                                out.push_str(&format!("$({name})"));
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    out.push('$');
                    out.push(rest.chars().next().unwrap_or_default());
                    rest.chars().next().map(char::len_utf8).unwrap_or(1)
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// The variables a container declares: a literal `value`, the Job's
/// completion index (as `index`), or unknown here (secrets and the like).
fn container_vars(c: &Value, index: u32) -> BTreeMap<String, Option<String>> {
    array(c, "/env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => Some(v.clone()),
                (_, Value::String(field)) if field == INDEX_FIELD => Some(index.to_string()),
                _ => None,
            };
            (name, value)
        })
        .collect()
}

/// The argv a container runs (`command` then `args`), expanded as the
/// kubelet does for pod `index` of an Indexed Job.
fn argv(c: &Value, index: u32, what: &str) -> Vec<String> {
    let vars = container_vars(c, index);
    array(c, "/command")
        .iter()
        .chain(array(c, "/args"))
        .map(|a| {
            let s = a
                .as_str()
                .unwrap_or_else(|| panic!("{what}: command element {a} is not a string"));
            expand(s, &vars, what)
        })
        .collect()
}

/// The value after `flag` in `argv`.
fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    let at = argv
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("no {name} in {argv:?}"));
    argv.get(at + 1)
        .unwrap_or_else(|| panic!("{name} has no value in {argv:?}"))
}

/// `argv` with the value after `name` replaced.
fn with_flag(argv: &[String], name: &str, value: &str) -> Vec<String> {
    flag(argv, name);
    let at = argv.iter().position(|a| a == name).unwrap();
    let mut out = argv.to_vec();
    out[at + 1] = value.to_string();
    out
}

/// The `sh -c` script of a container, or `None` for a plain command.
fn script(argv: &[String]) -> Option<&str> {
    (argv.len() == 3 && argv[0] == "sh" && argv[1] == "-c").then(|| argv[2].as_str())
}

/// Runs `script` with `sh -c`, `/reports` moved to `reports`, a `wsfault`
/// on PATH that is the binary under test (with `wrapper_args` after the
/// script's own arguments), and the container's variables.
fn run_script(script: &str, reports: &Path, wrapper_args: &str, vars: &[(String, String)]) -> Ran {
    let shims = tempfile::tempdir().expect("tempdir");
    let shim = shims.path().join("wsfault");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec '{BIN}' \"$@\" {wrapper_args}\n"),
    )
    .expect("shim");
    let mut perms = std::fs::metadata(&shim).expect("shim").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&shim, perms).expect("chmod shim");
    let script = script.replace(REPORTS, reports.to_str().expect("utf-8 path"));
    let path = format!(
        "{}:{}",
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .env("PATH", path)
        .env("RUST_LOG", "warn");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run(&mut cmd, "merge script", Duration::from_secs(30))
}

/// The literal variables of a container, for a script.
fn literal_vars(c: &Value) -> Vec<(String, String)> {
    container_vars(c, 0)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// The Deployment whose pods `selector` picks (exactly one).
fn selected<'a>(all: &'a [Manifest], selector: &Value, what: &str) -> &'a Manifest {
    let picked: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.kind() == "Deployment" && selects(selector, m.pod_labels()))
        .collect();
    assert_eq!(
        picked.len(),
        1,
        "{what}: selector {selector} picks {} Deployments",
        picked.len()
    );
    picked[0]
}

#[test]
fn every_manifest_parses_and_is_wired_together() {
    let files = yaml_files();
    let all = manifests();
    assert!(!all.is_empty(), "no manifests in {DIR}");

    // apiVersion, kind, metadata.name on every object, unique, and no
    // namespace of their own (the kustomization or `-n` sets it).
    let mut seen = BTreeSet::new();
    for m in &all {
        let what = m.what();
        assert!(m.obj.is_object(), "{what}: not a mapping");
        for key in ["/apiVersion", "/kind", "/metadata/name"] {
            assert!(
                !string(&m.obj, key, &what).is_empty(),
                "{what}: empty {key}"
            );
        }
        assert!(
            seen.insert((m.kind().to_string(), m.name().to_string())),
            "{what}: defined twice"
        );
        if m.kind() != "Namespace" {
            assert!(
                m.obj["metadata"].get("namespace").is_none(),
                "{what}: sets its own namespace"
            );
        }
    }

    // The kustomization lists every file but the Jobs started by hand, and
    // those hold Jobs only.
    let kustomization = documents("kustomization.yaml").remove(0);
    assert_eq!(kustomization["kind"], "Kustomization");
    assert!(string(&kustomization, "/apiVersion", "kustomization")
        .starts_with("kustomize.config.k8s.io/"));
    let resources: BTreeSet<String> = array(&kustomization, "/resources")
        .iter()
        .map(|r| r.as_str().expect("resource path").to_string())
        .collect();
    for r in &resources {
        assert!(
            dir().join(r).is_file(),
            "kustomization lists {r}, which does not exist"
        );
    }
    let expected: BTreeSet<String> = files
        .iter()
        .filter(|f| *f != "kustomization.yaml" && !RUN_FILES.contains(&f.as_str()))
        .cloned()
        .collect();
    assert_eq!(
        resources, expected,
        "kustomization resources vs the files of {DIR}"
    );
    for m in &all {
        let is_run_file = RUN_FILES.contains(&m.file.as_str());
        assert_eq!(
            m.kind() == "Job",
            is_run_file,
            "{}: Jobs belong in {RUN_FILES:?}, and only Jobs",
            m.what()
        );
    }
    assert!(
        kustomization.get("configMapGenerator").is_none(),
        "a configMapGenerator renames the ConfigMap on every change, which restarts the proxy"
    );

    // Deployments select their own pods; Services and NetworkPolicies pick
    // exactly one Deployment and name ports it has.
    for m in all.iter().filter(|m| m.kind() == "Deployment") {
        assert!(
            selects(&m.obj["spec"]["selector"]["matchLabels"], m.pod_labels()),
            "{}: selector does not match the pod labels",
            m.what()
        );
    }
    for m in all.iter().filter(|m| m.kind() == "Service") {
        let what = m.what();
        let target = selected(&all, &m.obj["spec"]["selector"], &what);
        let ports = array(&m.obj, "/spec/ports");
        assert!(!ports.is_empty(), "{what}: no ports");
        for p in ports {
            assert!(
                p["port"].as_u64().is_some(),
                "{what}: port {p} is not a number"
            );
            let target_port = p.get("targetPort").unwrap_or(&p["port"]);
            assert!(
                resolve_port(target.pod().unwrap(), target_port).is_some(),
                "{what}: targetPort {target_port} is no container port of {}",
                target.what()
            );
        }
    }
    for m in all.iter().filter(|m| m.kind() == "NetworkPolicy") {
        let what = m.what();
        let target = selected(&all, &m.obj["spec"]["podSelector"]["matchLabels"], &what);
        for rule in array(&m.obj, "/spec/ingress") {
            for p in array(rule, "/ports") {
                assert!(
                    resolve_port(target.pod().unwrap(), &p["port"]).is_some(),
                    "{what}: port {} is no container port of {}",
                    p["port"],
                    target.what()
                );
            }
        }
    }

    // Pods: volumes that exist, containers that run as non-root with
    // requests and limits, string-valued commands and variables.
    for m in all.iter().filter(|m| m.pod().is_some()) {
        let what = m.what();
        let pod = m.pod().unwrap();
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{what}: runAsNonRoot"
        );
        assert!(
            pod["securityContext"]["runAsUser"].as_u64().unwrap_or(0) > 0,
            "{what}: runAsUser must be a non-root uid"
        );
        for v in array(pod, "/volumes") {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                find(&all, "ConfigMap", cm);
            }
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                find(&all, "PersistentVolumeClaim", claim);
            }
        }
        let volumes: BTreeSet<&str> = array(pod, "/volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        for c in containers(pod) {
            let what = format!("{what} container {}", c["name"]);
            assert!(!string(c, "/image", &what).is_empty(), "{what}: no image");
            for key in [
                "/resources/requests/cpu",
                "/resources/requests/memory",
                "/resources/limits/cpu",
                "/resources/limits/memory",
            ] {
                assert!(
                    c.pointer(key).is_some_and(|v| v.is_string()),
                    "{what}: no {key} (a quoted quantity)"
                );
            }
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{what}: allowPrivilegeEscalation"
            );
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{what}: readOnlyRootFilesystem"
            );
            for e in array(c, "/env") {
                assert!(
                    e.get("value").is_none() || e["value"].is_string(),
                    "{what}: env {} must be a string (quote it)",
                    e["name"]
                );
            }
            for a in array(c, "/command").iter().chain(array(c, "/args")) {
                assert!(
                    a.is_string(),
                    "{what}: command element {a} must be a string (quote it)"
                );
            }
            assert!(!array(c, "/command").is_empty(), "{what}: no command");
            for mount in array(c, "/volumeMounts") {
                let name = string(mount, "/name", &what);
                assert!(
                    volumes.contains(name),
                    "{what}: mounts unknown volume {name}"
                );
            }
        }
    }

    // No registry host names: the image is built and loaded locally (or
    // the user names their own registry).
    let mut texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                format!("{DIR}/{f}"),
                std::fs::read_to_string(dir().join(f)).unwrap(),
            )
        })
        .collect();
    let doc = Path::new(ROOT).join("docs/kubernetes.md");
    texts.push((
        "docs/kubernetes.md".into(),
        std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc.display())),
    ));
    for (name, text) in &texts {
        for host in [
            "docker.io",
            "ghcr.io",
            "quay.io",
            "gcr.io",
            "registry.k8s.io",
            "k8s.gcr.io",
            "ecr.aws",
            "azurecr.io",
            "crates.io",
            "pypi.org",
            "npmjs",
            "hub.docker.com",
        ] {
            assert!(
                !text.contains(host),
                "{name} names the registry host {host}"
            );
        }
    }
}

#[test]
fn every_command_line_is_accepted_by_wsfault() {
    // The check itself: clap rejects an unknown flag or a bad value even
    // with --help after it.
    let bogus = run(
        &mut wsfault(&["load", "--mode", "sideways", "--help"]),
        "wsfault load --mode sideways --help",
        Duration::from_secs(10),
    );
    assert_eq!(bogus.code(), Some(2), "{}", bogus.both());
    let bogus = run(
        &mut wsfault(&["proxy", "--no-such-flag", "--help"]),
        "wsfault proxy --no-such-flag --help",
        Duration::from_secs(10),
    );
    assert_eq!(bogus.code(), Some(2), "{}", bogus.both());

    let all = manifests();
    let mut checked = BTreeSet::new();
    for m in all.iter().filter(|m| m.pod().is_some()) {
        for c in containers(m.pod().unwrap()) {
            let what = format!("{} container {}", m.what(), c["name"]);
            let argv = argv(c, 3, &what);
            match argv[0].as_str() {
                "wsfault" => {
                    let mut args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
                    args.push("--help");
                    let ran = run(&mut wsfault(&args), &what, Duration::from_secs(10));
                    assert!(
                        ran.ok() && ran.stdout.contains("Usage"),
                        "{what}: `wsfault {}` is not accepted: {}",
                        args.join(" "),
                        ran.both()
                    );
                    checked.insert(argv[1].clone());
                }
                "sh" => {
                    let script = script(&argv)
                        .unwrap_or_else(|| panic!("{what}: sh without -c SCRIPT: {argv:?}"));
                    assert!(
                        script.contains("wsfault "),
                        "{what}: the script runs no wsfault"
                    );
                    let reports = tempfile::tempdir().expect("tempdir");
                    let ran = run_script(script, reports.path(), "--help", &literal_vars(c));
                    assert!(
                        ran.ok() && ran.stdout.contains("Usage"),
                        "{what}: the script's wsfault command is not accepted: {}",
                        ran.both()
                    );
                    checked.insert(format!("sh: {}", script.lines().last().unwrap_or("")));
                }
                // Checked with the load Job: it removes its worker's report.
                "rm" => {}
                other => panic!("{what}: runs {other}, expected wsfault"),
            }
        }
    }
    for sub in ["proxy", "echo", "load"] {
        assert!(
            checked.contains(sub),
            "no container runs wsfault {sub}: {checked:?}"
        );
    }
    assert!(
        checked.iter().any(|c| c.contains("wsfault report merge")),
        "no container runs wsfault report merge: {checked:?}"
    );
}

#[test]
fn the_proxy_reloads_its_configmap_answers_probes_and_keeps_admin_inside() {
    let all = manifests();
    let proxy = all
        .iter()
        .find(|m| {
            m.kind() == "Deployment"
                && m.pod()
                    .map(|p| containers(p).iter().any(|c| c["command"][1] == "proxy"))
                    .unwrap_or(false)
        })
        .expect("a Deployment running wsfault proxy");
    let what = proxy.what();
    let pod = proxy.pod().unwrap();
    let c = containers(pod)
        .into_iter()
        .find(|c| c["command"][1] == "proxy")
        .unwrap();
    let proxy_argv = argv(c, 0, &what);

    // --config is a key of a ConfigMap mounted as a whole directory.
    let config = Path::new(flag(&proxy_argv, "--config"));
    let mount_dir = config.parent().unwrap().to_str().unwrap();
    let key = config.file_name().unwrap().to_str().unwrap();
    let mount = array(c, "/volumeMounts")
        .iter()
        .find(|v| v["mountPath"] == mount_dir)
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {mount_dir}"));
    assert!(
        mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
        "{what}: a subPath mount never sees ConfigMap updates"
    );
    let volume = array(pod, "/volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(
        volume["configMap"].get("items").is_none(),
        "{what}: keep the ConfigMap's keys as they are"
    );
    let cm = find(&all, "ConfigMap", string(volume, "/configMap/name", &what));
    let scenario = string(&cm.obj, &format!("/data/{key}"), &cm.what());

    // The scenario listens on the container's ws port and relays to a
    // Service of this stack.
    let parsed: Value = serde_saphyr::from_str(scenario).expect("scenario YAML");
    let first = &parsed["proxies"][0];
    let listen_port: u64 = string(first, "/listen", "scenario")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("listen port");
    assert_eq!(
        resolve_port(pod, &Value::from("ws")),
        Some(listen_port),
        "{what}: the ws container port is not the scenario's listen port"
    );
    let upstream = string(first, "/upstream", "scenario");
    let (host, port) = upstream.rsplit_once(':').expect("upstream host:port");
    let backend = find(&all, "Service", host);
    let backend_port = array(&backend.obj, "/spec/ports")
        .iter()
        .find(|p| p["port"].as_u64() == port.parse().ok())
        .unwrap_or_else(|| panic!("Service {host} has no port {port}"));
    let echo = selected(&all, &backend.obj["spec"]["selector"], &backend.what());
    let echo_port = resolve_port(echo.pod().unwrap(), &backend_port["targetPort"]).unwrap();
    let echo_argv = argv(containers(echo.pod().unwrap())[0], 0, &echo.what());
    assert_eq!(echo_argv[1], "echo", "{}", echo.what());
    assert!(
        flag(&echo_argv, "--listen").ends_with(&format!(":{echo_port}")),
        "{}: echo does not listen on its Service's port {echo_port}",
        echo.what()
    );

    // Probes: GET /healthz on the admin port.
    let admin = flag(&proxy_argv, "--admin");
    assert!(
        admin.starts_with("0.0.0.0:"),
        "{what}: --admin {admin} is unreachable for the kubelet"
    );
    let admin_port: u64 = admin.rsplit(':').next().unwrap().parse().unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{what}: {probe} path");
        assert_eq!(
            resolve_port(pod, &get["port"]),
            Some(admin_port),
            "{what}: {probe} does not ask the admin port"
        );
    }

    // Services: the admin port only in ClusterIP Services that expose
    // nothing else; the ws port in one without the admin port.
    let mut public = 0;
    for s in all.iter().filter(|m| m.kind() == "Service") {
        if !selects(&s.obj["spec"]["selector"], proxy.pod_labels()) {
            continue;
        }
        let targets: Vec<u64> = array(&s.obj, "/spec/ports")
            .iter()
            .map(|p| resolve_port(pod, p.get("targetPort").unwrap_or(&p["port"])).unwrap())
            .collect();
        if targets.contains(&admin_port) {
            assert_eq!(
                targets,
                vec![admin_port],
                "{}: admin port beside others",
                s.what()
            );
            let kind = s.obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            assert_eq!(
                kind,
                "ClusterIP",
                "{}: the admin port must stay inside",
                s.what()
            );
        } else {
            assert!(targets.contains(&listen_port), "{}", s.what());
            public += 1;
        }
    }
    assert_eq!(public, 1, "one Service for the WebSocket port");

    // NetworkPolicy: ingress to the proxy pods; the admin port only from
    // pods of the same namespace, the ws port from anywhere.
    let policy = all
        .iter()
        .find(|m| {
            m.kind() == "NetworkPolicy"
                && selects(
                    &m.obj["spec"]["podSelector"]["matchLabels"],
                    proxy.pod_labels(),
                )
        })
        .expect("a NetworkPolicy for the proxy pods");
    let pwhat = policy.what();
    assert!(
        array(&policy.obj, "/spec/policyTypes").contains(&Value::from("Ingress")),
        "{pwhat}: policyTypes must include Ingress"
    );
    let mut ws_open = false;
    let mut admin_allowed = false;
    for rule in array(&policy.obj, "/spec/ingress") {
        let ports = array(rule, "/ports");
        let covers = |port: u64| {
            ports.is_empty()
                || ports
                    .iter()
                    .any(|p| resolve_port(pod, &p["port"]) == Some(port))
        };
        let from = array(rule, "/from");
        if covers(admin_port) {
            assert!(
                !from.is_empty()
                    && from.iter().all(|f| {
                        f.get("podSelector").is_some()
                            && f.get("namespaceSelector").is_none()
                            && f.get("ipBlock").is_none()
                    }),
                "{pwhat}: a rule lets the admin port be reached from outside the namespace: {rule}"
            );
            admin_allowed = true;
        }
        if covers(listen_port) && from.is_empty() {
            ws_open = true;
        }
    }
    assert!(
        admin_allowed,
        "{pwhat}: the admin port is reachable from nowhere (the namespace needs it)"
    );
    assert!(ws_open, "{pwhat}: the WebSocket port is not open to all");
}

#[test]
fn the_load_job_is_indexed_and_the_merge_reads_every_report() {
    let all = manifests();
    let load = all
        .iter()
        .find(|m| {
            m.kind() == "Job"
                && array(&m.obj, "/spec/template/spec/containers")
                    .iter()
                    .any(|c| c["command"][1] == "load")
        })
        .expect("a Job running wsfault load");
    let merge = all
        .iter()
        .find(|m| m.kind() == "Job" && !std::ptr::eq(*m, load))
        .expect("the merge Job");
    let what = load.what();
    let spec = &load.obj["spec"];
    assert_eq!(spec["completionMode"], "Indexed", "{what}");
    let n = spec["completions"].as_u64().expect("completions");
    assert!(
        n >= 2,
        "{what}: completions {n}: side by side means more than one"
    );
    assert_eq!(
        spec["parallelism"].as_u64(),
        Some(n),
        "{what}: parallelism != completions"
    );
    let pod = load.pod().unwrap();
    assert_eq!(
        pod["restartPolicy"], "Never",
        "{what}: podFailurePolicy needs restartPolicy Never"
    );
    for rule in array(spec, "/podFailurePolicy/rules") {
        if let Some(name) = rule["onExitCodes"]["containerName"].as_str() {
            container(pod, name);
        }
    }

    // Each worker writes its own report; its init container removes that
    // very file first.
    let worker = array(pod, "/containers")
        .iter()
        .find(|c| c["command"][1] == "load")
        .unwrap();
    let mut reports = BTreeSet::new();
    for index in 0..n as u32 {
        let worker_argv = argv(worker, index, &what);
        let report = flag(&worker_argv, "--report").to_string();
        assert!(
            report.starts_with(&format!("{REPORTS}/")),
            "{what}: report {report}"
        );
        assert_eq!(flag(&worker_argv, "--mode"), "resume", "{what}");
        assert!(
            worker_argv.contains(&"--reconnect".to_string()),
            "{what}: --reconnect"
        );
        for init in array(pod, "/initContainers") {
            let init_argv = argv(init, index, &what);
            if init_argv[0] == "rm" {
                assert_eq!(
                    init_argv.last(),
                    Some(&report),
                    "{what}: init removes another file"
                );
            }
        }
        reports.insert(report);
    }
    assert_eq!(
        reports.len() as u64,
        n,
        "{what}: workers share a report file: {reports:?}"
    );

    // The load URL is the proxy's public Service.
    let url = flag(&argv(worker, 0, &what), "--url").to_string();
    let host_port = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{what}: --url {url}"));
    let (host, port) = host_port.split_once(':').expect("host:port");
    let svc = find(&all, "Service", host);
    assert!(
        array(&svc.obj, "/spec/ports")
            .iter()
            .any(|p| p["port"].as_u64() == port.parse().ok()),
        "{what}: Service {host} has no port {port}"
    );

    // Both Jobs mount the same claim at /reports; the claim is shared.
    let claim_of = |job: &Manifest| -> String {
        let pod = job.pod().unwrap();
        let c = &array(pod, "/containers")[0];
        let mount = array(c, "/volumeMounts")
            .iter()
            .find(|v| v["mountPath"] == REPORTS)
            .unwrap_or_else(|| panic!("{}: nothing at {REPORTS}", job.what()));
        let volume = array(pod, "/volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        string(volume, "/persistentVolumeClaim/claimName", &job.what()).to_string()
    };
    let claim = claim_of(load);
    assert_eq!(claim_of(merge), claim, "the Jobs use different claims");
    let pvc = find(&all, "PersistentVolumeClaim", &claim);
    assert!(
        array(&pvc.obj, "/spec/accessModes").contains(&Value::from("ReadWriteMany")),
        "{}: workers on several nodes need ReadWriteMany",
        pvc.what()
    );

    // The merge knows how many workers there are.
    let mc = &array(merge.pod().unwrap(), "/containers")[0];
    let workers = container_vars(mc, 0)
        .get("WORKERS")
        .cloned()
        .flatten()
        .unwrap_or_else(|| panic!("{}: no WORKERS", merge.what()));
    assert_eq!(
        workers,
        n.to_string(),
        "{}: WORKERS != completions",
        merge.what()
    );
}

/// `wsfault ARGV[1..]` with its output in files, killed on drop.
struct Logged {
    child: KillOnDrop,
    dir: tempfile::TempDir,
    what: String,
}

impl Logged {
    fn start(argv: &[String], what: &str) -> Logged {
        assert_eq!(argv[0], "wsfault", "{what}: {argv:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(BIN)
            .args(&argv[1..])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Logged {
            child: KillOnDrop(child),
            dir,
            what: what.to_string(),
        }
    }

    /// Polls `ready` for up to 15 s; panics with the process's stderr if it
    /// exits first (a scenario that does not load) or never gets ready.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !ready() {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("{} exited ({status}):\n{}", self.what, self.stderr());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} not ready within 15 s:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

/// The scenario of the ConfigMap in a kubelet-style directory: `KEY` →
/// `..data/KEY`, `..data` → a timestamped directory, swapped by rename.
struct ConfigMapDir {
    root: tempfile::TempDir,
    key: String,
    generation: u32,
}

impl ConfigMapDir {
    fn new(key: &str, content: &str) -> ConfigMapDir {
        let mut dir = ConfigMapDir {
            root: tempfile::tempdir().expect("tempdir"),
            key: key.to_string(),
            generation: 0,
        };
        dir.publish(content);
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.root.path().join(key))
            .expect("key link");
        dir
    }

    /// What the kubelet does on an update: a new directory, then `..data`
    /// swapped by a rename (the file itself is never written).
    fn publish(&mut self, content: &str) {
        self.generation += 1;
        let ts = format!(
            "..2025_01_01_00_00_0{}.{}",
            self.generation,
            std::process::id()
        );
        let path = self.root.path().join(&ts);
        std::fs::create_dir(&path).expect("ts dir");
        std::fs::write(path.join(&self.key), content).expect("write key");
        let tmp = self.root.path().join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.root.path().join("..data")).expect("swap ..data");
    }

    fn file(&self) -> PathBuf {
        self.root.path().join(&self.key)
    }
}

#[test]
fn the_stack_runs_on_loopback_as_the_manifests_describe() {
    let all = manifests();
    let by_sub = |sub: &str| -> (&Manifest, &Value) {
        all.iter()
            .filter_map(|m| m.pod().map(|p| (m, p)))
            .flat_map(|(m, p)| containers(p).into_iter().map(move |c| (m, c)))
            .find(|(_, c)| c["command"][1] == sub)
            .unwrap_or_else(|| panic!("no container runs wsfault {sub}"))
    };

    // The echo backend, on a loopback port.
    let (echo_m, echo_c) = by_sub("echo");
    let echo_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let echo_argv = with_flag(
        &argv(echo_c, 0, &echo_m.what()),
        "--listen",
        &echo_addr.to_string(),
    );
    let mut echo = Logged::start(&echo_argv, "wsfault echo");
    echo.wait_ready(|| std::net::TcpStream::connect(echo_addr).is_ok());

    // The proxy with the ConfigMap's scenario, its listen and upstream moved
    // to loopback, from a kubelet-style directory.
    let (proxy_m, proxy_c) = by_sub("proxy");
    let proxy_argv = argv(proxy_c, 0, &proxy_m.what());
    let config = Path::new(flag(&proxy_argv, "--config")).to_path_buf();
    let key = config.file_name().unwrap().to_str().unwrap();
    let cm = all
        .iter()
        .find(|m| m.kind() == "ConfigMap")
        .expect("ConfigMap");
    let scenario = string(&cm.obj, &format!("/data/{key}"), &cm.what());
    let parsed: Value = serde_saphyr::from_str(scenario).expect("scenario YAML");
    let listen = string(&parsed, "/proxies/0/listen", "scenario");
    let upstream = string(&parsed, "/proxies/0/upstream", "scenario");
    let name = string(&parsed, "/proxies/0/name", "scenario");
    // A fixed port rather than :0, so that the reload below sees the same
    // `listen` and keeps the listener.
    let proxy_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let local = |text: &str| {
        assert_eq!(text.matches(listen).count(), 1, "listen {listen} once");
        assert_eq!(
            text.matches(upstream).count(),
            1,
            "upstream {upstream} once"
        );
        text.replace(listen, &proxy_addr.to_string())
            .replace(upstream, &echo_addr.to_string())
    };
    let mut cm_dir = ConfigMapDir::new(key, &local(scenario));
    let file = cm_dir.file();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy_argv = with_flag(&proxy_argv, "--config", file.to_str().unwrap());
    let proxy_argv = with_flag(&proxy_argv, "--admin", &admin.to_string());
    let mut proxy = Logged::start(&proxy_argv, "wsfault proxy");
    proxy.wait_ready(|| matches!(http_blocking(admin, "GET", "/healthz", None), Ok((200, _))));
    let toxics = |proxy: &Logged| -> Vec<String> {
        let (status, body) = http_blocking(admin, "GET", &format!("/proxies/{name}/toxics"), None)
            .expect("admin API");
        assert_eq!(status, 200, "{body}\n{}", proxy.stderr());
        let v: Value = serde_json::from_str(&body).expect("toxics JSON");
        v.as_array()
            .expect("array")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let initial = toxics(&proxy);
    assert!(!initial.is_empty(), "the scenario has no toxics");

    // N load workers with the Job's argv, side by side.
    let (load_m, load_c) = by_sub("load");
    let n = load_m.obj["spec"]["completions"]
        .as_u64()
        .expect("completions") as u32;
    let reports = tempfile::tempdir().expect("reports");
    let reports_dir = reports.path().to_str().unwrap().to_string();
    let url = format!("ws://{proxy_addr}/");
    let workers: Vec<ChildGuard> = (0..n)
        .map(|index| {
            let argv = argv(load_c, index, &load_m.what());
            let report = flag(&argv, "--report").replace(REPORTS, &reports_dir);
            let argv = with_flag(&argv, "--url", &url);
            let argv = with_flag(&argv, "--duration", "3s");
            let argv = with_flag(&argv, "--report", &report);
            let mut cmd = Command::new(BIN);
            cmd.args(&argv[1..]).env("RUST_LOG", "warn");
            ChildGuard::spawn(&mut cmd, &format!("load worker {index}"))
        })
        .collect();

    // A ConfigMap update mid-run: the last toxic goes; the proxy reloads.
    std::thread::sleep(Duration::from_millis(1000));
    let dropped = initial.last().unwrap().clone();
    let mut doc = parsed.clone();
    doc["proxies"][0]["toxics"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["name"] != dropped.as_str());
    let updated = serde_json::to_string(&doc).expect("JSON is YAML");
    cm_dir.publish(&local(&updated));
    wait_until(
        "the proxy did not reload the swapped ConfigMap",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || !toxics(&proxy).contains(&dropped),
    );
    assert_eq!(
        toxics(&proxy).len(),
        initial.len() - 1,
        "{}",
        proxy.stderr()
    );

    for (index, worker) in workers.into_iter().enumerate() {
        let ran = worker.wait(Duration::from_secs(30));
        assert!(
            ran.ok(),
            "load worker {index}: {}\n--- proxy\n{}",
            ran.both(),
            proxy.stderr()
        );
    }

    // The merge Job's script on their reports: one passing verdict.
    let (merge_m, merge_c) = all
        .iter()
        .filter(|m| m.kind() == "Job")
        .filter_map(|m| m.pod().map(|p| (m, p)))
        .flat_map(|(m, p)| containers(p).into_iter().map(move |c| (m, c)))
        .find(|(_, c)| c["command"][0] == "sh")
        .expect("the merge container");
    let merge_argv = argv(merge_c, 0, &merge_m.what());
    let merge_script = script(&merge_argv).expect("sh -c SCRIPT");
    let vars = literal_vars(merge_c);
    let ran = run_script(merge_script, reports.path(), "", &vars);
    assert!(ran.ok(), "merge: {}", ran.both());
    assert!(
        ran.stdout.contains(&format!("merged {n} reports")),
        "merge: {}",
        ran.both()
    );
    let merged = read_report(&reports.path().join("merged.json"));
    assert_clean_report(&merged, "merged report");
    let sent: u64 = (0..n)
        .map(|i| {
            read_report(&reports.path().join(format!("report-{i}.json")))["messages"]["sent"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        merged["messages"]["sent"].as_u64(),
        Some(sent),
        "merged sent"
    );
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).expect("junit.xml");
    assert!(junit.contains("<testsuite"), "{junit}");

    // A worker's report missing: exit 2 naming it.
    let missing = reports.path().join(format!("report-{}.json", n - 1));
    std::fs::remove_file(&missing).unwrap();
    let ran = run_script(merge_script, reports.path(), "", &vars);
    assert_eq!(
        ran.code(),
        Some(2),
        "merge without a report: {}",
        ran.both()
    );
    assert!(
        ran.stderr.contains(&missing.display().to_string()),
        "merge does not name the missing report: {}",
        ran.both()
    );

    drop(proxy);
    drop(echo);
}
