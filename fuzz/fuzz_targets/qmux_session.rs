//! Feeds arbitrary bytes, as the peer's side of the connection, to a qmux session (the `qmux`
//! crate every WebSocket session runs on, pinned to the workspace's version): its record and
//! frame decoders, transport parameters, stream and flow-control state, as a hostile peer reaches
//! them. The crate keeps its frame codec private, so the session is the entry point.
//!
//! The first input byte picks the wire format (qmux draft-00, -01 or -02); the rest is what the
//! peer sends, over an in-memory byte stream (size-prefixed records, as on TCP; a WebSocket
//! carries the same records in its messages). The server side accepts the session, then accepts
//! and reads every stream the input opens. Time is paused and advances by itself, so timeouts
//! cost nothing. It must return, never panic, whatever the input.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use qmux::transport::Stream;
use qmux::{Config, Session, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use web_transport_trait::{RecvStream as _, Session as _};

const VERSIONS: [Version; 3] = [Version::QMux00, Version::QMux01, Version::QMux02];
const WAIT: Duration = Duration::from_millis(100);

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
}

async fn serve(input: Vec<u8>, version: Version) {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let _ = peer.write_all(&input).await;
        // Read (and drop) what the session sends back, so its writes never block.
        let mut sink = [0u8; 4096];
        while matches!(peer.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let config = Config::new(version);
    let transport = Stream::new(ours, config.version, config.max_record_size);
    let Ok(Ok(session)) = tokio::time::timeout(WAIT, Session::accept(transport, config)).await else {
        return;
    };
    for _ in 0..16 {
        tokio::select! {
            bi = session.accept_bi() => match bi {
                Ok((_send, mut recv)) => while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, recv.read_chunk(4096)).await {},
                Err(_) => break,
            },
            uni = session.accept_uni() => match uni {
                Ok(mut recv) => while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, recv.read_chunk(4096)).await {},
                Err(_) => break,
            },
            _ = tokio::time::sleep(WAIT) => break,
        }
    }
    session.close(0, "done");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector) % VERSIONS.len()];
    let input = input.to_vec();
    RUNTIME.with(|rt| rt.block_on(serve(input, version)));
});
