//! Printing reports: a table readable at a glance for people, the contract's JSON for scripts.

use std::io::IsTerminal;

use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};
use postflight_plan::baseline::{BaselineReport, Decision};
use postflight_plan::report::{LatencySummary, Report};
use postflight_plan::{CheckStatus, Overall};

use crate::cli::Output;

/// Whether to colour output on stdout: only on a terminal, and never with `NO_COLOR` set.
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The report in the requested format, ending with a newline.
pub fn report(report: &Report, output: Output, color: bool) -> String {
    match output {
        Output::Json => {
            let mut text = serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode the report: {e}\"}}"));
            text.push('\n');
            text
        }
        Output::Table => table(report, color),
    }
}

fn status_cell(status: CheckStatus, color: bool) -> Cell {
    let text = status.as_str().to_uppercase();
    let cell = Cell::new(text);
    if !color {
        return cell;
    }
    let shade = match status {
        CheckStatus::Pass => Color::Green,
        CheckStatus::Warn => Color::Yellow,
        CheckStatus::Fail => Color::Red,
        CheckStatus::Inconclusive => Color::Magenta,
    };
    cell.fg(shade).add_attribute(Attribute::Bold)
}

fn paint(text: &str, overall: Overall, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match overall {
        Overall::Pass => "32",
        Overall::Warn => "33",
        Overall::Fail => "31",
        Overall::Inconclusive => "35",
    };
    format!("\x1b[1;{code}m{text}\x1b[0m")
}

/// `12.1 ms` for one request, `p50 10.2 ms · p95 41 ms` for several.
pub fn latency_text(latency: Option<&LatencySummary>) -> String {
    match latency {
        None => "—".to_owned(),
        Some(l) if l.count == 1 => ms(l.p50),
        Some(l) => format!("p50 {} · p95 {}", ms(l.p50), ms(l.p95)),
    }
}

/// Milliseconds for people.
pub fn ms(value: f64) -> String {
    postflight_plan::duration::human_duration(std::time::Duration::from_secs_f64(
        (value / 1e3).max(0.0),
    ))
}

fn table(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let regions = if report.regions.is_empty() {
        "no region reported".to_owned()
    } else {
        format!("region {}", report.regions.join(", "))
    };
    let migration = match (&report.migration, &report.stage) {
        (Some(m), Some(s)) => format!(" · migration {m} · stage {s}"),
        (Some(m), None) => format!(" · migration {m}"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "plan {} · run {} · {regions}{migration}\n",
        report.plan, report.run_id
    ));
    if let Some(forced) = &report.forced {
        out.push_str(&format!("stage gate overridden with --force: {forced}\n"));
    }
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["STATUS", "CHECK", "SEVERITY", "LATENCY", "DETAILS"]);
    if !std::io::stdout().is_terminal() {
        // Logs and pipes have no width: never wrap, so every line stays greppable.
        table.force_no_tty();
    }
    for check in &report.checks {
        table.add_row(vec![
            status_cell(check.status, color),
            Cell::new(&check.name),
            Cell::new(check.severity.as_str()),
            Cell::new(latency_text(check.latency_ms.as_ref())),
            Cell::new(&check.message),
        ]);
    }
    for line in table.to_string().lines() {
        // Padding of the last column only adds trailing blanks to logs.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    if report.regions.len() > 1 {
        out.push_str(&region_matrix(report, color));
        out.push('\n');
    }
    if let Some(baseline) = &report.baseline {
        out.push_str(&compared(baseline));
        out.push('\n');
    }
    if !report.feedback.is_empty() {
        out.push_str(&format!(
            "feedback about migration {}:\n",
            report.migration.as_deref().unwrap_or("—")
        ));
        for f in &report.feedback {
            let source = if f.source.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.source)
            };
            out.push_str(&format!(
                "  {:<10} {}{source} · {}\n",
                f.kind.as_str(),
                f.text,
                f.created_at
            ));
        }
        out.push('\n');
    }
    let r = &report.requests;
    if r.count > 0 {
        let mut line = format!(
            "requests {} · failed {} ({:.1}%)",
            r.count,
            r.errors,
            r.error_rate * 100.0
        );
        if let Some(l) = &r.latency_ms {
            line.push_str(&format!(
                " · p50 {} · p95 {} · p99 {} · max {}",
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.max)
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "passed {} · failed {} · warnings {} · inconclusive {}\n",
        report.passed, report.failed, report.warnings, report.inconclusive
    ));
    let rb = &report.rollback;
    if rb.recommended {
        out.push_str(&format!(
            "rollback recommended: {}\n",
            rb.reasons.join("; ")
        ));
        match (&rb.action, &rb.outcome) {
            (Some(action), Some(outcome)) => {
                out.push_str(&format!("rollback action: {action} → {outcome}\n"))
            }
            (Some(action), None) => {
                out.push_str(&format!("rollback action (not executed): {action}\n"))
            }
            (None, _) => {}
        }
        if let (Some(detail), Some(_)) = (&rb.detail, &rb.outcome) {
            out.push_str(&format!("  {detail}\n"));
        }
        if let Some(error) = &rb.error {
            out.push_str(&format!("rollback error: {error}\n"));
        }
    }
    for why in &rb.held_back {
        out.push_str(&format!("held back: {why}\n"));
    }
    out.push_str(&paint(&report.summary, report.status, color));
    out.push('\n');
    out
}

