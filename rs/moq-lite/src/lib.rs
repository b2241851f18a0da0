//! moq-lite: the Media-over-QUIC "lite" transport.
//!
//! Three layers, kept apart:
//! - [`coding`] and [`message`]: a pure, I/O-free codec, one encoder/decoder per wire version;
//! - [`model`]: broadcasts, tracks, groups and frames with producer/consumer handles;
//! - [`session`]: the async layer that moves the model over QUIC or WebTransport streams.

pub mod coding;
mod error;
pub mod message;
pub mod model;
pub mod path;
pub mod pattern;

pub use error::{code, Error};
pub use message::Version;
pub mod session;
pub mod telemetry;
pub mod transport;
