//! The `kubernetes` action: `kubectl rollout undo` through the Kubernetes API with kube-rs,
//! for coordinators that run in a cluster without a kubectl binary. Configuration comes from
//! the pod's service account in a cluster, else from the kubeconfig (`$KUBECONFIG`,
//! `~/.kube/config`). It needs get/list on replicasets and get/patch on deployments.

mod undo;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use postflight_plan::model::KubeTarget;
use postflight_plan::vars::Lookup;

pub use undo::{REVISION, UndoPlan, plan_undo};

use crate::ActionError;

/// Undoes the last rollout of the target deployment, within `timeout`.
pub async fn undo(
    target: &KubeTarget,
    env: &dyn Lookup,
    timeout: Duration,
) -> Result<String, ActionError> {
    let (name, namespace) = target.resolve(env);
    tokio::time::timeout(timeout, undo_inner(&name, &namespace))
        .await
        .map_err(|_| ActionError::KubernetesTimedOut {
            limit: postflight_plan::duration::PlanDuration(timeout),
        })?
        .map_err(ActionError::Kubernetes)
}

async fn undo_inner(name: &str, namespace: &str) -> Result<String, String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration (in-cluster or kubeconfig): {e}"))?;
    undo_with(config, name, namespace).await
}

/// The undo with an explicit client configuration (the API server to talk to).
pub async fn undo_with(
    config: kube::Config,
    name: &str,
    namespace: &str,
) -> Result<String, String> {
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot create the Kubernetes client: {e}"))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get(name).await.map_err(|e| {
        format!(
            "cannot read deployment {namespace}/{name}: {}",
            api_error(&e)
        )
    })?;
    let selector = deployment
        .spec
        .selector
        .match_labels
        .as_ref()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client, namespace);
    let list = replica_sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            format!(
                "cannot list the replica sets of {namespace}/{name}: {}",
                api_error(&e)
            )
        })?;
    match plan_undo(&deployment, &list.items)? {
        UndoPlan::AlreadyCurrent { revision } => Ok(format!(
            "deployment {namespace}/{name} already runs the template of revision {revision}: nothing to undo"
        )),
        UndoPlan::Patch { revision, patch } => {
            let patch: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| format!("internal error building the patch: {e}"))?;
            deployments
                .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await
                .map_err(|e| {
                    format!(
                        "cannot patch deployment {namespace}/{name}: {}",
                        api_error(&e)
                    )
                })?;
            Ok(format!(
                "deployment {namespace}/{name} rolled back to revision {revision}"
            ))
        }
    }
}

fn api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
