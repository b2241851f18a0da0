//! Client connection flags shared by every subcommand.

use clap::Args;
use moq_lite::transport::{Client, ClientConfig, ClientTls, Connected};
use moq_lite::Version;
use url::Url;

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Relay URL: https:// (WebTransport), http:// (WebTransport, fetching the dev certificate's
    /// fingerprint from http://HOST:PORT/certificate.sha256 first) or moqt:// (raw QUIC).
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
}

impl ConnectArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(ClientConfig {
            versions: self.versions.clone(),
            tls: ClientTls { insecure: self.tls_insecure, fingerprints: self.tls_fingerprint.clone(), roots: vec![] },
            ..Default::default()
        })
    }

    pub async fn connect(&self, client: &Client) -> anyhow::Result<Connected> {
        client.connect(&self.url).await
    }
}
