//! `TestBroker`: runs the real `sluice-broker` binary on a free loopback port
//! with a temporary data directory, and can SIGKILL, SIGTERM and restart it.
//! Tests talk to it only through gRPC and the public client.

pub mod cluster;
pub mod history;
pub mod http;
pub mod payload;
pub mod pki;
pub mod ports;
pub mod proxy;
pub mod raw;
pub mod sink;
pub mod ticks;
pub mod tmpfs;

pub use cluster::TestCluster;
pub use proxy::{Fault, FaultProxy};
pub use raw::send_raw;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the binaries built by the workspace are: next to the test executable's `deps/`
/// (or beside this crate's own binaries, such as `bench-failover`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SLUICE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let dir = exe.parent().expect("binaries live in target/<profile> or its deps/");
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().expect("deps has a parent").to_path_buf();
    }
    dir.to_path_buf()
}

/// Path of a workspace binary, with a clear message when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --release --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

/// Path of a `client/examples/` program, with a clear message when it was not built.
pub fn example(name: &str) -> PathBuf {
    let path = bin_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} not found: build the examples first (`cargo build --release --workspace --examples`; \
         `cargo test --release --workspace` builds them unless filtered with --test)",
        path.display()
    );
    path
}

/// A running broker and its data directory.
pub struct TestBroker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `host:port` the broker listens on (kept across restarts).
    pub addr: String,
    /// `host:port` of `/metrics`, when started with `--metrics-listen`.
    pub metrics_addr: Option<String>,
    /// `host:port` of the HTTP gateway, when started with `--gateway-listen`.
    pub gateway_addr: Option<String>,
    data_dir: PathBuf,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
    starts: usize,
    /// The CA (PEM) of the broker's certificate, when it serves TLS.
    tls_ca: Option<String>,
    /// The bearer token [`Self::scrape`] sends, when the broker requires one.
    pub token: Option<String>,
}

impl TestBroker {
    /// Starts a broker with default settings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts a broker with extra flags.
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(extra, &[]).await
    }

    /// Starts a broker with extra flags and environment variables.
    pub async fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_prepared(extra, envs, |root| Ok(root.join("data"))).await
    }

    /// Starts a broker serving TLS (its `--tls-*` flags in `extra`) with a
    /// certificate signed by `ca_pem`: [`Self::channel`] trusts that CA.
    pub async fn start_tls(extra: &[&str], ca_pem: &str) -> anyhow::Result<Self> {
        let mut broker = Self::unlaunched(extra, &[], |root| Ok(root.join("data")))?;
        broker.tls_ca = Some(ca_pem.to_owned());
        broker.launch().await?;
        Ok(broker)
    }

    /// Starts a broker whose data directory `prepare` chooses under the test's
    /// temporary directory (e.g. on a small filesystem it mounts there).
    pub async fn start_prepared(
        extra: &[&str],
        envs: &[(&str, &str)],
        prepare: impl FnOnce(&Path) -> anyhow::Result<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut broker = Self::unlaunched(extra, envs, prepare)?;
        broker.launch().await?;
        Ok(broker)
    }

    fn unlaunched(
        extra: &[&str],
        envs: &[(&str, &str)],
        prepare: impl FnOnce(&Path) -> anyhow::Result<PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut dir = tempfile::tempdir()?;
        if std::env::var_os("SLUICE_TEST_KEEP_DIRS").is_some() {
            // Kept for a post-mortem (logs and data) of a long run that failed.
            dir.disable_cleanup(true);
            eprintln!("broker dir kept: {}", dir.path().display());
        }
        let data_dir = prepare(dir.path())?;
        // Ports that stay free while the broker is down (see `ports`), also for "port 0" flags.
        let extra: Vec<String> = extra
            .iter()
            .map(|s| if *s == "127.0.0.1:0" { ports::reserve_addr() } else { Ok(s.to_string()) })
            .collect::<anyhow::Result<_>>()?;
        let broker = TestBroker {
            child: None,
            dir,
            data_dir,
            addr: ports::reserve_addr()?,
            metrics_addr: None,
            gateway_addr: None,
            extra,
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            starts: 0,
            tls_ca: None,
            token: None,
        };
        Ok(broker)
    }

    /// The text of `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.as_ref().context("broker started without --metrics-listen")?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let authorization = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{authorization}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    /// The sum of a metric's samples whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let text = self.scrape().await?;
        let mut sum = 0.0;
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let (series, value) = line.rsplit_once(' ').context("metric line")?;
            let bare = series.split('{').next().unwrap_or("");
            if bare != name || !labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))) {
                continue;
            }
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
        Ok(sum)
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Peak resident memory of the broker process so far (VmHWM), bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("broker not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("VmHWM in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The broker URL for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A lazy channel to the broker (reconnects across restarts).
    pub fn channel(&self) -> tonic::transport::Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(self.url()).expect("valid address");
        let endpoint = match &self.tls_ca {
            None => endpoint,
            Some(ca) => endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                )
                .expect("a TLS configuration"),
        };
        endpoint.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true).connect_lazy()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("broker-{}.log", self.starts))
    }

    /// Everything the current broker run wrote to stderr (its log file).
    pub fn log(&self) -> anyhow::Result<String> {
        let path = self.log_path();
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// The last lines of the current broker log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = Command::new(binary("sluice-broker"));
        cmd.arg("--listen").arg(&self.addr).arg("--data-dir").arg(self.data_dir());
        if !self.extra.iter().any(|a| a == "--metrics-listen") {
            cmd.arg("--metrics-listen").arg("");
        }
        if !self.extra.iter().any(|a| a == "--gateway-listen") {
            cmd.arg("--gateway-listen").arg("");
        }
        cmd.args(&self.extra)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            // Errors end the log with their message, not an anyhow backtrace; panics keep theirs.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning sluice-broker")?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        while addr.is_none() {
            let Ok(Ok(Some(l))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await else { break };
            if let Some(m) = l.strip_prefix("sluice-broker metrics on ") {
                self.metrics_addr = Some(m.to_owned());
            }
            if let Some(g) = l.strip_prefix("sluice-broker gateway on ") {
                self.gateway_addr = Some(g.to_owned());
            }
            addr = l.strip_prefix("sluice-broker listening on ").map(str::to_owned);
        }
        let Some(addr) = addr else {
            bail!("broker did not report its address; log:\n{}", self.log_tail());
        };
        self.addr = addr;
        if let Some(m) = &self.metrics_addr {
            // Keep the metrics port across restarts, like the gRPC one.
            if let Some(i) = self.extra.iter().position(|a| a == "--metrics-listen") {
                self.extra[i + 1] = m.clone();
            }
        }
        if let Some(g) = &self.gateway_addr {
            if let Some(i) = self.extra.iter().position(|a| a == "--gateway-listen") {
                self.extra[i + 1] = g.clone();
            }
        }
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(30)).await
    }

    /// Waits until the health service reports SERVING.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel());
        loop {
            let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if let Ok(r) = client.check(req).await {
                if r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("broker not healthy within {within:?}; log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for exit (at most `within`) and returns the exit code.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else { bail!("broker not running") };
        let pid = child.id().context("broker pid")?;
        let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exit = tokio::time::timeout(within, child.wait()).await.context("broker did not exit after SIGTERM")??;
        Ok(exit.code())
    }

    /// Whether the broker's process has exited by itself (a crash, an
    /// abort); it is then no longer running.
    pub fn has_exited(&mut self) -> bool {
        let exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            self.child = None;
        }
        exited
    }

    /// Waits at most `within` for the broker to exit by itself (a crash, an
    /// injected abort); returns its exit code (`None` when killed by a signal).
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else { bail!("broker not running") };
        let status = tokio::time::timeout(within, child.wait()).await.context("broker did not exit")??;
        self.child = None;
        Ok(status.code())
    }

    /// Replaces the extra flags of the next start.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Drops `flag` and its value from the flags of the next start.
    pub fn drop_flag(&mut self, flag: &str) {
        if let Some(at) = self.extra.iter().position(|a| a == flag) {
            self.extra.drain(at..(at + 2).min(self.extra.len()));
        }
    }

    /// Replaces the environment variables of the next start.
    pub fn set_envs(&mut self, envs: &[(&str, &str)]) {
        self.envs = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Starts the broker again on the same address and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        self.launch().await
    }

    /// Deletes a stopped broker's data directory: its disk is lost.
    pub fn wipe_data(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "broker still running");
        if self.data_dir.exists() {
            std::fs::remove_dir_all(&self.data_dir)?;
        }
        Ok(())
    }

    /// Starts a stopped broker again.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "broker still running");
        self.launch().await
    }
}

