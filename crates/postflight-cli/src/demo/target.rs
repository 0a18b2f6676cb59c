//! The demo target: a small "agent backend" like the seed article's, with `/api/agent/chat`
//! and an invoice look-up tool, that can be switched into the regressions a migration causes.
//!
//! Its behaviour can be changed while it runs (`PUT /admin/behavior`), so the demo (and tests)
//! can simulate a migration without restarting it.
//!
//! With a database it also has sessions, for multi-step flows: `POST /api/login` opens one
//! (a row in `sessions`), a chat that names its session writes the message to `messages`,
//! and `POST /api/logout` closes it again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Ready-made behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Answers, tool calls work, fast.
    Healthy,
    /// Tool calls return "I could not find it".
    BrokenTools,
    /// Every answer is an empty string.
    Empty,
    /// Answers take 3.5 s (between the seed article's 3 s and 5 s latency thresholds).
    Slow,
    /// Answers take 6 s (beyond the seed article's 5 s threshold).
    VerySlow,
    /// Every API call answers 500.
    Errors,
}

/// What the backend does; every field can be changed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// Tool look-ups fail.
    pub tools_broken: bool,
    /// Answers are empty strings.
    pub empty_answers: bool,
    /// Added to every API call.
    pub delay_ms: u64,
    /// Every API call answers 500.
    pub errors: bool,
    /// This share of API calls (0..1) answers 500, at random: a flaky but healthy service.
    pub error_rate: f64,
    /// The next this many API calls answer 500, then the service is fine again: a blip.
    pub fail_next: u32,
}

impl Mode {
    /// The behaviour of this mode.
    pub fn behavior(self) -> Behavior {
        let base = Behavior::default();
        match self {
            Mode::Healthy => base,
            Mode::BrokenTools => Behavior {
                tools_broken: true,
                ..base
            },
            Mode::Empty => Behavior {
                empty_answers: true,
                ..base
            },
            Mode::Slow => Behavior {
                delay_ms: 3_500,
                ..base
            },
            Mode::VerySlow => Behavior {
                delay_ms: 6_000,
                ..base
            },
            Mode::Errors => Behavior {
                errors: true,
                ..base
            },
        }
    }
}

/// The behaviour, and how many of the failures `fail_next` asked for are still to come.
#[derive(Debug, Default)]
struct Backend {
    /// Sessions and messages (the demo's SQLite database), when it has one.
    database: Option<sqlx::SqlitePool>,
    behavior: RwLock<Behavior>,
    failures_left: AtomicU32,
    /// API calls received (`GET /admin/stats`).
    requests: AtomicU64,
    /// API calls inside their `delay_ms`: what a test waits on instead of sleeping.
    waiting: AtomicU64,
}

type Shared = Arc<Backend>;

/// A running demo target.
pub struct DemoTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    behavior: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl DemoTarget {
    /// Starts the backend on `addr` (port 0 picks a free port); with `database` (a SQLite
    /// pool on the demo's schema) it serves sessions too.
    pub async fn start(
        addr: SocketAddr,
        behavior: Behavior,
        database: Option<sqlx::SqlitePool>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared: Shared = Arc::new(Backend {
            database,
            behavior: RwLock::new(behavior),
            failures_left: AtomicU32::new(behavior.fail_next),
            requests: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "demo target stopped");
            }
        });
        Ok(Self {
            addr,
            behavior: shared,
            task,
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the behaviour of the running backend.
    pub fn set_behavior(&self, behavior: Behavior) {
        set(&self.behavior, behavior);
    }

    /// Serves until the process is interrupted.
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for DemoTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route("/api/agent/chat", post(chat))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/tools/invoices/{id}", get(invoice))
        .route("/health", get(health))
        .route("/admin/behavior", get(get_behavior).put(put_behavior))
        .route("/admin/stats", get(stats))
        .with_state(shared)
}

fn current(shared: &Shared) -> Behavior {
    shared.behavior.read().map(|b| *b).unwrap_or_default()
}

fn set(shared: &Shared, behavior: Behavior) {
    if let Ok(mut b) = shared.behavior.write() {
        *b = behavior;
    }
    shared
        .failures_left
        .store(behavior.fail_next, Ordering::SeqCst);
}

/// Applies the delay and the error modes shared by every API call.
async fn degrade(shared: &Shared, behavior: Behavior) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if behavior.delay_ms > 0 {
        // Counted down also when the client gives up mid-delay (the future is dropped).
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&shared.waiting);
        tokio::time::sleep(Duration::from_millis(behavior.delay_ms)).await;
    }
    let blip = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let unlucky = behavior.error_rate > 0.0 && fastrand::f64() < behavior.error_rate;
    (behavior.errors || blip || unlucky).then(|| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "internal error: connection pool exhausted"})),
        )
            .into_response()
    })
}

