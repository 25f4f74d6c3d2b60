//! `sluice-broker`: parses flags, sets up logging and signals, runs the broker.

use clap::Parser;
use sluice_broker::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;

/// Whether log lines get ANSI colours: only on a terminal, so files, pipes and
/// log shippers get plain text, and never when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// First SIGTERM/SIGINT starts a clean shutdown; a second exits at once.
fn watch_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                shutdown.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Health { addr, ca }) = &cli.command {
        return sluice_broker::health_check::probe(addr, ca.as_deref()).await.map_err(anyhow::Error::msg);
    }
    let config = match cli.settings.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-broker: {e:#}");
            std::process::exit(2);
        }
    };
    init_tracing(config.log_format == "json");
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    sluice_broker::run(config, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())), "an empty NO_COLOR does not count");
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None), "files and pipes get plain text");
        assert!(!use_colour(false, Some("1".into())));
    }
}
