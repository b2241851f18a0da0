//! Pieces of the Prometheus text exposition format (0.0.4): names, label sets, HELP lines and
//! sample values, each rendered the way the format requires.

use std::fmt::Write;

/// A metric or label name with every character the format does not allow replaced by `_`
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, no `:` for labels).
pub(crate) fn name(raw: &str, allow_colon: bool) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':') { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Label pairs as they appear between braces, without the braces: `a="x",b="y"`.
pub(crate) fn label_pairs<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (key, value) in labels {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&name(key, false));
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// HELP text with backslashes and line breaks escaped.
pub(crate) fn help(raw: &str) -> String {
    raw.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Rust's shortest round-trip decimal, or the format's spellings of the
/// non-finite values.
pub(crate) fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

pub(crate) fn integer(out: &mut String, v: u64) {
    let _ = write!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_allowed_characters() {
        assert_eq!(name("moq_relay:rate", true), "moq_relay:rate");
        assert_eq!(name("moq.relay-x", true), "moq_relay_x");
        assert_eq!(name("a:b", false), "a_b");
        assert_eq!(name("9lives", true), "_9lives");
    }

    #[test]
    fn label_values_are_escaped() {
        let pairs = label_pairs([("path", "a\\b\"c\nd"), ("k", "v")].into_iter());
        assert_eq!(pairs, r#"path="a\\b\"c\nd",k="v""#);
    }

    #[test]
    fn floats_use_the_format_spellings() {
        let mut s = String::new();
        for v in [1.0, 0.0005, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.5] {
            float(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0.0005 NaN +Inf -Inf -2.5 ");
    }
}
