//! The deployment files keep the invariants of issue 7. Every YAML file under `ops/k8s`
//! parses; each kustomization lists exactly the files beside it; the base and every overlay,
//! rendered as kustomize would (resources, namespace, images and inline JSON 6902 patches —
//! the only features our kustomizations use, and the renderer refuses any other), have
//! probes on /healthz and /readyz, non-root read-only containers with requests and limits,
//! a termination grace above the shutdown grace, database URLs by FQDN, selectors that
//! match a Deployment and a ConfigMap that the real config parser accepts. The Dockerfile is
//! multi-stage with a non-root user; the alert rules use metrics the code exports.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::{Mapping, Value};

use crate::kustomize::{json_patch_op, kubectl_render, parse_docs, render, repo, yaml_files};

fn name_of(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn pod_spec(doc: &Value) -> Option<&Value> {
    matches!(doc["kind"].as_str(), Some("Deployment" | "Job"))
        .then(|| &doc["spec"]["template"]["spec"])
}

/// (container, is an init container) of a pod spec.
fn containers(spec: &Value) -> Vec<(&Value, bool)> {
    let mut out: Vec<(&Value, bool)> = Vec::new();
    if let Some(cs) = spec["initContainers"].as_sequence() {
        out.extend(cs.iter().map(|c| (c, true)));
    }
    if let Some(cs) = spec["containers"].as_sequence() {
        out.extend(cs.iter().map(|c| (c, false)));
    }
    out
}

// ---- the invariants -----------------------------------------------------------------------

/// Host of a `postgres://user:pw@host:port/db` URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or(host_port)
}

fn check_db_url(errors: &mut Vec<String>, what: &str, url: &str, namespace: &str) {
    let want = format!("db.{namespace}.svc.cluster.local");
    if url_host(url) != want {
        errors.push(format!(
            "{what}: DATABASE_URL host `{}` is not the FQDN {want}",
            url_host(url)
        ));
    }
}

/// The shutdown grace a container runs with: flag, else environment, else the config file
/// of the rendered ConfigMap, else the built-in default.
fn shutdown_grace(c: &Value, config: &coinpilot::config::Config) -> f64 {
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(i) = args.iter().position(|a| *a == "--shutdown-grace") {
        return args[i + 1].parse().unwrap();
    }
    if let Some(v) = args
        .iter()
        .find_map(|a| a.strip_prefix("--shutdown-grace="))
    {
        return v.parse().unwrap();
    }
    let from_env = c["env"].as_sequence().and_then(|env| {
        env.iter()
            .find(|e| e["name"] == "COINPILOT_WORKER_SHUTDOWN_GRACE_SECS")
            .map(|e| e["value"].as_str().unwrap().parse().unwrap())
    });
    from_env.unwrap_or(config.worker.shutdown_grace_secs)
}

fn listen_port(c: &Value) -> Option<u64> {
    let args: Vec<&str> = c["args"]
        .as_sequence()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let i = args.iter().position(|a| *a == "--listen")?;
    args.get(i + 1)?.rsplit(':').next()?.parse().ok()
}

/// The container port a probe's `port` (name or number) refers to.
fn probe_port(c: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    c["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"] == *port)?["containerPort"]
        .as_u64()
}

