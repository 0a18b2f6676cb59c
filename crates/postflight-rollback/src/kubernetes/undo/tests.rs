//! The undo algorithm against API objects recorded from a cluster (tests/fixtures/kube).

use super::*;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = manifest_dir().join("tests/fixtures/kube").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn replica_sets() -> Vec<ReplicaSet> {
    let list: Value = fixture("replicasets.json");
    serde_json::from_value(list["items"].clone()).unwrap()
}

#[test]
fn rolls_back_to_the_previous_revision_without_the_hash_label() {
    let deployment: Deployment = fixture("deployment.json");
    let plan = plan_undo(&deployment, &replica_sets()).unwrap();
    let UndoPlan::Patch { revision, patch } = plan else {
        panic!("{plan:?}")
    };
    assert_eq!(
        revision, 2,
        "revision 3 runs now; 2 is the previous one (1 is older, the other RS is not ours)"
    );
    assert_eq!(patch[0]["op"], "replace");
    assert_eq!(patch[0]["path"], "/spec/template");
    let template = &patch[0]["value"];
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "registry.example.com/agent-backend:1.41.0"
    );
    assert!(
        template["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none()
    );
    assert_eq!(template["metadata"]["labels"]["app"], "agent-backend");
    assert_eq!(patch[1]["path"], "/metadata/annotations");
    let annotations = &patch[1]["value"];
    assert_eq!(
        annotations["kubernetes.io/change-cause"], "deploy 1.41.0",
        "the revision's annotations come back"
    );
    assert_eq!(
        annotations["deployment.kubernetes.io/revision"], "3",
        "the deployment's own revision is kept"
    );
}

#[test]
fn a_paused_deployment_is_refused() {
    let mut deployment: Deployment = fixture("deployment.json");
    deployment.spec.paused = Some(true);
    let err = plan_undo(&deployment, &replica_sets()).unwrap_err();
    assert!(
        err.contains("is paused")
            && err.contains("kubectl rollout resume deployment/agent-backend"),
        "{err}"
    );
}

#[test]
fn nothing_to_do_when_the_previous_template_already_runs() {
    let mut deployment: Deployment = fixture("deployment.json");
    let previous = replica_sets()
        .into_iter()
        .find(|rs| rs.metadata.annotations.as_ref().unwrap()[REVISION] == "2")
        .unwrap();
    deployment.spec.template = previous.spec.template.unwrap();
    assert_eq!(
        plan_undo(&deployment, &replica_sets()).unwrap(),
        UndoPlan::AlreadyCurrent { revision: 2 }
    );
}

#[test]
fn without_history_there_is_nothing_to_undo() {
    let deployment: Deployment = fixture("deployment.json");
    let only_current: Vec<ReplicaSet> = replica_sets()
        .into_iter()
        .filter(|rs| rs.metadata.annotations.as_ref().unwrap()[REVISION] == "3")
        .collect();
    let err = plan_undo(&deployment, &only_current).unwrap_err();
    assert!(
        err.starts_with("no rollout history found for deployment agent-backend"),
        "{err}"
    );
}

/// This crate's directory, read when the test runs: a test binary built in another clone that
/// shares the target directory carries that clone's compile-time path.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}
