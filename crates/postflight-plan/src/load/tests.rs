use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::vars::Expander;

/// The contract's example plan, verbatim.
const DESIGN_PLAN: &str = r#"name: agent-backend-migration        # required, [a-z0-9][a-z0-9-]*
target:                              # defaults for HTTP-like checks
  base_url: ${AGENT_URL:-http://localhost:8000}
  headers: {Authorization: "Bearer ${AGENT_TOKEN:-}"}
  timeout: 30s
checks:                              # required, at least one, names unique
  - name: agent-responds
    description: Send a hello message and verify a response
    severity: critical               # critical (default) | warning
    timeout: 10s                     # optional; default target.timeout, else 30s
    http:
      method: POST                   # default GET
      url: /api/agent/chat           # absolute, or relative to target.base_url
      json: {message: "Hello, what can you help me with?"}   # or body: "raw"
      expect:
        status: 200                  # number or list; default any 2xx
        json:                        # JSONPath (RFC 9535) assertions, all must hold
          - {path: $.response, min_length: 11}
        # also: body_contains: [..], body_not_contains: [..], body_regex: "..",
        #       headers: {name: substring}, max_latency: 2s
  - name: tool-calling-works
    http:
      method: POST
      url: /api/agent/chat
      json: {message: "Look up invoice INV-001"}
      expect:
        json: [{path: $.response, contains: INV-001}]
  - name: latency-within-bounds
    severity: warning
    latency:
      request: {method: POST, url: /api/agent/chat, json: {message: Hi}}
      expect_status: 200             # default any 2xx; any other answer or error is a failed request
      max_error_rate: 0              # the check fails when more of its samples failed
      samples: 5
      concurrency: 1
      percentile: 95                 # nearest rank: sorted[ceil(p/100*n)-1]
      pass_below: 3s
      warn_below: 5s                 # omitted: at or above pass_below fails
  - name: database-integrity
    database:
      url: ${DATABASE_URL}           # postgres://… or sqlite:…
      schema: public                 # PostgreSQL only
      tables: [conversations, messages, tool_calls, sessions]
      columns: {messages: [id, conversation_id]}
      indexes: [messages_conversation_id_idx]
      queries: [{sql: "SELECT count(*) FROM sessions", expect: {min: 1}}]
policy:
  max_warnings: 2                    # WARN when warnings > max_warnings
  regions: [us-east, eu-west, ap-south]   # regions that must report; default: every connected probe's region
  quorum: majority                   # regions that must fail for a check to fail: any (1) | majority
                                     # (more than half of the required regions) | all | N
  probes_per_region: 1               # 1 (default; another probe of the region takes over) | all
rollback:
  on_fail: true                      # a FAIL verdict triggers rollback
  error_rate_above: 0.10             # request error rate over the evaluation window
  p99_latency_above: 10s             # request p99, merged over all regions, over the window
  action:
    kubectl: {deployment: agent-backend, namespace: default}  # defaults: $K8S_DEPLOYMENT, $K8S_NAMESPACE
    # or webhook: {url: …, secret: ${ROLLBACK_HMAC_SECRET}}   # POST JSON; header
    #    X-Postflight-Signature: sha256=<hex HMAC-SHA256 of the body>
    # or command: [./rollback.sh, agent-backend]
  dry_run: false
  cooldown: 10m                      # no second rollback of this plan within this time
monitor:                             # continuous validation after the migration
  phases: [{every: 30s, for: 24h}, {every: 5m, for: 7d}]
  window: 5m                         # sliding window for error rate and p99
"#;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_with(source: &str, vars: &[(&str, &str)]) -> Result<Plan, PlanErrors> {
    let env = env(vars);
    parse_plan(source, "plan.yaml", Expander::plan(&env))
}

fn errors(source: &str) -> PlanErrors {
    parse_with(source, &[]).expect_err("the plan should be rejected")
}

/// `line:column: message` of every error.
fn brief(source: &str) -> Vec<String> {
    errors(source)
        .errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect()
}

