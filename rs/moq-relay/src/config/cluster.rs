//! Clustering (docs/CLUSTER.md): the peers this relay dials, the token it presents to them, its
//! name and hop id, the `--cluster-connect-api` file, and the longest hop chain it accepts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use url::Url;

use super::cli::Settings;

/// The most peers one relay dials (static and `--cluster-connect-api` together): also the bound
/// of the outbound `peer` metric label.
pub const MAX_PEERS: usize = 64;
/// The longest hop chain `--cluster-max-hops` may allow.
pub const MAX_HOPS: usize = 32;
/// Hop ids stay below 2^53 so JavaScript peers can hold them.
pub const HOP_ID_LIMIT: u64 = 1 << 53;
const DEFAULT_API_INTERVAL: Duration = Duration::from_secs(10);

/// The resolved cluster settings ([`super::Config::cluster`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// `--cluster-connect`: the peers to dial, in the order given (labels unique).
    pub connect: Vec<PeerUrl>,
    /// `--cluster-token`: the token presented to peers whose URL has no `?jwt=`, read at each dial.
    pub token: Option<PathBuf>,
    /// `--cluster-node`; `None`: the `HOSTNAME` variable, read at start-up.
    pub node: Option<String>,
    /// `--cluster-id`, else derived from `--cluster-node`; `None`: random per process.
    pub hop_id: Option<u64>,
    /// `--cluster-connect-api`: a JSON array of peer URLs re-read every `connect_api_interval`.
    pub connect_api: Option<PathBuf>,
    pub connect_api_interval: Duration,
    /// `--cluster-max-hops`: the longest hop chain accepted or forwarded.
    pub max_hops: usize,
}

pub(super) fn resolve(settings: &Settings) -> anyhow::Result<Cluster> {
    let connect = PeerUrl::parse_list(settings.cluster_connect.iter().flatten().map(String::as_str))
        .context("--cluster-connect")?;
    let node = settings.cluster_node.clone().filter(|n| !n.is_empty());
    let hop_id = match settings.cluster_id {
        Some(id) => {
            ensure!((1..HOP_ID_LIMIT).contains(&id), "--cluster-id must be between 1 and 2^53 - 1, not {id}");
            Some(id)
        }
        None => node.as_deref().map(hop_id_of),
    };
    let max_hops = settings.cluster_max_hops.unwrap_or(MAX_HOPS);
    ensure!((1..=MAX_HOPS).contains(&max_hops), "--cluster-max-hops must be between 1 and {MAX_HOPS}");
    let connect_api_interval = settings.cluster_connect_api_interval.unwrap_or(DEFAULT_API_INTERVAL);
    ensure!(!connect_api_interval.is_zero(), "--cluster-connect-api-interval must be positive");
    Ok(Cluster {
        connect,
        token: settings.cluster_token.clone(),
        node,
        hop_id,
        connect_api: settings.cluster_connect_api.clone(),
        connect_api_interval,
        max_hops,
    })
}

/// The hop id a node name stands for: FNV-1a 64 of the name, masked to 53 bits, never 0. Stable
/// across restarts and builds, so a restarted node keeps its place in its peers' hop chains.
pub fn hop_id_of(node: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = node.bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash & (HOP_ID_LIMIT - 1)).max(1)
}

/// A peer to dial, as `--cluster-connect` and the connect-api file name it: the URL sent (its
/// `?cost=` taken out, its `?jwt=` kept), the link cost, and the peer's label (`host:port`).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerUrl {
    /// What is dialed: the written URL minus `cost`; may hold a token, so never log it (see
    /// [`PeerUrl::redacted`]).
    pub url: Url,
    /// `?cost=N`: what routes learned over this link cost (moq-lite's `link_cost`).
    pub cost: Option<u64>,
    /// `host:port`: the peer's name in metrics, logs and `/nodes`.
    pub label: String,
}

impl PeerUrl {
    /// The URL as logs may show it: scheme, host, port and path, never the query (a token).
    pub fn redacted(&self) -> String {
        format!("{}://{}{}", self.url.scheme(), self.label, self.url.path())
    }

    /// Whether the URL carries its own token (`?jwt=`), which wins over `--cluster-token`.
    pub fn has_token(&self) -> bool {
        self.url.query_pairs().any(|(k, _)| k == "jwt")
    }

    /// Parses a list of peer URLs: at most [`MAX_PEERS`], each label once.
    pub fn parse_list<'a>(texts: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Vec<PeerUrl>> {
        let mut peers: Vec<PeerUrl> = Vec::new();
        for text in texts {
            let peer: PeerUrl = text.parse()?;
            ensure!(!peers.iter().any(|p| p.label == peer.label), "peer {} is listed twice", peer.label);
            peers.push(peer);
        }
        ensure!(peers.len() <= MAX_PEERS, "{} peers listed, at most {MAX_PEERS} allowed", peers.len());
        Ok(peers)
    }
}

impl FromStr for PeerUrl {
    type Err = anyhow::Error;

