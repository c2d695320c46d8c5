//! Outbound `wasi:http`: how a guest's request leaves the host.
//!
//! `wasi:http` 0.2 (`outgoing-handler.handle`) and 0.3 (`client.send`) both
//! hand every request to [`WasiHttpHooks::send_request`], so this one hook
//! is the only way out of the sandbox over the network: raw `wasi:sockets`
//! are linked (every WASI 0.2 guest's standard library imports them) but
//! closed by [`Sandbox::wasi_ctx`](super::Sandbox::wasi_ctx) (no TCP, no
//! UDP, no name lookups, and wasmtime's default address check refuses
//! every address).
//!
//! Invariants, each kept by the code below that names it:
//!
//! - **The name, then the address.** A request passes the
//!   `allowed_outbound_hosts` check on the URL's scheme, host and port
//!   first ([`OutboundHost::allows`](crate::manifest::outbound::OutboundHost::allows)),
//!   then each address the host resolves to is checked by
//!   [`check_address`]: loopback, private, link-local, unspecified and the
//!   other special addresses are reachable only when an entry names that
//!   address (or `localhost`, for loopback). A wildcard never does.
//! - **Connect to what was checked.** The host resolves the name itself,
//!   once, and connects to exactly the addresses that passed. The HTTP
//!   client is handed a connected socket and never looks the name up
//!   again, so there is no window in which DNS could answer differently
//!   (DNS rebinding).
//! - **No redirects in the host.** hyper's connection-level client sends
//!   the one request and hands back whatever answered, a 3xx included. A
//!   guest that follows a redirect makes a new request, which comes through
//!   this hook and both checks again. Whatever is added here later must keep
//!   that: a redirect followed by the host would have to go through
//!   [`OutboundHttp::send`] for every hop.
//!
//! A request refused by the name check fails in the guest with
//! `HTTP-request-denied`, one refused by the address check with
//! `destination-IP-prohibited` (the `wasi:http` error for exactly that);
//! both are logged with the component,
//! the host and, for the address check, the address.

use super::sandbox::Sandbox;
use crate::manifest::outbound::{SpecialAddress, check_address, ip_literal};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long each step may take when the guest's `request-options` do not
/// say: the name lookup and the connection (TCP, TLS, HTTP handshake), the
/// first byte of the answer, and the gap between two frames of its body.
/// The same ten minutes wasmtime's own client allows.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The outbound-HTTP policy of one instance: its component's grants.
pub(crate) struct OutboundHttp {
    pub(crate) sandbox: Arc<Sandbox>,
}

/// What [`WasiHttpHooks::send_request`] returns: the answer's head and body,
/// and a future that ends with the connection.
type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        // Nothing is reported back on `fut`: the answer's body reports its
        // own errors to the guest as it is read.
        drop(fut);
        let sandbox = self.sandbox.clone();
        Box::new(async move { OutboundHttp::send(&sandbox, request, options).await })
    }
}

/// Where a request goes, read from its URL.
struct Destination {
    scheme: &'static str,
    /// The URL's host: a name, an IPv4 address, or an IPv6 one in brackets.
    host: String,
    port: u16,
}

impl Destination {
    fn of(request: &http::Request<WasiBody>) -> Result<Destination, Error> {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(Error::HttpProtocolError),
        };
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        Ok(Destination {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The guest's `request-options`, with [`DEFAULT_TIMEOUT`] where unset.
#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    fn from_options(options: Option<RequestOptions>) -> Timeouts {
        let options = options.unwrap_or_default();
        Timeouts {
            connect: options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
            first_byte: options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT),
            // A zero gap would fail every body at once; a nanosecond is the
            // nearest thing the guest can have meant.
            between_bytes: options
                .between_bytes_timeout
                .unwrap_or(DEFAULT_TIMEOUT)
                .max(Duration::from_nanos(1)),
        }
    }
}

impl OutboundHttp {
    /// Checks `request` against `sandbox`'s grants, then sends it over a
    /// connection to an address that passed the checks. Every outbound
    /// request goes through here, once per request.
    async fn send(
        sandbox: &Sandbox,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> wasmtime_wasi_http::Result<(
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    )> {
        let destination = Destination::of(&request)?;
        // Invariant: the name, then the address.
        if !sandbox.allows_outbound(destination.scheme, &destination.host, destination.port) {
            tracing::warn!(
                component = %sandbox.component,
                "denied outbound request to {destination}: not in allowed_outbound_hosts"
            );
            return Err(Error::HttpRequestDenied);
        }
        let timeouts = Timeouts::from_options(options);
        let addresses = resolve(&destination, timeouts.connect).await?;
        let allowed = checked_addresses(sandbox, &destination, addresses)?;
        // Invariant: connect to what was checked. Only `allowed` is ever
        // connected to; the name is not looked up again below.
        let tcp = connect(&allowed, timeouts.connect).await?;
        // The request goes to the server in origin-form (`/path?query`); the
        // `Host` header, set by wasmtime from the URL, carries the name.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        if destination.scheme == "https" {
            let tls = tls_connect(&destination, tcp, timeouts.connect).await?;
            exchange(tls, request, timeouts).await
        } else {
            exchange(tcp, request, timeouts).await
        }
    }
}

