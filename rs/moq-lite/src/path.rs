//! Broadcast paths: `/`-separated segments, normalized, compared segment by segment.

/// Most segments a path may have.
pub const MAX_SEGMENTS: usize = 32;

/// Trims leading/trailing `/` and collapses repeated separators.
pub fn normalize(path: &str) -> String {
    path.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/")
}

/// Joins two normalized paths.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// `foo` is a prefix of `foo/bar` and of `foo`, but not of `foobar`. `""` prefixes everything.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    strip_prefix(path, prefix).is_some()
}

/// The remainder of `path` below `prefix`, if `prefix` is a segment-wise prefix.
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('/')
    }
}

/// Whether a path from the network is acceptable: bounded segments and no empty segments after
/// normalization changes it (so two spellings never name one broadcast).
pub fn is_valid(path: &str) -> bool {
    path.split('/').count() <= MAX_SEGMENTS && normalize(path) == path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_segment_aware() {
        assert!(has_prefix("foo/bar", "foo"));
        assert!(has_prefix("foo", "foo"));
        assert!(has_prefix("foo", ""));
        assert!(!has_prefix("foobar", "foo"));
        assert_eq!(strip_prefix("demo/clock", "demo"), Some("clock"));
        assert_eq!(strip_prefix("demo", "demo"), Some(""));
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("/a//b/"), "a/b");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "x/y"), "a/x/y");
        assert!(is_valid("a/b"));
        assert!(!is_valid("/a"));
        assert!(!is_valid(&"a/".repeat(40)));
    }
}