#[test]
fn the_design_plan_parses_with_every_section() {
    let plan = parse_with(DESIGN_PLAN, &[("DATABASE_URL", "postgres://app:pw@db/app")]).unwrap();
    assert_eq!(plan.name, "agent-backend-migration");
    assert_eq!(
        plan.target.base_url.as_deref(),
        Some("http://localhost:8000")
    );
    assert_eq!(
        plan.target.headers,
        vec![("Authorization".to_owned(), "Bearer ".to_owned())]
    );
    assert_eq!(plan.checks.len(), 4);
    let c0 = &plan.checks[0];
    assert_eq!(c0.timeout, Duration::from_secs(10));
    let CheckKind::Http(http) = &c0.kind else {
        panic!("http")
    };
    assert_eq!(http.request.method, "POST");
    assert_eq!(
        http.request.body,
        Body::Json(json!({"message": "Hello, what can you help me with?"}))
    );
    assert_eq!(http.expect.status, StatusExpect::OneOf(vec![200]));
    assert_eq!(http.expect.json[0].min_length, Some(11));
    let c1 = &plan.checks[1];
    assert_eq!(
        c1.timeout,
        Duration::from_secs(30),
        "inherits target.timeout"
    );
    let CheckKind::Http(http) = &c1.kind else {
        panic!("http")
    };
    assert_eq!(http.expect.status, StatusExpect::Success);
    assert_eq!(http.expect.json[0].contains, Some(json!("INV-001")));
    let CheckKind::Latency(lat) = &plan.checks[2].kind else {
        panic!("latency")
    };
    assert_eq!(plan.checks[2].severity, Severity::Warning);
    assert_eq!((lat.samples, lat.concurrency, lat.percentile), (5, 1, 95.0));
    assert_eq!(lat.pass_below, Duration::from_secs(3));
    assert_eq!(lat.warn_below, Some(Duration::from_secs(5)));
    let CheckKind::Database(db) = &plan.checks[3].kind else {
        panic!("database")
    };
    assert_eq!(db.url, "postgres://app:pw@db/app");
    assert_eq!(db.engine(), DbEngine::Postgres);
    assert_eq!(
        db.columns,
        vec![(
            "messages".to_owned(),
            vec!["id".to_owned(), "conversation_id".to_owned()]
        )]
    );
    assert_eq!(db.queries[0].expect.min, Some(1.0));
    assert_eq!(plan.policy.regions, vec!["us-east", "eu-west", "ap-south"]);
    assert_eq!(plan.policy.quorum, Quorum::Majority);
    let rollback = plan.rollback.as_ref().unwrap();
    assert_eq!(rollback.error_rate_above, Some(0.10));
    assert_eq!(rollback.cooldown, Duration::from_secs(600));
    assert_eq!(
        rollback.action,
        Some(RollbackAction::Kubectl(KubeTarget {
            deployment: Some("agent-backend".into()),
            namespace: Some("default".into())
        }))
    );
    let monitor = plan.monitor.as_ref().unwrap();
    assert_eq!(monitor.phases, Monitor::default_phases());
    assert_eq!(monitor.window, Duration::from_secs(300));
}

#[test]
fn defaults_follow_the_seed_article() {
    let plan = parse_with(
        "name: p\nchecks:\n  - name: l\n    latency: {request: {url: http://h/}}\nrollback: {}\n",
        &[],
    )
    .unwrap();
    let CheckKind::Latency(lat) = &plan.checks[0].kind else {
        panic!()
    };
    assert_eq!((lat.samples, lat.percentile), (5, 95.0));
    assert_eq!(lat.pass_below, Duration::from_secs(3));
    assert_eq!(lat.warn_below, Some(Duration::from_secs(5)));
    assert_eq!(plan.checks[0].timeout, DEFAULT_TIMEOUT);
    assert_eq!(plan.policy.max_warnings, 2);
    let rollback = plan.rollback.unwrap();
    assert!(rollback.on_fail);
    assert_eq!(rollback.error_rate_above, Some(0.10));
    assert_eq!(rollback.p99_latency_above, Some(Duration::from_secs(10)));
    assert_eq!(rollback.action, None);
}

#[test]
fn canonical_plan_round_trips_and_keeps_probe_variables() {
    let source = DESIGN_PLAN.replace("${DATABASE_URL}", "${probe:DATABASE_URL}");
    let plan = parse_with(&source, &[]).unwrap();
    let canonical = serde_saphyr::to_string(&plan).unwrap();
    assert!(canonical.contains("${probe:DATABASE_URL}"), "{canonical}");
    let again = parse_plan(&canonical, "canonical", Expander::none()).unwrap();
    assert_eq!(again, plan);
}

#[test]
fn syntax_error_has_position() {
    let src = "name: p\nchecks:\n  - name: a\n   http: {url: http://h/}\n";
    assert_eq!(
        brief(src),
        ["4:4: while parsing a block collection, did not find expected '-' indicator"]
    );
    insta::assert_snapshot!("syntax_error", errors(src).render());
}

