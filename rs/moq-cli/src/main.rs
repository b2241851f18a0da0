//! `moq`: publish, watch and load-test moq-lite broadcasts.

mod connect;
mod media;
mod publish;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,web_transport_quinn=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_default())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Publish(args) => match publish::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("moq publish: {e:#}");
                ExitCode::from(watch::exit::CONNECT)
            }
        },
        Command::Watch(args) => match watch::run(args).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("moq watch: {e:#}");
                ExitCode::from(watch::exit::CONNECT)
            }
        },
    }
}
