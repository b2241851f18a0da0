//! `moq`: publish, watch and load-test moq-lite broadcasts.

mod backoff;
mod catalog;
mod connect;
mod media;
mod netplay;
mod player;
mod publish;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// W3C trace context on subscriptions a relay sends us (moq-lite's traced subscribe), so a
/// publisher's work joins the trace of the viewer that asked.
pub(crate) const TRACE_PROPAGATION: moq_lite::session::TracePropagation =
    moq_lite::session::TracePropagation { inject: moq_telemetry::traceparent, extract: moq_telemetry::set_parent };

#[derive(Parser, Debug)]
#[command(name = "moq", version, about = "Publish and watch moq-lite broadcasts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a synthetic live broadcast (video-like, audio-like and catalog tracks).
    Publish(publish::PublishArgs),
    /// Watch a broadcast, verify every frame and report quality statistics.
    Watch(watch::WatchArgs),
    /// Netplay sessions on the relay: host one (prints a join code) or join one with its code.
    Netplay(netplay::NetplayArgs),
    /// Print every metric `moq watch` and `moq netplay` export (name, kind, unit, labels, help,
    /// buckets) as JSON.
    Metrics,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = match cli.command {
        Command::Publish(_) => "moq-publish",
        Command::Watch(_) => "moq-watch",
        Command::Netplay(_) => "moq-netplay",
        Command::Metrics => {
            // Quietly: a closed pipe (`| head`) is not an error worth a panic.
            let catalogs = [catalog::catalog(), catalog::netplay_catalog(), moq_telemetry::catalog::catalog()];
            let json = format!("{:#}\n", moq_metrics::to_json(&catalogs));
            let _ = std::io::Write::write_all(&mut std::io::stdout(), json.as_bytes());
            return ExitCode::SUCCESS;
        }
    };
    // Logs go to stderr: stdout carries results (`--json`). Warnings only unless RUST_LOG says.
    let mut config = moq_telemetry::Config::from_env(service, env!("CARGO_PKG_VERSION"), "warn");
    config.log_to_stderr = true;
    let mut telemetry = match moq_telemetry::init(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("moq: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match cli.command {
        Command::Metrics => unreachable!("answered above"),
        Command::Publish(args) => match publish::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("moq publish: {e:#}");
                ExitCode::from(watch::exit::CONNECT)
            }
        },
        Command::Netplay(args) => ExitCode::from(netplay::run(args, &mut telemetry).await),
        Command::Watch(args) => {
            // Every client series carries the broadcast. The transport records nothing here: its
            // sessions get no telemetry handle.
            let labels = [("broadcast".to_string(), watch::broadcast_label(&args))];
            match telemetry.install_metrics(args.metrics_listen, &[catalog::catalog()], &labels) {
                Err(e) => {
                    eprintln!("moq watch: metrics: {e:#}");
                    ExitCode::from(2)
                }
                Ok(()) => match watch::run(args).await {
                    Ok(code) => ExitCode::from(code),
                    Err(e) => {
                        eprintln!("moq watch: {e:#}");
                        ExitCode::from(watch::exit::CONNECT)
                    }
                },
            }
        }
    };
    // Deliver the spans and logs still queued before exiting.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}
