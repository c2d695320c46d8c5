//! Blocking HTTP calls to the Dapr sidecar over outbound `wasi:http` 0.2.
//!
//! The plug's exports are synchronous WIT functions, so they cannot wait
//! the WASI 0.3 way (a synchronous task may not block on a waitable set).
//! `wasi:http` 0.2 waits through `wasi:io/poll`, which any 0.2 runtime
//! provides, and a synchronous export may call it.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use wasip2::io::streams::StreamError;

/// How long to wait for a connection to the sidecar before calling it unreachable.
const CONNECT_TIMEOUT_NS: u64 = 5_000_000_000;
/// The most bytes one `wasi:io` stream write takes.
const WRITE_CHUNK: usize = 4096;

/// One call to the sidecar the environment names, with its whole answer.
/// `Err` says why no answer came: bad configuration, an unreachable
/// sidecar, a broken connection.
pub fn send(
    method: Method,
    path_and_query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Answer, String> {
    let sidecar = Sidecar::from_env()?;
    sidecar
        .call(method, path_and_query, content_type, body)
        .map_err(|e| {
            format!(
                "cannot reach the Dapr sidecar at {}: {e}",
                sidecar.address()
            )
        })
}

/// Where the sidecar listens, read from the environment as Dapr's SDKs read it.
struct Sidecar {
    scheme: Scheme,
    authority: String,
    token: Option<String>,
}

/// A sidecar's answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Sidecar {
    /// `DAPR_HTTP_ENDPOINT` (a URL such as `http://127.0.0.1:3500`), else
    /// `127.0.0.1:$DAPR_HTTP_PORT`, else `127.0.0.1:3500`; with
    /// `dapr-api-token: $DAPR_API_TOKEN` when that is set.
    fn from_env() -> Result<Sidecar, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let token = var("DAPR_API_TOKEN");
        if let Some(endpoint) = var("DAPR_HTTP_ENDPOINT") {
            let (scheme, rest) = if let Some(rest) = endpoint.strip_prefix("http://") {
                (Scheme::Http, rest)
            } else if let Some(rest) = endpoint.strip_prefix("https://") {
                (Scheme::Https, rest)
            } else {
                return Err(format!(
                    "DAPR_HTTP_ENDPOINT {endpoint:?} is not an http:// or https:// URL"
                ));
            };
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!(
                    "DAPR_HTTP_ENDPOINT {endpoint:?} must be a scheme and host[:port], with no path"
                ));
            }
            return Ok(Sidecar {
                scheme,
                authority: authority.to_owned(),
                token,
            });
        }
        let port = match var("DAPR_HTTP_PORT") {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("DAPR_HTTP_PORT {port:?} is not a port number"))?,
            None => 3500,
        };
        Ok(Sidecar {
            scheme: Scheme::Http,
            authority: format!("127.0.0.1:{port}"),
            token,
        })
    }

    /// Where calls go, for error messages.
    fn address(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            _ => "http",
        };
        format!("{scheme}://{}", self.authority)
    }

    /// Sends one request and reads the whole answer.
    fn call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Answer, String> {
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(content_type) = content_type {
            headers.push(("content-type".into(), content_type.as_bytes().to_vec()));
        }
        if let Some(token) = &self.token {
            headers.push(("dapr-api-token".into(), token.as_bytes().to_vec()));
        }
        let headers =
            Fields::from_list(&headers).map_err(|e| format!("a header cannot be sent: {e:?}"))?;
        let request = OutgoingRequest::new(headers);
        let refused = |what: &str| format!("the request's {what} was refused");
        request
            .set_method(&method)
            .map_err(|()| refused("method"))?;
        request
            .set_scheme(Some(&self.scheme))
            .map_err(|()| refused("scheme"))?;
        request
            .set_authority(Some(&self.authority))
            .map_err(|()| refused("authority"))?;
        request
            .set_path_with_query(Some(path_and_query))
            .map_err(|()| refused("path"))?;
        let outgoing = request.body().map_err(|()| refused("body"))?;

        let options = RequestOptions::new();
        // A runtime may not support a timeout; the call then waits as long as it allows.
        let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
        let pending = outgoing_handler::handle(request, Some(options)).map_err(describe)?;

        {
            let stream = outgoing.write().map_err(|()| refused("body stream"))?;
            for chunk in body.chunks(WRITE_CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| format!("cannot send the body: {e:?}"))?;
            }
        }
        OutgoingBody::finish(outgoing, None).map_err(describe)?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(describe(code)),
            Some(Err(())) | None => return Err("the response was lost".into()),
        };
        read(response)
    }
}

fn read(response: IncomingResponse) -> Result<Answer, String> {
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "the response body was already taken".to_owned())?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the response body stream was already taken".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(bytes) => body.extend_from_slice(&bytes),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!(
                        "the response body broke off: {}",
                        e.to_debug_string()
                    ));
                }
            }
        }
    }
    Ok(Answer { status, body })
}

fn describe(code: ErrorCode) -> String {
    format!("{code:?}")
}
