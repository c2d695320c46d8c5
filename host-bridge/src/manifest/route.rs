//! Spin's HTTP route syntax, and matching request paths against it.
//!
//! A route is a path of `/`-separated segments. A segment is a literal, or
//! `:name`, which matches any one segment. A route may end in `/...`, which
//! matches any rest of the path, including none. When several routes match
//! a path, the most specific wins: an exact (non-wildcard) route beats a
//! wildcard, then the route with more segments, then the one with more
//! literal segments. So `/orders/...` and `/...` can live side by side.

use std::fmt;

/// A parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route as written in the manifest.
    raw: String,
    segments: Vec<Segment>,
    /// Whether the route ends in `/...`.
    wildcard: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Why a route string is not a valid route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("a route must start with '/'")]
    NoLeadingSlash,
    #[error("'...' may only be the last segment of a route")]
    WildcardNotLast,
    #[error("segment {0:?} is empty: a route has no '//' and no trailing '/'")]
    EmptySegment(usize),
    #[error("parameter segment {0:?} has no name after ':'")]
    UnnamedParam(String),
    #[error(
        "segment {0:?} holds characters not allowed in a route (allowed: letters, digits, '-', '_', '.', '~')"
    )]
    BadCharacter(String),
}

/// The outcome of matching a path: which part matched, for the `spin-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The path beyond the matched prefix, for a wildcard route; else empty.
    pub path_info: String,
    /// Values of the `:name` segments, in order.
    pub params: Vec<(String, String)>,
}

impl Route {
    /// Parses a route in Spin's syntax.
    pub fn parse(raw: &str) -> Result<Route, RouteError> {
        let rest = raw.strip_prefix('/').ok_or(RouteError::NoLeadingSlash)?;
        let mut parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let wildcard = parts.last() == Some(&"...");
        if wildcard {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.into_iter().enumerate() {
            if part == "..." {
                return Err(RouteError::WildcardNotLast);
            }
            if part.is_empty() {
                return Err(RouteError::EmptySegment(index));
            }
            let (name, is_param) = match part.strip_prefix(':') {
                Some("") => return Err(RouteError::UnnamedParam(part.into())),
                Some(name) => (name, true),
                None => (part, false),
            };
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
            if !name.chars().all(allowed) {
                return Err(RouteError::BadCharacter(part.into()));
            }
            segments.push(if is_param {
                Segment::Param(name.into())
            } else {
                Segment::Literal(name.into())
            });
        }
        Ok(Route {
            raw: raw.into(),
            segments,
            wildcard,
        })
    }

    /// The route as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the route ends in `/...`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The literal part of the route before any parameter or wildcard, used
    /// to refuse routes that would shadow the host's own endpoints.
    pub fn literal_prefix(&self) -> String {
        let mut prefix = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => {
                    prefix.push('/');
                    prefix.push_str(s);
                }
                Segment::Param(_) => break,
            }
        }
        prefix
    }

    /// Matches a request path (without the query) against this route.
    pub fn matches(&self, path: &str) -> Option<RouteMatch> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        };
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), (*part).to_owned())),
            }
        }
        let tail = parts.split_off(self.segments.len());
        let path_info = if tail.is_empty() {
            String::new()
        } else {
            format!("/{}", tail.join("/"))
        };
        Some(RouteMatch { path_info, params })
    }

    /// Orders routes by how specific they are: greater is more specific.
    fn specificity(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (!self.wildcard, self.segments.len(), literals)
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Picks the most specific of `routes` that matches `path`, returning its
/// index and the match.
pub fn best_match<'a>(
    routes: impl IntoIterator<Item = &'a Route>,
    path: &str,
) -> Option<(usize, RouteMatch)> {
    routes
        .into_iter()
        .enumerate()
        .filter_map(|(index, route)| route.matches(path).map(|m| (index, route, m)))
        .max_by_key(|(index, route, _)| (route.specificity(), std::cmp::Reverse(*index)))
        .map(|(index, _, m)| (index, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str) -> Route {
        Route::parse(s).unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        assert!(route("/").segments.is_empty());
        assert!(route("/...").is_wildcard());
        assert!(route("/orders/...").is_wildcard());
        assert_eq!(Route::parse("orders"), Err(RouteError::NoLeadingSlash));
        assert_eq!(Route::parse("/a/.../b"), Err(RouteError::WildcardNotLast));
        assert_eq!(Route::parse("/a//b"), Err(RouteError::EmptySegment(1)));
        assert_eq!(Route::parse("/a/"), Err(RouteError::EmptySegment(1)));
        assert_eq!(
            Route::parse("/a/:"),
            Err(RouteError::UnnamedParam(":".into()))
        );
        assert!(matches!(
            Route::parse("/a b"),
            Err(RouteError::BadCharacter(_))
        ));
        assert!(matches!(
            Route::parse("/a?x=1"),
            Err(RouteError::BadCharacter(_))
        ));
    }

    #[test]
    fn matches_exact_wildcard_and_params() {
        assert!(route("/orders").matches("/orders").is_some());
        assert!(route("/orders").matches("/orders/").is_some());
        assert!(route("/orders").matches("/orders/1").is_none());
        assert!(route("/orders").matches("/ordersx").is_none());
        let m = route("/orders/...").matches("/orders/o-1/x").unwrap();
        assert_eq!(m.path_info, "/o-1/x");
        assert_eq!(
            route("/orders/...").matches("/orders").unwrap().path_info,
            ""
        );
        let m = route("/users/:id").matches("/users/42").unwrap();
        assert_eq!(m.params, vec![("id".into(), "42".into())]);
        assert!(route("/...").matches("/anything/at/all").is_some());
        assert!(route("/").matches("/").is_some());
        assert!(route("/").matches("/a").is_none());
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = [
            route("/..."),
            route("/orders/..."),
            route("/orders/special"),
            route("/orders/:id"),
        ];
        assert_eq!(best_match(&routes, "/x").unwrap().0, 0);
        assert_eq!(best_match(&routes, "/orders/1/2").unwrap().0, 1);
        assert_eq!(best_match(&routes, "/orders/special").unwrap().0, 2);
        assert_eq!(best_match(&routes, "/orders/7").unwrap().0, 3);
        assert!(best_match(&routes[1..], "/other").is_none());
    }

    #[test]
    fn literal_prefix_stops_at_parameters() {
        assert_eq!(route("/dapr/:x/...").literal_prefix(), "/dapr");
        assert_eq!(route("/...").literal_prefix(), "");
    }
}
