//! `wasi:messaging@0.2.0-draft`: the `message` and `client` resources, and
//! `producer.send` as a publish.
//!
//! - `client.connect(name)` names a pub/sub component; it opens nothing,
//!   so it cannot fail, and a wrong name fails at `send`.
//! - `send(client, topic, message)` publishes the message's data with its
//!   content type (`text/plain` if it set none, as Dapr does) to `topic`
//!   on that pub/sub component, under the component's
//!   `allowed_publish_topics`. The message's metadata rides as publish
//!   metadata (`metadata.KEY`), which the broker may or may not pass on.

use crate::contract::wasi_messaging::wasi::messaging::{producer, types};
use crate::contract::wasi_messaging::{Error, HostClient, HostMessage};
use crate::contract::{Message, PublishError};
use crate::engine::HostState;
use wasmtime::component::Resource;

impl types::Host for HostState {}

impl types::HostClient for HostState {
    async fn connect(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<HostClient>, Error>> {
        Ok(Ok(self.table.push(HostClient { pubsubname: name })?))
    }

    async fn disconnect(
        &mut self,
        _client: Resource<HostClient>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(Ok(()))
    }

    async fn drop(&mut self, client: Resource<HostClient>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for HostState {
    async fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<HostMessage>> {
        Ok(self.table.push(HostMessage {
            data,
            ..HostMessage::default()
        })?)
    }

    async fn topic(&mut self, m: Resource<HostMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.topic.clone())
    }

    async fn content_type(&mut self, m: Resource<HostMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.content_type.clone())
    }

    async fn set_content_type(
        &mut self,
        m: Resource<HostMessage>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.content_type = Some(content_type);
        Ok(())
    }

    async fn data(&mut self, m: Resource<HostMessage>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&m)?.data.clone())
    }

    async fn set_data(&mut self, m: Resource<HostMessage>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.data = data;
        Ok(())
    }

    async fn metadata(
        &mut self,
        m: Resource<HostMessage>,
    ) -> wasmtime::Result<Option<Vec<(String, String)>>> {
        let metadata = &self.table.get(&m)?.metadata;
        Ok((!metadata.is_empty()).then(|| metadata.clone()))
    }

    async fn add_metadata(
        &mut self,
        m: Resource<HostMessage>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata.push((key, value));
        Ok(())
    }

    async fn set_metadata(
        &mut self,
        m: Resource<HostMessage>,
        meta: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata = meta;
        Ok(())
    }

    async fn remove_metadata(
        &mut self,
        m: Resource<HostMessage>,
        key: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&m)?.metadata.retain(|(k, _)| *k != key);
        Ok(())
    }

    async fn drop(&mut self, m: Resource<HostMessage>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl producer::Host for HostState {
    async fn send(
        &mut self,
        client: Resource<HostClient>,
        topic: String,
        message: Resource<HostMessage>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let pubsubname = self.table.get(&client)?.pubsubname.clone();
        let message = self.table.delete(message)?;
        let metadata = message.metadata;
        let mut message = Message::new(message.data, message.content_type);
        message.metadata.extra = metadata;
        let result = self.publish_checked(&pubsubname, &topic, message).await;
        Ok(result.map_err(|e| match e {
            PublishError::Forbidden(reason) => Error::PermissionDenied(reason),
            PublishError::Unavailable(reason) => Error::Connection(reason),
            other => Error::Other(format!("{other:?}")),
        }))
    }
}
