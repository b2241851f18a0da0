//! The `moq-relay` binary: configuration in, [`moq_relay::serve`] until a signal.

use std::process::ExitCode;

use moq_relay::{config, telemetry, workers};

// Less CPU per forwarded frame than glibc malloc, for a little more memory per idle session; the
// measurements are in docs/BENCHMARKS.md (ninth round). Huge pages are off (the `no_thp`
// feature): with them, an idle session held about 98 KiB instead of 67.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // For tooling and operators: every metric this relay exports, as JSON, without starting it.
    if std::env::args_os().nth(1).is_some_and(|a| a == "--list-metrics") {
        // Quietly: a closed pipe (`| head`) is not an error worth a panic.
        let json = format!("{:#}\n", moq_metrics::to_json(&telemetry::catalog::all()));
        let _ = std::io::Write::write_all(&mut std::io::stdout(), json.as_bytes());
        return ExitCode::SUCCESS;
    }
    let config = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("moq-relay: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Worker 0: this thread. The others start in `run` (see workers.rs).
    match workers::single_threaded() {
        Ok(runtime) => runtime.block_on(moq_relay::serve(config)),
        Err(e) => {
            eprintln!("moq-relay: starting the runtime: {e}");
            ExitCode::from(2)
        }
    }
}