/// The invoices the look-up tool knows.
fn lookup(id: &str) -> Option<Value> {
    let (amount, status, date) = match id {
        "INV-001" => ("120.00", "paid", "2026-11-02"),
        "INV-002" => ("89.90", "open", "2026-11-14"),
        "INV-003" => ("1450.00", "overdue", "2026-10-01"),
        _ => return None,
    };
    Some(json!({"id": id, "amount": amount, "currency": "EUR", "status": status, "date": date}))
}

fn invoice_id(message: &str) -> Option<String> {
    let start = message.find("INV-")?;
    let digits: String = message[start + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("INV-{digits}"))
}

async fn chat(State(shared): State<Shared>, body: Option<Json<Value>>) -> Response {
    let behavior = current(&shared);
    if let Some(error) = degrade(&shared, behavior).await {
        return error;
    }
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body like {\"message\": \"Hi\"}"})),
        )
            .into_response();
    };
    let message = body["message"].as_str().unwrap_or_default();
    let session = match body.get("session") {
        None => None,
        Some(token) => match open_session(&shared, token.as_str().unwrap_or_default()).await {
            Ok(id) => Some((id, token.as_str().unwrap_or_default().to_owned())),
            Err(refusal) => return refusal,
        },
    };
    let mut tool_calls = Vec::new();
    let response = match invoice_id(message) {
        Some(_) if behavior.tools_broken => "I could not find it".to_owned(),
        Some(id) => {
            let result = lookup(&id);
            tool_calls
                .push(json!({"tool": "lookup_invoice", "arguments": {"id": id}, "result": result}));
            match result {
                Some(inv) => format!(
                    "Invoice {id}: {} {}, {} ({})",
                    inv["amount"].as_str().unwrap_or_default(),
                    inv["currency"].as_str().unwrap_or_default(),
                    inv["status"].as_str().unwrap_or_default(),
                    inv["date"].as_str().unwrap_or_default()
                ),
                None => format!("There is no invoice {id}."),
            }
        }
        None => {
            "Hello! I am the demo agent. I can look up invoices (try INV-001), orders and refunds."
                .to_owned()
        }
    };
    let response = if behavior.empty_answers {
        String::new()
    } else {
        response
    };
    // The same calls as an OpenAI-style chat completion would carry them (`arguments` is
    // JSON text there), so plans can assert on either shape.
    let openai_calls: Vec<Value> = tool_calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            json!({
                "id": format!("call_{i}"),
                "type": "function",
                "function": {
                    "name": call["tool"],
                    "arguments": call["arguments"].to_string(),
                }
            })
        })
        .collect();
    let mut message_id = Value::Null;
    if let (Some((conversation, token)), Some(db)) = (&session, &shared.database) {
        let written = sqlx::query(
            "INSERT INTO messages (conversation_id, body, session_token) VALUES (?1, ?2, ?3)",
        )
        .bind(conversation)
        .bind(message)
        .bind(token)
        .execute(db)
        .await;
        match written {
            Ok(done) => message_id = json!(done.last_insert_rowid()),
            Err(e) => return database_error(&e),
        }
    }
    Json(json!({
        "response": response,
        "message_id": message_id,
        "tool_calls": tool_calls,
        "choices": [{"index": 0, "message": {
            "role": "assistant",
            "content": response,
            "tool_calls": openai_calls,
        }}],
    }))
    .into_response()
}

/// The error of a request that needs the database when the backend has none.
fn no_database() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "this backend has no database: sessions are not available"})),
    )
        .into_response()
}

fn database_error(error: &sqlx::Error) -> Response {
    tracing::warn!(error = %error, "demo backend database error");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "database error"})),
    )
        .into_response()
}

/// The id of the open session `token`, or the answer that refuses it.
async fn open_session(shared: &Shared, token: &str) -> Result<i64, Response> {
    let Some(db) = &shared.database else {
        return Err(no_database());
    };
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM sessions WHERE token = ?1")
        .bind(token)
        .fetch_optional(db)
        .await
        .map_err(|e| database_error(&e))?;
    found.map(|(id,)| id).ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unknown or closed session"})),
        )
            .into_response()
    })
}

