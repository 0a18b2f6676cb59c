//! The status page: server-rendered HTML, no script, no build step. It refreshes itself with a
//! `<meta http-equiv="refresh">`, so it works in any browser and in terminals' text browsers.
//! Pure functions from records to HTML; every value from outside is escaped.

use std::fmt::Write;

use postflight_plan::Report;
use postflight_plan::report::LatencySummary;
use postflight_plan::rollback::RollbackReport;

use crate::storage::{FeedbackRecord, ProbeRecord, RunRecord};

/// Seconds between refreshes.
const REFRESH_S: u32 = 5;

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;color:#1d232a}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #dde1e6;vertical-align:top}
th{font-weight:600;background:#f4f6f8}.muted{color:#5d6873}code{font-size:.9em}
.PASS,.pass,.yes,.succeeded{color:#116329;font-weight:600}.WARN,.warn{color:#8a5a00;font-weight:600}
.FAIL,.fail,.failed{color:#b42318;font-weight:600}.INCONCLUSIVE,.no,.missing{color:#5d6873;font-weight:600}
";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}\n\
         <p class=\"muted\">Refreshes every {REFRESH_S} s · <a href=\"/\">overview</a> · \
         <a href=\"/metrics\">metrics</a></p>\n</body></html>\n",
        escape(title)
    )
}

fn time(ms: i64) -> String {
    postflight_plan::report::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
}

fn ago(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

fn cell(class: &str, text: &str) -> String {
    format!("<td class=\"{}\">{}</td>", escape(class), escape(text))
}

fn rollback_of(record: &RunRecord) -> Option<RollbackReport> {
    record
        .rollback_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
}

/// The overview: probes, recent runs, and the rollback audit of those runs.
pub fn overview(
    probes: &[(ProbeRecord, bool)],
    more_probes: bool,
    runs: &[(RunRecord, u32)],
    feedback: &[FeedbackRecord],
    now_ms: i64,
) -> String {
    let mut body = String::new();
    let connected = probes.iter().filter(|(_, c)| *c).count();
    let _ = write!(
        body,
        "<h1>postflight coordinator</h1><p class=\"muted\">{connected} of {}{} probes connected · {} recent runs</p>",
        if more_probes { "the first " } else { "" },
        probes.len(),
        runs.len()
    );
    body.push_str("<h2 id=\"probes\">Probes</h2>");
    if probes.is_empty() {
        body.push_str("<p class=\"muted\">No probe has connected yet.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Probe</th><th>Region</th><th>Connected</th><th>Last seen</th><th>Version</th><th>Labels</th></tr></thead><tbody>");
        for (p, up) in probes {
            let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(
                body,
                "<tr>{}{}{}{}{}{}</tr>",
                cell("", &p.name),
                cell("", &p.region),
                if *up {
                    cell("yes", "yes")
                } else {
                    cell("no", "no")
                },
                cell("muted", &ago(now_ms, p.last_seen_ms)),
                cell("muted", &p.version),
                cell("muted", &labels.join(", ")),
            );
        }
        body.push_str("</tbody></table>");
        if more_probes {
            body.push_str("<p class=\"muted\">More probes follow: <code>postflight probes</code> lists them all.</p>");
        }
    }
    body.push_str("<h2 id=\"runs\">Recent runs</h2>");
    if runs.is_empty() {
        body.push_str("<p class=\"muted\">No run yet: <code>postflight run PLAN --coordinator URL</code>.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Run</th><th>Plan</th><th>Status</th><th>Verdict</th><th>Regions</th><th>Migration</th><th>Created</th><th>Rollback</th></tr></thead><tbody>");
        for (r, _) in runs {
            let migration = match (&r.migration, &r.stage) {
                (Some(m), Some(s)) => format!("{m} @ {s}"),
                (Some(m), None) => m.clone(),
                _ => "—".to_owned(),
            };
            let verdict = r.verdict.clone().unwrap_or_else(|| "—".to_owned());
            let rollback = rollback_of(r).map_or_else(
                || "—".to_owned(),
                |rb| match (&rb.outcome, rb.recommended) {
                    (Some(outcome), _) => outcome.as_str().to_owned(),
                    (None, true) => "recommended".to_owned(),
                    (None, false) => "not needed".to_owned(),
                },
            );
            let _ = write!(
                body,
                "<tr><td><a href=\"/runs/{id}\"><code>{id}</code></a></td>{}{}{}{}{}{}{}</tr>",
                cell("", &r.plan_name),
                cell("muted", r.status.as_str()),
                cell(&verdict, &verdict),
                cell("", &r.regions.join(", ")),
                cell("", &migration),
                cell("muted", &time(r.created_ms)),
                cell(&rollback, &rollback),
                id = escape(&r.run_id),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2 id=\"rollbacks\">Rollback audit</h2>");
    let decisions: Vec<(&RunRecord, RollbackReport)> = runs
        .iter()
        .filter_map(|(r, _)| rollback_of(r).map(|rb| (r, rb)))
        .filter(|(_, rb)| rb.recommended || rb.outcome.is_some())
        .collect();
    if decisions.is_empty() {
        body.push_str("<p class=\"muted\">No rollback was recommended in these runs.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Run</th><th>Plan</th><th>Reasons</th><th>Action</th><th>Outcome</th><th>Executed by</th></tr></thead><tbody>");
        for (r, rb) in decisions {
            let outcome = rb.outcome.map_or("—", |o| o.as_str());
            let _ = write!(
                body,
                "<tr><td><a href=\"/runs/{id}\"><code>{id}</code></a></td>{}{}{}{}{}</tr>",
                cell("", &r.plan_name),
                cell("", &rb.reasons.join("; ")),
                cell("muted", rb.action.as_deref().unwrap_or("—")),
                cell(outcome, outcome),
                cell("muted", rb.executed_by.as_deref().unwrap_or("—")),
                id = escape(&r.run_id),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2 id=\"feedback\">Feedback about migrations</h2>");
    if feedback.is_empty() {
        body.push_str("<p class=\"muted\">No feedback yet: <code>postflight feedback MIGRATION \"what you saw\"</code> or <code>POST /api/v1/feedback</code>.</p>");
    } else {
        body.push_str("<table><thead><tr><th>Migration</th><th>Kind</th><th>Feedback</th><th>Source</th><th>When</th></tr></thead><tbody>");
        for f in feedback {
            let kind = if f.kind == "regression" { "FAIL" } else { "" };
            let _ = write!(
                body,
                "<tr>{}{}{}{}{}</tr>",
                cell("", &f.migration),
                cell(kind, &f.kind),
                cell("", &f.text),
                cell(
                    "muted",
                    if f.source.is_empty() {
                        "—"
                    } else {
                        &f.source
                    }
                ),
                cell("muted", &time(f.created_ms)),
            );
        }
        body.push_str("</tbody></table>");
    }
    page("postflight", &body)
}

fn latency(l: Option<&LatencySummary>) -> String {
    l.map_or_else(String::new, |l| {
        format!(
            "p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms",
            l.p50, l.p95, l.p99
        )
    })
}

/// One run: its verdict, the per-region table of its checks with latency percentiles, and its
/// rollback decision.
pub fn run(record: &RunRecord, report: Option<&Report>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Run <code>{}</code></h1><p class=\"muted\">plan {} · {} · created {}{}</p>",
        escape(&record.run_id),
        escape(&record.plan_name),
        escape(record.status.as_str()),
        escape(&time(record.created_ms)),
        match (&record.migration, &record.stage) {
            (Some(m), Some(s)) => format!(" · migration {} · stage {}", escape(m), escape(s)),
            (Some(m), None) => format!(" · migration {}", escape(m)),
            _ => String::new(),
        },
    );
    if let Some(forced) = &record.forced {
        let _ = write!(
            body,
            "<p class=\"WARN\">Stage gate overridden with --force: {}</p>",
            escape(forced)
        );
    }
    let Some(report) = report else {
        body.push_str("<p>The run has not ended yet; its report appears here when it does.</p>");
        return page(&format!("run {}", record.run_id), &body);
    };
    let overall = report.status.as_str();
    let _ = write!(
        body,
        "<p class=\"{}\">{}</p>",
        escape(overall),
        escape(&report.summary),
    );
    body.push_str("<h2>Checks by region</h2><table><thead><tr><th>Check</th><th>Status</th>");
    for region in &report.regions {
        let _ = write!(body, "<th>{}</th>", escape(region));
    }
    body.push_str("</tr></thead><tbody>");
    for check in &report.checks {
        let status = check.status.as_str();
        let _ = write!(
            body,
            "<tr><td>{}<br><span class=\"muted\">{}</span></td>{}",
            escape(&check.name),
            escape(&check.message),
            cell(status, status),
        );
        for region in &report.regions {
            match check.regions.get(region) {
                Some(r) => {
                    let s = r.status.as_str();
                    let _ = write!(
                        body,
                        "<td><span class=\"{c}\">{c}</span><br><span class=\"muted\">{}</span></td>",
                        escape(&latency(r.latency_ms.as_ref())),
                        c = escape(s)
                    );
                }
                None => body.push_str("<td class=\"missing\">missing</td>"),
            }
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table>");
    let rb = &report.rollback;
    body.push_str("<h2>Rollback</h2>");
    if rb.recommended || rb.outcome.is_some() {
        let _ = write!(
            body,
            "<p>{}Action: <code>{}</code></p><ul>",
            if rb.dry_run { "Dry run. " } else { "" },
            escape(rb.action.as_deref().unwrap_or("none configured")),
        );
        for reason in &rb.reasons {
            let _ = write!(body, "<li>{}</li>", escape(reason));
        }
        let _ = write!(
            body,
            "</ul><p>Outcome: <span class=\"{o}\">{o}</span>{}</p>",
            rb.error
                .as_deref()
                .map(|e| format!(" — {}", escape(e)))
                .unwrap_or_default(),
            o = escape(rb.outcome.map_or("none", |o| o.as_str()))
        );
        if let Some(detail) = &rb.detail {
            let _ = write!(body, "<p class=\"muted\">{}</p>", escape(detail));
        }
    } else {
        body.push_str("<p class=\"muted\">No trigger fired.</p>");
    }
    if !rb.held_back.is_empty() {
        body.push_str("<p>Held back:</p><ul>");
        for why in &rb.held_back {
            let _ = write!(body, "<li>{}</li>", escape(why));
        }
        body.push_str("</ul>");
    }
    page(&format!("run {}", record.run_id), &body)
}

/// An error, as a page.
pub fn error(message: &str) -> String {
    page(
        "postflight: error",
        &format!("<h1>Error</h1><p>{}</p>", escape(message)),
    )
}

#[cfg(test)]
mod tests;
