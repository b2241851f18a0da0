//! Shared pieces of `quinn-floor`, the bare-QUIC cost floor for the relay benchmark: the frame
//! header, a chunk-fed frame parser, per-group loss accounting, process CPU time, UDP socket
//! construction and the QUIC/TLS configuration both ends use. Latency percentiles come from
//! [`moq_telemetry::stats::percentile`], the definition `moq watch` reports by too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// ALPN token both ends insist on.
pub const ALPN: &[u8] = b"quinn-floor";

/// Encoded size of [`FrameHeader`].
pub const HEADER_LEN: usize = 28;

/// Largest payload a decoder accepts; anything bigger means the stream is not ours.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

/// Prefix of every frame on a group stream. Big-endian on the wire:
/// `capture_us: u64 | group: u64 | index: u32 | group_frames: u32 | payload_len: u32`.
/// `payload_len` bytes of payload follow, so a frame occupies `HEADER_LEN + payload_len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Capture time, microseconds since the UNIX epoch (sender's clock).
    pub capture_us: u64,
    /// Group (GOP) sequence; one unidirectional stream per group.
    pub group: u64,
    /// Frame index within the group, `0..group_frames`.
    pub index: u32,
    /// Frames the group will hold once complete (the GOP length).
    pub group_frames: u32,
    pub payload_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is shorter than [`HEADER_LEN`].
    Short,
    /// `group_frames` is zero or `index` is not below it.
    BadIndex { index: u32, group_frames: u32 },
    /// `payload_len` exceeds [`MAX_PAYLOAD`].
    TooLarge(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => write!(f, "frame header shorter than {HEADER_LEN} bytes"),
            Self::BadIndex { index, group_frames } => {
                write!(f, "frame index {index} not below group size {group_frames}")
            }
            Self::TooLarge(n) => write!(f, "payload length {n} exceeds {MAX_PAYLOAD}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.capture_us.to_be_bytes());
        out[8..16].copy_from_slice(&self.group.to_be_bytes());
        out[16..20].copy_from_slice(&self.index.to_be_bytes());
        out[20..24].copy_from_slice(&self.group_frames.to_be_bytes());
        out[24..28].copy_from_slice(&self.payload_len.to_be_bytes());
        out
    }

    /// Decodes the first [`HEADER_LEN`] bytes of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let buf: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN).ok_or(DecodeError::Short)?.try_into().unwrap();
        let u64_at = |i: usize| u64::from_be_bytes(buf[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_be_bytes(buf[i..i + 4].try_into().unwrap());
        let header = Self {
            capture_us: u64_at(0),
            group: u64_at(8),
            index: u32_at(16),
            group_frames: u32_at(20),
            payload_len: u32_at(24),
        };
        if header.group_frames == 0 || header.index >= header.group_frames {
            return Err(DecodeError::BadIndex { index: header.index, group_frames: header.group_frames });
        }
        if header.payload_len > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(header.payload_len));
        }
        Ok(header)
    }
}

/// Splits a group stream into frames from arbitrarily cut chunks (QUIC chunk boundaries do not
/// follow writes). The payload is skipped, never copied; a frame is reported once its last byte
/// has been pushed, so a timestamp taken at that push is the frame's delivery time.
#[derive(Debug, Default)]
pub struct FrameParser {
    head: [u8; HEADER_LEN],
    filled: usize,
    current: Option<FrameHeader>,
    remaining: usize,
}

impl FrameParser {
    /// Consumes `data`, calling `on_frame` for every frame it completes.
    pub fn push(&mut self, mut data: &[u8], mut on_frame: impl FnMut(FrameHeader)) -> Result<(), DecodeError> {
        while !data.is_empty() {
            match self.current {
                None => {
                    let take = (HEADER_LEN - self.filled).min(data.len());
                    self.head[self.filled..self.filled + take].copy_from_slice(&data[..take]);
                    self.filled += take;
                    data = &data[take..];
                    if self.filled == HEADER_LEN {
                        let header = FrameHeader::decode(&self.head)?;
                        self.filled = 0;
                        self.remaining = header.payload_len as usize;
                        self.current = Some(header);
                    }
                }
                Some(_) => {
                    let take = self.remaining.min(data.len());
                    self.remaining -= take;
                    data = &data[take..];
                }
            }
            if let Some(header) = self.current {
                if self.remaining == 0 {
                    self.current = None;
                    on_frame(header);
                }
            }
        }
        Ok(())
    }

    /// True when the stream so far ends on a frame boundary (a FIN here is clean).
    pub fn at_boundary(&self) -> bool {
        self.filled == 0 && self.current.is_none()
    }
}

/// Which frames of one group arrived.
#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub expected: u32,
    seen: Vec<u64>,
    pub received: u32,
    pub max_index: Option<u32>,
}

impl GroupRecord {
    pub fn new(expected: u32) -> Self {
        Self { expected, seen: vec![0; (expected as usize).div_ceil(64)], received: 0, max_index: None }
    }