#[test]
fn unknown_keys_are_rejected_where_they_are() {
    let src = "name: p\nchecks:\n  - name: a\n    http:\n      url: http://h/\n      expect: {stauts: 200}\n";
    assert_eq!(
        brief(src),
        [
            "6:16: unknown field `stauts`, expected one of status, json, body_contains, body_not_contains, body_regex, headers, max_latency, tools"
        ]
    );
    insta::assert_snapshot!("unknown_key", errors(src).render());
    assert_eq!(
        brief("name: p\nchecks: []\nrollbak: {}\n")[0],
        "3:1: unknown field `rollbak`, expected one of name, description, target, checks, policy, rollback, monitor, baseline, stages"
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let src = "name: p\nchecks:\n  - name: l\n    latency:\n      request: {url: http://h/}\n      samples: many\n";
    assert_eq!(
        brief(src),
        ["6:16: expected a whole number (0 or more), got `many`"]
    );
    insta::assert_snapshot!("wrong_type", errors(src).render());
    assert_eq!(
        brief("name: p\nchecks:\n  - name: a\n    severity: fatal\n    http: {url: http://h/}\n"),
        ["4:15: unknown variant `fatal`, expected one of critical, warning"]
    );
    assert_eq!(
        brief("name: p\nchecks:\n  - name: a\n    http: {url: http://h/, expect: {status: ok}}\n"),
        [
            "4:37: invalid value: string \"ok\", expected an HTTP status code such as 200, or a list such as [200, 204]"
        ]
    );
}

#[test]
fn missing_fields_are_named() {
    assert_eq!(
        brief("checks:\n  - name: a\n    http: {url: http://h/}\n"),
        ["1:1: missing field `name`"]
    );
    assert_eq!(brief("name: p\n"), ["1:1: missing field `checks`"]);
    assert_eq!(
        brief("name: p\nchecks: []\n"),
        ["2:9: `checks` is empty: a plan needs at least one check"]
    );
    assert_eq!(
        errors("  \n").to_string(),
        "plan.yaml: the plan is empty: it needs at least `name:` and `checks:`"
    );
}

#[test]
fn duplicate_check_names_point_at_the_second() {
    let src = "name: p\nchecks:\n  - name: a\n    http: {url: http://h/}\n  - name: a\n    http: {url: http://h/x}\n";
    assert_eq!(
        brief(src),
        ["5:11: duplicate check name `a` (first used at line 3); check names must be unique"]
    );
    insta::assert_snapshot!("duplicate_name", errors(src).render());
}

#[test]
fn bad_jsonpath_is_reported_at_the_path() {
    let src = "name: p\nchecks:\n  - name: a\n    http:\n      url: http://h/\n      expect:\n        json: [{path: \"$.items[\", exists: true}]\n";
    let b = brief(src);
    assert_eq!(b.len(), 1);
    assert!(
        b[0].starts_with("7:31: invalid JSONPath `$.items[`"),
        "{}",
        b[0]
    );
    insta::assert_snapshot!("bad_jsonpath", errors(src).render());
    let no_dollar = "name: p\nchecks:\n  - name: a\n    http: {url: http://h/, expect: {json: [{path: response}]}}\n";
    assert_eq!(
        brief(no_dollar),
        [
            "4:51: invalid JSONPath `response`: a JSONPath starts with `$`, e.g. `$.response` or `$.items[0].id`"
        ]
    );
}

#[test]
fn bad_regex_is_reported_with_the_engine_explanation() {
    let src = "name: p\nchecks:\n  - name: a\n    http:\n      url: http://h/\n      expect: {body_regex: \"order-(\\\\d+\"}\n";
    let b = brief(src);
    assert_eq!(b.len(), 1);
    assert!(
        b[0].starts_with("6:28: invalid regular expression `order-(\\d+`: unclosed group"),
        "{}",
        b[0]
    );
    assert!(b[0].contains("unclosed group"), "{}", b[0]);
    insta::assert_snapshot!("bad_regex", errors(src).render());
}

#[test]
fn unset_variable_points_inside_the_string() {
    let src = "name: p\nchecks:\n  - name: db\n    database:\n      url: postgres://app@${DB_HOST}/app\n      tables: [t]\n";
    assert_eq!(
        brief(src),
        ["5:27: variable DB_HOST is not set (write ${DB_HOST:-default} to give it a default)"]
    );
    insta::assert_snapshot!("unset_variable", errors(src).render());
    // Inside a quoted scalar, the quote is skipped.
    let quoted = "name: p\ntarget: {headers: {Authorization: \"Bearer ${TOKEN}\"}}\nchecks:\n  - name: a\n    http: {url: http://h/}\n";
    assert_eq!(
        brief(quoted),
        ["2:43: variable TOKEN is not set (write ${TOKEN:-default} to give it a default)"]
    );
    // Set, it expands; probe variables are left for the probe.
    let plan = parse_with(src, &[("DB_HOST", "db.internal")]).unwrap();
    let CheckKind::Database(db) = &plan.checks[0].kind else {
        panic!()
    };
    assert_eq!(db.url, "postgres://app@db.internal/app");
}

#[test]
fn every_semantic_error_is_reported_at_once_in_order() {
    let src = "\
name: Bad Name
checks:
  - name: a
    timeout: 10
    http: {url: /relative}
  - name: b
  - name: c
    http: {url: http://h/, expect: {status: 700}}
    latency: {request: {url: http://h/}}
  - name: d
    latency: {request: {url: http://h/}, pass_below: 2s, warn_below: 1s, percentile: 0}
policy: {quorum: most}
";
    assert_eq!(
        brief(src),
        [
            "1:7: plan name `Bad Name` must be lower-case letters, digits and dashes, starting with a letter or digit (e.g. agent-backend-migration)",
            "4:14: `10` has no unit; expected a duration like 250ms, 30s, 5m, 24h or 7d",
            "5:17: `/relative` is a relative URL but the plan has no target.base_url",
            "6:5: check `b` does nothing: give it one of `http`, `latency`, `database`, `tcp`, `tls`, `grpc_health`, `dns` or `steps`",
            "7:5: check `c` has both `http` and `latency`: a check does exactly one thing, split it in two",
            "11:70: warn_below (1s) must be greater than pass_below (2s)",
            "11:86: percentile must be above 0 and at most 100, got 0",
            "12:18: unknown quorum `most`: expected any, majority, all or a number of regions",
        ]
    );
    insta::assert_snapshot!("many_errors", errors(src).render());
}

#[test]
fn more_validation_rules() {
    let check = |body: &str| brief(&format!("name: p\nchecks:\n  - name: a\n{body}"));
    assert_eq!(
        check("    database: {url: \"oracle://u:secret@h/db\", tables: [t]}\n"),
        [
            "4:21: database url `oracle://u:****@h/db` is not supported: use postgres://… (or postgresql://…), mysql://… (MySQL, MariaDB) or sqlite:…"
        ]
    );
    assert_eq!(
        check("    database: {url: \"sqlite:x.db\"}\n"),
        ["4:15: this database check checks nothing: list tables, columns, indexes or queries"]
    );
    assert_eq!(
        check("    http: {url: http://h/, json: {a: 1}, body: x}\n"),
        ["4:34: a request has either `json` or `body`, not both"]
    );
    assert_eq!(
        check("    http: {url: http://h/, headers: {\"bad header\": x}}\n"),
        ["4:38: `bad header` is not a valid HTTP header name"]
    );
    assert_eq!(
        check(
            "    http: {url: http://h/, expect: {json: [{path: $.a, exists: false, equals: 1}]}}\n"
        ),
        [
            "4:44: `$.a`: `exists: false` cannot be combined with equals, contains, min_length or max_length"
        ]
    );
    assert_eq!(
        check("    latency: {request: {url: http://h/}, max_error_rate: 5}\n"),
        ["4:58: max_error_rate is a share between 0 and 1 (0.05 = 5%), got 5"]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/}\nrollback: {action: {kubectl: {}, command: [x]}}\n"
        ),
        ["5:20: a rollback has one action, this one has kubectl and command"]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: a\n    http: {url: http://h/}\npolicy: {regions: [a, b], quorum: 3}\n"
        ),
        ["5:35: quorum 3 is more than the 2 required regions, so no check could ever fail"]
    );
}

#[test]
fn relative_urls_join_the_base_and_probe_urls_wait_for_the_probe() {
    let plan = parse_with(
        "name: p\ntarget: {base_url: \"http://${probe:POD_IP:-127.0.0.1}:8000\"}\nchecks:\n  - name: a\n    http: {url: /health}\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        plan.target.base_url.as_deref(),
        Some("http://${probe:POD_IP:-127.0.0.1}:8000")
    );
    let probe_env = env(&[("POD_IP", "10.0.0.7")]);
    let canonical = serde_saphyr::to_string(&plan).unwrap();
    let on_probe = parse_plan(&canonical, "canonical", Expander::probe(&probe_env)).unwrap();
    assert_eq!(
        on_probe.resolve_url("/health").unwrap().as_str(),
        "http://10.0.0.7:8000/health"
    );
}

/// Hostile plans get a clear error quickly (the limits are the contract's "untrusted input is
/// bounded"): nothing here may overflow the stack, exhaust memory or take long.
#[test]
fn hostile_plans_are_refused_with_the_limit_named() {
    let nested = |scope: &str, levels: usize| {
        let mut text = String::from("http://x");
        for _ in 0..levels {
            text = format!("${{{scope}U:-{text}}}");
        }
        format!("name: p\nchecks:\n  - name: c\n    http: {{url: \"{text}\"}}\n")
    };
    for scope in ["", "probe:"] {
        let shown = brief(&nested(scope, 30_000));
        assert_eq!(
            shown,
            ["4:18: variable defaults are nested more than 8 deep"],
            "{scope}"
        );
    }
    // Alias bomb: each level doubles.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let plan = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      json:\n        {}\n",
        bomb.trim_end().replace('\n', "\n        ")
    );
    let message = errors(&plan).errors[0].message.clone();
    assert!(
        message.contains("aliases") || message.contains("YAML values"),
        "{message}"
    );
    // 200,000-deep flow nesting.
    let deep = format!(
        "name: p\nchecks: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    let message = errors(&deep).errors[0].message.clone();
    assert!(message.contains("nests more than 32 levels"), "{message}");
    // 16 MiB.
    let huge = format!("name: p\n#{}\nchecks: []\n", "x".repeat(16 << 20));
    assert_eq!(
        brief(&huge),
        [format!(
            "0:0: the plan is {} bytes; a plan may be at most 4194304 bytes",
            huge.len()
        )]
    );
    // 100,000 checks (about 3 MB).
    let mut many = String::from("name: p\nchecks:\n");
    for i in 0..100_000 {
        many.push_str(&format!("- {{name: c{i}, http: {{url: \"http://x\"}}}}\n"));
    }
    let message = errors(&many).errors[0].message.clone();
    assert!(
        message.contains("YAML values") || message.contains("at most 10000"),
        "{message}"
    );
    // A plan within the YAML budget but above the check limit.
    let mut over = String::from("name: p\nchecks:\n");
    for i in 0..10_001 {
        over.push_str(&format!("- {{name: c{i}, http: {{url: \"http://x\"}}}}\n"));
    }
    assert_eq!(
        brief(&over),
        ["3:3: 10001 checks; a plan may hold at most 10000 (split it into several plans)"]
    );
    // Deep JSONPath and regex nesting.
    let path = format!("$[?{}@.a{}]", "(".repeat(50_000), ")".repeat(50_000));
    let plan = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      expect: {{json: [{{path: \"{path}\", equals: 1}}]}}\n"
    );
    let message = errors(&plan).errors[0].message.clone();
    assert!(
        message.contains("at most 4096") || message.contains("nest"),
        "{message}"
    );
    let path = format!("$[?{}@.a{}]", "(".repeat(100), ")".repeat(100));
    let plan = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      expect: {{json: [{{path: \"{path}\", equals: 1}}]}}\n"
    );
    let message = errors(&plan).errors[0].message.clone();
    assert!(message.contains("nest more than 32 deep"), "{message}");
    let regex = format!("{}a{}", "(".repeat(500), ")".repeat(500));
    let plan = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      expect: {{body_regex: \"{regex}\"}}\n"
    );
    let message = errors(&plan).errors[0].message.clone();
    assert!(message.contains("nest"), "{message}");
    let regex = "a{1000}{1000}";
    let plan = format!(
        "name: p\nchecks:\n  - name: c\n    http:\n      url: http://x\n      expect: {{body_regex: \"{regex}\"}}\n"
    );
    let message = errors(&plan).errors[0].message.clone();
    assert!(message.contains("size limit"), "{message}");
    // Thousands of errors are summarised.
    let mut bad = String::from("name: p\nchecks:\n");
    for i in 0..500 {
        bad.push_str(&format!("- {{name: c{i}, http: {{url: \"nope\"}}}}\n"));
    }
    let all = errors(&bad).errors;
    assert_eq!(all.len(), 51);
    assert_eq!(all[50].message, "… and 450 more problems");
}

#[test]
fn every_shape_problem_of_a_block_plan_is_reported_not_only_the_first() {
    let plan = "name: x\nchecks:\n  - name: a\n    http: {url: /a, bogus: 1}\n  - name: b\n    http:\n      url: /b\n  - name: c\n    latency: {request: {url: /c}, samples: -1}\npolicy:\n  quorum: majority\n  regionz: [eu]\nextra: 1\n";
    let found = brief(plan);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found[0].starts_with("4:21: unknown field `bogus`"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("9:44: expected a whole number"),
        "{found:#?}"
    );
    assert!(
        found[2].starts_with("12:3: unknown field `regionz`"),
        "{found:#?}"
    );
    assert!(
        found[3].starts_with("13:1: unknown field `extra`"),
        "{found:#?}"
    );
    // In flow style the sections cannot be told apart: the first problem alone.
    let flow = "{name: x, checks: [{name: a, http: {url: /a, bogus: 1}}, {name: b, nope: 2}]}\n";
    assert_eq!(brief(flow).len(), 1, "{:#?}", brief(flow));
}

#[test]
fn the_baseline_section_takes_shares_as_numbers_or_percentages() {
    let base = "name: p\nchecks:\n  - name: up\n    http: {url: \"http://x/\"}\n";
    let plan = parse_with(
        &format!(
            "{base}baseline:\n  max_latency_increase: 25%\n  max_error_rate_increase: 0.05\n  significance: 0.05\n  min_samples: 20\n"
        ),
        &[],
    )
    .unwrap();
    let policy = plan.baseline.unwrap();
    assert_eq!(policy.max_latency_increase, 0.25);
    assert_eq!(policy.max_error_rate_increase, 0.05);
    assert_eq!(policy.significance, 0.05);
    assert_eq!(policy.min_samples, 20);
    let defaults = parse_with(&format!("{base}baseline: {{}}\n"), &[])
        .unwrap()
        .baseline
        .unwrap();
    assert_eq!(defaults, BaselinePolicy::default());
    assert_eq!(parse_with(base, &[]).unwrap().baseline, None);
    assert_eq!(
        brief(&format!("{base}baseline:\n  answers: same\n  typo: 1\n")),
        [
            "7:3: unknown field `typo`, expected one of max_latency_increase, max_error_rate_increase, significance, min_samples, answers"
        ]
    );
    assert_eq!(
        brief(&format!("{base}baseline:\n  answers: same\n")),
        ["6:12: answers is `off` or `same_shape`, got `same`"]
    );
    assert_eq!(
        brief(&format!(
            "{base}baseline:\n  max_latency_increase: twenty\n  max_error_rate_increase: 2\n  significance: 0.7\n  min_samples: 1\n"
        )),
        [
            "6:25: max_latency_increase is a share from 0 to 100, as a number (0.2) or a percentage (20%), got `twenty`",
            "7:28: max_error_rate_increase is a share from 0 to 1, as a number (0.2) or a percentage (20%), got 2",
            "8:17: significance is a p-value above 0 and below 0.5 (0.01 is usual), got 0.7",
            "9:16: min_samples is a number of samples from 2 to 1000, got 1",
        ]
    );
}

#[test]
fn stages_are_distinct_names_in_order() {
    let base = "name: p\nchecks:\n  - name: up\n    http: {url: \"http://x/\"}\n";
    let plan = parse_with(&format!("{base}stages: [staging, production]\n"), &[]).unwrap();
    assert_eq!(plan.stages, ["staging", "production"]);
    assert_eq!(
        brief(&format!("{base}stages: [Staging, dev, dev]\n")),
        [
            "5:10: `Staging` is not a stage name: lower-case letters, digits and dashes, at most 64",
            "5:24: stage `dev` is listed twice",
        ]
    );
}

#[test]
fn repeat_and_pass_when_are_bounded() {
    let check = |extra: &str| {
        format!("name: p\nchecks:\n  - name: agent\n{extra}    http: {{url: \"http://x/\"}}\n")
    };
    let plan = parse_with(&check("    repeat: 5\n    pass_when: majority\n"), &[]).unwrap();
    assert_eq!(plan.checks[0].repeat, 5);
    assert_eq!(plan.checks[0].pass_when, PassWhen::Majority);
    assert_eq!(plan.checks[0].max_requests(), 5);
    let plan = parse_with(&check("    repeat: 5\n    pass_when: 4\n"), &[]).unwrap();
    assert_eq!(plan.checks[0].pass_when, PassWhen::AtLeast(4));
    let plain = parse_with(&check(""), &[]).unwrap();
    assert_eq!(
        (plain.checks[0].repeat, plain.checks[0].pass_when),
        (1, PassWhen::All)
    );
    assert_eq!(
        brief(&check("    repeat: 0\n")),
        ["4:13: repeat is how many times the check runs, from 1 to 100, got 0"]
    );
    assert_eq!(
        brief(&check("    repeat: 3\n    pass_when: 4\n")),
        ["5:16: pass_when 4 needs between 1 and repeat (3) passing runs"]
    );
    assert_eq!(
        brief(&check("    repeat: 3\n    pass_when: most\n")),
        ["5:16: pass_when is `all`, `majority` or a number of runs, got `most`"]
    );
}

#[test]
fn tool_expectations_are_read_and_checked() {
    let check = |tools: &str| {
        format!(
            "name: p\nchecks:\n  - name: agent\n    http:\n      url: \"http://x/\"\n      expect:\n        tools: {tools}\n"
        )
    };
    let plan = parse_with(
        &check("{called: [lookup_invoice], not_called: [\"delete_*\"], args: {lookup_invoice: {invoice_id: INV-001}}, order: strict, max_calls: 3, format: openai}"),
        &[],
    )
    .unwrap();
    let CheckKind::Http(http) = &plan.checks[0].kind else {
        panic!("an http check");
    };
    let tools = http.expect.tools.as_ref().unwrap();
    assert_eq!(tools.called, ["lookup_invoice"]);
    assert_eq!(tools.not_called, ["delete_*"]);
    assert_eq!(tools.args[0].0, "lookup_invoice");
    assert!(tools.strict_order);
    assert_eq!(tools.max_calls, Some(3));
    assert_eq!(tools.format, ToolFormat::OpenAi);
    assert_eq!(
        brief(&check("{}")),
        ["7:16: expect.tools checks nothing: give `called`, `not_called`, `args` or `max_calls`"]
    );
    assert_eq!(
        brief(&check("{called: [a], format: gemini, order: random}")),
        [
            "7:38: format is `auto`, `openai`, `anthropic` or `plain`, got `gemini`",
            "7:53: order is `any` or `strict`, got `random`",
        ]
    );
    assert_eq!(
        brief(&check("{args: {a: 3}}")),
        [
            "7:27: args of `a` is a JSON object the call's arguments must contain, e.g. {invoice_id: INV-001}"
        ]
    );
}

#[test]
fn tcp_checks_take_host_and_port() {
    let check = |address: &str| {
        format!("name: p\nchecks:\n  - name: port\n    tcp: {{address: \"{address}\"}}\n")
    };
    let plan = parse_with(&check("[::1]:5432"), &[]).unwrap();
    let CheckKind::Tcp(tcp) = &plan.checks[0].kind else {
        panic!("a tcp check");
    };
    assert_eq!((tcp.host.as_str(), tcp.port), ("::1", 5432));
    assert_eq!(plan.checks[0].kind.as_str(), "tcp");
    assert_eq!(plan.checks[0].max_requests(), 1);
    assert_eq!(
        brief(&check("db.internal")),
        ["4:20: `db.internal` is not host:port (e.g. db.internal:5432, [::1]:8080)"]
    );
    assert_eq!(
        brief(&check("db:0")),
        ["4:20: `db:0` is not host:port (e.g. db.internal:5432, [::1]:8080)"]
    );
}

#[test]
fn grpc_health_checks_take_an_address_a_service_and_tls() {
    let plan = parse_with(
        "name: p\nchecks:\n  - name: grpc\n    grpc_health: {address: \"api.internal:443\", service: checkout, tls: true}\n",
        &[],
    )
    .unwrap();
    let CheckKind::GrpcHealth(grpc) = &plan.checks[0].kind else {
        panic!("a grpc_health check");
    };
    assert_eq!(
        (grpc.address.as_str(), grpc.service.as_str(), grpc.tls),
        ("api.internal:443", "checkout", true)
    );
    assert_eq!(plan.checks[0].kind.as_str(), "grpc_health");
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: grpc\n    grpc_health: {address: api, tls: yes-please}\n"
        ),
        ["4:38: expected true or false, got `yes-please`"]
    );
}

const FLOW: &str = r#"name: p
target: {base_url: "http://app"}
checks:
  - name: journey
    steps:
      - name: login
        http: {method: POST, url: /login, json: {user: demo}}
        capture: {session: $.session_id, user_id: $.user.id}
      - name: chat
        http: {method: POST, url: "/chat/${step:user_id}", json: {session: "${step:session}"}}
      - name: stored
        database:
          url: "sqlite:app.db"
          queries: [{sql: "SELECT count(*) FROM messages WHERE session = $1", params: ["${step:session}"], expect: {min: 1}}]
      - name: logout
        always: true
        http: {method: POST, url: /logout, json: {session: "${step:session}"}}
"#;

#[test]
fn flows_keep_step_references_for_the_executor_and_round_trip() {
    let plan = parse_with(FLOW, &[]).unwrap();
    let CheckKind::Steps(flow) = &plan.checks[0].kind else {
        panic!("a flow");
    };
    let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["login", "chat", "stored", "logout"]);
    assert!(flow.steps[3].always && !flow.steps[0].always);
    assert_eq!(flow.steps[0].capture.len(), 2);
    assert_eq!(plan.checks[0].kind.as_str(), "steps");
    assert_eq!(plan.checks[0].max_requests(), 3, "one per http step");
    let StepAction::Database(db) = &flow.steps[2].action else {
        panic!("a database step");
    };
    assert_eq!(db.queries[0].params, ["${step:session}"]);
    let canonical = crate::canonical::canonical_yaml(&plan);
    assert!(canonical.contains("${step:session}"), "{canonical}");
    let again = parse_plan(&canonical, "canonical", Expander::none()).unwrap();
    assert_eq!(again, plan);
}

#[test]
fn flow_mistakes_are_named_where_they_are() {
    let unknown = FLOW.replace(
        "json: {session: \"${step:session}\"}}\n      - name: stored",
        "json: {session: \"${step:sesion}\"}}\n      - name: stored",
    );
    assert_eq!(
        brief(&unknown),
        [
            "9:9: step `chat` uses ${step:sesion}, which no earlier step captures (captured before it: session, user_id)"
        ]
    );
    let pasted = FLOW.replace(
        "WHERE session = $1\"",
        "WHERE session = '${step:session}'\"",
    );
    assert_eq!(
        brief(&pasted),
        [
            "14:27: captured values are never pasted into SQL: write a placeholder ($1, or ? on MySQL) and list the value in `params: [\"${step:NAME}\"]`"
        ]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: j\n    steps:\n      - name: a\n        http: {url: \"http://x/${step:s}\"}\n        capture: {s: $.s, 1bad: $.x}\n      - name: a\n        http: {url: http://x}\n        capture: {s: $.t}\n      - name: c\n"
        ),
        [
            "5:9: step `a` uses ${step:s}, which no earlier step captures (no earlier step captures anything)",
            "7:27: `1bad` cannot name a capture: use letters, digits and _, not starting with a digit",
            "8:15: two steps are named `a`: step names are unique within a flow",
            "10:19: `s` is already captured by step `a`: give this one another name",
            "11:9: step `c` does nothing: give it `http` or `database`",
        ]
    );
    assert_eq!(
        brief("name: p\nchecks:\n  - name: j\n    http: {url: \"http://x/${step:s}\"}\n"),
        [
            "3:5: check `j` uses ${step:…}, a value captured by an earlier step of a `steps:` flow, but it has no steps"
        ]
    );
    assert_eq!(
        brief("name: p\nchecks:\n  - name: j\n    steps: []\n"),
        ["4:12: `steps` lists no steps: a flow needs at least one"]
    );
    assert_eq!(
        brief("name: p\nchecks:\n  - name: j\n    http: {url: \"http://x/${step:a-b}\"}\n"),
        [
            "4:27: malformed variable reference `${step:a-b}`: expected ${NAME}, ${NAME:-default}, ${probe:NAME}, ${step:NAME} or ${case:FIELD}"
        ]
    );
}

#[test]
fn tls_checks_default_to_two_weeks_and_check_the_name() {
    let plan = parse_with(
        "name: p\nchecks:\n  - name: cert\n    tls: {address: \"api.example.com:443\"}\n",
        &[],
    )
    .unwrap();
    let CheckKind::Tls(tls) = &plan.checks[0].kind else {
        panic!("a tls check");
    };
    assert_eq!(tls.min_days_valid, DEFAULT_MIN_DAYS_VALID);
    assert_eq!((tls.host.as_str(), tls.port), ("api.example.com", 443));
    assert_eq!(plan.checks[0].kind.as_str(), "tls");
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: cert\n    tls: {address: \"a:443\", server_name: \"bad name\", min_days_valid: -1}\n"
        ),
        ["4:70: expected a whole number (0 or more), got `-1`"]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: cert\n    tls: {address: \"a:443\", server_name: \"bad name\"}\n"
        ),
        ["4:42: `bad name` is not a host name or IP address"]
    );
}

#[test]
fn dns_checks_take_a_name_a_type_values_and_a_resolver() {
    let plan = parse_with(
        "name: p\nchecks:\n  - name: d\n    dns: {name: api.example.com, type: aaaa, expect: [\"2001:db8::7\"], resolver: \"10.0.0.2:53\"}\n",
        &[],
    )
    .unwrap();
    let CheckKind::Dns(dns) = &plan.checks[0].kind else {
        panic!("a dns check");
    };
    assert_eq!(dns.record_type, DnsType::AAAA);
    assert_eq!(dns.resolver.as_deref(), Some("10.0.0.2:53"));
    let again = parse_plan(
        &crate::canonical::canonical_yaml(&plan),
        "canonical",
        Expander::none(),
    )
    .unwrap();
    assert_eq!(again, plan);
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: d\n    dns: {name: a.example, type: MX, expect: [nope], resolver: dns.google}\n"
        ),
        [
            "4:34: record type `MX` is not supported: use A, AAAA, CNAME or TXT",
            "4:64: resolver `dns.google` is not an IP address with an optional port (e.g. 10.0.0.2:53, [::1]:53)",
        ]
    );
    assert_eq!(
        brief("name: p\nchecks:\n  - name: d\n    dns: {name: a.example, expect: [\"1.2.3\"]}\n"),
        ["4:36: `1.2.3` is not an IPv4 address"]
    );
}

const GOLDEN_PLAN: &str = "name: p\ntarget: {base_url: \"http://app\"}\nchecks:\n  - name: golden\n    cases: golden.jsonl\n    min_pass_rate: 95%\n    http: {method: POST, url: /chat, json: {message: \"${case:input}\"}}\n";

fn with_cases(plan: &str, jsonl: &str) -> Result<Plan, PlanErrors> {
    let env = env(&[]);
    let jsonl = jsonl.to_owned();
    let read = move |name: &str| {
        if name == "golden.jsonl" {
            Ok(jsonl.clone())
        } else {
            Err(format!("cannot read {name}: No such file or directory"))
        }
    };
    parse_plan_with_files(plan, "plan.yaml", Expander::plan(&env), Some(&read))
}

#[test]
fn golden_sets_are_read_from_jsonl_and_travel_inline() {
    let plan = with_cases(
        GOLDEN_PLAN,
        "{\"id\": \"inv\", \"input\": \"Look up INV-001\", \"expect\": {\"body_contains\": [\"INV-001\"]}}\n\n{\"input\": {\"nested\": true, \"text\": \"what is ${HOME}?\"}}\n",
    )
    .unwrap();
    let set = plan.checks[0].cases.as_ref().unwrap();
    assert_eq!(set.min_pass_rate, 0.95);
    let ids: Vec<&str> = set.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["inv", "golden.jsonl:3"]);
    assert_eq!(set.cases[0].expect.body_contains, ["INV-001"]);
    assert_eq!(plan.checks[0].max_requests(), 2, "one request per case");
    // The canonical plan carries the cases inline: it loads anywhere, without the file.
    let canonical = crate::canonical::canonical_yaml(&plan);
    let again = parse_plan(&canonical, "canonical", Expander::none()).unwrap();
    assert_eq!(again, plan);
    assert_eq!(
        again.checks[0].cases.as_ref().unwrap().cases[1].fields["input"]["text"],
        "what is ${HOME}?",
        "case data travels as written, `${{` included"
    );
}

#[test]
fn golden_set_mistakes_name_the_case_and_its_line() {
    let errors = |jsonl: &str| -> Vec<String> {
        with_cases(GOLDEN_PLAN, jsonl)
            .expect_err("invalid")
            .errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect()
    };
    assert_eq!(
        errors(
            "{\"input\": \"a\"}\n{\"input\": \nnot json\n[1]\n{\"id\": \"x\"}\n{\"input\": 1, \"expect\": {\"stats\": 200}}\n{\"input\": 1, \"expect\": {\"status\": 99}}\n"
        ),
        [
            "5:12: golden.jsonl:2:10: not JSON: EOF while parsing a value at line 1 column 10",
            "5:12: golden.jsonl:3:2: not JSON: expected ident at line 1 column 2",
            "5:12: golden.jsonl:4: a case is a JSON object like {\"input\": \"Hi\"}",
            "5:12: golden.jsonl:5: the case has no `input`",
            "5:12: golden.jsonl:6: expect: unknown field `stats`, expected one of status, json, body_contains, body_not_contains, body_regex, headers, max_latency, tools",
            "5:12: golden.jsonl:7: expect: 99 is not an HTTP status code (100 to 599)",
        ]
    );
    assert_eq!(errors(""), ["5:12: the golden set has no cases"]);
    let missing = GOLDEN_PLAN.replace("golden.jsonl", "other.jsonl");
    assert_eq!(
        brief_of(with_cases(&missing, "")),
        ["5:12: cannot read other.jsonl: No such file or directory"]
    );
    assert_eq!(
        brief(GOLDEN_PLAN),
        [
            "5:12: cases file `golden.jsonl` can only be read where the plan is loaded from a file (postflight run, check); a plan sent whole carries its cases inline: cases: [{input: …}]"
        ]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: t\n    tcp: {address: \"h:1\"}\n    cases: [{input: 1}]\n    min_pass_rate: 2\n"
        ),
        [
            "5:12: cases replay a golden set through one http request; check `t` is a tcp check",
            "6:20: min_pass_rate is a share from 0 to 1, as a number (0.2) or a percentage (20%), got 2",
        ]
    );
    assert_eq!(
        brief(
            "name: p\nchecks:\n  - name: h\n    min_pass_rate: 0.5\n    http: {url: \"http://x/${case:input}\"}\n"
        ),
        [
            "3:5: check `h` uses ${case:…}, a field of a golden set's case, but it has no cases",
            "4:20: min_pass_rate is the share of a golden set's cases that must pass: give the check `cases`",
        ]
    );
}

fn brief_of(result: Result<Plan, PlanErrors>) -> Vec<String> {
    result
        .expect_err("invalid")
        .errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect()
}

/// Every example plan survives the trip to a coordinator and its probes: its canonical form
/// (cases inline, variables expanded, `${probe:…}`, `${step:…}`, `${case:…}` kept) loads
/// back into the same plan. A kind whose serialised shape a plan cannot hold fails here.
#[test]
fn every_example_round_trips_through_its_canonical_form() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let read =
            |name: &str| std::fs::read_to_string(folder.join(name)).map_err(|e| e.to_string());
        // URLs are set, as an operator's environment would set them; the rest keep their
        // defaults.
        let env = |name: &str| match name {
            n if n.contains("DATABASE") => Some("postgres://app:pw@db.internal/app".to_owned()),
            n if n.contains("MYSQL") => Some("mysql://app:pw@db.internal/shop".to_owned()),
            n if n.ends_with("URL") => Some("http://svc.internal:8000".to_owned()),
            n if n.contains("SECRET") || n.contains("TOKEN") => Some("s3cret".to_owned()),
            _ => None,
        };
        let origin = path.display().to_string();
        let plan = parse_plan_with_files(&source, &origin, Expander::plan(&env), Some(&read))
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let canonical = crate::canonical::canonical_yaml(&plan);
        let again = parse_plan(&canonical, "canonical", Expander::none())
            .unwrap_or_else(|e| panic!("{origin}: {}", e.render()));
        assert_eq!(again, plan, "{origin}");
        seen += 1;
    }
    assert!(
        seen >= 9,
        "only {seen} examples found in {}",
        folder.display()
    );
}