fn check_container(
    errors: &mut Vec<String>,
    what: &str,
    pod: &Value,
    c: &Value,
    long_running: bool,
    secret_keys: &BTreeSet<String>,
    namespace: &str,
) {
    let pod_non_root = pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
    let sc = &c["securityContext"];
    if !(sc["runAsNonRoot"].as_bool() == Some(true)
        || (pod_non_root && sc["runAsNonRoot"].as_bool().is_none()))
    {
        errors.push(format!("{what}: runAsNonRoot is not true"));
    }
    if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
        errors.push(format!("{what}: readOnlyRootFilesystem is not true"));
    }
    for side in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            if c["resources"][side][res].is_null() {
                errors.push(format!("{what}: resources.{side}.{res} is not set"));
            }
        }
    }
    if long_running {
        let port = listen_port(c);
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            if get["path"].as_str() != Some(path) {
                errors.push(format!("{what}: {probe} is not an httpGet on {path}"));
            } else if port.is_none() || probe_port(c, &get["port"]) != port {
                errors.push(format!("{what}: {probe} port is not the --listen port"));
            }
        }
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        if e["name"] == "DATABASE_URL" {
            if let Some(url) = e["value"].as_str() {
                check_db_url(errors, what, url, namespace);
            }
        }
        let r = &e["valueFrom"]["secretKeyRef"];
        if let Some(key) = r["key"].as_str() {
            if r["name"] != "coinpilot-secrets" || !secret_keys.contains(key) {
                errors.push(format!(
                    "{what}: secret key {key} is not in the Secret template"
                ));
            }
        }
    }
}

/// Labels of the pod templates of the rendered Deployments, by name.
fn deployment_labels(docs: &[Value]) -> BTreeMap<String, Mapping> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            let labels = d["spec"]["template"]["metadata"]["labels"]
                .as_mapping()
                .cloned()
                .unwrap_or_default();
            (d["metadata"]["name"].as_str().unwrap().to_string(), labels)
        })
        .collect()
}

fn subset(small: &Value, big: &Mapping) -> bool {
    small
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| big.get(k) == Some(v)))
}

fn check_selectors(errors: &mut Vec<String>, docs: &[Value]) {
    let deployments = deployment_labels(docs);
    for d in docs {
        let what = name_of(d);
        let selector = match d["kind"].as_str() {
            Some("Deployment") => {
                let own = &deployments[d["metadata"]["name"].as_str().unwrap()];
                if !subset(&d["spec"]["selector"]["matchLabels"], own) {
                    errors.push(format!(
                        "{what}: selector does not match its template labels"
                    ));
                }
                continue;
            }
            Some("Service") => &d["spec"]["selector"],
            Some("PodDisruptionBudget") => &d["spec"]["selector"]["matchLabels"],
            Some("HorizontalPodAutoscaler") => {
                let t = &d["spec"]["scaleTargetRef"];
                let known = t["kind"] == "Deployment"
                    && deployments.contains_key(t["name"].as_str().unwrap_or(""));
                if !known {
                    errors.push(format!("{what}: scaleTargetRef names no Deployment"));
                }
                let target = docs
                    .iter()
                    .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == t["name"]);
                if target.is_some_and(|o| !o["spec"]["replicas"].is_null()) {
                    errors.push(format!(
                        "{what}: its Deployment sets replicas, which every apply would reset"
                    ));
                }
                if d["spec"]["minReplicas"].as_u64().unwrap_or(0) < 1 {
                    errors.push(format!("{what}: minReplicas must be at least 1"));
                }
                continue;
            }
            _ => continue,
        };
        if !deployments.values().any(|labels| subset(selector, labels)) {
            errors.push(format!("{what}: selector matches no Deployment's pods"));
        }
    }
}

/// The config of the rendered `coinpilot-config`, through the real parser and validation.
fn rendered_config(errors: &mut Vec<String>, docs: &[Value]) -> coinpilot::config::Config {
    let Some(cm) = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "coinpilot-config")
    else {
        errors.push("no ConfigMap coinpilot-config".into());
        return Default::default();
    };
    let text = cm["data"]["coinpilot.toml"].as_str().unwrap_or("");
    let parsed = coinpilot::config::Config::from_toml_str(text, "ConfigMap coinpilot-config")
        .and_then(|c| c.validate(&Default::default()).map(|()| c));
    parsed.unwrap_or_else(|e| {
        errors.push(e.to_string());
        Default::default()
    })
}

fn secret_template() -> Value {
    parse_docs(&repo("ops/k8s/secret.template.yaml")).remove(0)
}

