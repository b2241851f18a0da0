//! The test kit for end-to-end tests that run real processes: this relay, the `moq` CLI and the
//! reference peers installed by `scripts/install-test-deps.sh`.
//!
//! - [`process`]: [`bin`], [`reference()`], [`free_port`], [`serial`], [`Proc`], [`Background`],
//!   [`run`], [`eventually`], and the [`Configure`] trait every builder shares;
//! - [`relay`]: [`Relay::builder`] → [`RelayBuilder`] → [`Relay`];
//! - [`clients`]: [`Publisher`] and [`Viewer`] over `moq publish` / `moq watch` ([`Client`]),
//!   [`watch_summary`], [`publish_summary`];
//! - [`scrape`]: [`Scrape`], the Prometheus text format;
//! - [`media`]: a cached H.264 + AAC fMP4 clip ([`media::clip`]) and per-packet hashes of any
//!   MP4/fMP4 file ([`media::packets`]), for bit-exact comparisons;
//! - [`auth`]: keys and tokens for access-control tests ([`TokenLab`], [`Grant`]), the reference
//!   auth server ([`AuthServer`]) and the reference relay using it ([`reference_relay_with_auth`]);
//! - [`http`]: a blocking HTTP/1.1 client ([`http::get`], [`http::Request`]);
//! - [`cluster`]: meshes of relays (docs/CLUSTER.md): [`Node`] (ports known before start),
//!   peer metrics, `/nodes` and `/announced` read off a [`Relay`], [`Watch`] (time to first
//!   frame), [`assert_every_frame_once`], and [`NetNs`] (a namespace whose link can be delayed or
//!   cut; [`netns_or_skip`]);
//! - [`netplay`]: netplay sessions (docs/netplay.md): the relay, `moq netplay host|join`, the API,
//!   and the documented metrics and log lines to check against.

pub mod auth;
pub mod browser;
pub mod clients;
pub mod cluster;
pub mod http;
pub mod media;
pub mod netplay;
pub mod process;
pub mod relay;
pub mod scrape;

pub use auth::{reference_relay_with_auth, AuthServer, Grant, TokenLab};
pub use browser::{browser_result, Browser, BrowserRun, Library};
pub use clients::{publish_summary, watch_summary, Client, Publisher, Viewer};
pub use cluster::{assert_every_frame_once, every_frame_once, netns_or_skip, NetNs, Node, Watch};
pub use process::{bin, eventually, free_port, reference, run, serial, Background, Configure, Proc, Spec};
pub use relay::{reference_relay, Relay, RelayBuilder, REFERENCE_RELAY};
pub use scrape::{Sample, Scrape};
