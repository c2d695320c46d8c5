//! `allowed_outbound_hosts`: which network destinations a component may reach.
//!
//! Entries use Spin's syntax, `scheme://host[:port]`, where the scheme, the
//! host and the port may each be `*`, and the host may start with `*.` to
//! allow every subdomain. A missing port means the scheme's default port.
//! An IPv6 address is written in brackets (`http://[::1]:8080`). Nothing is
//! allowed unless an entry allows it.
//!
//! Two checks guard every outbound request, and both must pass:
//!
//! 1. **The name**: [`OutboundHost::allows`] on the URL's scheme, host and
//!    port, as Spin does.
//! 2. **The address**: [`check_address`] on each address the host resolves
//!    to. An address that is not on the open internet ([`SpecialAddress`]:
//!    loopback, private, link-local, unspecified, and the other ranges
//!    below) is reachable only when an entry names it: that address
//!    literally (`http://127.0.0.1:3500`, `http://[::1]:8080`,
//!    `http://10.0.0.5:*`), or `localhost`, which names the loopback
//!    addresses and no others. A wildcard (`*`, `*.example.com`) and any
//!    other name never do, so `http://*:*` cannot reach daprd, the admin API
//!    or host-bridge's own listeners, however the guest spells the host.
//!
//! Why a name other than `localhost` does not name an internal address
//! (`http://orders-db:8080` resolving to `172.18.0.5` is refused): the
//! entries are what a user reads to decide whether to run an app (`up
//! --from` prints them), and a name says nothing of where it points today,
//! or tomorrow. To reach a service on a private network, grant its
//! address.
//!
//! The ranges, IPv4 and IPv6 (an IPv4-mapped `::ffff:a.b.c.d` and a NAT64
//! `64:ff9b::a.b.c.d` count as the IPv4 address inside):
//!
//! | class | ranges |
//! |---|---|
//! | loopback | `127.0.0.0/8`, `::1` |
//! | private | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7` (unique local), `fec0::/10` (site-local) |
//! | link-local | `169.254.0.0/16` (cloud metadata services live here), `fe80::/10` |
//! | unspecified | `0.0.0.0/8` (a connection to `0.0.0.0` reaches this host), `::` |
//! | shared address space | `100.64.0.0/10` (carrier-grade NAT; also overlay networks such as Tailscale's) |
//! | multicast | `224.0.0.0/4`, `ff00::/8` |
//! | broadcast | `255.255.255.255` |
//! | reserved | `240.0.0.0/4`, `192.0.0.0/24` (IETF protocol assignments), `198.18.0.0/15` (benchmarking), `::/96` (IPv4-compatible, deprecated) |
//!
//! The documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`,
//! `203.0.113.0/24`, `2001:db8::/32`) are not special: nothing answers on
//! them, inside or outside.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// An IP address written literally, in its canonical form (an
    /// IPv4-mapped IPv6 address as IPv4).
    Address(IpAddr),
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
        let (host, port) = split_host_port(raw, rest)?;
        let port =
            match port {
                Some("*") => None,
                Some(port) => Some(port.parse::<u16>().map_err(|_| {
                    format!("{raw:?} has port {port:?}, which is not a number or *")
                })?),
                None => match scheme.as_deref() {
                    Some("http") => Some(80),
                    Some("https") => Some(443),
                    _ => return Err(format!("{raw:?} needs a port when the scheme is *")),
                },
            };
        let host = match host {
            "" => return Err(format!("{raw:?} has no host")),
            "*" => HostPattern::Any,
            h => match (h.strip_prefix("*."), ip_literal(h)) {
                (_, Some(ip)) => HostPattern::Address(ip.to_canonical()),
                (Some(domain), None) => HostPattern::Subdomains(domain.to_ascii_lowercase()),
                (None, None) if h.contains('*') => {
                    return Err(format!(
                        "{raw:?}: '*' may only stand alone or start the host as '*.'"
                    ));
                }
                (None, None) if h.contains(['[', ']', ':']) => {
                    return Err(format!(
                        "{raw:?}: an IPv6 address is written in brackets, e.g. http://[::1]:8080"
                    ));
                }
                (None, None) => HostPattern::Exact(h.to_ascii_lowercase()),
            },
        };
        Ok(OutboundHost {
            raw: raw.into(),
            scheme,
            host,
            port,
        })
    }

    /// Whether this entry allows a connection to `scheme://host:port`, going
    /// by the name in the URL (the address it resolves to is
    /// [`check_address`]'s to judge). `host` is the URL's host, an IPv6
    /// address in brackets.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.allows_scheme_and_port(scheme, port)
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Exact(h) => *h == host,
                HostPattern::Subdomains(domain) => host
                    .strip_suffix(domain.as_str())
                    .is_some_and(|prefix| prefix.ends_with('.')),
                HostPattern::Address(ip) => {
                    ip_literal(&host).is_some_and(|h| h.to_canonical() == *ip)
                }
            }
    }

    /// Whether this entry names the address `ip` itself, at `scheme` and
    /// `port`: it is that address written literally, or `localhost` and
    /// `ip` is a loopback address. A wildcard never names an address.
    pub fn names_address(&self, scheme: &str, ip: IpAddr, port: u16) -> bool {
        let ip = ip.to_canonical();
        self.allows_scheme_and_port(scheme, port)
            && match &self.host {
                HostPattern::Address(granted) => *granted == ip,
                HostPattern::Exact(name) => name == "localhost" && ip.is_loopback(),
                HostPattern::Any | HostPattern::Subdomains(_) => false,
            }
    }

    fn allows_scheme_and_port(&self, scheme: &str, port: u16) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme) && self.port.is_none_or(|p| p == port)
    }
}

