//! postflight's own HTTP/1.1 exchanges: a connection the calling task drives itself.
//!
//! A general-purpose client (reqwest) hands every request to a connection task through a pool
//! and channels; against a fast service that bookkeeping is a large part of what a latency
//! sample measures (bench/run: reqwest's p50 on a loopback nginx was 1.4–1.7× wrk's) and of the
//! CPU a check costs. Here the task that sends the request also polls the connection, so a
//! sample is the service's time plus the network, as a load tester sees it.
//!
//! Used where it changes nothing on the wire: for latency samples, and for `http` checks on
//! plain `http://` URLs (reqwest would speak HTTP/1.1 there too). Requests that must go through
//! a proxy stay with reqwest ([`applies`]), which knows proxies; `https` `http` checks stay with
//! reqwest, which may negotiate HTTP/2. Latency samples over TLS offer only `http/1.1`: one
//! request at a time per connection is what makes a sample mean "one request's latency".

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use postflight_plan::model::{Body, HttpRequest, Plan};
use postflight_plan::secrets::redact_url;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use postflight_ops::http_client::{RequestError, install_crypto_provider, root_cause};

use crate::http::MAX_BODY_BYTES;

/// How long opening a connection (TCP and TLS) may take, as for the other HTTP checks.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `url` is sampled here rather than with reqwest: not when a proxy is configured for
/// its scheme, because then the proxy is part of the path users take.
pub fn applies(url: &url::Url) -> bool {
    let vars: &[&str] = match url.scheme() {
        "https" => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        _ => &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"],
    };
    !vars
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}

/// Everything needed to open connections to the URL and send the request again and again.
#[derive(Debug)]
pub struct Target {
    /// The host to resolve and connect to (an IP literal without brackets, or a name).
    host: String,
    /// The port to connect to.
    port: u16,
    /// Set for https: the name the certificate must be valid for.
    tls_name: Option<ServerName<'static>>,
    request: hyper::http::request::Parts,
    body: Bytes,
    /// `METHOD url` with secrets redacted, for messages.
    shown: String,
}

impl Target {
    /// Resolves the request against the plan (URL, target headers, body) once for all samples.
    pub fn new(plan: &Plan, request: &HttpRequest, url: &url::Url) -> Result<Self, String> {
        let shown = format!("{} {}", request.method, redact_url(url.as_str()));
        let host = url
            .host()
            .ok_or_else(|| format!("{shown}: the URL has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{shown}: the URL has no port"))?;
        let tls_name = match (url.scheme(), host.clone()) {
            ("https", url::Host::Domain(name)) => {
                Some(ServerName::try_from(name.to_owned()).map_err(|e| {
                    format!("{shown}: `{name}` is not a valid TLS server name: {e}")
                })?)
            }
            ("https", url::Host::Ipv4(ip)) => Some(ServerName::from(std::net::IpAddr::V4(ip))),
            ("https", url::Host::Ipv6(ip)) => Some(ServerName::from(std::net::IpAddr::V6(ip))),
            _ => None,
        };
        let host_str = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host_str}:{port}"),
            None => host_str.to_owned(),
        };
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(if path.is_empty() { "/" } else { path });
        let headers = plan.request_headers(request);
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("host") {
            builder = builder.header(HOST, authority.as_str());
        }
        if !has("user-agent") {
            builder = builder.header(USER_AGENT, postflight_ops::http_client::USER_AGENT);
        }
        let body = match &request.body {
            Body::None => Bytes::new(),
            Body::Json(value) => {
                if !has("content-type") {
                    builder = builder.header(CONTENT_TYPE, "application/json");
                }
                Bytes::from(
                    serde_json::to_vec(value)
                        .map_err(|e| format!("{shown}: the JSON body cannot be serialised: {e}"))?,
                )
            }
            Body::Raw(text) => Bytes::from(text.clone()),
        };
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{shown}: `{name}` is not a valid header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("{shown}: the value of header `{name}` is not valid"))?;
            builder = builder.header(name, value);
        }
        let (request, ()) = builder
            .body(())
            .map_err(|e| format!("cannot build {shown}: {e}"))?
            .into_parts();
        Ok(Self {
            host: match host {
                url::Host::Domain(name) => name.to_owned(),
                url::Host::Ipv4(ip) => ip.to_string(),
                url::Host::Ipv6(ip) => ip.to_string(),
            },
            port,
            tls_name,
            request,
            body,
            shown,
        })
    }

    /// `METHOD url` with secrets redacted, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.request.method.clone();
        *request.uri_mut() = self.request.uri.clone();
        *request.headers_mut() = self.request.headers.clone();
        request
    }
}

/// The connection's own future: hyper's protocol state machine, polled by the exchanging task.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An open HTTP/1.1 connection; keep it in an `Option` slot and pass it to [`exchange`], which
/// opens it when empty and empties it when it can no longer be used.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
    /// The driver finished (the server closed): the next request needs a new connection.
    closed: bool,
}

