//! moq-relay: routes moq-lite broadcasts between publishers and subscribers. The binary
//! (`main.rs`) parses the configuration and runs [`serve`]; the library holds the relay, so its
//! decoders of hostile input (tokens, keys, auth-server answers) can be fuzzed (`fuzz/`).

pub mod access;
pub mod cluster;
pub mod config;
mod connection;
pub mod netplay;
mod ops;
mod serve;
pub mod telemetry;
mod tls;
mod web;
pub mod workers;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use moq_lite::code;
use moq_lite::model::Origin;
use moq_lite::session::Session;
use moq_lite::transport::{QuicOptions, WebSocketOptions};
use tokio::task::JoinSet;

/// Live sessions, so shutdown can send each a GOAWAY, and with the subject of their grant, so
/// a right withdrawn from a subject (a netplay room that ended) can close its sessions. The
/// sessions this relay dialed (to cluster peers) are kept apart: they are drained last.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<u64, Registered>>>,
}

/// A live session and the subject of its grant.
struct Registered {
    session: Session,
    subject: Option<String>,
    /// Dialed by this relay (a cluster peer link), not accepted.
    dialed: bool,
}

impl Sessions {
    fn insert(&self, id: u64, session: Session, subject: Option<String>) {
        self.inner.lock().unwrap().insert(id, Registered { session, subject, dialed: false });
    }
    /// A session this relay dialed (a cluster peer link).
    fn insert_dialed(&self, id: u64, session: Session) {
        self.inner.lock().unwrap().insert(id, Registered { session, subject: None, dialed: true });
    }
    fn remove(&self, id: u64) {
        self.inner.lock().unwrap().remove(&id);
    }
    fn get(&self, id: u64) -> Option<Session> {
        self.inner.lock().unwrap().get(&id).map(|r| r.session.clone())
    }
    /// The sessions accepted (`dialed == false`) or dialed.
    fn all(&self, dialed: bool) -> Vec<Session> {
        self.inner.lock().unwrap().values().filter(|r| r.dialed == dialed).map(|r| r.session.clone()).collect()
    }
    /// Closes (code `unauthorized`) every session whose subject `matches`; returns how many.
    fn close_subjects(&self, matches: impl Fn(&str) -> bool) -> usize {
        let chosen: Vec<Session> = {
            let inner = self.inner.lock().unwrap();
            let mut chosen = Vec::new();
            for r in inner.values() {
                if r.subject.as_deref().is_some_and(&matches) {
                    chosen.push(r.session.clone());
                }
            }
            chosen
        };
        for session in &chosen {
            session.close(&moq_lite::Error::Unauthorized);
        }
        chosen.len()
    }
    fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
    /// Accepted sessions only.
    fn accepted(&self) -> usize {
        self.inner.lock().unwrap().values().filter(|r| !r.dialed).count()
    }
}

/// Runs the relay until SIGTERM/SIGINT, on the runtime of [`workers::single_threaded`].
pub async fn serve(config: config::Config) -> ExitCode {
    let telemetry = match moq_telemetry::init(&telemetry_config(&config)) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("moq-relay: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "relay failed");
            ExitCode::FAILURE
        }
    };
    // Flush queued spans and logs; blocking, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

/// Standard OTEL_* variables first, then the relay's own flags, variables and file on top.
fn telemetry_config(config: &config::Config) -> moq_telemetry::Config {
    let mut t = moq_telemetry::Config::from_env("moq-relay", env!("CARGO_PKG_VERSION"), &config.log_level);
    if let Some(endpoint) = &config.otlp_endpoint {
        t.otlp_endpoint = Some(endpoint.clone());
    }
    if let Some(protocol) = config.otlp_protocol.as_deref().and_then(|p| p.parse().ok()) {
        t.otlp_protocol = protocol;
    }
    if let Some(ratio) = config.trace_sample_ratio {
        t.sample_ratio = ratio;
    }
    if let Some(env) = &config.environment {
        t.environment = env.clone();
    }
    t
}

