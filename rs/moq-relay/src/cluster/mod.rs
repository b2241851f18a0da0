//! Clustering, the relay side (docs/CLUSTER.md): the [`Cluster`] service dials the configured
//! peers ([`peers`]: one dialer each, with backoff) and follows the `--cluster-connect-api` file
//! ([`api`]); [`registry`] knows every peer link, dialed or accepted, for `/nodes` and the peer
//! metrics. Routing between peers (hop chains, loop refusal, costs) is moq-lite's.

pub mod api;
pub mod peers;
pub mod registry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use moq_lite::model::Origin;
use moq_lite::transport::{Client, ClientConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{self, PeerUrl};
use crate::serve::Stopping;
use crate::telemetry::cluster::{ClusterStarted, ConnectApiFailed, PeersChanged};
use crate::Sessions;

pub use registry::{InboundPeer, Node, Peers};

/// The cluster service: a value with its own `run()`, like the listeners.
pub struct Cluster {
    pub settings: config::Cluster,
    /// This relay's name (`--cluster-node`, else `$HOSTNAME`).
    pub node: String,
    pub hop_id: u64,
    pub origin: Origin,
    /// The transport's telemetry, for the dialed sessions.
    pub telemetry: moq_lite::telemetry::Telemetry,
    pub sessions: Sessions,
    pub peers: Peers,
    /// How to dial: the relay's QUIC options and versions.
    pub client: ClientConfig,
    pub max_streams: u64,
}

/// What every dialer shares.
pub(crate) struct Env {
    pub client: Client,
    pub origin: Origin,
    pub hop_id: u64,
    pub max_hops: usize,
    pub node: String,
    pub token: Option<PathBuf>,
    pub telemetry: moq_lite::telemetry::Telemetry,
    pub sessions: Sessions,
    pub peers: Peers,
    pub max_streams: u64,
}

/// A dialer running, and how to stop it.
struct Running {
    peer: PeerUrl,
    removed: watch::Sender<bool>,
}

impl Cluster {
    /// Dials the peers until shutdown. At shutdown the dialers stop redialing; sessions running
    /// are left to the drain (which closes them once the relay's own clients are gone).
    pub async fn run(self, mut stopping: Stopping) {
        let settings = self.settings;
        ClusterStarted {
            node: &self.node,
            hop_id: self.hop_id,
            peers: settings.connect.len(),
            connect_api: settings.connect_api.as_deref(),
            max_hops: settings.max_hops,
        }
        .emit();
        if settings.connect.is_empty() && settings.connect_api.is_none() {
            return;
        }
        let client = match Client::new(self.client) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(target: crate::telemetry::cluster::TARGET, error = format!("{e:#}"), "cluster client failed: no peer is dialed");
                return;
            }
        };
        let env = Arc::new(Env {
            client,
            origin: self.origin,
            hop_id: self.hop_id,
            max_hops: settings.max_hops,
            node: self.node,
            token: settings.token.clone(),
            telemetry: self.telemetry,
            sessions: self.sessions,
            peers: self.peers,
            max_streams: self.max_streams,
        });
        let mut dialers = Dialers { env, running: BTreeMap::new(), tasks: JoinSet::new(), stopping: stopping.clone() };
        let _ = dialers.reconcile(&settings.connect);

        if let Some(path) = &settings.connect_api {
            let mut interval = tokio::time::interval(settings.connect_api_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error = None;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopping.wait() => break,
                }
                let wanted = match api::read(path).await.and_then(|file| api::desired(&settings.connect, &file)) {
                    Ok(wanted) => wanted,
                    Err(error) => {
                        let text = format!("{error:#}");
                        if last_error.as_ref() != Some(&text) {
                            ConnectApiFailed { path, error: &error }.emit();
                            last_error = Some(text);
                        }
                        continue;
                    }
                };
                last_error = None;
                let change = dialers.reconcile(&wanted);
                if !change.is_empty() {
                    PeersChanged { added: &change.added, removed: &change.removed, changed: &change.changed }.emit();
                }
            }
        } else {
            stopping.wait().await;
        }
        // The dialers see the shutdown themselves: those between sessions end now, the others
        // when the drain closes their session.
        while dialers.tasks.join_next().await.is_some() {}
    }
}

/// Peers a reconcile started, stopped, or restarted (URL changed), by label.
#[derive(Default)]
struct Change {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

struct Dialers {
    env: Arc<Env>,
    running: BTreeMap<String, Running>,
    tasks: JoinSet<()>,
    stopping: Stopping,
}

impl Dialers {
    /// Starts and stops dialers so that exactly the `wanted` peers are dialed.
    fn reconcile(&mut self, wanted: &[PeerUrl]) -> Change {
        let current: BTreeMap<String, PeerUrl> =
            self.running.iter().map(|(label, r)| (label.clone(), r.peer.clone())).collect();
        let (stop, start) = api::plan(&current, wanted);
        if stop.is_empty() && start.is_empty() {
            return Change::default();
        }
        for label in &stop {
            if let Some(running) = self.running.remove(label) {
                let _ = running.removed.send(true);
            }
        }
        for peer in &start {
            let (removed, receiver) = watch::channel(false);
            let dialer = peers::Dialer {
                peer: peer.clone(),
                env: self.env.clone(),
                removed: receiver,
                stopping: self.stopping.clone(),
            };
            self.tasks.spawn(dialer.run());
            self.running.insert(peer.label.clone(), Running { peer: peer.clone(), removed });
        }
        while self.tasks.try_join_next().is_some() {}
        let restarted = |l: &String| start.iter().any(|p| &p.label == l);
        Change {
            added: start.iter().filter(|p| !stop.contains(&p.label)).map(|p| p.label.clone()).collect(),
            removed: stop.iter().filter(|l| !restarted(l)).cloned().collect(),
            changed: stop.iter().filter(|l| restarted(l)).cloned().collect(),
        }
    }
}
