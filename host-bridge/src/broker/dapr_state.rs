//! State under Dapr, over daprd's gRPC API, because it carries bytes.
//!
//! The `state` WIT interface promises `list<u8>`: `get` returns exactly what
//! `save` stored. daprd's HTTP state API cannot keep that promise. It takes
//! each value as JSON, so bytes that are not UTF-8 have no spelling in it,
//! and a value that is itself JSON text (`"hello"` with its quotes) cannot be
//! told apart from text to be quoted. daprd's gRPC `SaveState` and
//! `GetState` carry `bytes`, which daprd hands to the state store as they
//! are. So every state call goes over gRPC to `127.0.0.1:$DAPR_GRPC_PORT`
//! (default 50001, set by `dapr run`), with `dapr-api-token` when
//! `DAPR_API_TOKEN` is set.
//!
//! **What another Dapr app sees.** The stored value is the guest's bytes:
//! daprd's HTTP `GET /v1.0/state/{store}/{key}` answers them as the body,
//! and gRPC `GetState` as `data`. A value another app saved over HTTP was
//! stored as its JSON encoding (a string with its quotes), and a guest reads
//! those bytes.
//!
//! **Absent or empty.** gRPC answers an empty `data` both for a key that
//! does not exist and for an empty value. State stores give every stored
//! value an ETag, so a key is present when its answer has one (or has data).
//!
//! The messages below are the few fields of daprd's `runtime.v1` protos that
//! these calls use, with the protos' field numbers; protobuf skips fields
//! the other side has and this side does not.

use crate::contract::StateError;
use std::collections::HashMap;

/// `dapr.proto.runtime.v1.GetStateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetStateRequest {
    #[prost(string, tag = "1")]
    pub store_name: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(map = "string, string", tag = "4")]
    pub metadata: HashMap<String, String>,
}

/// `dapr.proto.runtime.v1.GetStateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetStateResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(string, tag = "2")]
    pub etag: String,
}

/// `dapr.proto.common.v1.StateItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StateItem {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `dapr.proto.runtime.v1.SaveStateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SaveStateRequest {
    #[prost(string, tag = "1")]
    pub store_name: String,
    #[prost(message, repeated, tag = "2")]
    pub states: Vec<StateItem>,
}

/// `dapr.proto.runtime.v1.DeleteStateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteStateRequest {
    #[prost(string, tag = "1")]
    pub store_name: String,
    #[prost(string, tag = "2")]
    pub key: String,
}

/// `google.protobuf.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// A client of daprd's gRPC state calls.
#[derive(Clone)]
pub struct DaprStateClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    /// `dapr-api-token`, when `DAPR_API_TOKEN` is set.
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    address: String,
}

impl DaprStateClient {
    /// A client of daprd at `address` (`http://127.0.0.1:50001`). It
    /// connects on first use, and again after the sidecar restarts.
    pub fn new(address: &str, token: Option<&str>) -> anyhow::Result<DaprStateClient> {
        let channel = tonic::transport::Endpoint::from_shared(address.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .connect_lazy();
        let token = token
            .map(|t| {
                t.parse()
                    .map_err(|_| anyhow::anyhow!("DAPR_API_TOKEN is not a valid header value"))
            })
            .transpose()?;
        Ok(DaprStateClient {
            grpc: tonic::client::Grpc::new(channel),
            token,
            address: address.to_owned(),
        })
    }

    async fn call<Req, Resp>(&self, method: &'static str, message: Req) -> Result<Resp, StateError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|e| {
            StateError::Unavailable(format!(
                "cannot reach the Dapr sidecar's gRPC API at {}: {e}",
                self.address
            ))
        })?;
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert(crate::server::TOKEN_HEADER, token.clone());
        }
        // A call made in a span (a guest's state call) sends its context as
        // `traceparent`, which daprd's gRPC API reads when there is no
        // `grpc-trace-bin`: daprd's state span continues ours.
        if let Some(trace) = crate::telemetry::context_of(&tracing::Span::current()) {
            for (name, value) in [
                ("traceparent", trace.traceparent),
                ("tracestate", trace.tracestate),
            ] {
                if let Some(Ok(value)) = value.map(|v| v.parse()) {
                    request.metadata_mut().insert(name, value);
                }
            }
        }
        let path = http::uri::PathAndQuery::from_static(method);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.state_error(status))
    }

    fn state_error(&self, status: tonic::Status) -> StateError {
        let reason = format!("{:?}: {}", status.code(), status.message());
        match status.code() {
            tonic::Code::InvalidArgument
                if status.message().contains("not found")
                    || status.message().contains("not configured") =>
            {
                StateError::UnknownStore(reason)
            }
            tonic::Code::FailedPrecondition | tonic::Code::NotFound
                if status.message().contains("state store") =>
            {
                StateError::UnknownStore(reason)
            }
            tonic::Code::InvalidArgument
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied => StateError::InvalidRequest(reason),
            _ => StateError::Unavailable(format!("{reason} (daprd at {})", self.address)),
        }
    }

    pub async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let response: GetStateResponse = self
            .call(
                "/dapr.proto.runtime.v1.Dapr/GetState",
                GetStateRequest {
                    store_name: store.to_owned(),
                    key: key.to_owned(),
                    metadata: HashMap::new(),
                },
            )
            .await?;
        Ok((!response.etag.is_empty() || !response.data.is_empty()).then_some(response.data))
    }

    pub async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        let _: Empty = self
            .call(
                "/dapr.proto.runtime.v1.Dapr/SaveState",
                SaveStateRequest {
                    store_name: store.to_owned(),
                    states: vec![StateItem {
                        key: key.to_owned(),
                        value,
                    }],
                },
            )
            .await?;
        Ok(())
    }

    pub async fn delete(&self, store: &str, key: &str) -> Result<(), StateError> {
        let _: Empty = self
            .call(
                "/dapr.proto.runtime.v1.Dapr/DeleteState",
                DeleteStateRequest {
                    store_name: store.to_owned(),
                    key: key.to_owned(),
                },
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// The encoding daprd expects, byte for byte, for the fields it reads:
    /// field 1 (store name) and 2 (the items), each item with field 1 (key)
    /// and 2 (the value bytes).
    #[test]
    fn save_requests_encode_with_the_protos_field_numbers() {
        let request = SaveStateRequest {
            store_name: "s".into(),
            states: vec![StateItem {
                key: "k".into(),
                value: vec![0xff, 0x00],
            }],
        };
        assert_eq!(
            request.encode_to_vec(),
            [0x0a, 1, b's', 0x12, 7, 0x0a, 1, b'k', 0x12, 2, 0xff, 0x00]
        );
    }

    #[test]
    fn unknown_response_fields_are_skipped() {
        // data = "v", etag = "1", metadata (field 3) = {"a": "b"}
        let bytes = [
            0x0a, 1, b'v', 0x12, 1, b'1', 0x1a, 6, 0x0a, 1, b'a', 0x12, 1, b'b',
        ];
        let response = GetStateResponse::decode(&bytes[..]).unwrap();
        assert_eq!(response.data, b"v");
        assert_eq!(response.etag, "1");
    }
}
