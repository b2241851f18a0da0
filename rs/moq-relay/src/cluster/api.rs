//! `--cluster-connect-api FILE`: a JSON array of peer URLs (the `--cluster-connect` syntax),
//! re-read every `--cluster-connect-api-interval`. The peers dialed are then the static ones plus
//! the file's; peers added are dialed, removed ones hung up, a changed URL (cost, token) redialed.
//! A file that cannot be read or parsed changes nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context};

use crate::config::{PeerUrl, MAX_PEERS};

/// The peers the file lists.
pub async fn read(path: &Path) -> anyhow::Result<Vec<PeerUrl>> {
    let text = tokio::fs::read_to_string(path).await.context("reading the file")?;
    parse(&text)
}

/// A JSON array of URL strings.
pub fn parse(text: &str) -> anyhow::Result<Vec<PeerUrl>> {
    let urls: Vec<String> = serde_json::from_str(text).context("not a JSON array of URL strings")?;
    PeerUrl::parse_list(urls.iter().map(String::as_str))
}

/// The peers to dial: the static ones, then those of the file not among them (by label; a static
/// peer's URL wins). At most [`MAX_PEERS`] in all.
pub fn desired(statics: &[PeerUrl], file: &[PeerUrl]) -> anyhow::Result<Vec<PeerUrl>> {
    let mut all = statics.to_vec();
    all.extend(file.iter().filter(|p| !statics.iter().any(|s| s.label == p.label)).cloned());
    ensure!(all.len() <= MAX_PEERS, "{} peers with --cluster-connect's, at most {MAX_PEERS} allowed", all.len());
    Ok(all)
}

/// What turns the `running` dialers into `desired`: the labels to stop, then the peers to start
/// (a peer whose URL changed is in both).
pub fn plan(running: &BTreeMap<String, PeerUrl>, desired: &[PeerUrl]) -> (Vec<String>, Vec<PeerUrl>) {
    let stop = running
        .iter()
        .filter(|(label, url)| !desired.iter().any(|d| &d.label == *label && d == *url))
        .map(|(label, _)| label.clone())
        .collect();
    let start = desired.iter().filter(|d| running.get(&d.label) != Some(d)).cloned().collect();
    (stop, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(texts: &[&str]) -> Vec<PeerUrl> {
        PeerUrl::parse_list(texts.iter().copied()).unwrap()
    }

    fn labels(peers: &[PeerUrl]) -> Vec<&str> {
        peers.iter().map(|p| p.label.as_str()).collect()
    }

    #[test]
    fn the_file_is_a_json_array_of_peer_urls() {
        assert_eq!(labels(&parse(r#"["https://a:1/?cost=2", "http://b:2/"]"#).unwrap()), ["a:1", "b:2"]);
        assert!(parse("[]").unwrap().is_empty());
        for bad in [r#"{"a": 1}"#, r#"["ftp://a:1/"]"#, "[1]", "not json", r#"["https://a:1/?cost=x"]"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // The token never shows in the error.
        let err = format!("{:#}", parse(r#"["https://a:1/?jwt=SECRET&cost=x"]"#).unwrap_err());
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn static_peers_come_first_and_the_total_is_capped() {
        let statics = peers(&["https://a:1/?cost=1"]);
        let file = peers(&["https://a:1/?cost=9", "https://b:1/"]);
        let all = desired(&statics, &file).unwrap();
        assert_eq!(labels(&all), ["a:1", "b:1"]);
        assert_eq!(all[0].cost, Some(1), "the static URL wins");

        let many: Vec<String> = (0..MAX_PEERS).map(|i| format!("https://f{i}:1/")).collect();
        let file = PeerUrl::parse_list(many.iter().map(String::as_str)).unwrap();
        assert!(desired(&statics, &file).unwrap_err().to_string().contains("at most 64"));
        assert_eq!(desired(&[], &file).unwrap().len(), MAX_PEERS);
    }

    #[test]
    fn reconciling_starts_added_stops_removed_and_restarts_changed_peers() {
        let running: BTreeMap<String, PeerUrl> = peers(&["https://a:1/", "https://b:1/", "https://c:1/?cost=1"])
            .into_iter()
            .map(|p| (p.label.clone(), p))
            .collect();
        let want = peers(&["https://a:1/", "https://c:1/?cost=5", "https://d:1/"]);
        let (stop, start) = plan(&running, &want);
        assert_eq!(stop, ["b:1", "c:1"]);
        assert_eq!(labels(&start), ["c:1", "d:1"]);
        assert_eq!(start[0].cost, Some(5));

        let same: Vec<PeerUrl> = running.values().cloned().collect();
        assert_eq!(plan(&running, &same), (vec![], vec![]), "nothing to do");
    }
}
