//! `quinn-floor`: the bare-QUIC cost floor for the relay benchmark.
//!
//! `send` is a QUIC server with no relay logic. For every accepted connection it streams the
//! relay's traffic shape: one unidirectional stream per group (GOP), `--fps` frames a second,
//! each `--frame-bytes` of payload (`--key-frame-bytes` for a group's first) behind a 28-byte
//! header (capture time, group, index), FIN at the group's end. A frame is built once per tick
//! and written to every connection, as a relay fans one frame out. A new connection joins at the
//! next group boundary (up to one GOP of silence after its handshake).
//!
//! Scheduling, chosen to make the sender cheapest: by default one task writes every connection
//! each tick (`--tasks single`, the tick's writes polled together with `join_all`, so no task is
//! woken per connection per frame) on a current-thread runtime (`--threads 1`). quinn still
//! drives each connection from its own task. Measured on a 2-core host, 100 connections of
//! 8 KiB at 30 fps: `--tasks per-connection` (one task per viewer fed by a broadcast channel, as
//! a relay runs one task per subscriber) costs the same within noise. The multi-threaded runtime
//! the relay uses (`--threads 0`, the benchmark's `floor-mt`) has lower latency and cost the same
//! as the current-thread one within noise in the 2026-11-24 sweeps (an earlier single experiment
//! had measured ~10 % more).
//!
//! The sender stops on SIGINT or SIGTERM and then prints one JSON line on stdout:
//! `{"cpu_s", "utime_s", "stime_s", "frames_sent", "frames_generated", "wall_s", ...}` where
//! `frames_sent` counts frame writes over all connections (a harness divides CPU by it). Every
//! second it prints a JSON line with the running counters and CPU to stderr, so a harness can
//! also take deltas over a steady window that excludes start-up and handshakes; the line also
//! carries quinn's UDP counters summed over connections (`udp_tx_datagrams`, `udp_tx_transmits`,
//! `udp_rx_datagrams`), the same figures the relay exports as `moq_relay_quic_udp_*_total`.
//!
//! `recv` opens `--connections` connections (all on one client endpoint, i.e. one UDP socket,
//! unless `--endpoints` spreads them round-robin over several), reads every stream and reports
//! frames, bytes, complete groups, lost frames, latency percentiles and throughput.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use moq_bench::{
    bind_udp, client_config, cpu_times, now_us, server_config, summarize, BufferSizes, FrameHeader, FrameParser,
    GroupRecord, LossSummary, HEADER_LEN,
};
use serde_json::json;
use tokio::time::MissedTickBehavior;

#[derive(Parser)]
#[command(about = "Bare-QUIC sender/receiver: the CPU floor for the relay benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the traffic shape to every connection until SIGINT/SIGTERM.
    Send(SendArgs),
    /// Connect, receive for a while, report.
    Recv(RecvArgs),
}

#[derive(Parser)]
struct SendArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Payload bytes per frame (the 28-byte header comes on top).
    #[arg(long, default_value_t = 8192)]
    frame_bytes: u32,
    /// Payload bytes of each group's first frame (a video key frame); defaults to --frame-bytes.
    /// The relay benchmark sets both so the floor sends the publisher's frame sizes: how a frame
    /// splits into packets is a large part of what it costs to send.
    #[arg(long)]
    key_frame_bytes: Option<u32>,
    /// Frames per group; each group is one unidirectional stream.
    #[arg(long, default_value_t = 30)]
    gop: u32,
    /// SO_SNDBUF and SO_RCVBUF to request; 0 keeps the kernel defaults.
    #[arg(long, default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Which tasks write the streams.
    #[arg(long, value_enum, default_value_t = Tasks::Single)]
    tasks: Tasks,
    /// Tokio worker threads: 1 = current-thread runtime (cheapest), 0 = multi-threaded with one
    /// worker per core (as the relay runs), n = multi-threaded with n workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Tasks {
    /// One task writes every connection each tick.
    Single,
    /// One task per connection, fed by a broadcast channel.
    PerConnection,
}

#[derive(Parser)]
struct RecvArgs {
    #[arg(long)]
    connect: SocketAddr,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to receive once every connection is up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Client endpoints (UDP sockets) to spread the connections over, round-robin.
    #[arg(long, default_value_t = 1)]
    endpoints: usize,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // quinn's spans fall back to the `log` crate while no tracing subscriber is set: 3.8 % of the
    // sender's instructions (callgrind); a floor should not pay for that, so set one that disables
    // every span.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
    match cli.cmd {
        Cmd::Send(args) => {
            let runtime = match args.threads {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
                0 => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
                n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
            };
            // On a worker, as a relay's fan-out runs: `block_on` would run the sender on the main
            // thread, outside the workers, and its wakes would reach them through the shared queue.
            runtime.block_on(async { tokio::spawn(send(args)).await? })
        }
        Cmd::Recv(args) => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(recv(args)),
    }
}

