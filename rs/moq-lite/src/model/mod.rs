//! The data model: broadcasts (paths) hold tracks, tracks hold groups, groups hold frames.
//! Each has a producer handle and any number of consumer handles.

mod broadcast;
mod group;
mod origin;
mod scope;
mod track;
pub(crate) mod watch;

pub use broadcast::*;
pub use group::*;
pub use origin::*;
pub use scope::*;
pub(crate) use track::Shared as TrackShared;
pub use track::{TrackConsumer, TrackProducer, MAX_CACHED_GROUPS, MAX_CACHE_AGE};
