//! The deployment files in `deploy/`: every Kubernetes manifest parses into the typed
//! Kubernetes objects (k8s-openapi) without a field the type does not know, and every flag the
//! manifests, systemd units and Dockerfile pass to a postflight binary is one that binary
//! accepts (its real `--help`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use postflight_e2e::bin;
use serde_json::Value;

fn deploy() -> PathBuf {
    postflight_e2e::repo_root().join("deploy")
}

/// The YAML files under `dir` and its folders (variants such as `replicated/`).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files
}

fn manifests() -> Vec<(PathBuf, Value)> {
    let mut files = yaml_files(&deploy().join("kubernetes"));
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in parsed.into_iter().filter(|d| !d.is_null()) {
            docs.push((file.clone(), doc));
        }
    }
    docs
}

/// Every key of `written` exists in `typed` (the same object after a round trip through its
/// Rust type): a misspelt or misplaced field would be dropped by the type and found here.
fn assert_known_fields(written: &Value, typed: &Value, path: &str, file: &Path) {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (key, value) in w {
                let Some(inner) = t.get(key) else {
                    panic!("{}: unknown field {path}.{key}", file.display());
                };
                assert_known_fields(value, inner, &format!("{path}.{key}"), file);
            }
        }
        (Value::Array(w), Value::Array(t)) => {
            assert_eq!(w.len(), t.len(), "{}: {path}", file.display());
            for (i, (a, b)) in w.iter().zip(t).enumerate() {
                assert_known_fields(a, b, &format!("{path}[{i}]"), file);
            }
        }
        _ => {}
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, file: &Path) {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: {} {}: {e}",
            file.display(),
            doc["kind"],
            doc["metadata"]["name"]
        )
    });
    let back = serde_json::to_value(&typed).unwrap();
    assert_known_fields(doc, &back, "", file);
}

#[test]
fn every_manifest_parses_into_typed_kubernetes_objects() {
    let mut kinds = BTreeSet::new();
    for (file, doc) in manifests() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Namespace" => round_trip::<Namespace>(&doc, &file),
            "ServiceAccount" => round_trip::<ServiceAccount>(&doc, &file),
            "PersistentVolumeClaim" => round_trip::<PersistentVolumeClaim>(&doc, &file),
            "Secret" => round_trip::<Secret>(&doc, &file),
            "Service" => round_trip::<Service>(&doc, &file),
            "Deployment" => round_trip::<Deployment>(&doc, &file),
            "DaemonSet" => round_trip::<DaemonSet>(&doc, &file),
            "Role" => round_trip::<Role>(&doc, &file),
            "ClusterRole" => round_trip::<ClusterRole>(&doc, &file),
            "RoleBinding" => round_trip::<RoleBinding>(&doc, &file),
            "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(&doc, &file),
            other => panic!("{}: no typed check for kind {other:?}", file.display()),
        }
        kinds.insert(kind);
    }
    for needed in [
        "Deployment",
        "Service",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Secret",
    ] {
        assert!(
            kinds.contains(needed),
            "no {needed} in deploy/kubernetes: {kinds:?}"
        );
    }
}

/// The Role grants what the `kubernetes` rollback action calls (get and patch the Deployment,
/// list ReplicaSets) and nothing more.
#[test]
fn the_rollback_role_grants_exactly_what_the_action_needs() {
    let role = manifests()
        .into_iter()
        .find(|(_, d)| d["kind"] == "Role")
        .map(|(_, d)| serde_json::from_value::<Role>(d).unwrap())
        .unwrap();
    let mut granted: Vec<(String, String)> = Vec::new();
    for rule in role.rules.unwrap() {
        assert_eq!(rule.api_groups.as_deref(), Some(&["apps".to_owned()][..]));
        for resource in rule.resources.unwrap() {
            for verb in &rule.verbs {
                granted.push((resource.clone(), verb.clone()));
            }
        }
    }
    granted.sort();
    let expected: Vec<(String, String)> = [
        ("deployments", "get"),
        ("deployments", "patch"),
        ("replicasets", "list"),
    ]
    .iter()
    .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(granted, expected);
}

/// `--flag` words following a postflight binary's name, from container args, ExecStart lines
/// and the Dockerfile's CMD.
fn flags_used() -> Vec<(String, String, String)> {
    let mut used = Vec::new();
    let mut note = |file: &Path, binary: &str, words: &[String]| {
        for w in words {
            if let Some(flag) = w.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap_or_default();
                used.push((
                    file.display().to_string(),
                    binary.to_owned(),
                    format!("--{flag}"),
                ));
            }
        }
    };
    for (file, doc) in manifests() {
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for c in containers {
            let args: Vec<String> = c["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(binary) = args.first().filter(|a| a.starts_with("postflight")) {
                note(&file, binary, &args[1..]);
            }
        }
    }
    let mut texts: Vec<PathBuf> = std::fs::read_dir(deploy().join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    texts.push(deploy().join("Dockerfile"));
    for file in texts {
        let text = std::fs::read_to_string(&file).unwrap().replace("\\\n", " ");
        for line in text
            .lines()
            .filter(|l| l.starts_with("ExecStart=") || l.starts_with("CMD"))
        {
            let words: Vec<String> = line
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '[' || c == ']')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(at) = words.iter().position(|w| w.contains("postflight-")) {
                let binary = words[at].rsplit('/').next().unwrap().to_owned();
                note(&file, &binary, &words[at + 1..]);
            }
        }
    }
    used
}

