//! A small kustomize for the manifest tests: resources (files and directories), namespace,
//! images and inline JSON 6902 patches (add, replace, remove) — the features our
//! kustomizations use. Anything else is refused, so a new feature cannot slip past the
//! invariants unrendered.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn yaml_files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if recursive {
                out.extend(yaml_files(&path, true));
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every document of a (multi-document) YAML file, empty ones left out.
pub fn parse_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_docs_str(&text, &path.display().to_string())
}

pub fn parse_docs_str(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The real kustomize's rendering (`kubectl kustomize`), when kubectl is installed.
pub fn kubectl_render(dir: &Path) -> Option<Vec<Value>> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(parse_docs_str(
        &text,
        &format!("kubectl kustomize {}", dir.display()),
    ))
}

/// The resources of the kustomization in `dir`, transformed.
pub fn render(dir: &Path) -> Vec<Value> {
    let k = &parse_docs(&dir.join("kustomization.yaml"))[0];
    for key in k.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(
            [
                "apiVersion",
                "kind",
                "namespace",
                "resources",
                "images",
                "patches"
            ]
            .contains(&key),
            "{}: `{key}` is not supported by the test's renderer: extend it",
            dir.display()
        );
    }
    let mut docs = Vec::new();
    for r in k["resources"].as_sequence().unwrap() {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            docs.extend(render(&path));
        } else {
            docs.extend(parse_docs(&path));
        }
    }
    if let Some(patches) = k["patches"].as_sequence() {
        for p in patches {
            apply_patch(&mut docs, p, dir);
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        for d in &mut docs {
            set_key(&mut d["metadata"], "namespace", Value::from(ns));
        }
    }
    if let Some(images) = k["images"].as_sequence() {
        for d in &mut docs {
            for c in all_containers_mut(d) {
                retag(c, images);
            }
        }
    }
    docs
}

fn set_key(map: &mut Value, key: &str, value: Value) {
    map.as_mapping_mut()
        .unwrap()
        .insert(Value::from(key), value);
}

fn retag(container: &mut Value, images: &[Value]) {
    let image = container["image"].as_str().unwrap().to_string();
    let (name, tag) = image.split_once(':').unwrap_or((&image, "latest"));
    if let Some(rule) = images.iter().find(|i| i["name"].as_str() == Some(name)) {
        let new_name = rule["newName"].as_str().unwrap_or(name);
        let new_tag = rule["newTag"].as_str().unwrap_or(tag);
        set_key(
            container,
            "image",
            Value::from(format!("{new_name}:{new_tag}")),
        );
    }
}

fn apply_patch(docs: &mut [Value], p: &Value, dir: &Path) {
    let target = &p["target"];
    let ops: Vec<Value> = serde_yaml_ng::from_str(p["patch"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{}: patch is not a JSON 6902 list: {e}", dir.display()));
    let mut matched = 0;
    for d in docs
        .iter_mut()
        .filter(|d| d["kind"] == target["kind"] && d["metadata"]["name"] == target["name"])
    {
        matched += 1;
        for op in &ops {
            json_patch_op(d, op);
        }
    }
    assert_eq!(matched, 1, "{}: patch target {target:?}", dir.display());
}

/// `add`, `replace` and `remove` of RFC 6902 on a YAML value.
pub fn json_patch_op(doc: &mut Value, op: &Value) {
    let path = op["path"].as_str().unwrap();
    let mut parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = parts.pop().unwrap();
    let mut node = doc;
    for part in &parts {
        node = match node {
            Value::Sequence(s) => &mut s[part.parse::<usize>().unwrap()],
            Value::Mapping(m) => m
                .get_mut(part.as_str())
                .unwrap_or_else(|| panic!("patch path {path}: no `{part}`")),
            _ => panic!("patch path {path}: `{part}` is not a container"),
        };
    }
    let kind = op["op"].as_str().unwrap();
    match (node, kind) {
        (Value::Mapping(m), "remove") => {
            assert!(m.remove(last.as_str()).is_some(), "remove {path}: absent");
        }
        (Value::Mapping(m), "replace") => {
            assert!(m.contains_key(last.as_str()), "replace {path}: absent");
            m.insert(Value::from(last), op["value"].clone());
        }
        (Value::Mapping(m), "add") => {
            m.insert(Value::from(last), op["value"].clone());
        }
        (Value::Sequence(s), "add") if last == "-" => s.push(op["value"].clone()),
        (Value::Sequence(s), "add") => s.insert(last.parse().unwrap(), op["value"].clone()),
        (Value::Sequence(s), "replace") => s[last.parse::<usize>().unwrap()] = op["value"].clone(),
        (Value::Sequence(s), "remove") => {
            s.remove(last.parse().unwrap());
        }
        (_, other) => panic!("patch {path}: unsupported op `{other}`"),
    }
}

fn all_containers_mut(doc: &mut Value) -> Vec<&mut Value> {
    if !matches!(doc["kind"].as_str(), Some("Deployment" | "Job")) {
        return Vec::new();
    }
    let spec = &mut doc["spec"]["template"]["spec"];
    let mut out = Vec::new();
    for (key, list) in spec.as_mapping_mut().unwrap().iter_mut() {
        if key == "containers" || key == "initContainers" {
            out.extend(list.as_sequence_mut().unwrap().iter_mut());
        }
    }
    out
}