/// Total size of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a whole partition from `from` to its current end.
pub async fn read_all(
    ch: impl Into<sluice_client::Channel>,
    topic: &str,
    partition: u32,
) -> anyhow::Result<Vec<sluice_proto::v1::Record>> {
    let mut reader =
        sluice_client::PartitionReader::new(ch, topic, partition, sluice_client::StartAt::Earliest).await?;
    let (_, end) = reader.offsets().await?;
    let mut out = Vec::new();
    while reader.position() < end {
        let batch = reader.next_batch(Duration::ZERO).await?;
        anyhow::ensure!(
            !batch.is_empty() || reader.position() >= end,
            "empty fetch before the end of partition {partition}"
        );
        out.extend(batch);
    }
    Ok(out)
}

/// Creates a group with the given settings (unset fields take broker defaults).
pub async fn create_group(
    ch: tonic::transport::Channel,
    name: &str,
    config: sluice_proto::v1::GroupConfig,
) -> anyhow::Result<()> {
    sluice_client::Admin::new(ch).create_group(name, config).await?;
    Ok(())
}

/// A fast-retrying group config for tests.
pub fn group_config(topic: &str, ack_deadline_ms: u32) -> sluice_proto::v1::GroupConfig {
    sluice_proto::v1::GroupConfig {
        topic: topic.into(),
        ack_deadline_ms,
        backoff: Some(sluice_proto::v1::Backoff {
            initial_ms: Some(50),
            max_ms: Some(200),
            multiplier: Some(2.0),
            jitter: Some(0.1),
        }),
        ..Default::default()
    }
}

/// A message with a value.
pub fn message(value: impl Into<bytes::Bytes>) -> sluice_proto::v1::Message {
    sluice_proto::v1::Message { key: None, value: value.into(), headers: vec![] }
}

/// Produces `values` to `topic` (the producer routes them) and waits for every ack.
pub async fn produce_values(
    ch: tonic::transport::Channel,
    topic: &str,
    values: impl IntoIterator<Item = String>,
) -> anyhow::Result<()> {
    let producer = sluice_client::Producer::new(ch, sluice_client::ProducerConfig::default());
    let mut acks = Vec::new();
    for v in values {
        acks.push(producer.enqueue(topic, None, message(v)).await?);
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}