    /// Error messages never repeat the query (it may hold a token).
    fn from_str(text: &str) -> anyhow::Result<Self> {
        // What errors may show: no query, no fragment, no user info.
        let mut shown = text.split(['?', '#']).next().unwrap_or_default().to_string();
        if let Some((scheme, rest)) = shown.split_once("://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if let Some((_, host)) = authority.rsplit_once('@') {
                shown = format!("{scheme}://…@{host}{path}");
            }
        }
        let mut url = Url::parse(text.trim()).map_err(|e| anyhow::anyhow!("peer URL {shown:?}: {e}"))?;
        let default_port = match url.scheme() {
            "https" | "moqt" => 443,
            "http" => 80,
            other => bail!("peer URL {shown:?}: scheme {other:?}; use https://, http:// or moqt://"),
        };
        ensure!(
            url.username().is_empty() && url.password().is_none(),
            "peer URL {shown:?}: credentials go in ?jwt= or --cluster-token, not in the URL"
        );
        ensure!(url.fragment().is_none(), "peer URL {shown:?}: a fragment means nothing here");
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => bail!("peer URL {shown:?} has no host"),
        };
        let label = format!("{host}:{}", url.port().unwrap_or(default_port));

        // `cost` is ours; every other parameter (`jwt`) goes to the peer as written.
        let mut cost = None;
        let mut kept = Vec::new();
        for part in url.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            if key != "cost" {
                kept.push(part.to_string());
                continue;
            }
            ensure!(cost.is_none(), "peer {label}: cost given twice");
            let value: u64 =
                value.parse().map_err(|_| anyhow::anyhow!("peer {label}: cost {value:?} is not a whole number"))?;
            cost = Some(value);
        }
        let query = kept.join("&");
        url.set_query(Some(query.as_str()).filter(|q| !q.is_empty()));
        Ok(Self { url, cost, label })
    }
}