fn check_rendered(label: &str, docs: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let config = rendered_config(&mut errors, docs);
    let secret_keys: BTreeSet<String> = secret_template()["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for d in docs {
        let Some(pod) = pod_spec(d) else { continue };
        let long_running = d["kind"] == "Deployment";
        let namespace = d["metadata"]["namespace"].as_str().unwrap_or("default");
        let grace = pod["terminationGracePeriodSeconds"].as_f64();
        for (c, init) in containers(pod) {
            let what = format!(
                "{label} {} container {}",
                name_of(d),
                c["name"].as_str().unwrap_or("?")
            );
            check_container(
                &mut errors,
                &what,
                pod,
                c,
                long_running && !init,
                &secret_keys,
                namespace,
            );
            if long_running && !init {
                let needed = shutdown_grace(c, &config);
                if grace.is_none_or(|g| g <= needed) {
                    errors.push(format!(
                        "{what}: terminationGracePeriodSeconds {grace:?} is not above the shutdown grace {needed}"
                    ));
                }
            }
        }
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                let exists = docs
                    .iter()
                    .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm);
                if !exists {
                    errors.push(format!(
                        "{label} {}: ConfigMap {cm} is not rendered",
                        name_of(d)
                    ));
                }
            }
        }
    }
    check_selectors(&mut errors, docs);
    errors
}

// ---- the tests ----------------------------------------------------------------------------

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let files = yaml_files(&repo("ops/k8s"), true);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let docs = parse_docs(&f);
        assert!(!docs.is_empty(), "{}: no document", f.display());
        for d in docs {
            assert!(
                d["apiVersion"].is_string() && d["kind"].is_string(),
                "{}",
                f.display()
            );
        }
    }
}

#[test]
fn each_kustomization_lists_every_file_beside_it() {
    for k in yaml_files(&repo("ops/k8s"), true)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "kustomization.yaml"))
    {
        let dir = k.parent().unwrap();
        let listed: BTreeSet<String> = parse_docs(&k)[0]["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        for r in &listed {
            assert!(
                dir.join(r).exists(),
                "{}: resource {r} does not exist",
                k.display()
            );
        }
        let files: BTreeSet<String> = yaml_files(dir, false)
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| n != "kustomization.yaml")
            .collect();
        let unlisted: Vec<_> = files.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "{}: not listed: {unlisted:?}",
            k.display()
        );
    }
}

#[test]
fn base_and_overlays_keep_the_deployment_invariants() {
    for dir in [
        "ops/k8s/base",
        "ops/k8s/overlays/dev",
        "ops/k8s/overlays/prod",
    ] {
        let ours = render(&repo(dir));
        // The real kustomize too, where kubectl is installed: the invariants must hold on
        // what would be applied, and our renderer must agree with it on what it checks.
        let real = kubectl_render(&repo(dir));
        match &real {
            Some(real) => assert_same(dir, real, &ours),
            None => eprintln!("kubectl not found: {dir} checked with the test's renderer only"),
        }
        for docs in std::iter::once(ours).chain(real) {
            check_kinds_and_invariants(dir, &docs);
        }
    }
}

/// What the invariants read, per object: namespace, pod template, selector, HPA bounds and
/// ConfigMap data (kustomize drops a block scalar's final newline: compared trimmed).
fn summary(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        .map(|d| {
            let spec = &d["spec"];
            let data: Vec<Value> = d["data"]
                .as_mapping()
                .map(|m| {
                    m.values()
                        .map(|v| Value::from(v.as_str().unwrap_or("").trim_end()))
                        .collect()
                })
                .unwrap_or_default();
            let seen = Value::Sequence(vec![
                d["metadata"]["namespace"].clone(),
                spec["template"].clone(),
                spec["selector"].clone(),
                spec["minReplicas"].clone(),
                spec["maxReplicas"].clone(),
                Value::Sequence(data),
            ]);
            (name_of(d), seen)
        })
        .collect()
}

/// Asserts both renderings agree, naming the objects that differ.
fn assert_same(dir: &str, real: &[Value], ours: &[Value]) {
    let (real, ours) = (summary(real), summary(ours));
    let keys: BTreeSet<&String> = real.keys().chain(ours.keys()).collect();
    let differ: Vec<&String> = keys
        .into_iter()
        .filter(|k| real.get(*k) != ours.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "{dir}: the test's renderer and kubectl kustomize disagree on {differ:?}"
    );
}