async fn run(config: config::Config) -> anyhow::Result<()> {
    // Without the ops listener nothing could read metrics: leave the recorder out entirely.
    let telemetry = match config.ops_listen {
        Some(_) => telemetry::install(moq_lite::telemetry::LabelLimits {
            broadcasts: config.metrics_max_broadcasts,
            namespaces: config.metrics_max_namespaces,
            linger: config.metrics_linger,
        })?,
        None => telemetry::disabled(),
    };
    let tls = match &config.tls {
        config::TlsSource::Files { cert, key } => tls::load(cert, key)?,
        config::TlsSource::Generate(hosts) => tls::generate(hosts)?,
    };
    let origin = Origin::new();
    let sessions = Sessions::default();
    // The hop id marks our announcements: --cluster-id, else derived from --cluster-node, else
    // random (below 2^53 so JavaScript peers can hold it).
    let hop_id = config.cluster.hop_id.unwrap_or_else(rand_hop_id);
    let node = node_name(&config);
    // Every peer link, dialed or accepted, for /nodes and the peer metrics.
    let peers = cluster::Peers::new(config.metrics_linger);
    telemetry.cluster(peers.clone(), &node, hop_id);
    let quic = QuicOptions {
        max_streams: config.max_streams,
        idle_timeout: config.idle_timeout,
        keep_alive: config.keep_alive,
        ..Default::default()
    };
    telemetry.started(env!("CARGO_PKG_VERSION"), tls.not_after, config.max_sessions, config.memory_budget);
    let count = match config.worker_threads {
        // Capped like an explicit count, which also bounds the `worker` metric label.
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(config::MAX_WORKER_THREADS)),
        n => n,
    };
    let workers = Arc::new(
        workers::Workers::start(tokio::runtime::Handle::current(), count, config.worker_spill_at)
            .context("starting worker threads")?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = serve::Stopping(stop_rx);
    let netplay = match config.netplay.enabled {
        true => Some(netplay::Netplay::with_peer_ip(config.netplay.clone(), sessions.clone(), config.peer_ip)?),
        false => None,
    };
    let (gate, audit_writer) = gatekeeper(&config, netplay.clone(), &node)?;
    let ctx = Arc::new(connection::Context {
        telemetry: telemetry.clone(),
        peer_ip: config.peer_ip,
        draining: stopping.clone(),
        origin: origin.clone(),
        gate: gate.clone(),
        hop_id,
        max_hops: config.cluster.max_hops,
        max_streams: config.max_streams,
        sessions: sessions.clone(),
        admission: connection::Admission::new(config.max_sessions, config.memory_budget),
        workers: workers.clone(),
        netplay: netplay.clone(),
        peers: peers.clone(),
    });

    let mut background = JoinSet::new();
    // Outside `background`: at shutdown it writes what is queued before it stops.
    let (audit_stop, audit_stopped) = tokio::sync::oneshot::channel::<()>();
    let audit_task = tokio::spawn(async move {
        if let Err(e) = audit_writer.run_until(async move { drop(audit_stopped.await) }).await {
            tracing::error!(error = format!("{e:#}"), "audit log writer failed");
        }
    });
    background
        .spawn(serve::Upkeep { telemetry: telemetry.clone(), workers: workers.clone(), origin: origin.clone() }.run());
    if let Some(netplay) = &netplay {
        background.spawn(netplay.clone().run());
    }
    let cluster = cluster::Cluster {
        settings: config.cluster.clone(),
        node: node.clone(),
        hop_id,
        origin: origin.clone(),
        telemetry: telemetry.transport().clone(),
        sessions: sessions.clone(),
        peers: peers.clone(),
        client: moq_lite::transport::ClientConfig {
            versions: config.versions.clone(),
            quic: quic.clone(),
            websocket: WebSocketOptions::from_quic(&quic),
            ..Default::default()
        },
        max_streams: config.max_streams,
    };
    background.spawn(cluster.run(stopping.clone()));
    let mut servers = Vec::new();
    let mut listeners = JoinSet::new();
    let server_tls = tls::server_config(&tls)?;
    let websocket = WebSocketOptions::from_quic(&quic);
    for addr in &config.listen {
        let quic = serve::QuicListener::bind(*addr, server_tls.clone(), &config.versions, &quic, ctx.clone())?;
        servers.push(quic.server());
        listeners.spawn(quic.run(stopping.clone()));
        if config.http {
            // WebSocket upgrades at any path are sessions; the other requests reach the routes.
            let websockets = serve::WebSockets::new(ctx.clone(), config.versions.clone(), websocket.clone());
            let mut router = web::router(web_state(&origin, &tls, &gate))
                .layer(axum::middleware::from_fn_with_state(websockets, serve::websocket::intercept));
            // Beside the intercept, not behind it: no API path is taken for a WebSocket session.
            if let Some(netplay) = &netplay {
                router = router.merge(netplay::api::router(netplay.clone()));
            }
            let http = serve::HttpListener::bind(*addr, router, "public").await?.public(
                server_tls.clone(),
                config.peer_ip,
                gate.clone(),
            );
            tracing::info!(
                addr = %http.local_addr()?,
                "HTTP listening (/certificate.sha256, /health, /announced; WebSocket sessions; TLS on the same port)"
            );
            listeners.spawn(http.run(stopping.clone()));
        }
    }
    if let Some(addr) = config.ops_listen {
        let router = ops::router(
            telemetry.clone(),
            config.ops_token.clone(),
            sessions.clone(),
            gate.audit.clone(),
            peers.clone(),
        );
        let ops = serve::HttpListener::bind(addr, router, "ops").await?;
        tracing::info!(addr = %ops.local_addr()?, auth = config.ops_token.is_some(), "ops listening (/metrics, /health, /nodes, POST /sessions/ID/close)");
        listeners.spawn(ops.run(stopping.clone()));
    }
    tracing::info!(fingerprint = %tls.fingerprint, hop_id, node = %node, "relay ready");

    shutdown_signal().await;
    tracing::info!(sessions = sessions.len(), drain = ?config.drain_timeout, "shutting down: sending GOAWAY");
    let _ = stop_tx.send(true);
    drain(&sessions, config.drain_timeout).await;
    for server in &servers {
        server.close(code::GOAWAY_TIMEOUT, b"relay shutting down");
    }
    for server in &servers {
        let _ = tokio::time::timeout(Duration::from_secs(1), server.wait_idle()).await;
    }
    listeners.shutdown().await;
    background.shutdown().await;
    let _ = audit_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), audit_task).await;
    workers.stop();
    tracing::info!("relay stopped");
    Ok(())
}