/// The comparison with a baseline: one line per check and region, the decision first.
fn compared(b: &BaselineReport) -> String {
    let migration = b
        .migration
        .as_ref()
        .map(|m| format!(", migration {m}"))
        .unwrap_or_default();
    let mut out = format!(
        "compared with baseline {} (taken {}{migration}; fails beyond {:+.0}% latency or {:+.1} points of errors at p < {}):\n",
        b.baseline_id,
        b.created_at,
        b.max_latency_increase * 100.0,
        b.max_error_rate_increase * 100.0,
        b.significance
    );
    if b.comparisons.is_empty() {
        out.push_str("  no check measured in both runs\n");
    }
    for c in b
        .comparisons
        .iter()
        .filter(|c| c.decision != Decision::Inconclusive)
    {
        let decision = if c.decision == Decision::Worse {
            "WORSE"
        } else {
            "SAME"
        };
        out.push_str(&format!(
            "  {decision:<6} {} · {}: {}\n",
            c.check, c.region, c.reason
        ));
    }
    // Checks that cannot be compared (an http check makes one request per run) in one line.
    let mut unsure: Vec<&str> = Vec::new();
    for c in b
        .comparisons
        .iter()
        .filter(|c| c.decision == Decision::Inconclusive)
    {
        if !unsure.contains(&c.check.as_str()) {
            unsure.push(&c.check);
        }
    }
    if !unsure.is_empty() {
        out.push_str(&format!(
            "  UNSURE {}: too few samples on one side to compare (at least {} needed); the report's JSON has the figures\n",
            unsure.join(", "),
            b.min_samples
        ));
    }
    out
}

/// Checks down, regions across: each cell the region's status and latency.
fn region_matrix(report: &Report, color: bool) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    let mut header = vec![Cell::new("PER REGION")];
    header.extend(report.regions.iter().map(Cell::new));
    table.set_header(header);
    for check in &report.checks {
        let mut row = vec![Cell::new(&check.name)];
        for region in &report.regions {
            row.push(match check.regions.get(region) {
                None => Cell::new("—"),
                Some(r) => {
                    let latency = r
                        .latency_ms
                        .as_ref()
                        .map(|l| format!(" {}", ms(l.p95)))
                        .unwrap_or_default();
                    let text = format!("{}{latency}", r.status.as_str().to_uppercase());
                    let cell = Cell::new(text);
                    if color {
                        let shade = match r.status {
                            CheckStatus::Pass => Color::Green,
                            CheckStatus::Warn => Color::Yellow,
                            CheckStatus::Fail => Color::Red,
                            CheckStatus::Inconclusive => Color::Magenta,
                        };
                        cell.fg(shade)
                    } else {
                        cell
                    }
                }
            });
        }
        table.add_row(row);
    }
    let mut out = String::new();
    for line in table.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A plain table (for probe and run lists), without trailing blanks.
pub fn simple_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    if rows.is_empty() {
        return format!("{}\n(none)\n", header.join("  "));
    }
    for row in rows {
        table.add_row(row);
    }
    let mut out = String::new();
    for line in table.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_cells() {
        assert_eq!(latency_text(None), "—");
        let one = LatencySummary {
            count: 1,
            p50: 12.3,
            p95: 12.3,
            p99: 12.3,
            max: 12.3,
        };
        assert_eq!(latency_text(Some(&one)), "12.3 ms");
        let many = LatencySummary {
            count: 5,
            p50: 10.0,
            p95: 3410.0,
            p99: 3410.0,
            max: 3410.0,
        };
        assert_eq!(latency_text(Some(&many)), "p50 10.0 ms · p95 3.41 s");
    }
}
