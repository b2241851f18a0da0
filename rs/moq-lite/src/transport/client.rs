use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use super::fingerprint::PinnedVerifier;
use super::{QuicOptions, Transport, WebSocketOptions};
use crate::session::Connection;
use crate::Version;

/// How a client trusts the server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Skip certificate verification entirely (development only).
    pub insecure: bool,
    /// Accept exactly these leaf certificate SHA-256 fingerprints (hex).
    pub fingerprints: Vec<String>,
    /// Extra trusted roots (DER), added to the system roots.
    pub roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub bind: SocketAddr,
    pub versions: Vec<Version>,
    pub tls: ClientTls,
    pub quic: QuicOptions,
    /// Settings of `ws://` / `wss://` sessions.
    pub websocket: WebSocketOptions,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bind: "[::]:0".parse().unwrap(),
            versions: Version::ALL.to_vec(),
            tls: ClientTls::default(),
            quic: QuicOptions::default(),
            websocket: WebSocketOptions::default(),
        }
    }
}

/// A connected session, before the moq-lite layer runs on it.
pub struct Connected {
    pub conn: Connection,
    pub version: Version,
    pub transport: Transport,
}

pub struct Client {
    endpoint: quinn::Endpoint,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> anyhow::Result<Self> {
        let buffer = config.quic.socket_buffer;
        let socket = super::quic::bind_udp(config.bind, buffer)
            .or_else(|_| super::quic::bind_udp("0.0.0.0:0".parse().unwrap(), buffer))
            .context("binding the client UDP socket")?;
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))?;
        Ok(Self { endpoint, config })
    }

    /// Connects to `url`: `https://` (WebTransport), `http://` (WebTransport after fetching the
    /// development certificate's fingerprint over plain HTTP), `moqt://` / `moql://` (raw QUIC),
    /// `ws://` / `wss://` (qmux over a WebSocket, the version in `Sec-WebSocket-Protocol`).
    pub async fn connect(&self, url: &Url) -> anyhow::Result<Connected> {
        self.connect_with_headers(url, http::HeaderMap::new()).await
    }

    /// As [`Self::connect`], adding headers to the WebTransport CONNECT or WebSocket upgrade
    /// (e.g. `traceparent`).
    pub async fn connect_with_headers(&self, url: &Url, headers: http::HeaderMap) -> anyhow::Result<Connected> {
        let mut tls = self.config.tls.clone();
        let mut url = url.clone();
        if matches!(url.scheme(), "ws" | "wss") {
            let rustls_config = match url.scheme() {
                "wss" => {
                    let mut config = rustls_client_config(&tls, true)?;
                    config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    Some(Arc::new(config))
                }
                _ => None,
            };
            let (session, version) =
                super::websocket::connect(&url, headers, &self.config.versions, rustls_config, &self.config.websocket)
                    .await?;
            return Ok(Connected { conn: session.into(), version, transport: Transport::WebSocket });
        }
        let raw = match url.scheme() {
            "https" => false,
            "http" => {
                let fingerprint = fetch_fingerprint(&url).await?;
                tls.fingerprints = vec![fingerprint];
                url.set_scheme("https").map_err(|_| anyhow::anyhow!("cannot rewrite scheme"))?;
                false
            }
            "moqt" | "moql" => true,
            other => anyhow::bail!("unsupported URL scheme {other:?}"),
        };
        let alpns: Vec<Vec<u8>> = if raw {
            self.config.versions.iter().map(|v| v.alpn().as_bytes().to_vec()).collect()
        } else {
            vec![web_transport_quinn::ALPN.as_bytes().to_vec()]
        };
        let client_config = self.quinn_config(&tls, alpns)?;

        let host = url.host_str().context("URL has no host")?.to_string();
        let port = url.port().unwrap_or(443);
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let remote = tokio::net::lookup_host((host_for_lookup.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("no address for {host}"))?;
        let server_name = match host_for_lookup.parse::<std::net::IpAddr>() {
            Ok(_) => "localhost".to_string(),
            Err(_) => host_for_lookup.clone(),
        };
        // quinn instruments the connection's driver task with the span current where it is
        // created and enters it on every packet (with an OpenTelemetry layer, 5 % of a
        // 1000-viewer client's CPU). A task of its own has no current span, so the driver gets
        // none; the session's tasks keep the caller's. Not a scoped no-op dispatcher: installing
        // one makes tracing re-evaluate every callsite as "sometimes", after which quinn's
        // per-packet trace spans are created (and filtered out) for good, which cost more.
        let endpoint = self.endpoint.clone();
        let connecting = tokio::spawn(async move { endpoint.connect_with(client_config, remote, &server_name) })
            .await
            .context("connect task")??;
        let conn = connecting.await.with_context(|| format!("QUIC handshake with {remote}"))?;

        if raw {
            let session = Connection::from(web_transport_quinn::Session::raw(conn));
            let alpn = session.protocol().unwrap_or_default().to_string();
            let version =
                Version::from_alpn(&alpn).with_context(|| format!("server chose unsupported ALPN {alpn:?}"))?;
            return Ok(Connected { conn: session, version, transport: Transport::Quic });
        }

        let mut request = web_transport_quinn::proto::ConnectRequest::new(url.clone())
            .with_protocols(self.config.versions.iter().map(|v| v.alpn().to_string()));
        request.headers = headers;
        let session: Connection =
            web_transport_quinn::Session::connect(conn, request).await.context("WebTransport CONNECT")?.into();
        let protocol = session.protocol().map(str::to_string);
        let version = protocol
            .as_deref()
            .and_then(Version::from_alpn)
            .with_context(|| format!("server selected no supported sub-protocol ({protocol:?})"))?;
        Ok(Connected { conn: session, version, transport: Transport::WebTransport })
    }

    fn quinn_config(&self, tls: &ClientTls, alpns: Vec<Vec<u8>>) -> anyhow::Result<quinn::ClientConfig> {
        let mut rustls_config = rustls_client_config(tls, false)?;
        rustls_config.alpn_protocols = alpns;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_config)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.config.quic.transport_config());
        Ok(config)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Waits for every connection to close cleanly (so the peer sees our close frame).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await
    }
}