/// Sends GOAWAY to every accepted session and waits up to `window` for them to leave; then closes
/// the links this relay dialed to its cluster peers, which served those sessions until then.
#[tracing::instrument(name = "moq.shutdown.drain", skip_all, fields(moq.sessions = sessions.len(), moq.drain.window_ms = window.as_millis() as u64, moq.sessions.remaining = tracing::field::Empty))]
async fn drain(sessions: &Sessions, window: Duration) {
    let mut goaways = JoinSet::new();
    for session in sessions.all(false) {
        goaways.spawn(async move {
            let _ = session.goaway().await;
        });
    }
    let deadline = tokio::time::Instant::now() + window;
    while sessions.accepted() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    goaways.shutdown().await;
    let left = sessions.accepted();
    tracing::Span::current().record("moq.sessions.remaining", left);
    if left > 0 {
        tracing::warn!(sessions = left, "drain window over: closing remaining sessions");
    }
    // Nobody here needs the peers' broadcasts any more.
    for session in sessions.all(true) {
        session.close(&moq_lite::Error::GoingAway);
    }
    let closed = tokio::time::Instant::now() + Duration::from_secs(1);
    while sessions.len() > sessions.accepted() && tokio::time::Instant::now() < closed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The access layer from the configuration: who decides (keys + public patterns, or the auth
/// server), the limits, the audit log (whose writer runs as a background service).
fn gatekeeper(
    config: &config::Config,
    netplay: Option<Arc<netplay::Netplay>>,
    node: &str,
) -> anyhow::Result<(Arc<access::gate::Gatekeeper>, access::audit::AuditWriter)> {
    use access::policy::{Policy, Public};
    let auth = &config.auth;
    let policy = match &auth.url {
        Some(url) => Policy::Server(access::auth_server::AuthServer::new(url, auth.timeout)?),
        None => Policy::Local {
            keys: auth.key.as_deref().map(access::keys::Keys::load).transpose()?,
            public: Public::parse(&auth.public_publish, &auth.public_subscribe)?,
        },
    };
    let (audit, writer) = access::audit::Audit::open(auth.audit_log.as_deref())?;
    let node = node.to_string();
    let limits = access::limits::Counter::new(config.limits.clone());
    // Netplay tokens are the relay's own: decided by the netplay service whatever the policy.
    let issuer = netplay.map(|n| n as Arc<dyn access::policy::Issuer>);
    Ok((Arc::new(access::gate::Gatekeeper { policy, limits, audit, node, issuer }), writer))
}

/// The public HTTP endpoints' view of the relay: the certificate to pin, and the broadcasts anyone
/// may subscribe to (the public subscribe patterns).
fn web_state(origin: &Origin, tls: &tls::Tls, gate: &Arc<access::gate::Gatekeeper>) -> web::WebState {
    // The gate's own public patterns, parsed once at start-up.
    let public = gate.policy.public().map(|p| p.subscribe.clone()).unwrap_or_default();
    let (origin, gate) = (origin.clone(), gate.clone());
    web::WebState {
        fingerprint: tls.fingerprint.clone(),
        announced: Arc::new(move |prefix: String, token: Option<String>| {
            let (origin, public, gate) = (origin.clone(), public.clone(), gate.clone());
            Box::pin(async move {
                let prefix = moq_lite::path::normalize(&prefix);
                let patterns = match token {
                    None => public,
                    // Decided as a session at `prefix` would be (counted and audited alike).
                    Some(token) => {
                        use access::audit::{AuditContext, TokenHash};
                        let audit = AuditContext::default().path(&prefix).token(Some(TokenHash::of(&token)));
                        let request = access::auth_server::AuthRequest {
                            id: format!("{:016x}", random_u64()),
                            node: gate.node.clone(),
                            transport: access::auth_server::AuthRequest::HTTP,
                            path: prefix.clone(),
                            query: Some(format!("jwt={token}")),
                            ..Default::default()
                        };
                        let access = access::policy::Access { dialed: &prefix, token: Some(&token), request: &request };
                        let admitted = gate.decide(&audit, &access).await.map_err(|r| r.denial.as_str().to_string())?;
                        admitted.grant.subscribe.clone()
                    }
                };
                Ok(moq_lite::model::Scope::new(origin, "", patterns).list(&prefix))
            })
        }),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// This relay's name: `--cluster-node`, else `$HOSTNAME`, else `moq-relay`. Named in cluster logs,
/// `/nodes`, `moq_relay_cluster_info` and the auth server's requests.
fn node_name(config: &config::Config) -> String {
    config
        .cluster
        .node
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "moq-relay".into())
}

fn rand_hop_id() -> u64 {
    (random_u64() & ((1 << 53) - 1)).max(1)
}

/// A value no one can predict from outside (a randomly keyed hash of the time), for ids that are
/// not secrets: hop ids, the per-session id sent to the auth server.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