fn check_kinds_and_invariants(dir: &str, docs: &[Value]) {
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ConfigMap",
    ] {
        assert!(kinds.contains(kind), "{dir}: no {kind}");
    }
    let errors = check_rendered(dir, docs);
    assert!(errors.is_empty(), "{dir}:\n{}", errors.join("\n"));
}

#[test]
fn the_checks_catch_a_broken_manifest() {
    let mut docs = render(&repo("ops/k8s/base"));
    let worker = docs
        .iter_mut()
        .find(|d| d["metadata"]["name"] == "coinpilot-worker" && d["kind"] == "Deployment")
        .unwrap();
    for op in [
        "{op: replace, path: /spec/template/spec/terminationGracePeriodSeconds, value: 30}",
        "{op: remove, path: /spec/template/spec/containers/0/readinessProbe}",
        "{op: remove, path: /spec/template/spec/containers/0/resources/limits}",
        "{op: replace, path: /spec/selector/matchLabels/app.kubernetes.io~1component, value: wrkr}",
    ] {
        json_patch_op(worker, &serde_yaml_ng::from_str(op).unwrap());
    }
    let errors = check_rendered("broken", &docs).join("\n");
    for expected in [
        "terminationGracePeriodSeconds",
        "readinessProbe",
        "resources.limits.cpu",
        "selector does not match",
    ] {
        assert!(
            errors.contains(expected),
            "{expected} not caught in:\n{errors}"
        );
    }
}

#[test]
fn the_secret_template_holds_placeholders_and_an_fqdn_database_url() {
    let s = secret_template();
    assert_eq!(s["kind"], "Secret");
    let ns = s["metadata"]["namespace"].as_str().unwrap();
    let mut errors = Vec::new();
    check_db_url(
        &mut errors,
        "secret template",
        s["stringData"]["DATABASE_URL"].as_str().unwrap(),
        ns,
    );
    assert!(errors.is_empty(), "{errors:?}");
    for (var, _) in coinpilot::config::secrets::SECRET_VARS {
        if var.starts_with("COINPILOT_DASHBOARD") && var.ends_with("_PASSWORD") {
            continue; // the hash is what a deployment stores
        }
        let v = s["stringData"][*var]
            .as_str()
            .unwrap_or_else(|| panic!("{var} missing"));
        assert!(v.contains("CHANGE_ME"), "{var} must be a placeholder");
    }
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(repo("ops/Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage");
    assert!(
        lines[froms[0]].contains(" AS builder"),
        "{}",
        lines[froms[0]]
    );
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("COPY --from=builder"));
    let last_stage = &lines[*froms.last().unwrap()..];
    let user = last_stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u >= 1000),
        "USER {user}: want a numeric non-root UID"
    );
    let manifests = std::fs::read_to_string(repo("ops/k8s/base/worker-deployment.yaml")).unwrap();
    assert!(
        manifests.contains(&format!("runAsUser: {uid}")),
        "manifests run as the image's UID"
    );
}

#[test]
fn alert_rules_and_the_hpa_use_metrics_the_code_exports() {
    let source = std::fs::read_to_string(repo("src/queue/metrics.rs")).unwrap();
    for file in [
        "ops/prometheus/alerts.yaml",
        "ops/prometheus/adapter-rules.yaml",
        "ops/k8s/base/worker-hpa.yaml",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        parse_docs(&repo(file));
        let names: BTreeSet<&str> = text
            .match_indices("coinpilot_")
            .map(|(i, _)| {
                let end = text[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |e| i + e);
                &text[i..end]
            })
            .collect();
        assert!(!names.is_empty(), "{file}");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                source.contains(&format!("\"{base}\"")),
                "{file}: {name} is not exported by src/queue/metrics.rs"
            );
        }
    }
}
