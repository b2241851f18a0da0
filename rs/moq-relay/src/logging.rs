//! Log output on stdout: pretty for development, JSON lines for production (`LOG_FORMAT=json`).
//! The level comes from `RUST_LOG`, else `LOG_LEVEL`, else the configured default.

use tracing_subscriber::EnvFilter;

pub fn init(default_level: &str) {
    let filter =
        std::env::var("RUST_LOG").or_else(|_| std::env::var("LOG_LEVEL")).unwrap_or_else(|_| default_level.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().flatten_event(true).init(),
        _ => builder.init(),
    }
}
