//! kubectl's `rollout undo` algorithm, as pure code over API objects: find the deployment's
//! previous revision, refuse a paused deployment, do nothing when the template already
//! matches, else patch the previous template (and its annotations) back in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};

/// The annotation holding a ReplicaSet's revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the controller adds to each ReplicaSet's template.
const HASH_LABEL: &str = "pod-template-hash";
/// Deployment annotations kubectl keeps, and ReplicaSet annotations it does not copy.
const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What the undo will do.
#[derive(Debug, Clone, PartialEq)]
pub enum UndoPlan {
    /// The deployment already runs the previous revision's template.
    AlreadyCurrent {
        /// The previous revision.
        revision: i64,
    },
    /// Apply this JSON patch (RFC 6902) to the deployment.
    Patch {
        /// The revision rolled back to.
        revision: i64,
        /// The patch operations.
        patch: Value,
    },
}

/// Plans the undo of `deployment` given the ReplicaSets in its namespace.
pub fn plan_undo(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Result<UndoPlan, String> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let spec = &deployment.spec;
    if spec.paused == Some(true) {
        return Err(format!(
            "deployment {name} is paused: kubectl refuses to roll back a paused deployment; resume it first (kubectl rollout resume deployment/{name})"
        ));
    }
    let uid = deployment.metadata.uid.as_deref();
    let owned = replica_sets.iter().filter(|rs| {
        rs.metadata.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true) && o.kind == "Deployment" && Some(o.uid.as_str()) == uid
        })
    });
    // kubectl's rule: the highest revision is the current one, the next highest the previous.
    let mut latest: Option<(i64, &ReplicaSet)> = None;
    let mut previous: Option<(i64, &ReplicaSet)> = None;
    for rs in owned {
        let Some(revision) = rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .and_then(|r| r.parse::<i64>().ok())
        else {
            continue;
        };
        if latest.is_none_or(|(l, _)| l < revision) {
            previous = latest;
            latest = Some((revision, rs));
        } else if previous.is_none_or(|(p, _)| p < revision) {
            previous = Some((revision, rs));
        }
    }
    let Some((revision, rs)) = previous else {
        return Err(format!(
            "no rollout history found for deployment {name}: there is no previous revision to go back to"
        ));
    };
    let mut template =
        rs.spec.template.clone().ok_or_else(|| {
            format!("revision {revision} of deployment {name} has no pod template")
        })?;
    without_hash(&mut template);
    let mut current = spec.template.clone();
    without_hash(&mut current);
    if to_json(&template) == to_json(&current) {
        return Ok(UndoPlan::AlreadyCurrent { revision });
    }
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    if let Some(own) = &deployment.metadata.annotations {
        for key in SKIPPED_ANNOTATIONS {
            if let Some(v) = own.get(*key) {
                annotations.insert((*key).to_owned(), v.clone());
            }
        }
    }
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let patch = json!([
        {"op": "replace", "path": "/spec/template", "value": to_json(&template)},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]);
    Ok(UndoPlan::Patch { revision, patch })
}

fn without_hash(template: &mut PodTemplateSpec) {
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
    }
}

fn to_json(template: &PodTemplateSpec) -> Value {
    serde_json::to_value(template).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
