//! String normalization and the text of `_text` (narrative) and `_content` (all strings).

use serde_json::Value;
use std::borrow::Cow;
use unicode_normalization::char::{decompose_canonical, is_combining_mark};

/// The form string search compares: lowercase, accents removed (NFD decomposition with
/// the combining marks dropped), runs of whitespace collapsed to one space, trimmed.
/// `"  Zoë  Müller "` → `"zoe muller"`. Apply the same function to search values.
pub fn normalize(s: &str) -> String {
    if s.is_ascii() {
        return normalize_ascii(s);
    }
    let mut out = Normalized {
        text: String::with_capacity(s.len()),
        space: false,
    };
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            // Decomposing char by char is NFD up to the canonical reordering of combining
            // marks, and those are dropped anyway.
            decompose_canonical(c, |d| {
                if !is_combining_mark(d) {
                    for l in d.to_lowercase() {
                        out.push(l);
                    }
                }
            });
        }
    }
    out.text
}

/// The common case, byte-wise: no decomposition, one-byte lowercase.
fn normalize_ascii(s: &str) -> String {
    let mut bytes = Vec::with_capacity(s.len());
    let mut space = false;
    for &b in s.as_bytes() {
        // `char::is_whitespace` on ASCII: space, \t, \n, \x0B, \x0C, \r.
        if b == b' ' || (b'\t'..=b'\r').contains(&b) {
            space = !bytes.is_empty();
        } else {
            if space {
                bytes.push(b' ');
                space = false;
            }
            bytes.push(b.to_ascii_lowercase());
        }
    }
    // ASCII in, ASCII out: the conversion cannot fail.
    String::from_utf8(bytes).unwrap_or_default()
}

struct Normalized {
    text: String,
    /// Whitespace seen since the last character (written before the next one).
    space: bool,
}

impl Normalized {
    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = !self.text.is_empty();
        } else {
            if self.space {
                self.text.push(' ');
                self.space = false;
            }
            self.text.push(c);
        }
    }
}

/// [`normalize`], borrowing the text when it is already in normal form (lowercase ASCII,
/// single spaces, trimmed), as codes and many names are.
pub fn normalize_cow(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let normal = b.first() != Some(&b' ')
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|&c| c.is_ascii() && !c.is_ascii_uppercase() && !(b'\t'..=b'\r').contains(&c))
        && !s.contains("  ");
    if normal {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(normalize(s))
    }
}

/// The text content of a narrative `div`: tags removed, the common entities decoded,
/// whitespace collapsed. Not an XHTML parser: the narrative is well-formed XHTML by the
/// time it is indexed (validation checks it), and search only needs its words.
pub fn narrative_text(xhtml: &str) -> String {
    let mut out = String::with_capacity(xhtml.len() / 2);
    let mut rest = xhtml;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            // A tag separates words (`<td>a</td><td>b</td>`), so it reads as a space.
            match rest.find('>') {
                Some(end) => {
                    out.push(' ');
                    rest = &rest[end + 1..];
                }
                None => {
                    rest = "";
                }
            }
        } else {
            let end = rest.find(';').filter(|&e| e <= 10);
            let decoded = end.and_then(|e| decode_entity(&rest[1..e]));
            match (end, decoded) {
                (Some(e), Some(c)) => {
                    out.push(c);
                    rest = &rest[e + 1..];
                }
                _ => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    collapse_whitespace(&out)
}

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// All string values of a resource joined by spaces, for `_content`: every JSON string
/// except `resourceType`, the narrative `div` (which is `_text`'s) and the resource's
/// own `meta.versionId` and `meta.lastUpdated` (bookkeeping, not content: leaving them
/// out lets a store index a body before it knows the version it will get), in document
/// order. Contained resources are included: they are part of the resource's content.
pub fn content_text(resource: &Value) -> String {
    let mut out = String::new();
    match resource {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("resourceType" | "div", _) => {}
                    ("meta", Value::Object(meta)) => {
                        for (mk, mv) in meta {
                            if mk != "versionId" && mk != "lastUpdated" {
                                collect_strings(mv, &mut out);
                            }
                        }
                    }
                    _ => collect_strings(v, &mut out),
                }
            }
        }
        other => collect_strings(other, &mut out),
    }
    out
}

fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) if !s.is_empty() => {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
        Value::Array(items) => {
            for item in items {
                collect_strings(item, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if k == "resourceType" || k == "div" {
                    continue;
                }
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_leaves_out_version_metadata() {
        let r = serde_json::json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "7", "lastUpdated": "2024-01-01T00:00:00Z",
                     "tag": [{"code": "vip"}]},
            "contained": [{"resourceType": "Patient", "meta": {"versionId": "2"}}],
            "name": [{"family": "Chalmers"}]
        });
        assert_eq!(content_text(&r), "p1 vip 2 Chalmers");
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize("  Zoë \t Müller "), "zoe muller");
        assert_eq!(normalize("du Marché"), "du marche");
        assert_eq!(normalize("PETER"), "peter");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn narrative() {
        let t = narrative_text("<div xmlns=\"x\"><p><b>Name</b>: Peter &amp; Jim&#233;</p>\n<td>a</td><td>b</td></div>");
        assert_eq!(t, "Name : Peter & Jimé a b");
        assert_eq!(narrative_text("a & b"), "a & b");
    }
}
