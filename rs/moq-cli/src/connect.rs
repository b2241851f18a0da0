//! Client connection flags shared by every subcommand.

use clap::Args;
use moq_lite::transport::{Client, ClientConfig, ClientTls, Connected, QuicOptions};
use moq_lite::Version;
use url::Url;

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Relay URL: https:// (WebTransport), http:// (WebTransport, fetching the dev certificate's
    /// fingerprint from http://HOST:PORT/certificate.sha256 first), moqt:// (raw QUIC), or
    /// ws:// / wss:// (qmux over a WebSocket on the relay's TCP port; wss:// honours the --tls-*
    /// flags).
    #[arg(long, env = "MOQ_URL", default_value = "http://localhost:4443/")]
    pub url: Url,
    /// Skip TLS certificate verification (development only).
    #[arg(long)]
    pub tls_insecure: bool,
    /// Trust exactly this leaf certificate SHA-256 fingerprint (hex).
    #[arg(long)]
    pub tls_fingerprint: Vec<String>,
    /// moq-lite versions to offer, most preferred first.
    #[arg(long = "moq-version", value_delimiter = ',', default_values_t = Version::ALL.to_vec())]
    pub versions: Vec<Version>,
    /// A session with nothing heard from the relay for this long is lost (QUIC idle timeout;
    /// keep-alives go out at a third of it, at most every 3 s). Shorter notices a relay that
    /// vanished (killed, unplugged) sooner; `moq watch` and `moq publish` then reconnect.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(ClientConfig {
            versions: self.versions.clone(),
            tls: ClientTls { insecure: self.tls_insecure, fingerprints: self.tls_fingerprint.clone(), roots: vec![] },
            quic: QuicOptions {
                idle_timeout: self.idle_timeout,
                keep_alive: (self.idle_timeout / 3).min(std::time::Duration::from_secs(3)),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    /// Connects, sending the trace context of `span` to the relay so its session span becomes a
    /// child of ours. WebTransport carries it in the CONNECT's `traceparent` header, a WebSocket
    /// in its upgrade request's; raw QUIC
    /// with lite-03/04 has no request to carry it in, so those traces stay separate.
    pub async fn connect(&self, client: &Client, span: &tracing::Span) -> anyhow::Result<Connected> {
        let mut headers = http::HeaderMap::new();
        if let Some(tp) = moq_telemetry::traceparent(span).and_then(|tp| http::HeaderValue::from_str(&tp).ok()) {
            headers.insert("traceparent", tp);
        }
        client.connect_with_headers(&self.url, headers).await
    }

    /// The SETUP Path of this connection: the URL's path and `?query` on raw QUIC (the session
    /// root, as a WebTransport URL's path is, and where a `?jwt=` token travels). `None` on
    /// WebTransport, which has the URL already and where a Path is a protocol violation.
    pub fn setup_path(&self, connected: &Connected) -> Option<String> {
        if connected.transport != moq_lite::transport::Transport::Quic || !connected.version.has_setup() {
            return None;
        }
        Some(match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_string(),
        })
    }

    /// The URL without its query (which may carry a token), for logs and spans.
    pub fn url_for_logs(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.to_string()
    }
}
