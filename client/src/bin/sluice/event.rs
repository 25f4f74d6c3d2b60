//! `sluice event publish`: one CloudEvent to a topic through
//! `sluice.v1.Events/Publish`, stored as the HTTP gateway stores events.

use std::collections::HashMap;

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice_client::proto as pb;
use sluice_proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use sluice_proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data};
use sluice_proto::io::cloudevents::v1::{CloudEvent, CloudEventBatch};

#[derive(Subcommand)]
pub enum EventCommand {
    /// Publish one CloudEvent (data from --data, --data-file, or stdin with --data-file -).
    Publish(PublishArgs),
}

#[derive(Args)]
pub struct PublishArgs {
    /// The topic.
    topic: String,
    /// The event's `type`, e.g. order.created.
    #[arg(long = "type")]
    kind: String,
    /// The event's `source`, e.g. /shop.
    #[arg(long)]
    source: String,
    /// The event's `id` [default: a random one].
    #[arg(long)]
    id: Option<String>,
    /// The event's `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// The data, as text.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Read the data from this file (`-`: stdin).
    #[arg(long)]
    data_file: Option<std::path::PathBuf>,
    /// `datacontenttype` [default: application/json when the data parses as JSON, else text/plain].
    #[arg(long)]
    content_type: Option<String>,
    /// The `partitionkey` extension (routes the event like a message key).
    #[arg(long)]
    partition_key: Option<String>,
    /// Deliver no earlier than this (RFC 3339): the `deliverat` extension.
    #[arg(long)]
    deliver_at: Option<String>,
    /// More attributes, `name=value` (repeatable).
    #[arg(long = "attr")]
    attrs: Vec<String>,
}

fn text(value: impl Into<String>) -> CloudEventAttributeValue {
    CloudEventAttributeValue { attr: Some(Attr::CeString(value.into())) }
}

/// Runs `sluice event …`.
pub async fn run(ch: sluice_client::Channel, cmd: EventCommand, format: super::Format) -> anyhow::Result<()> {
    let EventCommand::Publish(args) = cmd;
    let data = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
            buf
        }
        (None, Some(path)) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        (None, None) => Vec::new(),
    };
    let mut attributes = HashMap::new();
    let json = serde_json::from_slice::<serde_json::Value>(&data).is_ok();
    let content_type = args
        .content_type
        .clone()
        .or_else(|| (!data.is_empty()).then(|| if json { "application/json" } else { "text/plain" }.to_owned()));
    if let Some(c) = content_type {
        attributes.insert("datacontenttype".to_owned(), text(c));
    }
    for (name, value) in
        [("subject", &args.subject), ("partitionkey", &args.partition_key), ("deliverat", &args.deliver_at)]
    {
        if let Some(v) = value {
            attributes.insert(name.to_owned(), text(v.clone()));
        }
    }
    for a in &args.attrs {
        let (name, value) = a.split_once('=').with_context(|| format!("--attr {a:?}: write name=value"))?;
        attributes.insert(name.trim().to_owned(), text(value));
    }
    let id = args.id.clone().unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let data = match String::from_utf8(data) {
        Ok(s) if !s.is_empty() => Some(Data::TextData(s)),
        Ok(_) => None,
        Err(e) => Some(Data::BinaryData(e.into_bytes().into())),
    };
    let event = CloudEvent {
        id: id.clone(),
        source: args.source.clone(),
        spec_version: "1.0".into(),
        r#type: args.kind.clone(),
        attributes,
        data,
    };
    let request =
        pb::PublishRequest { topic: args.topic.clone(), batch: Some(CloudEventBatch { events: vec![event] }) };
    let answer = pb::events_client::EventsClient::new(ch).publish(request).await?.into_inner();
    let (partition, offset) = (answer.partitions.first().copied(), answer.offsets.first().copied());
    if format == super::Format::Json {
        super::output::print(serde_json::json!({ "id": id, "partition": partition, "offset": offset }))?;
    } else {
        outln!(
            "published {id} to {}: partition {} offset {}",
            args.topic,
            partition.unwrap_or(0),
            offset.unwrap_or(0)
        )?;
    }
    Ok(())
}