/// How much of the answer to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// The status only; the body is read and dropped (latency samples).
    Status,
    /// Status, headers and up to [`MAX_BODY_BYTES`] of the body (`http` checks).
    Everything,
}

/// An answer as received.
#[derive(Debug, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names in lower case, in received order (empty for [`Capture::Status`]).
    pub headers: Vec<(String, String)>,
    /// The body, cut at [`MAX_BODY_BYTES`] (empty for [`Capture::Status`]).
    pub body: Vec<u8>,
    /// Whether the body was cut.
    pub truncated: bool,
}

/// Sends the request and reads the whole answer (up to the size limit), driving the connection
/// meanwhile. On any error the slot is emptied: a connection that may hold half an answer is
/// never reused. Callers bound the time (the clock is theirs).
pub async fn exchange(
    target: &Target,
    slot: &mut Option<Connection>,
    capture: Capture,
) -> Result<Response, RequestError> {
    let result = exchange_on(target, slot, capture).await;
    if result.is_err() {
        *slot = None;
    }
    result
}

async fn exchange_on(
    target: &Target,
    slot: &mut Option<Connection>,
    capture: Capture,
) -> Result<Response, RequestError> {
    if slot.as_ref().is_none_or(|c| c.closed) {
        *slot = None;
        *slot = Some(connect(target).await?);
    }
    let Some(connection) = slot.as_mut() else {
        return Err(RequestError::Other("no connection".to_owned()));
    };
    let Connection {
        sender,
        driver,
        closed,
    } = connection;
    let request = target.request();
    let answer = async {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let mut answer = Response {
            status: response.status().as_u16(),
            ..Response::default()
        };
        if capture == Capture::Everything {
            answer.headers = header_pairs(response.headers());
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // trailers
            };
            if capture == Capture::Everything {
                let room = MAX_BODY_BYTES - answer.body.len();
                if data.len() > room {
                    answer.body.extend_from_slice(&data[..room]);
                    answer.truncated = true;
                    break;
                }
                answer.body.extend_from_slice(&data);
            }
        }
        Ok::<_, hyper::Error>(answer)
    };
    let mut answer = std::pin::pin!(answer);
    let result = tokio::select! {
        biased;
        result = &mut answer => result,
        end = driver.as_mut() => {
            // The server closed the connection, perhaps right after a complete answer
            // (`Connection: close`): what it sent is still delivered.
            *closed = true;
            match end {
                Ok(()) => answer.await,
                Err(e) => Err(e),
            }
        }
    };
    let answer = result.map_err(|e| describe(&e))?;
    if answer.truncated {
        // The rest of the body was not read: the connection cannot carry another request.
        *closed = true;
    }
    Ok(answer)
}

/// An answer's headers as name and text pairs, in their order (repeated names kept).
pub(crate) fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn connect(target: &Target) -> Result<Connection, RequestError> {
    let open = async {
        let addresses = postflight_ops::dns::lookup(&target.host, target.port)
            .await
            .map_err(|e| RequestError::Resolve(e.reason))?;
        let tcp = TcpStream::connect(addresses.as_slice())
            .await
            .map_err(|e| RequestError::Connect(root_cause(&e)))?;
        // Requests are small and written whole: no reason to wait for more bytes.
        let _ = tcp.set_nodelay(true);
        let driver: Driver;
        let sender;
        match &target.tls_name {
            None => {
                let (s, conn) = http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| describe(&e))?;
                (sender, driver) = (s, Box::pin(conn));
            }
            Some(name) => {
                let tls =
                    tokio_rustls::TlsConnector::from(tls_config().map_err(RequestError::Tls)?)
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| tls_error(&e))?;
                let (s, conn) = http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| describe(&e))?;
                (sender, driver) = (s, Box::pin(conn));
            }
        }
        Ok(Connection {
            sender,
            driver,
            closed: false,
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
        Ok(result) => result,
        Err(_) => Err(RequestError::Connect(format!(
            "no connection within {}",
            postflight_plan::duration::PlanDuration(CONNECT_TIMEOUT)
        ))),
    }
}

/// The process's TLS client configuration: the platform's trust store (as for `http` checks),
/// HTTP/1.1 only.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::ConfigVerifierExt as _;
            install_crypto_provider();
            let mut config = rustls::ClientConfig::with_platform_verifier()
                .map_err(|e| format!("cannot load the system's trusted certificates: {e}"))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

fn tls_error(error: &std::io::Error) -> RequestError {
    let root = root_cause(error);
    RequestError::Tls(
        postflight_ops::tls::explain(&root, "the server")
            .unwrap_or_else(|| format!("TLS error: {root}")),
    )
}

fn describe(error: &hyper::Error) -> RequestError {
    let root = root_cause(error);
    RequestError::Other(
        if error.is_incomplete_message() || error.is_body_write_aborted() {
            format!("the connection closed before a complete answer ({root})")
        } else if error.source().is_none() {
            root
        } else {
            format!("{error}: {root}")
        },
    )
}