fn report_buffers(role: &str, requested: usize, sizes: BufferSizes) {
    eprintln!(
        "quinn-floor {role}: socket buffers requested {requested} (0 = kernel default), effective SO_SNDBUF {} SO_RCVBUF {}",
        sizes.send, sizes.recv
    );
    // Linux reports twice what it granted; less than twice the request means it was capped.
    if requested > 0 && (sizes.send < 2 * requested || sizes.recv < 2 * requested) {
        eprintln!(
            "quinn-floor {role}: socket buffers capped below the request; raise net.core.wmem_max / net.core.rmem_max"
        );
    }
}

#[derive(Default)]
struct SendStats {
    frames_sent: AtomicU64,
    frames_generated: AtomicU64,
    accepted: AtomicU64,
    active: AtomicU64,
    /// Every accepted connection, for the packet counts in the progress line (read once a
    /// second, as the relay folds its connections' stats into its counters once per scrape).
    connections: Mutex<Vec<quinn::Connection>>,
}

/// One frame as every connection receives it; `data` is header plus payload, shared.
#[derive(Clone)]
struct Frame {
    index: u32,
    last: bool,
    data: Bytes,
}

struct Source {
    gop: u32,
    group: u64,
    index: u32,
    key_payload: Vec<u8>,
    payload: Vec<u8>,
}

impl Source {
    fn next(&mut self) -> Frame {
        let payload = if self.index == 0 { &self.key_payload } else { &self.payload };
        let header = FrameHeader {
            capture_us: now_us(),
            group: self.group,
            index: self.index,
            group_frames: self.gop,
            payload_len: payload.len() as u32,
        };
        let mut data = BytesMut::with_capacity(HEADER_LEN + payload.len());
        data.extend_from_slice(&header.encode());
        data.extend_from_slice(payload);
        let frame = Frame { index: self.index, last: self.index + 1 == self.gop, data: data.freeze() };
        self.index += 1;
        if self.index == self.gop {
            self.index = 0;
            self.group += 1;
        }
        frame
    }
}

/// A viewer's connection and its open group stream.
struct Peer {
    conn: quinn::Connection,
    stream: Option<quinn::SendStream>,
}

impl Peer {
    /// Writes `frame`, opening a stream at a group's first frame and finishing it after its
    /// last. Frames before the first group boundary are skipped (false).
    async fn send(&mut self, frame: &Frame) -> anyhow::Result<bool> {
        if self.stream.is_none() {
            if frame.index != 0 {
                return Ok(false);
            }
            self.stream = Some(self.conn.open_uni().await?);
        }
        let stream = self.stream.as_mut().unwrap();
        stream.write_chunk(frame.data.clone()).await?;
        if frame.last {
            stream.finish()?;
            self.stream = None;
        }
        Ok(true)
    }
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.fps > 0 && args.gop > 0, "--fps and --gop must be positive");
    let started = Instant::now();
    let (socket, sizes) = bind_udp(args.listen, args.socket_buffer)?;
    report_buffers("send", args.socket_buffer, sizes);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config()?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    eprintln!("quinn-floor send: listening on {}", endpoint.local_addr()?);

    let stats = Arc::new(SendStats::default());
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<quinn::Connection>();
    tokio::spawn(accept(endpoint.clone(), conn_tx, stats.clone()));
    tokio::spawn(progress(stats.clone(), started));

    let mut source = Source {
        gop: args.gop,
        group: 0,
        index: 0,
        key_payload: vec![0x5A; args.key_frame_bytes.unwrap_or(args.frame_bytes) as usize],
        payload: vec![0x5A; args.frame_bytes as usize],
    };
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.fps as f64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);

    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };

    let run = async {
        match args.tasks {
            Tasks::Single => {
                let mut peers: Vec<Peer> = Vec::new();
                loop {
                    ticker.tick().await;
                    let frame = source.next();
                    stats.frames_generated.fetch_add(1, Ordering::Relaxed);
                    while let Ok(conn) = conn_rx.try_recv() {
                        peers.push(Peer { conn, stream: None });
                    }
                    let results = futures::future::join_all(peers.iter_mut().map(|p| p.send(&frame))).await;
                    let sent = results.iter().filter(|r| matches!(r, Ok(true))).count();
                    stats.frames_sent.fetch_add(sent as u64, Ordering::Relaxed);
                    let mut results = results.into_iter();
                    peers.retain(|_| results.next().is_some_and(|r| r.is_ok()));
                    stats.active.store(peers.len() as u64, Ordering::Relaxed);
                }
            }
            Tasks::PerConnection => {
                let (frames, _) = tokio::sync::broadcast::channel::<Frame>(64);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {
                            let _ = frames.send(source.next());
                            stats.frames_generated.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(conn) = conn_rx.recv() => {
                            tokio::spawn(serve_connection(conn, frames.subscribe(), stats.clone()));
                        }
                    }
                }
            }
        }
    };

    tokio::select! {
        _ = stop => {}
        _ = run => {}
    }

    let (utime, stime) = cpu_times()?;
    let frames_sent = stats.frames_sent.load(Ordering::Relaxed);
    let cpu = utime + stime;
    let report = json!({
        "cpu_s": cpu,
        "utime_s": utime,
        "stime_s": stime,
        "frames_sent": frames_sent,
        "frames_generated": stats.frames_generated.load(Ordering::Relaxed),
        "connections_accepted": stats.accepted.load(Ordering::Relaxed),
        "cpu_us_per_frame": if frames_sent > 0 { cpu * 1e6 / frames_sent as f64 } else { 0.0 },
        "wall_s": started.elapsed().as_secs_f64(),
        "fps": args.fps,
        "frame_bytes": args.frame_bytes,
        "key_frame_bytes": args.key_frame_bytes.unwrap_or(args.frame_bytes),
        "gop": args.gop,
        "socket_sndbuf": sizes.send,
        "socket_rcvbuf": sizes.recv,
    });
    println!("{report}");
    endpoint.close(0u32.into(), b"bye");
    Ok(())
}

