//! A minimal HTTP/1.1 client for the gateway tests: one request per
//! connection, so a test sees exactly the bytes the broker answers.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {}, body not JSON: {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// POSTs `body` to `path` at `addr` with `headers`; waits at most 30 s.
pub async fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<Answer> {
    let request = head(addr, path, headers, body.len());
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        send(stream, &request, body).await
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange).await.context("no HTTP answer within 30 s")??;
    parse(&raw)
}

/// [`post`] over TLS, trusting `ca_pem`, with a client certificate if given.
pub async fn post_tls(
    (addr, ca_pem, client): (&str, &str, Option<&crate::pki::Issued>),
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Answer> {
    let request = head(addr, path, headers, body.len());
    let exchange = async {
        let stream = crate::pki::connect(addr, ca_pem, b"http/1.1", client).await?;
        send(stream, &request, body).await
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange).await.context("no HTTP answer within 30 s")??;
    parse(&raw)
}

fn head(addr: &str, path: &str, headers: &[(&str, &str)], length: usize) -> String {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {length}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

async fn send<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    {
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        // A TLS peer that closes without close_notify still sent the whole answer.
        if let Err(e) = stream.read_to_end(&mut raw).await {
            anyhow::ensure!(e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty(), e);
        }
        anyhow::Ok(raw)
    }
}

fn parse(raw: &[u8]) -> anyhow::Result<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line.split(' ').nth(1).context("no status code")?.parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    anyhow::ensure!(
        !headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "chunked answers are not read by this client"
    );
    Ok(Answer { status, headers, body: raw[end + 4..].to_vec() })
}