#[test]
fn every_flag_in_the_deployment_files_exists() {
    let used = flags_used();
    assert!(used.len() > 20, "{used:?}");
    let mut helps = std::collections::BTreeMap::new();
    for (file, binary, flag) in &used {
        let help = helps.entry(binary.clone()).or_insert_with(|| {
            let out = std::process::Command::new(bin(binary))
                .arg("--help")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{file}: {binary} has no flag {flag}"
        );
    }
    let binaries: BTreeSet<&String> = used.iter().map(|(_, b, _)| b).collect();
    assert!(binaries.len() >= 2, "{binaries:?}");
}

/// The files work together: the coordinator requires client certificates, so every probe
/// they start presents one (the sidecar once did not), and probes in Kubernetes take names
/// under their region's certificate name.
#[test]
fn every_probe_presents_what_the_coordinator_requires() {
    let used = flags_used();
    let coordinators: BTreeSet<&String> = used
        .iter()
        .filter(|(_, b, f)| b == "postflight-coordinator" && f == "--tls-client-ca")
        .map(|(file, _, _)| file)
        .collect();
    assert!(!coordinators.is_empty(), "the examples use mutual TLS");
    let probe_files: BTreeSet<&String> = used
        .iter()
        .filter(|(_, b, _)| b == "postflight-probe")
        .map(|(file, _, _)| file)
        .collect();
    assert!(probe_files.len() >= 3, "{probe_files:?}");
    for file in probe_files {
        for flag in ["--tls-ca", "--tls-cert", "--tls-key"] {
            assert!(
                used.iter()
                    .any(|(f, b, g)| f == file && b == "postflight-probe" && g == flag),
                "{file}: the probe has no {flag}, but the coordinator requires client certificates"
            );
        }
    }
    for (file, doc) in manifests() {
        for c in doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if c["args"][0] != "postflight-probe" {
                continue;
            }
            let name = c["env"]
                .as_array()
                .and_then(|env| env.iter().find(|e| e["name"] == "POSTFLIGHT_PROBE_NAME"))
                .and_then(|e| e["value"].as_str())
                .unwrap_or_else(|| panic!("{}: no POSTFLIGHT_PROBE_NAME value", file.display()));
            assert!(
                name.starts_with("$(POD_NAME).") && name.ends_with(".probes"),
                "{}: {name}",
                file.display()
            );
        }
    }
}

/// The multi-replica variant holds together: several replicas, each with a name of its own
/// (the owner of its runs), the database URL from the Secret the folder defines (PostgreSQL:
/// SQLite cannot be shared), no volume, one data key for all, a disruption budget that
/// covers the Deployment's pods, and the single coordinator's Service.
#[test]
fn the_replicated_coordinator_shares_postgresql_and_keeps_replicas_apart() {
    let docs: Vec<(PathBuf, Value)> = manifests()
        .into_iter()
        .filter(|(file, _)| file.parent().is_some_and(|d| d.ends_with("replicated")))
        .collect();
    let find = |kind: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes/replicated"))
    };
    let deployment = find("Deployment");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_ne!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_null())
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "postflight-coordinator");
    assert!(args.contains(&"--name=$(POD_NAME)"), "{args:?}");
    assert!(
        args.iter().all(|a| !a.starts_with("--database")),
        "the URL comes from the Secret, not the command line: {args:?}"
    );
    assert!(
        args.iter().any(|a| a.starts_with("--data-key-file=")),
        "{args:?}"
    );
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))
    };
    assert_eq!(
        var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    let url = &var("POSTFLIGHT_DATABASE")["valueFrom"]["secretKeyRef"];
    let secret = find("Secret");
    assert_eq!(url["name"], secret["metadata"]["name"]);
    let placeholder = secret["stringData"][url["key"].as_str().unwrap()]
        .as_str()
        .unwrap();
    assert!(placeholder.starts_with("postgres://"), "{placeholder}");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let budget = find("PodDisruptionBudget");
    for (key, value) in budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[key], value,
            "the budget covers the coordinator's pods"
        );
    }
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    // The same Service as the single coordinator's: whatever routes probes and operators to
    // it (an ingress, a load balancer) works unchanged.
    let service = find("Service");
    let single = manifests()
        .into_iter()
        .find(|(file, d)| file.ends_with("kubernetes/coordinator.yaml") && d["kind"] == "Service")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(service["metadata"], single["metadata"]);
    assert_eq!(service["spec"], single["spec"]);
}
