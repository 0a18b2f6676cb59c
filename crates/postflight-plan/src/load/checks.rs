//! `checks:`: each check's common keys and its kind (`http`, `latency`, `database`), with the
//! request, the expectations and the JSON assertions they share.

use super::*;

impl Ctx<'_> {
    pub(super) fn check(
        &mut self,
        raw: Spanned<RawCheck>,
        target: &Option<Target>,
    ) -> Option<Check> {
        let loc = raw.referenced;
        let raw = raw.value;
        let name = raw.name.value.trim().to_owned();
        if name.is_empty() || name.chars().any(char::is_control) {
            self.error(
                &raw.name.referenced,
                "a check name must be non-empty text on one line",
            );
        }
        let description = raw.description.as_ref().and_then(|d| self.text(d));
        let severity = match raw.severity.map(|s| s.value) {
            None | Some(RawSeverity::Critical) => Severity::Critical,
            Some(RawSeverity::Warning) => Severity::Warning,
        };
        let target_timeout = target.as_ref().and_then(|t| t.timeout);
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t),
            None => Some(target_timeout.unwrap_or(DEFAULT_TIMEOUT)),
        };
        let base_url = target.as_ref().and_then(|t| t.base_url.clone());
        let kinds: Vec<&str> = [
            raw.http.as_ref().map(|_| "http"),
            raw.latency.as_ref().map(|_| "latency"),
            raw.database.as_ref().map(|_| "database"),
            raw.tcp.as_ref().map(|_| "tcp"),
            raw.tls.as_ref().map(|_| "tls"),
            raw.dns.as_ref().map(|_| "dns"),
            raw.grpc_health.as_ref().map(|_| "grpc_health"),
            raw.steps.as_ref().map(|_| "steps"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let kind = match kinds.len() {
            0 => {
                self.error(
                    &loc,
                    format!(
                        "check `{name}` does nothing: give it one of {}",
                        kind_list()
                    ),
                );
                None
            }
            1 => {
                if let Some(http) = raw.http {
                    self.http(http, base_url.as_deref()).map(CheckKind::Http)
                } else if let Some(latency) = raw.latency {
                    self.latency(latency, base_url.as_deref())
                        .map(CheckKind::Latency)
                } else if let Some(database) = raw.database {
                    self.database(database).map(CheckKind::Database)
                } else if let Some(tcp) = raw.tcp {
                    self.tcp(tcp).map(CheckKind::Tcp)
                } else if let Some(grpc) = raw.grpc_health {
                    self.grpc_health(grpc).map(CheckKind::GrpcHealth)
                } else if let Some(dns) = raw.dns {
                    self.dns(dns).map(CheckKind::Dns)
                } else if let Some(tls) = raw.tls {
                    self.tls(tls).map(CheckKind::Tls)
                } else if let Some(steps) = raw.steps {
                    self.flow(steps, base_url.as_deref()).map(CheckKind::Steps)
                } else {
                    None
                }
            }
            _ => {
                self.error(
                    &loc,
                    format!(
                        "check `{name}` has both `{}` and `{}`: a check does exactly one thing, split it in two",
                        kinds[0], kinds[1]
                    ),
                );
                None
            }
        };
        // The kind as written back, once: `${step:…}` and `${case:…}` belong to flows and
        // golden sets only.
        let kind_text = kind
            .as_ref()
            .and_then(|k| serde_json::to_string(k).ok())
            .unwrap_or_default();
        if !matches!(kind, Some(CheckKind::Steps(_))) && kind_text.contains(STEP_PREFIX) {
            self.error(
                &loc,
                format!(
                    "check `{name}` uses ${{step:…}}, a value captured by an earlier step of a `steps:` flow, but it has no steps"
                ),
            );
        }
        let repeat = match raw.repeat {
            Some(r) if !(1..=MAX_REPEAT).contains(&r.value) => {
                self.error(
                    &r.referenced,
                    format!(
                        "repeat is how many times the check runs, from 1 to {MAX_REPEAT}, got {}",
                        r.value
                    ),
                );
                1
            }
            Some(r) => r.value,
            None => 1,
        };
        let pass_when = match raw.pass_when {
            None => PassWhen::All,
            Some(p) => match p.value {
                RawPassWhen::Word(w) if w == "all" => PassWhen::All,
                RawPassWhen::Word(w) if w == "majority" => PassWhen::Majority,
                RawPassWhen::Count(n) if (1..=repeat).contains(&n) => PassWhen::AtLeast(n),
                RawPassWhen::Count(n) => {
                    self.error(
                        &p.referenced,
                        format!("pass_when {n} needs between 1 and repeat ({repeat}) passing runs"),
                    );
                    PassWhen::All
                }
                RawPassWhen::Word(w) => {
                    self.error(
                        &p.referenced,
                        format!("pass_when is `all`, `majority` or a number of runs, got `{w}`"),
                    );
                    PassWhen::All
                }
            },
        };
        let had_cases = raw.cases.is_some();
        let cases = match raw.cases {
            None => {
                if let Some(rate) = &raw.min_pass_rate {
                    self.error(
                        &rate.referenced,
                        "min_pass_rate is the share of a golden set's cases that must pass: give the check `cases`",
                    );
                }
                None
            }
            Some(cases) => {
                if let Some(kind) = &kind
                    && !matches!(kind, CheckKind::Http(_))
                {
                    self.error(
                        &cases.referenced,
                        format!(
                            "cases replay a golden set through one http request; check `{name}` is a {} check",
                            kind.as_str()
                        ),
                    );
                }
                self.cases(cases, raw.min_pass_rate).map(Box::new)
            }
        };
        if !had_cases && kind_text.contains(CASE_PREFIX) {
            self.error(
                &loc,
                format!(
                    "check `{name}` uses ${{case:…}}, a field of a golden set's case, but it has no cases"
                ),
            );
        }
        Some(Check {
            name,
            description,
            severity,
            timeout: timeout?,
            repeat,
            pass_when,
            cases,
            kind: kind?,
        })
    }

    pub(super) fn request(
        &mut self,
        loc: &Location,
        parts: RawRequest,
        base_url: Option<&str>,
    ) -> Option<HttpRequest> {
        let errors_before = self.errors.len();
        let method = match &parts.method {
            None => "GET".to_owned(),
            Some(m) => {
                let method = self.text(m).unwrap_or_default().to_ascii_uppercase();
                if !is_token(&method) || method.is_empty() {
                    self.error(
                        &m.referenced,
                        format!("`{}` is not an HTTP method (e.g. GET, POST, PUT)", m.value),
                    );
                }
                method
            }
        };
        let url_expanded = self.text(&parts.url);
        let url = url_expanded.clone().unwrap_or_default();
        let base_is_final = base_url.is_none_or(|b| !has_probe_reference(b));
        if url_expanded.is_some()
            && !has_probe_reference(&url)
            && base_is_final
            && let Err(message) = resolve_url(base_url, &url)
        {
            self.error(&parts.url.referenced, redact_url_in(&message, &url));
        }
        let headers = self.headers(parts.headers.as_ref());
        let body = match (&parts.json, &parts.body) {
            (Some(json), Some(_)) => {
                self.error(
                    &json.referenced,
                    "a request has either `json` or `body`, not both",
                );
                Body::None
            }
            (Some(json), None) => self.value(json).map_or(Body::None, Body::Json),
            (None, Some(body)) => self.text(body).map_or(Body::None, Body::Raw),
            (None, None) => Body::None,
        };
        let _ = loc;
        (self.errors.len() == errors_before).then_some(HttpRequest {
            method,
            url,
            headers,
            body,
        })
    }

    pub(super) fn status(&mut self, raw: Option<Spanned<StatusSpec>>) -> StatusExpect {
        let Some(raw) = raw else {
            return StatusExpect::Success;
        };
        if raw.value.0.is_empty() {
            self.error(
                &raw.referenced,
                "the status list is empty; list at least one code or leave it out for any 2xx",
            );
            return StatusExpect::Success;
        }
        let mut codes = Vec::new();
        for &code in &raw.value.0 {
            match u16::try_from(code) {
                Ok(c) if (100..=599).contains(&c) => codes.push(c),
                _ => self.error(
                    &raw.referenced,
                    format!("{code} is not an HTTP status code (100 to 599)"),
                ),
            }
        }
        StatusExpect::OneOf(codes)
    }

    pub(super) fn http(
        &mut self,
        raw: Spanned<RawHttp>,
        base_url: Option<&str>,
    ) -> Option<HttpCheck> {
        let loc = raw.referenced;
        let (request, expect) = raw.value.into_parts();
        let errors_before = self.errors.len();
        let request = self.request(&loc, request, base_url);
        let expect = match expect {
            Some(e) => self.expect(e),
            None => HttpExpect::default(),
        };
        (self.errors.len() == errors_before).then_some(HttpCheck {
            request: request?,
            expect,
        })
    }

    pub(super) fn expect(&mut self, raw: RawExpect) -> HttpExpect {
        let status = self.status(raw.status);
        let json = raw
            .json
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| self.json_assertion(a))
            .collect();
        let body_contains = self.string_list(raw.body_contains);
        let body_not_contains = self.string_list(raw.body_not_contains);
        let body_regex = raw.body_regex.as_ref().and_then(|r| {
            let source = self.text(r)?;
            if has_probe_reference(&source) {
                self.error(&r.referenced, "body_regex cannot use ${probe:…} variables");
                return None;
            }
            match Pattern::parse(&source) {
                Ok(p) => Some(p),
                Err(message) => {
                    self.error(&r.referenced, message);
                    None
                }
            }
        });
        let headers = self.headers(raw.headers.as_ref());
        let max_latency = raw.max_latency.as_ref().and_then(|d| self.duration(d));
        let tools = raw.tools.and_then(|t| self.tools(t)).map(Box::new);
        HttpExpect {
            status,
            json,
            body_contains,
            body_not_contains,
            body_regex,
            headers,
            max_latency,
            tools,
        }
    }

    /// `tcp: {address: host:port}`.
    fn tcp(&mut self, raw: Spanned<RawTcp>) -> Option<TcpCheck> {
        let (address, host, port) = self.host_port(&raw.value.address)?;
        Some(TcpCheck {
            address,
            host,
            port,
        })
    }

    /// `grpc_health: {address, service, tls}`.
    /// `dns: {name, type, expect, resolver}`.
    fn dns(&mut self, raw: Spanned<RawDns>) -> Option<DnsCheck> {
        let raw = raw.value;
        let errors_before = self.errors.len();
        let name = self.text(&raw.name).unwrap_or_default().trim().to_owned();
        if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_whitespace()) {
            self.error(&raw.name.referenced, format!("`{name}` is not a DNS name"));
        }
        let record_type = match raw
            .record_type
            .as_ref()
            .map(|t| (t, t.value.to_ascii_uppercase()))
        {
            None => DnsType::A,
            Some((_, t)) if t == "A" => DnsType::A,
            Some((_, t)) if t == "AAAA" => DnsType::AAAA,
            Some((_, t)) if t == "CNAME" => DnsType::CNAME,
            Some((_, t)) if t == "TXT" => DnsType::TXT,
            Some((t, _)) => {
                self.error(
                    &t.referenced,
                    format!(
                        "record type `{}` is not supported: use A, AAAA, CNAME or TXT",
                        t.value
                    ),
                );
                DnsType::A
            }
        };
        let expect_loc = raw.expect.as_ref().map(|e| e.referenced);
        let expect = self.string_list(raw.expect);
        let type_known = self.errors.len() == errors_before;
        if let Some(loc) = expect_loc.filter(|_| type_known) {
            let wrong = expect
                .iter()
                .filter(|v| !has_probe_reference(v))
                .find(|value| match record_type {
                    DnsType::A => value.parse::<std::net::Ipv4Addr>().is_err(),
                    DnsType::AAAA => value.parse::<std::net::Ipv6Addr>().is_err(),
                    DnsType::CNAME | DnsType::TXT => false,
                });
            if let Some(value) = wrong {
                self.error(
                    &loc,
                    format!(
                        "`{value}` is not an {} address",
                        if record_type == DnsType::A {
                            "IPv4"
                        } else {
                            "IPv6"
                        }
                    ),
                );
            }
        }
        let resolver = raw.resolver.as_ref().and_then(|r| {
            let text = self.text(r)?;
            let valid = text.parse::<std::net::SocketAddr>().is_ok()
                || text.parse::<std::net::IpAddr>().is_ok()
                || has_probe_reference(&text);
            if !valid {
                self.error(
                    &r.referenced,
                    format!("resolver `{text}` is not an IP address with an optional port (e.g. 10.0.0.2:53, [::1]:53)"),
                );
            }
            Some(text)
        });
        (self.errors.len() == errors_before).then_some(DnsCheck {
            name,
            record_type,
            expect,
            resolver,
        })
    }

    /// `tls: {address, server_name, min_days_valid, ca}`.
    fn tls(&mut self, raw: Spanned<RawTls>) -> Option<TlsCheck> {
        let raw = raw.value;
        let (address, host, port) = self.host_port(&raw.address)?;
        let server_name = raw.server_name.as_ref().and_then(|n| self.text(n));
        let is_host = |name: &str| {
            name.parse::<std::net::IpAddr>().is_ok()
                || (!name.is_empty()
                    && name.len() <= 253
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        };
        if let (Some(name), Some(text)) = (&server_name, &raw.server_name)
            && !has_probe_reference(name)
            && !is_host(name)
        {
            self.error(
                &text.referenced,
                format!("`{name}` is not a host name or IP address"),
            );
        }
        let ca = raw.ca.as_ref().and_then(|c| self.text(c));
        Some(TlsCheck {
            address,
            host,
            port,
            server_name,
            min_days_valid: raw
                .min_days_valid
                .map_or(DEFAULT_MIN_DAYS_VALID, |d| d.value),
            ca,
        })
    }

    fn grpc_health(&mut self, raw: Spanned<RawGrpcHealth>) -> Option<GrpcHealthCheck> {
        let raw = raw.value;
        let (address, _, _) = self.host_port(&raw.address)?;
        let service = match &raw.service {
            Some(s) => self.text(s)?,
            None => String::new(),
        };
        let tls = raw.tls.unwrap_or(false);
        let ca = raw.ca.as_ref().and_then(|c| self.text(c));
        if let (Some(_), false, Some(text)) = (&ca, tls, &raw.ca) {
            self.error(
                &text.referenced,
                "`ca` is for a TLS connection: add `tls: true`",
            );
        }
        Some(GrpcHealthCheck {
            address,
            service,
            tls,
            ca,
        })
    }

    /// A `host:port` address (IPv6 in brackets): the text, the host and the port.
    fn host_port(&mut self, text: &Text) -> Option<(String, String, u16)> {
        let address = self.text(text)?;
        let parsed = address.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port.parse().ok()?;
            (!host.is_empty() && port > 0).then(|| (host.to_owned(), port))
        });
        let Some((host, port)) = parsed else {
            self.error(
                &text.referenced,
                format!("`{address}` is not host:port (e.g. db.internal:5432, [::1]:8080)"),
            );
            return None;
        };
        Some((address, host, port))
    }

    /// `expect.tools`.
    fn tools(&mut self, raw: Spanned<RawTools>) -> Option<ToolExpect> {
        let loc = raw.referenced;
        let raw = raw.value;
        let errors_before = self.errors.len();
        let asks_something = raw.called.is_some()
            || raw.not_called.is_some()
            || raw.args.is_some()
            || raw.max_calls.is_some();
        let path = match &raw.path {
            None => None,
            Some(text) => Some(self.json_path(text)?),
        };
        let format = match raw.format.as_ref().map(|f| (f, f.value.as_str())) {
            None | Some((_, "auto")) => ToolFormat::Auto,
            Some((_, "openai")) => ToolFormat::OpenAi,
            Some((_, "anthropic")) => ToolFormat::Anthropic,
            Some((_, "plain")) => ToolFormat::Plain,
            Some((f, other)) => {
                self.error(
                    &f.referenced,
                    format!("format is `auto`, `openai`, `anthropic` or `plain`, got `{other}`"),
                );
                ToolFormat::Auto
            }
        };
        let called = self.string_list(raw.called);
        let not_called = self.string_list(raw.not_called);
        let mut args = Vec::new();
        for (tool, value) in raw.args.map(|a| a.0).unwrap_or_default() {
            let Some(expected) = self.value(&value) else {
                continue;
            };
            if !expected.is_object() {
                self.error(
                    &value.referenced,
                    format!(
                        "args of `{}` is a JSON object the call's arguments must contain, e.g. {{invoice_id: INV-001}}",
                        tool.value
                    ),
                );
                continue;
            }
            args.push((tool.value, expected));
        }
        let strict_order = match raw.order.as_ref().map(|o| (o, o.value.as_str())) {
            None | Some((_, "any")) => false,
            Some((_, "strict")) => true,
            Some((o, other)) => {
                self.error(
                    &o.referenced,
                    format!("order is `any` or `strict`, got `{other}`"),
                );
                false
            }
        };
        let max_calls = raw.max_calls.map(|m| m.value);
        if !asks_something {
            self.error(
                &loc,
                "expect.tools checks nothing: give `called`, `not_called`, `args` or `max_calls`",
            );
        }
        (self.errors.len() == errors_before).then_some(ToolExpect {
            path,
            format,
            called,
            not_called,
            args,
            strict_order,
            max_calls,
        })
    }

    pub(super) fn string_list(&mut self, raw: Option<Spanned<StringList>>) -> Vec<String> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in raw.value.0 {
            match self.expander.expand(&item) {
                Ok(s) => out.push(s.into_owned()),
                Err(e) => self.var_error(&raw.referenced, &item, &e),
            }
        }
        out
    }

    /// A JSONPath, compiled; errors point at the character where it goes wrong.
    pub(super) fn json_path(&mut self, text: &Text) -> Option<JsonPathExpr> {
        let source = self.text(text)?;
        if has_probe_reference(&source) {
            self.error(
                &text.referenced,
                "a JSONPath cannot use ${probe:…} variables",
            );
            return None;
        }
        match JsonPathExpr::parse(&source) {
            Ok(p) => Some(p),
            Err((message, at)) => {
                let (line, column) = self.var_position(&text.referenced, &text.value, at);
                self.errors.push(PlanError {
                    line,
                    column,
                    message,
                });
                None
            }
        }
    }

    pub(super) fn json_assertion(
        &mut self,
        raw: Spanned<RawJsonAssertion>,
    ) -> Option<JsonAssertion> {
        let loc = raw.referenced;
        let raw = raw.value;
        let path = self.json_path(&raw.path)?;
        let source = path.as_str().to_owned();
        let equals = match &raw.equals {
            Some(v) => Some(self.value(v)?),
            None => None,
        };
        let contains = match &raw.contains {
            Some(v) => Some(self.value(v)?),
            None => None,
        };
        let min_length = raw.min_length.as_ref().map(|m| m.value);
        let max_length = raw.max_length.as_ref().map(|m| m.value);
        let has_condition =
            equals.is_some() || contains.is_some() || min_length.is_some() || max_length.is_some();
        if raw.exists == Some(false) && has_condition {
            self.error(
                &loc,
                format!(
                    "`{source}`: `exists: false` cannot be combined with equals, contains, min_length or max_length"
                ),
            );
            return None;
        }
        if let (Some(min), Some(max)) = (&raw.min_length, &raw.max_length)
            && min.value > max.value
        {
            self.error(
                &max.referenced,
                format!("max_length {} is below min_length {}", max.value, min.value),
            );
            return None;
        }
        Some(JsonAssertion {
            path,
            exists: raw.exists,
            equals,
            contains,
            min_length,
            max_length,
        })
    }

    pub(super) fn latency(
        &mut self,
        raw: Spanned<RawLatency>,
        base_url: Option<&str>,
    ) -> Option<LatencyCheck> {
        let loc = raw.referenced;
        let raw = raw.value;
        let errors_before = self.errors.len();
        let request_loc = raw.request.referenced;
        let request = self.request(&request_loc, raw.request.value, base_url);
        let expect_status = self.status(raw.expect_status);
        let samples = match raw.samples {
            None => 5,
            Some(s) if (1..=100_000).contains(&s.value) => s.value,
            Some(s) => {
                self.error(
                    &s.referenced,
                    format!("samples must be between 1 and 100000, got {}", s.value),
                );
                1
            }
        };
        let concurrency = match raw.concurrency {
            None => 1,
            Some(c) if c.value >= 1 => c.value.min(samples),
            Some(c) => {
                self.error(&c.referenced, "concurrency must be at least 1");
                1
            }
        };
        let percentile = match raw.percentile {
            None => 95.0,
            Some(p) if p.value > 0.0 && p.value <= 100.0 => p.value,
            Some(p) => {
                self.error(
                    &p.referenced,
                    format!(
                        "percentile must be above 0 and at most 100, got {}",
                        p.value
                    ),
                );
                95.0
            }
        };
        let max_error_rate = match raw.max_error_rate {
            None => 0.0,
            Some(r) if (0.0..=1.0).contains(&r.value) => r.value,
            Some(r) => {
                self.error(
                    &r.referenced,
                    format!(
                        "max_error_rate is a share between 0 and 1 (0.05 = 5%), got {}",
                        r.value
                    ),
                );
                0.0
            }
        };
        let pass = raw.pass_below.as_ref().and_then(|d| self.duration(d));
        let warn = raw.warn_below.as_ref().and_then(|d| self.duration(d));
        let (pass_below, warn_below) = match (&raw.pass_below, &raw.warn_below) {
            // The seed article's thresholds: p95 under 3 s passes, under 5 s warns.
            (None, None) => (Duration::from_secs(3), Some(Duration::from_secs(5))),
            (None, Some(w)) => {
                self.error(&w.referenced, "warn_below needs pass_below as well");
                (Duration::ZERO, None)
            }
            (Some(_), _) => (pass.unwrap_or_default(), warn),
        };
        if let (Some(w), Some(raw_w)) = (warn_below, &raw.warn_below)
            && raw.pass_below.is_some()
            && w <= pass_below
            && !pass_below.is_zero()
        {
            self.error(
                &raw_w.referenced,
                format!(
                    "warn_below ({}) must be greater than pass_below ({})",
                    PlanDuration(w),
                    PlanDuration(pass_below)
                ),
            );
        }
        let _ = loc;
        (self.errors.len() == errors_before).then_some(LatencyCheck {
            request: request?,
            expect_status,
            max_error_rate,
            samples,
            concurrency,
            percentile,
            pass_below,
            warn_below,
        })
    }

    pub(super) fn names(&mut self, raw: Option<Vec<Text>>, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for item in raw.unwrap_or_default() {
            let Some(name) = self.text(&item) else {
                continue;
            };
            if name.trim().is_empty() {
                self.error(&item.referenced, format!("empty {what} name"));
            } else {
                out.push(name);
            }
        }
        out
    }

    pub(super) fn database(&mut self, raw: Spanned<RawDatabase>) -> Option<DatabaseCheck> {
        let loc = raw.referenced;
        let raw = raw.value;
        let errors_before = self.errors.len();
        let url = self.text(&raw.url).unwrap_or_default();
        let is_sqlite = url.starts_with("sqlite:");
        if self.errors.len() == errors_before
            && !has_probe_reference(&url)
            && !(is_sqlite
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("mysql://"))
        {
            self.error(
                &raw.url.referenced,
                format!(
                    "database url `{}` is not supported: use postgres://… (or postgresql://…), mysql://… (MySQL, MariaDB) or sqlite:…",
                    redact_url(&url)
                ),
            );
        }
        // `schema` only means something to PostgreSQL; SQLite ignores it, so one plan can
        // point at either engine through `${DATABASE_URL}`.
        let schema = raw.schema.as_ref().and_then(|s| self.text(s));
        let tables = self.names(raw.tables, "table");
        let mut columns = Vec::new();
        for (table, cols) in raw.columns.map(|c| c.0).unwrap_or_default() {
            let Some(table_name) = self.text(&table) else {
                continue;
            };
            let cols = self.names(Some(cols), "column");
            if cols.is_empty() {
                self.error(
                    &table.referenced,
                    format!("no columns listed for table `{table_name}`"),
                );
            }
            columns.push((table_name, cols));
        }
        let indexes = self.names(raw.indexes, "index");
        let mut queries = Vec::new();
        for q in raw.queries.unwrap_or_default() {
            let q_loc = q.referenced;
            let q = q.value;
            let Some(sql) = self.text(&q.sql) else {
                continue;
            };
            if sql.trim().is_empty() {
                self.error(&q_loc, "empty `sql`");
                continue;
            }
            if sql.contains(STEP_PREFIX) {
                self.error(
                    &q.sql.referenced,
                    "captured values are never pasted into SQL: write a placeholder ($1, or ? on MySQL) and list the value in `params: [\"${step:NAME}\"]`",
                );
            }
            let params: Vec<String> = q
                .params
                .unwrap_or_default()
                .iter()
                .filter_map(|p| self.text(p))
                .collect();
            let expect = match q.expect {
                None => QueryExpect::default(),
                Some(e) => {
                    let e_loc = e.referenced;
                    let e = e.value;
                    if let (Some(min), Some(max)) = (e.min, e.max)
                        && min > max
                    {
                        self.error(&e_loc, format!("min {min} is above max {max}"));
                    }
                    let equals = match &e.equals {
                        Some(v) => self.value(v),
                        None => None,
                    };
                    QueryExpect {
                        min: e.min,
                        max: e.max,
                        equals,
                    }
                }
            };
            queries.push(DbQuery {
                sql,
                params,
                expect,
            });
        }
        if tables.is_empty() && columns.is_empty() && indexes.is_empty() && queries.is_empty() {
            self.error(
                &loc,
                "this database check checks nothing: list tables, columns, indexes or queries",
            );
        }
        (self.errors.len() == errors_before).then_some(DatabaseCheck {
            url,
            schema,
            tables,
            columns,
            indexes,
            queries,
        })
    }
}

/// `` `http`, `latency`, … or `steps` ``: every kind a check may have.
fn kind_list() -> String {
    let names: Vec<String> = CheckKind::NAMES.iter().map(|n| format!("`{n}`")).collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The most repeats of one check.
const MAX_REPEAT: u32 = 100;