    /// Marks `index` received; false for a duplicate or an index outside the group.
    pub fn record(&mut self, index: u32) -> bool {
        if index >= self.expected {
            return false;
        }
        let (word, bit) = ((index / 64) as usize, index % 64);
        if self.seen[word] & (1 << bit) != 0 {
            return false;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        self.max_index = Some(self.max_index.map_or(index, |m| m.max(index)));
        true
    }

    pub fn is_complete(&self) -> bool {
        self.received == self.expected
    }
}

/// Loss over one connection's groups, or a sum over connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LossSummary {
    pub groups_seen: u64,
    pub groups_complete: u64,
    /// Groups between the first and last seen of which not one frame arrived.
    pub groups_missing: u64,
    pub frames_received: u64,
    pub frames_lost: u64,
}

impl std::ops::AddAssign for LossSummary {
    fn add_assign(&mut self, o: Self) {
        self.groups_seen += o.groups_seen;
        self.groups_complete += o.groups_complete;
        self.groups_missing += o.groups_missing;
        self.frames_received += o.frames_received;
        self.frames_lost += o.frames_lost;
    }
}

/// Loss over one connection's groups, keyed by group sequence.
///
/// Every group before the last seen one is judged whole: `expected - received` frames are lost.
/// The last seen group may still be arriving, so only gaps below its highest received index
/// count. A group missing entirely between the first and last seen costs the GOP length of the
/// group seen before it.
pub fn summarize(groups: &BTreeMap<u64, GroupRecord>) -> LossSummary {
    let mut s = LossSummary::default();
    let Some((&last, _)) = groups.last_key_value() else {
        return s;
    };
    let mut prev: Option<(u64, u32)> = None;
    for (&seq, g) in groups {
        if let Some((prev_seq, prev_expected)) = prev {
            let missing = seq - prev_seq - 1;
            s.groups_missing += missing;
            s.frames_lost += missing * prev_expected as u64;
        }
        prev = Some((seq, g.expected));
        s.groups_seen += 1;
        s.frames_received += g.received as u64;
        if g.is_complete() {
            s.groups_complete += 1;
        }
        s.frames_lost += if seq == last {
            g.max_index.map_or(0, |m| (m + 1 - g.received) as u64)
        } else {
            (g.expected - g.received) as u64
        };
    }
    s
}

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as u64
}

/// User and system CPU seconds this process has used (utime, stime), by the kernel's real tick
/// rate ([`moq_telemetry::process`]).
pub fn cpu_times() -> anyhow::Result<(f64, f64)> {
    let stats = moq_telemetry::process::ProcessStats::of_self()?;
    Ok((stats.user_seconds, stats.system_seconds))
}

/// Effective socket buffer sizes as `getsockopt` reports them (Linux doubles the request for
/// bookkeeping and caps it at `net.core.{w,r}mem_max` unless forced).
#[derive(Debug, Clone, Copy)]
pub struct BufferSizes {
    pub send: usize,
    pub recv: usize,
}

/// Binds a UDP socket, asking for `buffer` bytes of SO_SNDBUF and SO_RCVBUF first (0 leaves the
/// kernel defaults).
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> anyhow::Result<(std::net::UdpSocket, BufferSizes)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        socket.set_send_buffer_size(buffer).context("setting SO_SNDBUF")?;
        socket.set_recv_buffer_size(buffer).context("setting SO_RCVBUF")?;
    }
    socket.bind(&addr.into()).with_context(|| format!("binding UDP {addr}"))?;
    let sizes = BufferSizes { send: socket.send_buffer_size()?, recv: socket.recv_buffer_size()? };
    Ok((socket.into(), sizes))
}

