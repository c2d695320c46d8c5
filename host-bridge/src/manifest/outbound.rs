//! `allowed_outbound_hosts`: which network destinations a component may reach.
//!
//! Entries use Spin's syntax, `scheme://host[:port]`, where the scheme, the
//! host and the port may each be `*`, and the host may start with `*.` to
//! allow every subdomain. A missing port means the scheme's default port.
//! Nothing is allowed unless an entry allows it.

use std::fmt;

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHost {
    raw: String,
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`.
    Subdomains(String),
}

impl OutboundHost {
    /// Parses one entry. The error says what is wrong with it.
    pub fn parse(raw: &str) -> Result<OutboundHost, String> {
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            format!(
                "{raw:?} has no scheme: write it as scheme://host[:port], e.g. https://example.com"
            )
        })?;
        if rest.contains('/') {
            return Err(format!(
                "{raw:?} has a path: give only scheme://host[:port]"
            ));
        }
        if raw.contains("{{") {
            return Err(format!(
                "{raw:?} uses a template variable, which host-bridge does not support"
            ));
        }
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_owned()),
            other => {
                return Err(format!(
                    "{raw:?} has scheme {other:?}; use http, https or *"
                ));
            }
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => {
                let port = port.parse::<u16>().map_err(|_| {
                    format!("{raw:?} has port {port:?}, which is not a number or *")
                })?;
                (host, Some(port))
            }
            None => {
                let default = match scheme.as_deref() {
                    Some("http") => 80,
                    Some("https") => 443,
                    _ => return Err(format!("{raw:?} needs a port when the scheme is *")),
                };
                (rest, Some(default))
            }
        };
        let host = match host {
            "" => return Err(format!("{raw:?} has no host")),
            "*" => HostPattern::Any,
            h => match h.strip_prefix("*.") {
                Some(domain) => HostPattern::Subdomains(domain.to_ascii_lowercase()),
                None if h.contains('*') => {
                    return Err(format!(
                        "{raw:?}: '*' may only stand alone or start the host as '*.'"
                    ));
                }
                None => HostPattern::Exact(h.to_ascii_lowercase()),
            },
        };
        Ok(OutboundHost {
            raw: raw.into(),
            scheme,
            host,
            port,
        })
    }

    /// Whether this entry allows a connection to `scheme://host:port`.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self.port.is_none_or(|p| p == port)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => *h == host,
                HostPattern::Subdomains(domain) => host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.')),
            }
    }
}

impl fmt::Display for OutboundHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_allows() {
        let exact = OutboundHost::parse("https://api.example.com").unwrap();
        assert!(exact.allows("https", "api.example.com", 443));
        assert!(exact.allows("https", "API.example.com", 443));
        assert!(!exact.allows("http", "api.example.com", 443));
        assert!(!exact.allows("https", "api.example.com", 8443));
        assert!(!exact.allows("https", "evil.com", 443));

        let sub = OutboundHost::parse("http://*.example.com:8080").unwrap();
        assert!(sub.allows("http", "a.example.com", 8080));
        assert!(!sub.allows("http", "example.com", 8080));
        assert!(!sub.allows("http", "aexample.com", 8080));

        let any = OutboundHost::parse("*://*:*").unwrap();
        assert!(any.allows("http", "x", 1));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://example.com:http",
            "*://example.com",
            "https://",
            "https://ex*ample.com",
            "https://{{ host }}",
        ] {
            assert!(
                OutboundHost::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
