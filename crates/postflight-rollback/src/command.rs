//! Running a program: the `command` and `kubectl` actions.

use std::process::Stdio;
use std::time::Duration;

use crate::ActionError;

/// Keeps the end of a long output: the error is usually there.
const OUTPUT_TAIL: usize = 2_000;

/// Runs `argv` with extra environment; `Ok` with its output when it exits 0.
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<String, ActionError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ActionError::EmptyCommand);
    };
    let shown = argv.join(" ");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ActionError::ProgramNotFound {
            program: program.clone(),
        },
        std::io::ErrorKind::PermissionDenied => ActionError::NotExecutable {
            program: program.clone(),
        },
        _ => ActionError::CannotStart {
            command: shown.clone(),
            reason: e.to_string(),
        },
    })?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ActionError::ProgramTimedOut {
            command: shown.clone(),
            limit: postflight_plan::duration::PlanDuration(timeout),
        })?
        .map_err(|e| ActionError::CannotStart {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
    let stdout = tail(&String::from_utf8_lossy(&output.stdout));
    let stderr = tail(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(if stdout.is_empty() {
            format!("`{shown}` succeeded")
        } else {
            format!("`{shown}`: {stdout}")
        })
    } else {
        let ending = output.status.code().map_or_else(
            || "was killed by a signal".to_owned(),
            |c| format!("exited with {c}"),
        );
        Err(ActionError::ProgramFailed {
            command: shown,
            ending,
            output: if stderr.is_empty() { stdout } else { stderr },
        })
    }
}

fn tail(text: &str) -> String {
    let text = text.trim();
    let count = text.chars().count();
    if count <= OUTPUT_TAIL {
        return text.to_owned();
    }
    let cut: String = text.chars().skip(count - OUTPUT_TAIL).collect();
    format!("…{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn success_failure_missing_and_hanging_programs() {
        let ok = run(
            &["sh".into(), "-c".into(), "echo rolled back $WHO".into()],
            &[("WHO".into(), "web".into())],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            ok.unwrap(),
            "`sh -c echo rolled back $WHO`: rolled back web"
        );
        let failed = run(
            &["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
            &[],
            Duration::from_secs(5),
        )
        .await;
        let failed = failed.unwrap_err();
        assert!(
            matches!(&failed, ActionError::ProgramFailed { ending, .. } if ending == "exited with 3")
        );
        assert_eq!(
            failed.to_string(),
            "`sh -c echo nope >&2; exit 3` exited with 3: nope"
        );
        let missing = run(&["no-such-program-xyz".into()], &[], Duration::from_secs(5)).await;
        assert_eq!(
            missing.unwrap_err().to_string(),
            "`no-such-program-xyz` was not found (is it installed and on PATH?)"
        );
        let slow = run(
            &["sleep".into(), "5".into()],
            &[],
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(
            slow.unwrap_err().to_string(),
            "`sleep 5` did not finish within 200ms and was killed"
        );
        assert_eq!(
            run(&[], &[], Duration::from_secs(1)).await.unwrap_err(),
            ActionError::EmptyCommand
        );
    }
}