/// The addresses `destination`'s host stands for: the address itself for
/// an IP literal, else what the system resolver answers, once.
async fn resolve(destination: &Destination, timeout: Duration) -> Result<Vec<SocketAddr>, Error> {
    if let Some(ip) = ip_literal(&destination.host) {
        return Ok(vec![SocketAddr::new(ip, destination.port)]);
    }
    let lookup = tokio::net::lookup_host((destination.host.as_str(), destination.port));
    match tokio::time::timeout(timeout, lookup).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(e)) => Err(Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        }),
        Ok(Ok(found)) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(Error::DestinationNotFound)
            } else {
                Ok(found)
            }
        }
    }
}

/// The `addresses` of `destination` that `sandbox`'s grants let it reach
/// ([`check_address`]). Each refused one is logged; if none is left, the
/// request fails with `destination-IP-prohibited`.
fn checked_addresses(
    sandbox: &Sandbox,
    destination: &Destination,
    addresses: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Error> {
    let mut allowed = Vec::with_capacity(addresses.len());
    let mut refused: Vec<(SocketAddr, SpecialAddress)> = Vec::new();
    for address in addresses {
        match check_address(
            &sandbox.outbound,
            destination.scheme,
            address.ip(),
            destination.port,
        ) {
            Ok(()) => allowed.push(address),
            Err(class) => refused.push((address, class)),
        }
    }
    for (address, class) in &refused {
        // "localhost resolved to 127.0.0.1", or just "127.0.0.1" for a literal.
        let resolved = match ip_literal(&destination.host) {
            Some(_) => address.ip().to_string(),
            None => format!("{} resolved to {}", destination.host, address.ip()),
        };
        tracing::warn!(
            component = %sandbox.component,
            host = %destination.host,
            %address,
            "refused outbound request to {destination}: {resolved} is {class}, \
             which only an allowed_outbound_hosts entry naming that address \
             (or localhost, for loopback) may reach",
        );
    }
    if allowed.is_empty() {
        return Err(Error::DestinationIpProhibited);
    }
    Ok(allowed)
}

/// A TCP connection to the first of `addresses` that answers, within
/// `timeout` for all of them together.
async fn connect(addresses: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Error> {
    let attempts = async {
        let mut last_error = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(Error::Connect(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
        })))
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .map_err(|_| Error::ConnectionTimeout)?
}

/// The TLS client settings: rustls with ring and the Mozilla roots
/// (`webpki-roots`), as wasmtime's own client uses. Built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| format!("cannot set up TLS for outbound requests: {e}"))
        })
        .clone()
        .map_err(|e| Error::InternalError(Some(e)))
}

/// TLS over `tcp`, verifying the server's certificate for the URL's host
/// (the name the guest asked for, not the address it resolved to).
async fn tls_connect(
    destination: &Destination,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let name = destination
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name = rustls::pki_types::ServerName::try_from(name)?;
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    tokio::time::timeout(timeout, connector.connect(server_name, tcp))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)
}

/// Sends `request` over `stream` (HTTP/1.1) and returns the answer's head
/// once it came. The connection is driven by its own task until the answer
/// is read or dropped; the returned future ends with it.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
    timeouts: Timeouts,
) -> wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let connection = tokio::spawn(connection);
    let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
    let response = response.map(|incoming| {
        TimedBody {
            incoming,
            between_bytes: timeouts.between_bytes,
            deadline: Box::pin(tokio::time::sleep(timeouts.between_bytes)),
        }
        .boxed_unsync()
    });
    let io = async move {
        match connection.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.is_timeout() => Err(Error::HttpResponseTimeout),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(e) => Err(Error::InternalError(Some(format!(
                "the outbound connection's task ended: {e}"
            )))),
        }
    };
    Ok((response, Box::new(io)))
}

/// An answer's body that fails with `connection-read-timeout` when no frame
/// came for `between_bytes`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + this.between_bytes;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
