//! The SETUP exchange of lite-05+: each side opens one uni stream, writes one SETUP and FINs.
//! Neither side waits for the other's before opening streams; a server on raw QUIC reads the
//! client's first ([`read_setup`]) because its Path names the session's root.

use std::sync::Arc;
use std::time::Duration;

use super::stream::Reader;
use super::{Connection, Inner, UniKind, CONTROL_PRIORITY};
use crate::message::{ProbeLevel, Setup, UniStreamType};
use crate::{Error, Version};

/// How long a raw-QUIC client may take to send its SETUP before the session is refused.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the peer's SETUP from the first uni stream it opens (a server on raw QUIC lite-05+,
/// before admitting the session). Anything else first, or nothing within [`SETUP_TIMEOUT`], is
/// a protocol violation.
pub async fn read_setup(conn: &Connection, version: Version) -> Result<Setup, Error> {
    let read = async {
        let recv = conn.accept_uni().await.map_err(|e| Error::Closed(e.to_string()))?;
        let mut reader = Reader::new(recv, version);
        match reader.decode::<UniKind>().await?.0 {
            Ok(UniStreamType::Setup) => {}
            _ => return Err(Error::ProtocolViolation("the first uni stream is not SETUP".into())),
        }
        let setup: Setup = reader.decode().await?;
        reader.finished().await?;
        Ok(setup)
    };
    tokio::time::timeout(SETUP_TIMEOUT, read)
        .await
        .map_err(|_| Error::ProtocolViolation("no SETUP within the setup timeout".into()))?
}

/// Sends this side's SETUP: the probe level (reports come from QUIC's estimate), the Path of a
/// raw-QUIC client, and our hop id.
pub(super) async fn send_setup(inner: &Arc<Inner>) -> Result<(), Error> {
    let setup = Setup {
        probe: ProbeLevel::Report,
        path: inner.config.setup_path.clone(),
        hop: Some(inner.config.hop_id).filter(|h| *h != 0),
        trace_context: inner.config.trace.is_some(),
        ..Default::default()
    };
    let send = inner.conn.open_uni().await.map_err(|e| Error::Closed(e.to_string()))?;
    let mut writer = inner.writer(send);
    writer.set_priority(CONTROL_PRIORITY);
    writer.queue_raw(|b| UniStreamType::Setup.encode(b));
    writer.encode(&setup).await?;
    writer.finish();
    Ok(())
}

/// The peer's SETUP arriving inside the session: a second one, or one carrying a Path here (a
/// Path travels only on raw QUIC, where [`read_setup`] consumed it already) is a violation.
pub(super) async fn receive_setup(inner: &Arc<Inner>, reader: &mut Reader) -> Result<(), Error> {
    if inner.setup_seen.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return Err(Error::ProtocolViolation("a second SETUP stream".into()));
    }
    let setup: Setup = reader.decode().await?;
    reader.finished().await?;
    if setup.path.is_some() {
        return Err(Error::ProtocolViolation("SETUP Path is only allowed on raw QUIC, from the client".into()));
    }
    tracing::debug!(probe = ?setup.probe, hop = setup.hop, cost = setup.cost, "peer SETUP");
    inner.peer_setup.modify(|s| *s = Some(setup));
    Ok(())
}