/// `POST /api/login {"user": NAME}`: opens a session.
async fn login(State(shared): State<Shared>, body: Option<Json<Value>>) -> Response {
    if let Some(error) = degrade(&shared, current(&shared)).await {
        return error;
    }
    let Some(db) = &shared.database else {
        return no_database();
    };
    let user = body
        .as_ref()
        .and_then(|Json(b)| b["user"].as_str())
        .unwrap_or_default()
        .to_owned();
    if user.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body like {\"user\": \"demo\"}"})),
        )
            .into_response();
    }
    let token = format!("sess-{:016x}", fastrand::u64(..));
    let opened = sqlx::query("INSERT INTO sessions (user_name, token) VALUES (?1, ?2)")
        .bind(&user)
        .bind(&token)
        .execute(db)
        .await;
    match opened {
        Ok(_) => Json(json!({"session_id": token, "user": user})).into_response(),
        Err(e) => database_error(&e),
    }
}

/// `POST /api/logout {"session": TOKEN}`: closes a session.
async fn logout(State(shared): State<Shared>, body: Option<Json<Value>>) -> Response {
    if let Some(error) = degrade(&shared, current(&shared)).await {
        return error;
    }
    let Some(db) = &shared.database else {
        return no_database();
    };
    let token = body
        .as_ref()
        .and_then(|Json(b)| b["session"].as_str())
        .unwrap_or_default()
        .to_owned();
    match sqlx::query("DELETE FROM sessions WHERE token = ?1")
        .bind(&token)
        .execute(db)
        .await
    {
        Ok(done) if done.rows_affected() > 0 => Json(json!({"logged_out": true})).into_response(),
        Ok(_) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown or closed session"})),
        )
            .into_response(),
        Err(e) => database_error(&e),
    }
}

async fn invoice(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let behavior = current(&shared);
    if let Some(error) = degrade(&shared, behavior).await {
        return error;
    }
    match lookup(&id) {
        Some(inv) if !behavior.tools_broken => Json(inv).into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("invoice {id} not found")})),
        )
            .into_response(),
    }
}

async fn health(State(shared): State<Shared>) -> Response {
    match degrade(&shared, current(&shared)).await {
        Some(error) => error,
        None => Json(json!({"status": "ok"})).into_response(),
    }
}

async fn get_behavior(State(shared): State<Shared>) -> Json<Behavior> {
    Json(current(&shared))
}

/// API calls so far, those waiting in their delay right now, and the sessions open.
async fn stats(State(shared): State<Shared>) -> Json<Value> {
    let mut sessions = Value::Null;
    if let Some(db) = &shared.database
        && let Ok((open,)) =
            sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM sessions WHERE token IS NOT NULL")
                .fetch_one(db)
                .await
    {
        sessions = json!(open);
    }
    Json(json!({
        "requests": shared.requests.load(Ordering::SeqCst),
        "waiting": shared.waiting.load(Ordering::SeqCst),
        "sessions": sessions,
    }))
}

async fn put_behavior(State(shared): State<Shared>, Json(new): Json<Behavior>) -> Response {
    if !(0.0..=1.0).contains(&new.error_rate) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("error_rate is a share from 0 to 1, got {}", new.error_rate)})),
        )
            .into_response();
    }
    set(&shared, new);
    Json(new).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_invoice_ids_in_messages() {
        assert_eq!(
            invoice_id("Look up invoice INV-001").as_deref(),
            Some("INV-001")
        );
        assert_eq!(invoice_id("INV-42?").as_deref(), Some("INV-42"));
        assert_eq!(invoice_id("Hello"), None);
        assert_eq!(invoice_id("INV-"), None);
    }

    #[tokio::test]
    async fn a_blip_fails_the_next_calls_then_heals() {
        let shared: Shared = Arc::default();
        set(
            &shared,
            Behavior {
                fail_next: 2,
                ..Behavior::default()
            },
        );
        let mut failed = 0;
        for _ in 0..5 {
            if degrade(&shared, current(&shared)).await.is_some() {
                failed += 1;
            }
        }
        assert_eq!(failed, 2);
        let always = Behavior {
            error_rate: 1.0,
            ..Behavior::default()
        };
        assert!(degrade(&shared, always).await.is_some());
        assert!(degrade(&shared, Behavior::default()).await.is_none());
    }

    #[test]
    fn modes_map_to_behaviors() {
        assert_eq!(Mode::Healthy.behavior(), Behavior::default());
        assert!(Mode::BrokenTools.behavior().tools_broken);
        assert_eq!(Mode::Slow.behavior().delay_ms, 3_500);
    }
}
