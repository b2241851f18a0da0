//! Broadcast path patterns, as the moq ecosystem's tokens and public rules write them.
//!
//! A pattern is `/`-separated segments: a literal; `*`, any one segment; `pre*suf`, one segment
//! that starts with `pre` and ends with `suf`; `**`, any run of zero or more segments (at most
//! once). Patterns are exact: `foo` matches only `foo`, `foo/**` matches `foo` and everything
//! beneath it, `**` matches every path, and the empty pattern matches only the empty path.

use std::fmt;
use std::str::FromStr;

use crate::path;

/// Why a pattern's text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPattern(String);

impl fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pattern: {}", self.0)
    }
}

impl std::error::Error for InvalidPattern {}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`
    Any,
    /// `pre*suf`, one of them possibly empty, not both.
    Partial(String, String),
    /// `**`
    Globstar,
}

impl Segment {
    fn parse(text: &str) -> Result<Self, InvalidPattern> {
        match text {
            "" => Err(InvalidPattern("empty segment".into())),
            "*" => Ok(Segment::Any),
            "**" => Ok(Segment::Globstar),
            _ if text.contains("**") => Err(InvalidPattern(format!("`**` mixed with other bytes in `{text}`"))),
            _ => match text.split_once('*') {
                None => Ok(Segment::Literal(text.to_string())),
                Some((_, suffix)) if suffix.contains('*') => {
                    Err(InvalidPattern(format!("more than one `*` in segment `{text}`")))
                }
                Some((prefix, suffix)) => Ok(Segment::Partial(prefix.to_string(), suffix.to_string())),
            },
        }
    }

    /// Whether this (non-globstar) segment matches one path segment.
    fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(l) => l == segment,
            Segment::Any => true,
            Segment::Partial(p, s) => {
                segment.len() >= p.len() + s.len() && segment.starts_with(p.as_str()) && segment.ends_with(s.as_str())
            }
            Segment::Globstar => true,
        }
    }
}

/// One pattern over broadcast paths. Equal patterns have equal text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// The most segments a pattern may have, as a broadcast path.
    pub const MAX_SEGMENTS: usize = 32;

    /// `**`: every path.
    pub fn all() -> Self {
        "**".parse().expect("valid")
    }

    /// `prefix/**`: `prefix` and everything beneath it (a legacy `put`/`get` prefix). The empty
    /// prefix is `**`. The prefix is normalized like a broadcast path and may not hold `*`.
    pub fn subtree(prefix: &str) -> Result<Self, InvalidPattern> {
        let prefix = path::normalize(prefix);
        if prefix.contains('*') {
            return Err(InvalidPattern(format!("a prefix may not hold `*`: `{prefix}`")));
        }
        match prefix.is_empty() {
            true => Ok(Self::all()),
            false => format!("{prefix}/**").parse(),
        }
    }

    /// This pattern placed beneath `root`: `demo` + `bbb/**` is `demo/bbb/**`.
    pub fn rooted(&self, root: &str) -> Result<Self, InvalidPattern> {
        let root = path::normalize(root);
        if root.contains('*') {
            return Err(InvalidPattern(format!("a root may not hold `*`: `{root}`")));
        }
        path::join(&root, &self.text).parse()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the broadcast `path` (normalized first) is one this pattern names.
    pub fn matches(&self, path: &str) -> bool {
        let path = path::normalize(path);
        let parts: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
        match self.segments.iter().position(|s| *s == Segment::Globstar) {
            None => parts.len() == self.segments.len() && self.segments.iter().zip(&parts).all(|(s, p)| s.matches(p)),
            Some(g) => {
                let (head, tail) = (&self.segments[..g], &self.segments[g + 1..]);
                parts.len() >= head.len() + tail.len()
                    && head.iter().zip(&parts).all(|(s, p)| s.matches(p))
                    && tail.iter().rev().zip(parts.iter().rev()).all(|(s, p)| s.matches(p))
            }
        }
    }

    /// Whether some path at or beneath `prefix` (normalized first) matches: whether a session
    /// rooted at `prefix`, or an announce request for it, could ever see anything of this pattern.
    pub fn matches_below(&self, prefix: &str) -> bool {
        let prefix = path::normalize(prefix);
        if prefix.is_empty() {
            return true; // every pattern names some path
        }
        for (i, part) in prefix.split('/').enumerate() {
            match self.segments.get(i) {
                // The globstar swallows the rest of the prefix; what follows it can be appended.
                Some(Segment::Globstar) => return true,
                Some(s) if s.matches(part) => {}
                _ => return false,
            }
        }
        // The prefix is consumed: the rest of the pattern names paths beneath it.
        true
    }
}

impl FromStr for Pattern {
    type Err = InvalidPattern;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Ok(Self { text: String::new(), segments: Vec::new() });
        }
        let segments = text.split('/').map(Segment::parse).collect::<Result<Vec<_>, _>>()?;
        if segments.len() > Self::MAX_SEGMENTS {
            return Err(InvalidPattern(format!("more than {} segments", Self::MAX_SEGMENTS)));
        }
        if segments.iter().filter(|s| **s == Segment::Globstar).count() > 1 {
            return Err(InvalidPattern(format!("more than one `**` in `{text}`")));
        }
        Ok(Self { text: text.to_string(), segments })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A union of patterns: a path matches when any member does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, pattern: Pattern) {
        if !self.0.contains(&pattern) {
            self.0.push(pattern);
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Pattern> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn matches(&self, path: &str) -> bool {
        self.0.iter().any(|p| p.matches(path))
    }

    pub fn matches_below(&self, prefix: &str) -> bool {
        self.0.iter().any(|p| p.matches_below(prefix))
    }

    /// Every member placed beneath `root`.
    pub fn rooted(&self, root: &str) -> Result<Self, InvalidPattern> {
        self.0.iter().map(|p| p.rooted(root)).collect()
    }
}

impl FromIterator<Pattern> for Patterns {
    fn from_iter<I: IntoIterator<Item = Pattern>>(iter: I) -> Self {
        let mut patterns = Self::new();
        for p in iter {
            patterns.push(p);
        }
        patterns
    }
}

impl<'a> IntoIterator for &'a Patterns {
    type Item = &'a Pattern;
    type IntoIter = std::slice::Iter<'a, Pattern>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.0.iter().map(Pattern::as_str).collect();
        write!(f, "[{}]", texts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        text.parse().unwrap()
    }

    #[test]
    fn exact_subtree_and_everything() {
        assert!(p("foo").matches("foo") && p("foo").matches("/foo/"));
        assert!(!p("foo").matches("foo/bar") && !p("foo").matches("foobar") && !p("foo").matches(""));
        assert!(p("foo/**").matches("foo") && p("foo/**").matches("foo/a/b"));
        assert!(!p("foo/**").matches("foobar") && !p("foo/**").matches("bar/foo"));
        assert!(p("**").matches("") && p("**").matches("a/b/c"));
        assert!(p("").matches("") && !p("").matches("a"));
    }

    #[test]
    fn one_segment_wildcards() {
        assert!(p("a/*/b").matches("a/x/b") && !p("a/*/b").matches("a/b") && !p("a/*/b").matches("a/x/y/b"));
        assert!(p("cam*").matches("cam1") && p("cam*").matches("cam") && !p("cam*").matches("xcam"));
        assert!(p("*.hd").matches("room.hd") && !p("*.hd").matches("room.sd"));
        assert!(p("a*a").matches("aa") && !p("a*a").matches("a"), "prefix and suffix may not overlap");
        assert!(p("**/chat").matches("chat") && p("**/chat").matches("x/y/chat") && !p("**/chat").matches("chat/x"));
        assert!(p("a/**/z").matches("a/z") && p("a/**/z").matches("a/b/c/z") && !p("a/**/z").matches("a/z/b"));
    }

    #[test]
    fn bad_text_is_refused() {
        for bad in ["a//b", "/a", "a/", "a/**/b/**", "a**", "a*b*c", "x/***"] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
        let deep = vec!["x"; 33].join("/");
        assert!(deep.parse::<Pattern>().is_err());
        assert!(vec!["x"; 32].join("/").parse::<Pattern>().is_ok());
    }

    #[test]
    fn subtree_and_rooted() {
        assert_eq!(Pattern::subtree("/live/").unwrap(), p("live/**"));
        assert_eq!(Pattern::subtree("").unwrap(), p("**"));
        assert!(Pattern::subtree("a/*").is_err());
        assert_eq!(p("bbb/**").rooted("demo").unwrap(), p("demo/bbb/**"));
        assert_eq!(p("").rooted("demo/room").unwrap(), p("demo/room"));
        assert_eq!(p("**").rooted("").unwrap(), p("**"));
        assert!(p("x").rooted(&vec!["r"; 32].join("/")).is_err());
    }

    #[test]
    fn matches_below_a_prefix() {
        assert!(p("demo/bbb/**").matches_below("demo"));
        assert!(p("demo/bbb/**").matches_below("demo/bbb/x/y"));
        assert!(!p("demo/bbb/**").matches_below("other"));
        assert!(!p("demo/bbb/**").matches_below("demo/bbbx"));
        assert!(p("demo/bbb").matches_below("demo/bbb") && !p("demo/bbb").matches_below("demo/bbb/x"));
        assert!(p("a/*/c").matches_below("a/b") && !p("a/*/c").matches_below("a/b/d"));
        assert!(p("**/chat").matches_below("anything/at/all"));
        assert!(p("x").matches_below(""));
    }

    #[test]
    fn a_union_matches_when_any_member_does() {
        let u: Patterns = [p("live/**"), p("demo/one"), p("live/**")].into_iter().collect();
        assert_eq!(u.len(), 2);
        assert!(u.matches("live/a") && u.matches("demo/one") && !u.matches("demo/two"));
        assert!(u.matches_below("demo") && !u.matches_below("other"));
        assert!(!Patterns::new().matches("") && !Patterns::new().matches_below(""));
    }
}