/// Transport limits for one unidirectional stream per group: 1000 concurrent uni streams, a
/// 1 MiB stream window (a 30-frame group of 8 KiB frames is ~250 KB) and 16 MiB per connection.
/// Congestion control is quinn's default (Cubic).
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(1000u32.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t.stream_receive_window((1u32 << 20).into());
    t.receive_window((16u32 << 20).into());
    t.send_window(16 << 20);
    t.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    t.keep_alive_interval(Some(Duration::from_secs(3)));
    Arc::new(t)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration with a fresh self-signed certificate for `localhost`.
pub fn server_config() -> anyhow::Result<quinn::ServerConfig> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// A client configuration that accepts any server certificate (loopback benchmarking only).
pub fn client_config() -> anyhow::Result<quinn::ClientConfig> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// Skips certificate checks; handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(group: u64, index: u32, payload_len: u32) -> FrameHeader {
        FrameHeader { capture_us: 1_700_000_000_123_456, group, index, group_frames: 30, payload_len }
    }

    #[test]
    fn header_round_trips_every_field() {
        let h = FrameHeader {
            capture_us: 0x0102_0304_0506_0708,
            group: 0x1112_1314_1516_1718,
            index: 29,
            group_frames: 30,
            payload_len: 8192,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8], "capture time is big-endian first");
        assert_eq!(&bytes[16..20], &[0, 0, 0, 29]);
        assert_eq!(FrameHeader::decode(&bytes), Ok(h));
    }

    #[test]
    fn header_decode_rejects_short_and_inconsistent_input() {
        let bytes = header(1, 0, 10).encode();
        assert_eq!(FrameHeader::decode(&bytes[..HEADER_LEN - 1]), Err(DecodeError::Short));
        let mut bad = header(1, 0, 10);
        bad.index = 30;
        assert_eq!(FrameHeader::decode(&bad.encode()), Err(DecodeError::BadIndex { index: 30, group_frames: 30 }));
        bad.index = 0;
        bad.group_frames = 0;
        assert!(FrameHeader::decode(&bad.encode()).is_err());
        let big = header(1, 0, MAX_PAYLOAD + 1);
        assert_eq!(FrameHeader::decode(&big.encode()), Err(DecodeError::TooLarge(MAX_PAYLOAD + 1)));
    }

    fn stream_of(frames: &[FrameHeader]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&f.encode());
            out.extend(std::iter::repeat_n(0xAB, f.payload_len as usize));
        }
        out
    }

    #[test]
    fn parser_finds_frames_across_any_chunking() {
        let frames = [header(7, 0, 100), header(7, 1, 0), header(7, 2, 3000)];
        let data = stream_of(&frames);
        for chunk in [1, 5, 27, 28, 29, 128, 1452, data.len()] {
            let mut parser = FrameParser::default();
            let mut got = Vec::new();
            for piece in data.chunks(chunk) {
                parser.push(piece, |h| got.push(h)).unwrap();
            }
            assert_eq!(got, frames, "chunk size {chunk}");
            assert!(parser.at_boundary());
        }
    }

    #[test]
    fn parser_reports_a_frame_only_once_its_payload_is_complete() {
        let data = stream_of(&[header(1, 0, 10)]);
        let mut parser = FrameParser::default();
        let mut n = 0;
        parser.push(&data[..data.len() - 1], |_| n += 1).unwrap();
        assert_eq!(n, 0);
        assert!(!parser.at_boundary());
        parser.push(&data[data.len() - 1..], |_| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    fn groups(spec: &[(u64, u32, &[u32])]) -> BTreeMap<u64, GroupRecord> {
        spec.iter()
            .map(|&(seq, expected, indices)| {
                let mut g = GroupRecord::new(expected);
                for &i in indices {
                    g.record(i);
                }
                (seq, g)
            })
            .collect()
    }

    #[test]
    fn no_loss_when_every_closed_group_is_whole() {
        let all: Vec<u32> = (0..30).collect();
        let s = summarize(&groups(&[(5, 30, &all), (6, 30, &all), (7, 30, &[0, 1, 2])]));
        assert_eq!(
            s,
            LossSummary { groups_seen: 3, groups_complete: 2, groups_missing: 0, frames_received: 63, frames_lost: 0 }
        );
    }

    #[test]
    fn gaps_inside_groups_and_missing_groups_count_as_lost() {
        let all: Vec<u32> = (0..30).collect();
        let holey: Vec<u32> = (0..30).filter(|i| i % 10 != 3).collect(); // 3, 13, 23 missing
                                                                         // Group 11 never arrives; 12 is the last seen: index 1 missing below its max (4); 5.. pending.
        let s = summarize(&groups(&[(9, 30, &all), (10, 30, &holey), (12, 30, &[0, 2, 3, 4])]));
        assert_eq!(s.groups_missing, 1);
        assert_eq!(s.groups_complete, 1);
        assert_eq!(s.frames_received, 30 + 27 + 4);
        assert_eq!(s.frames_lost, 3 + 30 + 1);
    }

    #[test]
    fn closed_group_missing_its_tail_is_lost_but_the_last_group_is_not() {
        let s = summarize(&groups(&[(0, 30, &[0, 1, 2]), (1, 30, &[0, 1, 2])]));
        assert_eq!(s.frames_lost, 27);
        assert_eq!(summarize(&BTreeMap::new()), LossSummary::default());
    }

    #[test]
    fn duplicates_and_out_of_range_indices_are_ignored() {
        let mut g = GroupRecord::new(3);
        assert!(g.record(0));
        assert!(!g.record(0));
        assert!(!g.record(3));
        assert!(g.record(2));
        assert_eq!(g.received, 2);
        assert_eq!(g.max_index, Some(2));
    }

    #[test]
    fn cpu_times_are_user_and_system_seconds_that_only_grow() {
        let (user, system) = cpu_times().unwrap();
        assert!(user >= 0.0 && system >= 0.0);
        let mut x = 0u64;
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (user2, system2) = cpu_times().unwrap();
        assert!(user2 >= user && system2 >= system);
    }
}