/// Never the query: it may hold a token.
impl fmt::Debug for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerUrl").field("url", &self.redacted()).field("cost", &self.cost).finish()
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{load, TempToml};

    fn peer(text: &str) -> PeerUrl {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e:#}"))
    }

    fn refused(text: &str) -> String {
        format!("{:#}", text.parse::<PeerUrl>().unwrap_err())
    }

    #[test]
    fn a_peer_url_gives_its_label_cost_and_what_is_sent() {
        let p = peer("https://relay-b.example:4443/?cost=5&jwt=abc.def.ghi");
        assert_eq!(p.label, "relay-b.example:4443");
        assert_eq!(p.cost, Some(5));
        assert_eq!(p.url.as_str(), "https://relay-b.example:4443/?jwt=abc.def.ghi");
        assert!(p.has_token());

        let p = peer("http://127.0.0.1:4443");
        assert_eq!((p.label.as_str(), p.cost, p.url.query()), ("127.0.0.1:4443", None, None));
        assert!(!p.has_token());
        assert_eq!(peer("moqt://[::1]/x?jwt=t&cost=0").label, "[::1]:443");
        assert_eq!(peer("moqt://[::1]/x?jwt=t&cost=0").cost, Some(0));
        assert_eq!(peer("https://relay.example/").label, "relay.example:443");
        assert_eq!(peer("http://relay.example/").label, "relay.example:80");
        // The token is sent exactly as written.
        assert_eq!(peer("https://r:1/?jwt=a%2Bb").url.query(), Some("jwt=a%2Bb"));
    }

    #[test]
    fn bad_peer_urls_are_refused_without_showing_their_query() {
        for (text, needle) in [
            ("relay-b:4443", "scheme"),
            ("wss://relay-b:4443/", "scheme"),
            ("moqt:///x", "host"),
            ("not a url", "peer URL"),
            ("https://relay-b:4443/?cost=cheap&jwt=SECRET", "not a whole number"),
            ("https://relay-b:4443/?cost=-1&jwt=SECRET", "not a whole number"),
            ("https://relay-b:4443/?cost=1&cost=2&jwt=SECRET", "twice"),
            ("https://user:SECRET@relay-b:4443/", "credentials"),
            ("https://relay-b:4443/#frag", "fragment"),
        ] {
            let err = refused(text);
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("SECRET"), "{text}: {err}");
        }
    }

    #[test]
    fn logs_never_see_the_query() {
        let p = peer("https://relay-b:4443/room?jwt=SECRET.TOKEN&cost=3");
        assert_eq!(p.redacted(), "https://relay-b:4443/room");
        assert_eq!(p.to_string(), "https://relay-b:4443/room");
        assert!(!format!("{p:?}").contains("SECRET"), "{p:?}");
    }

    #[test]
    fn lists_are_capped_and_labels_unique() {
        let many: Vec<String> = (0..=MAX_PEERS).map(|i| format!("https://r{i}:1/")).collect();
        let err = PeerUrl::parse_list(many.iter().map(String::as_str)).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");
        assert_eq!(PeerUrl::parse_list(many[..MAX_PEERS].iter().map(String::as_str)).unwrap().len(), MAX_PEERS);
        let err = PeerUrl::parse_list(["https://r:1/", "http://r:1/?cost=2"]).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn hop_ids_are_stable_53_bit_and_never_zero() {
        // FNV-1a 64 of "" is its offset basis; of "a" a published value.
        assert_eq!(hop_id_of(""), 0xcbf2_9ce4_8422_2325 & (HOP_ID_LIMIT - 1));
        assert_eq!(hop_id_of("a"), 0xaf63_dc4c_8601_ec8c & (HOP_ID_LIMIT - 1));
        assert_eq!(hop_id_of("relay-a"), hop_id_of("relay-a"));
        assert_ne!(hop_id_of("relay-a"), hop_id_of("relay-b"));
        for name in ["x", "relay-1", "edge.eu-west.example"] {
            assert!((1..HOP_ID_LIMIT).contains(&hop_id_of(name)));
        }
    }

    #[test]
    fn defaults_flags_variables_and_file() {
        let config = load(&["--tls-generate=h"], &[]).unwrap();
        let c = &config.cluster;
        assert!(c.connect.is_empty() && c.token.is_none() && c.node.is_none() && c.hop_id.is_none());
        assert_eq!((c.connect_api_interval, c.max_hops), (Duration::from_secs(10), 32));

        let config = load(
            &[
                "--tls-generate=h",
                "--cluster-connect=https://a:1/?cost=3,http://b:2/",
                "--cluster-connect",
                "moqt://c:3/?jwt=t",
                "--cluster-node=relay-a",
                "--cluster-max-hops=4",
                "--cluster-token=/run/peer.jwt",
            ],
            &[("MOQ_CLUSTER_CONNECT_API_INTERVAL", "2s")],
        )
        .unwrap();
        let c = &config.cluster;
        let labels: Vec<&str> = c.connect.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["a:1", "b:2", "c:3"]);
        assert_eq!(c.connect[0].cost, Some(3));
        assert_eq!(c.node.as_deref(), Some("relay-a"));
        assert_eq!(c.hop_id, Some(hop_id_of("relay-a")), "derived from the node name");
        assert_eq!((c.max_hops, c.connect_api_interval), (4, Duration::from_secs(2)));
        assert_eq!(c.token, Some("/run/peer.jwt".into()));

        // --cluster-id wins over the name.
        let config = load(&["--tls-generate=h", "--cluster-node=relay-a", "--cluster-id=7"], &[]).unwrap();
        assert_eq!(config.cluster.hop_id, Some(7));

        let config = load(&["--tls-generate=h"], &[("MOQ_CLUSTER_CONNECT", "https://a:1/,https://b:1/")]).unwrap();
        assert_eq!(config.cluster.connect.len(), 2);

        let file = TempToml::new(
            "cluster",
            r#"
                [cluster]
                connect = ["https://a:1/?cost=9", "https://b:1/"]
                node = "origin-1"
                id = 42
                connect_api = "/etc/moq/peers.json"
                connect_api_interval = "30s"
                max_hops = 8
                token = "/etc/moq/peer.jwt"
            "#,
        );
        let config = load(&[file.path(), "--tls-generate=h"], &[]).unwrap();
        let c = &config.cluster;
        assert_eq!((c.connect.len(), c.connect[0].cost), (2, Some(9)));
        assert_eq!((c.node.as_deref(), c.hop_id, c.max_hops), (Some("origin-1"), Some(42), 8));
        assert_eq!(c.connect_api, Some("/etc/moq/peers.json".into()));
        assert_eq!(c.connect_api_interval, Duration::from_secs(30));
        assert_eq!(c.token, Some("/etc/moq/peer.jwt".into()));
    }

    #[test]
    fn values_are_checked() {
        let too_many = (0..=MAX_PEERS).map(|i| format!("https://r{i}:1/")).collect::<Vec<_>>().join(",");
        for (flag, needle) in [
            ("--cluster-id=0".to_string(), "--cluster-id"),
            (format!("--cluster-id={}", HOP_ID_LIMIT), "--cluster-id"),
            ("--cluster-max-hops=0".into(), "--cluster-max-hops"),
            ("--cluster-max-hops=33".into(), "--cluster-max-hops"),
            ("--cluster-connect-api-interval=0s".into(), "--cluster-connect-api-interval"),
            ("--cluster-connect=ftp://a:1/".into(), "scheme"),
            ("--cluster-connect=https://a:1/?cost=x".into(), "whole number"),
            (format!("--cluster-connect={too_many}"), "at most 64"),
        ] {
            let err = format!("{:#}", load(&["--tls-generate=h", &flag], &[]).unwrap_err());
            assert!(err.contains(needle), "{flag}: {err}");
        }
        assert!(load(&["--tls-generate=h", &format!("--cluster-id={}", HOP_ID_LIMIT - 1)], &[]).is_ok());
    }
}