async fn accept(
    endpoint: quinn::Endpoint,
    conns: tokio::sync::mpsc::UnboundedSender<quinn::Connection>,
    stats: Arc<SendStats>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let conns = conns.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    stats.connections.lock().unwrap().push(conn.clone());
                    let _ = conns.send(conn);
                }
                Err(e) => eprintln!("quinn-floor send: handshake failed: {e}"),
            }
        });
    }
}

/// `--tasks per-connection`: one task per viewer, fed every frame by the broadcast channel.
async fn serve_connection(
    conn: quinn::Connection,
    mut frames: tokio::sync::broadcast::Receiver<Frame>,
    stats: Arc<SendStats>,
) {
    stats.active.fetch_add(1, Ordering::Relaxed);
    let mut peer = Peer { conn, stream: None };
    loop {
        match frames.recv().await {
            Ok(frame) => match peer.send(&frame).await {
                Ok(true) => {
                    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(_) => break,
            },
            // Fell behind: drop the group in progress (the stream is finished early) and rejoin
            // at the next group boundary; the receiver counts the gap as loss.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => peer.stream = None,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// One JSON line a second on stderr with the running counters and CPU.
async fn progress(stats: Arc<SendStats>, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let cpu = cpu_times().map(|(u, s)| u + s).unwrap_or(f64::NAN);
        let (mut tx_datagrams, mut transmits, mut rx_datagrams) = (0, 0, 0);
        for conn in stats.connections.lock().unwrap().iter() {
            let s = conn.stats();
            tx_datagrams += s.udp_tx.datagrams;
            transmits += s.udp_tx.ios;
            rx_datagrams += s.udp_rx.datagrams;
        }
        eprintln!(
            "{}",
            json!({
                "t": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                "connections": stats.active.load(Ordering::Relaxed),
                "frames_sent": stats.frames_sent.load(Ordering::Relaxed),
                "frames_generated": stats.frames_generated.load(Ordering::Relaxed),
                "cpu_s": cpu,
                "udp_tx_datagrams": tx_datagrams,
                "udp_tx_transmits": transmits,
                "udp_rx_datagrams": rx_datagrams,
            })
        );
    }
}

/// What one receiving connection has seen.
#[derive(Default)]
struct ConnRecord {
    groups: BTreeMap<u64, GroupRecord>,
    latencies_us: Vec<u64>,
    bytes: u64,
    errors: u64,
}

async fn recv(args: RecvArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0 && args.endpoints > 0, "--connections and --endpoints must be positive");
    let bind: SocketAddr =
        if args.connect.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let config = client_config()?;
    let mut endpoints = Vec::new();
    for _ in 0..args.endpoints.min(args.connections) {
        let (socket, sizes) = bind_udp(bind, args.socket_buffer)?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))?;
        endpoint.set_default_client_config(config.clone());
        if endpoints.is_empty() {
            report_buffers("recv", args.socket_buffer, sizes);
        }
        endpoints.push(endpoint);
    }

    let connects = (0..args.connections).map(|i| {
        let endpoint = endpoints[i % endpoints.len()].clone();
        async move { endpoint.connect(args.connect, "localhost")?.await.context("QUIC handshake") }
    });
    let conns = futures::future::try_join_all(connects).await?;

    let records: Vec<Arc<Mutex<ConnRecord>>> = conns.iter().map(|_| Arc::default()).collect();
    for (conn, record) in conns.iter().zip(&records) {
        tokio::spawn(read_connection(conn.clone(), record.clone()));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let elapsed = start.elapsed().as_secs_f64();

    let mut total = LossSummary::default();
    let mut latencies = Vec::new();
    let (mut bytes, mut errors) = (0u64, 0u64);
    let (mut min_frames, mut max_frames) = (u64::MAX, 0u64);
    for record in &records {
        let r = record.lock().unwrap();
        let s = summarize(&r.groups);
        min_frames = min_frames.min(s.frames_received);
        max_frames = max_frames.max(s.frames_received);
        total += s;
        latencies.extend_from_slice(&r.latencies_us);
        bytes += r.bytes;
        errors += r.errors;
    }
    for conn in &conns {
        conn.close(0u32.into(), b"done");
    }

    latencies.sort_unstable();
    let ms = |p: f64| moq_telemetry::stats::percentile(&latencies, p).map(|us| us as f64 / 1000.0);
    let mbps = bytes as f64 * 8.0 / elapsed / 1e6;
    if args.json {
        println!(
            "{}",
            json!({
                "connections": args.connections,
                "endpoints": endpoints.len(),
                "seconds": elapsed,
                "frames_received": total.frames_received,
                "bytes": bytes,
                "groups_seen": total.groups_seen,
                "groups_complete": total.groups_complete,
                "groups_missing": total.groups_missing,
                "frames_lost": total.frames_lost,
                "min_conn_frames": min_frames,
                "max_conn_frames": max_frames,
                "stream_errors": errors,
                "latency_ms": { "p50": ms(50.0), "p99": ms(99.0), "p999": ms(99.9), "max": ms(100.0) },
                "throughput_mbps": mbps,
            })
        );
    } else {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!("connections      {} over {} endpoint(s), {elapsed:.2} s", args.connections, endpoints.len());
        println!(
            "frames received  {} (per connection {min_frames}..{max_frames}), {bytes} bytes",
            total.frames_received
        );
        println!(
            "groups           {} complete of {} seen, {} missing",
            total.groups_complete, total.groups_seen, total.groups_missing
        );
        println!("frames lost      {}  (stream errors {errors})", total.frames_lost);
        println!(
            "latency ms       p50 {}  p99 {}  p99.9 {}  max {}",
            f(ms(50.0)),
            f(ms(99.0)),
            f(ms(99.9)),
            f(ms(100.0))
        );
        println!("throughput       {mbps:.2} Mbit/s");
    }
    for endpoint in &endpoints {
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    Ok(())
}

async fn read_connection(conn: quinn::Connection, record: Arc<Mutex<ConnRecord>>) {
    while let Ok(stream) = conn.accept_uni().await {
        tokio::spawn(read_stream(stream, record.clone()));
    }
}

async fn read_stream(mut stream: quinn::RecvStream, record: Arc<Mutex<ConnRecord>>) {
    let mut parser = FrameParser::default();
    let mut done: Vec<FrameHeader> = Vec::new();
    loop {
        match stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                if parser.push(&chunk.bytes, |h| done.push(h)).is_err() {
                    record.lock().unwrap().errors += 1;
                    return;
                }
                if done.is_empty() {
                    continue;
                }
                let now = now_us();
                let mut r = record.lock().unwrap();
                for h in done.drain(..) {
                    r.groups.entry(h.group).or_insert_with(|| GroupRecord::new(h.group_frames)).record(h.index);
                    r.latencies_us.push(now.saturating_sub(h.capture_us));
                    r.bytes += (HEADER_LEN + h.payload_len as usize) as u64;
                }
            }
            Ok(None) => {
                if !parser.at_boundary() {
                    record.lock().unwrap().errors += 1;
                }
                return;
            }
            Err(_) => return,
        }
    }
}
