//! The dead-letter tools of `Admin`, for the messages the group `billing`
//! gave up on (see the `consume` example):
//!
//! - `peek` (the default) prints them with the headers that say why they failed;
//! - `redrive` copies them back to the group's topic, once the handler is fixed;
//! - `purge` deletes them from the dead-letter topic (after a redrive, or to drop them).
//!
//! ```sh
//! cargo run --release --example dead_letters -- [peek|redrive|purge] [ADDR]   # or SLUICE_ADDR
//! ```

use anyhow::bail;
use sluice_client::{channel, proto, Admin};

const GROUP: &str = "billing";

/// A header's value as text, or "" when absent.
fn header(record: &proto::Record, key: &str) -> String {
    record.headers.iter().find(|h| h.key == key).map_or_else(String::new, |h| String::from_utf8_lossy(&h.value).into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let action = std::env::args().nth(1).unwrap_or_else(|| "peek".to_owned());
    let addr = std::env::args()
        .nth(2)
        .or_else(|| std::env::var("SLUICE_ADDR").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let admin = Admin::new(channel(&addr)?);

    match action.as_str() {
        "peek" => {
            let letters = admin.peek_dead_letters(GROUP, 100).await?;
            println!("{} dead letters in group {GROUP}", letters.len());
            for r in &letters {
                println!(
                    "{} from {}/{} offset {}: {} attempts, reason: {}",
                    String::from_utf8_lossy(&r.value),
                    header(r, "sluice-dlq-source-topic"),
                    header(r, "sluice-dlq-source-partition"),
                    header(r, "sluice-dlq-source-offset"),
                    header(r, "sluice-dlq-attempts"),
                    header(r, "sluice-dlq-reason"),
                );
            }
        }
        "redrive" => {
            let request = proto::RedriveDeadLettersRequest {
                group: GROUP.into(),
                // Empty: back to the group's own topic. 0: no rate limit, no count limit.
                target_topic: String::new(),
                rate_per_second: 0,
                max_messages: 0,
                // Only letters whose reason contains this text (empty: all).
                reason_contains: String::new(),
            };
            let n = admin.redrive_dead_letters(request).await?;
            println!("redrove {n} dead letters (they stay in the dead-letter topic until purged)");
        }
        "purge" => println!("purged {} dead letters", admin.purge_dead_letters(GROUP).await?),
        other => bail!("unknown action `{other}`: use peek, redrive or purge"),
    }
    Ok(())
}
