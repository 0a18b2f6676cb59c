//! The `kubectl` action: the seed article's `kubectl rollout undo`.

use postflight_plan::model::KubeTarget;
use postflight_plan::vars::Lookup;

/// `kubectl rollout undo deployment/<deployment> -n <namespace>`, with the plan's names, else
/// `$K8S_DEPLOYMENT` / `$K8S_NAMESPACE`, else `agent-backend` / `default`.
pub fn argv(target: &KubeTarget, env: &dyn Lookup) -> Vec<String> {
    let (deployment, namespace) = target.resolve(env);
    vec![
        "kubectl".into(),
        "rollout".into(),
        "undo".into(),
        format!("deployment/{deployment}"),
        "-n".into(),
        namespace,
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_come_from_the_plan_then_the_environment_then_the_seed_defaults() {
        let none: HashMap<String, String> = HashMap::new();
        assert_eq!(
            argv(&KubeTarget::default(), &none),
            [
                "kubectl",
                "rollout",
                "undo",
                "deployment/agent-backend",
                "-n",
                "default"
            ]
        );
        let env = HashMap::from([
            ("K8S_DEPLOYMENT".to_owned(), "web".to_owned()),
            ("K8S_NAMESPACE".to_owned(), "prod".to_owned()),
        ]);
        assert_eq!(
            argv(&KubeTarget::default(), &env)[3..],
            ["deployment/web", "-n", "prod"]
        );
        let own = KubeTarget {
            deployment: Some("api".into()),
            namespace: None,
        };
        assert_eq!(argv(&own, &env)[3..], ["deployment/api", "-n", "prod"]);
    }
}