/// Whether `grants` let a request to `scheme://…:port` that resolved to
/// `ip` connect there: yes for an address on the open internet (the name
/// was checked already); for a [`SpecialAddress`], only if an entry
/// [names it](OutboundHost::names_address). `Err` says which kind of
/// address was refused.
pub fn check_address(
    grants: &[OutboundHost],
    scheme: &str,
    ip: IpAddr,
    port: u16,
) -> Result<(), SpecialAddress> {
    match SpecialAddress::classify(ip) {
        None => Ok(()),
        Some(_) if grants.iter().any(|g| g.names_address(scheme, ip, port)) => Ok(()),
        Some(class) => Err(class),
    }
}

/// An address that is not on the open internet: the host itself, its
/// networks, or nothing routable. See the module docs for the ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialAddress {
    Loopback,
    Private,
    LinkLocal,
    Unspecified,
    SharedAddressSpace,
    Multicast,
    Broadcast,
    Reserved,
}

impl SpecialAddress {
    /// The class of `ip`, or `None` for an address on the open internet.
    pub fn classify(ip: IpAddr) -> Option<SpecialAddress> {
        match ip {
            IpAddr::V4(v4) => Self::classify_v4(v4),
            IpAddr::V6(v6) => Self::classify_v6(v6),
        }
    }

    fn classify_v4(ip: Ipv4Addr) -> Option<SpecialAddress> {
        use SpecialAddress::*;
        let [a, b, c, _] = ip.octets();
        Some(match (a, b, c) {
            (0, ..) => Unspecified,
            (127, ..) => Loopback,
            (10, ..) => Private,
            (172, 16..=31, _) => Private,
            (192, 168, _) => Private,
            (169, 254, _) => LinkLocal,
            (100, 64..=127, _) => SharedAddressSpace,
            (192, 0, 0) => Reserved,
            (198, 18..=19, _) => Reserved,
            _ if ip.is_broadcast() => Broadcast,
            (224..=239, ..) => Multicast,
            (240..=255, ..) => Reserved,
            _ => return None,
        })
    }

    fn classify_v6(ip: Ipv6Addr) -> Option<SpecialAddress> {
        use SpecialAddress::*;
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::classify_v4(v4);
        }
        let segments = ip.segments();
        if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let [.., hi, lo] = segments;
            return Self::classify_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
        }
        Some(match segments[0] {
            _ if ip.is_unspecified() => Unspecified,
            _ if ip.is_loopback() => Loopback,
            _ if segments[..6] == [0; 6] => Reserved,
            s if s & 0xfe00 == 0xfc00 => Private,
            s if s & 0xffc0 == 0xfec0 => Private,
            s if s & 0xffc0 == 0xfe80 => LinkLocal,
            s if s & 0xff00 == 0xff00 => Multicast,
            _ => return None,
        })
    }
}

impl fmt::Display for SpecialAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialAddress::Loopback => "a loopback address",
            SpecialAddress::Private => "a private address",
            SpecialAddress::LinkLocal => "a link-local address",
            SpecialAddress::Unspecified => "an unspecified address",
            SpecialAddress::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            SpecialAddress::Multicast => "a multicast address",
            SpecialAddress::Broadcast => "the broadcast address",
            SpecialAddress::Reserved => "a reserved address",
        })
    }
}

