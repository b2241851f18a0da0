//! A session's view of the origin: rooted at the path it dialed and limited to the prefixes it
//! may use.

use super::origin::{Announced, Announcement, Origin, Route};
use crate::path;
use crate::pattern::Patterns;

#[derive(Debug, Clone)]
pub struct Scope {
    origin: Origin,
    root: String,
    allow: Patterns,
}

impl Scope {
    /// `root` is the session's path; `allow` are absolute patterns (rooted at the origin's root,
    /// not at `root`): a broadcast is usable when its full path matches one.
    pub fn new(origin: Origin, root: &str, allow: Patterns) -> Self {
        Self { origin, root: path::normalize(root), allow }
    }

    /// Everything under `root`.
    pub fn everything(origin: Origin, root: &str) -> Self {
        Self::new(origin, root, std::iter::once(crate::pattern::Pattern::all()).collect())
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The absolute path for a path relative to the root, if this scope may use it.
    pub fn resolve(&self, relative: &str) -> Option<String> {
        let full = path::join(&self.root, relative);
        self.allows(&full).then_some(full)
    }

    fn allows(&self, full: &str) -> bool {
        self.allow.matches(full)
    }

    /// Whether anything under `relative` could ever be visible (an allowed pattern reaches into it).
    pub fn overlaps(&self, relative: &str) -> bool {
        self.allow.matches_below(&path::join(&self.root, relative))
    }

    pub fn route(&self, relative: &str) -> Option<Route> {
        self.origin.route(&self.resolve(relative)?)
    }

    /// Announcements under `relative`, limited to allowed paths; paths are relative to it.
    pub fn announced(&self, relative: &str) -> ScopedAnnounced {
        let prefix = path::join(&self.root, relative);
        ScopedAnnounced { inner: self.origin.announced(&prefix), scope: self.clone(), prefix }
    }

    /// Allowed paths under `relative`, relative to it.
    pub fn list(&self, relative: &str) -> Vec<String> {
        let prefix = path::join(&self.root, relative);
        self.origin.list(&prefix).into_iter().filter(|p| self.allows(&path::join(&prefix, p))).collect()
    }
}

pub struct ScopedAnnounced {
    inner: Announced,
    scope: Scope,
    prefix: String,
}

impl ScopedAnnounced {
    pub async fn next(&mut self) -> Announcement {
        loop {
            let a = self.inner.next().await;
            if self.scope.allows(&path::join(&self.prefix, a.path())) {
                return a;
            }
        }
    }
}
