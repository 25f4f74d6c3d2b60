//! `sluice.v1.Events`: CloudEvents in the protobuf format, stored as the HTTP
//! gateway stores them (`crate::event`) through the same produce path.
//! Translation only.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use sluice_proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use sluice_proto::io::cloudevents::v1::cloud_event::Data;
use sluice_proto::io::cloudevents::v1::CloudEvent;
use sluice_proto::v1 as pb;
use sluice_proto::v1::events_server::Events;
use sluice_proto::v1::Message;
use tonic::{Request, Response, Status};

use crate::auth::access::Permissions;
use crate::error::{Error, Result};
use crate::event::stored_message;
use crate::name::TopicName;
use crate::topic::produce::{ProduceBatch, Producer};

/// The Events service.
#[derive(Debug, Clone)]
pub struct EventsService {
    producer: Producer,
    perms: Arc<Permissions>,
}

impl EventsService {
    /// A service over the shared produce path, its callers checked by `perms`.
    pub fn new(producer: Producer, perms: Arc<Permissions>) -> Self {
        EventsService { producer, perms }
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        self.perms.guard(req.extensions()).require(&req.get_ref().topic)?;
        let req = req.into_inner();
        let topic = TopicName::parse("topic", req.topic)?;
        let events = req.batch.map(|b| b.events).unwrap_or_default();
        if events.is_empty() {
            return Err(Error::invalid("batch", "the batch is empty; send at least one event").into());
        }
        let messages = events.into_iter().enumerate().map(|(i, e)| message_of(e, i)).collect::<Result<Vec<_>>>()?;
        let batch = ProduceBatch { topic, partition: None, messages, producer: None, forward: true };
        let produced = self.producer.produce(batch).await?;
        Ok(Response::new(pb::PublishResponse { partitions: produced.partitions, offsets: produced.offsets }))
    }
}

/// The stored message of one event of the protobuf format (`index`: its
/// place in the batch).
fn message_of(event: CloudEvent, index: usize) -> Result<Message> {
    let which = format!("event {index}");
    let mut attributes = vec![
        ("specversion".to_owned(), event.spec_version),
        ("id".to_owned(), event.id),
        ("source".to_owned(), event.source),
        ("type".to_owned(), event.r#type),
    ];
    let mut content_type = None;
    for (name, value) in event.attributes {
        let text = match value.attr {
            None => continue,
            Some(Attr::CeBoolean(b)) => b.to_string(),
            Some(Attr::CeInteger(n)) => n.to_string(),
            Some(Attr::CeString(s) | Attr::CeUri(s) | Attr::CeUriRef(s)) => s,
            Some(Attr::CeBytes(b)) => base64::engine::general_purpose::STANDARD.encode(b),
            Some(Attr::CeTimestamp(t)) => {
                let nanos = u32::try_from(t.nanos).ok();
                let time = nanos.and_then(|n| chrono::DateTime::from_timestamp(t.seconds, n));
                let time = time.ok_or_else(|| {
                    Error::invalid("event", format!("{which}: attribute {name} is not a valid timestamp"))
                })?;
                time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            }
        };
        if name == "datacontenttype" {
            content_type = Some(text);
        } else {
            attributes.push((name, text));
        }
    }
    let value = match event.data {
        None => Bytes::new(),
        Some(Data::BinaryData(b)) => b,
        Some(Data::TextData(s)) => Bytes::from(s),
        Some(Data::ProtoData(any)) => {
            // A packed message: its bytes, with the type URL as the schema unless one is given.
            if !attributes.iter().any(|(n, _)| n == "dataschema") {
                attributes.push(("dataschema".to_owned(), any.type_url));
            }
            content_type.get_or_insert_with(|| "application/protobuf".to_owned());
            Bytes::from(any.value)
        }
    };
    stored_message(attributes, content_type, value, &which)
}