/// The IP address a URL's host spells literally, if it does: `10.0.0.5`,
/// or `[::1]` (brackets as in a URL). Names are not looked up.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Splits `host[:port]` (the part of `raw` after the scheme) into the host
/// and the port as written; an IPv6 host keeps its brackets.
fn split_host_port<'a>(raw: &str, rest: &'a str) -> Result<(&'a str, Option<&'a str>), String> {
    if rest.starts_with('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("{raw:?} opens an IPv6 address with '[' but never closes it"))?;
        let (host, after) = rest.split_at(close + 1);
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!(
                    "{raw:?} has {after:?} after the address; expected :port"
                )),
            },
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    })
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn grants(entries: &[&str]) -> Vec<OutboundHost> {
        entries
            .iter()
            .map(|e| OutboundHost::parse(e).unwrap())
            .collect()
    }

    #[test]
    fn parses_ip_literals_and_brackets() {
        let v6 = OutboundHost::parse("http://[::1]:8080").unwrap();
        assert!(v6.allows("http", "[::1]", 8080));
        assert!(v6.allows("http", "[0:0::1]", 8080));
        assert!(!v6.allows("http", "localhost", 8080));
        let v6_default_port = OutboundHost::parse("https://[fd00::5]").unwrap();
        assert!(v6_default_port.allows("https", "[fd00::5]", 443));
        let v4 = OutboundHost::parse("http://10.0.0.5:*").unwrap();
        assert!(v4.allows("http", "10.0.0.5", 1234));
        assert!(!v4.allows("http", "10.0.0.6", 1234));
        // A mapped IPv6 grant is the IPv4 address.
        let mapped = OutboundHost::parse("http://[::ffff:127.0.0.1]:80").unwrap();
        assert!(mapped.allows("http", "127.0.0.1", 80));
    }

    #[test]
    fn classifies_addresses() {
        use SpecialAddress::*;
        for (addr, class) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("224.0.0.1", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.170", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("::7f00:1", Some(Reserved)),
            // The open internet, and the edges of the ranges above.
            ("8.8.8.8", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("192.0.2.1", None),
            ("2606:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
        ] {
            assert_eq!(SpecialAddress::classify(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn a_wildcard_does_not_cover_special_addresses() {
        for wildcard in [
            "http://*:*",
            "*://*:*",
            "http://*.example.com:*",
            "http://*:8080",
        ] {
            let granted = grants(&[wildcard]);
            for addr in [
                "127.0.0.1",
                "10.0.0.1",
                "169.254.169.254",
                "::1",
                "::ffff:127.0.0.1",
                "0.0.0.0",
                "fd00::1",
            ] {
                assert!(
                    check_address(&granted, "http", ip(addr), 8080).is_err(),
                    "{wildcard} must not reach {addr}"
                );
            }
            assert_eq!(
                check_address(&granted, "http", ip("93.184.216.34"), 8080),
                Ok(()),
                "{wildcard} reaches the open internet"
            );
        }
    }

    #[test]
    fn a_name_other_than_localhost_does_not_cover_special_addresses() {
        let granted = grants(&["http://orders-db:8080", "http://localhost.example.com:8080"]);
        for addr in ["127.0.0.1", "172.18.0.5"] {
            assert!(
                check_address(&granted, "http", ip(addr), 8080).is_err(),
                "{addr}"
            );
        }
    }

    #[test]
    fn an_explicit_grant_covers_its_address_only() {
        let granted = grants(&[
            "http://127.0.0.1:3500",
            "http://[::1]:8080",
            "http://10.0.0.5:*",
        ]);
        use SpecialAddress::{Loopback, Private};
        for (scheme, addr, port, expected) in [
            ("http", "127.0.0.1", 3500, Ok(())),
            ("http", "::ffff:127.0.0.1", 3500, Ok(())),
            ("http", "::1", 8080, Ok(())),
            ("http", "10.0.0.5", 9, Ok(())),
            // Another port, another scheme, another address of the same class.
            ("http", "127.0.0.1", 3501, Err(Loopback)),
            ("https", "127.0.0.1", 3500, Err(Loopback)),
            ("http", "127.0.0.2", 3500, Err(Loopback)),
            ("http", "::1", 3500, Err(Loopback)),
            ("http", "10.0.0.6", 9, Err(Private)),
        ] {
            assert_eq!(
                check_address(&granted, scheme, ip(addr), port),
                expected,
                "{scheme}://{addr}:{port}"
            );
        }
    }

    #[test]
    fn localhost_covers_loopback_only() {
        let granted = grants(&["http://localhost:3000"]);
        for addr in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                check_address(&granted, "http", ip(addr), 3000),
                Ok(()),
                "{addr}"
            );
        }
        assert_eq!(
            check_address(&granted, "http", ip("127.0.0.1"), 3001),
            Err(SpecialAddress::Loopback)
        );
        for addr in ["10.0.0.1", "169.254.169.254", "0.0.0.0", "fe80::1"] {
            assert!(
                check_address(&granted, "http", ip(addr), 3000).is_err(),
                "{addr}"
            );
        }
        // A wildcard beside it adds nothing for special addresses.
        let with_wildcard = grants(&["http://localhost:3000", "http://*:*"]);
        assert!(check_address(&with_wildcard, "http", ip("10.0.0.1"), 3000).is_err());
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
            "http://::1:8080",
            "http://[::1:8080",
            "http://[::1]8080",
            "http://[example.com]:80",
        ] {
            assert!(
                OutboundHost::parse(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
