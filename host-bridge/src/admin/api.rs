//! The admin page's JSON endpoints: what runs, and the dead letters.
//!
//! Errors are JSON in the shape every listener answers
//! (`{"errorCode": …, "message": …}`), and name the thing: an unknown dead
//! letter is a `404` naming its id; a replay the backend cannot do (under
//! Dapr, where the events are the broker's) is a `409` saying where the
//! events live.

use super::AdminApi;
use crate::broker::dead_letters::{DeadLetterError, DeadLetters};
use crate::server::{self, Response};
use http::{Method, StatusCode};
use serde_json::{Value, json};

/// `GET /admin/overview`: the components, each with the worlds it was
/// matched as, the digest of the version that runs, its grants and
/// limits; the routes; the subscriptions.
pub fn overview(api: &AdminApi) -> Response {
    let observed = &api.observed;
    let manifest = &observed.manifest;
    let versions = api.deployer.versions();
    let components: Vec<Value> = manifest
        .components
        .iter()
        .filter_map(|(id, c)| {
            // Components no trigger uses are not loaded, so not shown.
            let version = versions.get(id)?;
            let limits = &c.sandbox;
            let grants: Vec<Value> = c
                .grant_rows()
                .into_iter()
                .map(|(what, grants)| json!({ "what": what, "grants": grants }))
                .collect();
            Some(json!({
                "name": id,
                "worlds": version.worlds,
                "digest": version.digest,
                "deployedAt": version.deployed_at,
                "grants": grants,
                "limits": {
                    "timeoutMs": limits.timeout.as_millis() as u64,
                    "maxMemory": limits.max_memory,
                    "maxInstances": limits.max_instances,
                    "instanceReuse": limits.instance_reuse,
                    "clock": limits.clock,
                    "onError": format!("{:?}", limits.on_error).to_lowercase(),
                },
            }))
        })
        .collect();
    let routes: Vec<Value> = observed
        .routes
        .iter()
        .map(|(route, component)| json!({ "route": route, "component": component }))
        .collect();
    let subscriptions: Vec<Value> = manifest
        .pubsub_triggers
        .iter()
        .enumerate()
        .map(|(index, t)| {
            json!({
                "index": index,
                "pubsubname": t.pubsubname,
                "topic": t.topic,
                "route": t.route,
                "component": t.component,
                "deadLetterTopic": t.dead_letter_topic,
                "match": t.rule,
            })
        })
        .collect();
    server::json(
        StatusCode::OK,
        &json!({
            "app": manifest.application.name,
            "broker": observed.broker,
            "components": components,
            "routes": routes,
            "subscriptions": subscriptions,
            "maxStreams": super::MAX_STREAMS,
        }),
    )
}

/// `GET /admin/dead-letters`.
pub async fn dead_letters(dead_letters: &dyn DeadLetters) -> Response {
    match dead_letters.list().await {
        Ok(listing) => server::json(StatusCode::OK, &json!(listing)),
        Err(e) => error(&e),
    }
}

/// A replay or delete of one dead letter, as asked.
pub struct Action {
    id: String,
    replay: bool,
}

/// `POST /admin/dead-letters/{id}/replay` or `DELETE
/// /admin/dead-letters/{id}`; `None` for any other method and path.
pub fn dead_letter_action(method: &Method, path: &str) -> Option<Action> {
    let rest = path.strip_prefix("/admin/dead-letters/")?;
    match (method, rest.strip_suffix("/replay")) {
        (&Method::POST, Some(id)) if !id.is_empty() && !id.contains('/') => Some(Action {
            id: id.to_owned(),
            replay: true,
        }),
        (&Method::DELETE, None) if !rest.is_empty() && !rest.contains('/') => Some(Action {
            id: rest.to_owned(),
            replay: false,
        }),
        _ => None,
    }
}

impl Action {
    pub async fn run(&self, dead_letters: &dyn DeadLetters) -> Response {
        let (done, what) = if self.replay {
            (dead_letters.replay(&self.id).await, "replayed")
        } else {
            (dead_letters.delete(&self.id).await, "deleted")
        };
        match done {
            Ok(()) => server::json(StatusCode::OK, &json!({ "id": self.id, "done": what })),
            Err(e) => error(&e),
        }
    }
}

fn error(e: &DeadLetterError) -> Response {
    let (status, code) = match e {
        DeadLetterError::Unknown(_) => (StatusCode::NOT_FOUND, "ERR_DEAD_LETTER_NOT_FOUND"),
        DeadLetterError::NotHere(_) => (StatusCode::CONFLICT, "ERR_DEAD_LETTER_NOT_HERE"),
        DeadLetterError::NoSubscription { .. } => {
            (StatusCode::CONFLICT, "ERR_DEAD_LETTER_NO_SUBSCRIPTION")
        }
        DeadLetterError::Failed { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR_DEAD_LETTER_UNAVAILABLE",
        ),
    };
    server::error(status, code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_actions_are_read_from_method_and_path() {
        let replay = dead_letter_action(&Method::POST, "/admin/dead-letters/42/replay").unwrap();
        assert_eq!((replay.id.as_str(), replay.replay), ("42", true));
        let delete = dead_letter_action(&Method::DELETE, "/admin/dead-letters/42").unwrap();
        assert_eq!((delete.id.as_str(), delete.replay), ("42", false));
        for (method, path) in [
            (Method::GET, "/admin/dead-letters/42/replay"),
            (Method::POST, "/admin/dead-letters//replay"),
            (Method::DELETE, "/admin/dead-letters/"),
            (Method::DELETE, "/admin/dead-letters/a/b"),
            (Method::POST, "/admin/dead-letters/42"),
        ] {
            assert!(
                dead_letter_action(&method, path).is_none(),
                "{method} {path}"
            );
        }
    }
}