/// A client's trust settings as a rustls client configuration (ring provider); TLS 1.3 only unless
/// `tls12` (TLS over TCP may meet a TLS 1.2 proxy; QUIC never does). Public so other TLS
/// clients of a program (an HTTP API client) trust the relay exactly as its MoQ connections do.
pub fn rustls_client_config(tls: &ClientTls, tls12: bool) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls12 {
        true => &[&rustls::version::TLS13, &rustls::version::TLS12],
        false => &[&rustls::version::TLS13],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let rustls_config = if tls.insecure || !tls.fingerprints.is_empty() {
        let fingerprints = tls
            .fingerprints
            .iter()
            .map(|f| {
                let bytes = hex::decode(f.trim()).context("fingerprint is not hex")?;
                bytes.try_into().map_err(|_| anyhow::anyhow!("fingerprint is not 32 bytes"))
            })
            .collect::<anyhow::Result<Vec<[u8; 32]>>>()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier { fingerprints, provider }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for cert in &tls.roots {
            roots.add(cert.clone())?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(rustls_config)
}

/// `GET http://host:port/certificate.sha256` over plain TCP: the development bootstrap that lets
/// a client pin a self-signed certificate.
async fn fetch_fingerprint(url: &Url) -> anyhow::Result<String> {
    let host = url.host_str().context("URL has no host")?;
    let port = url.port().unwrap_or(80);
    let target = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect((target, port)))
            .await
            .context("fingerprint fetch timed out")?
            .with_context(|| format!("connecting to http://{host}:{port}"))?;
    let request = format!("GET /certificate.sha256 HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.take(64 * 1024).read_to_end(&mut response))
        .await
        .context("fingerprint fetch timed out")??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "fingerprint fetch failed: {}",
        head.lines().next().unwrap_or("")
    );
    // Tolerate chunked encoding: the fingerprint is the one 64-hex-digit line.
    body.lines()
        .map(str::trim)
        .find(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .context("no fingerprint in response")
}
