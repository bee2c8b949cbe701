//! TOML text → [`RawConfig`], reporting every schema error, not just the first.
//!
//! serde stops at the first unknown key or wrong type. To still report them
//! all, deserialization runs on the parsed document tree (`DeTable`, which
//! keeps byte spans): when it fails, the error's span is located in the tree,
//! the error is recorded with its key path, the offending entry is removed, and
//! deserialization is retried. Each retry removes an entry, so this ends.
//! A TOML syntax error ends everything at once: there is no tree to repair.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::ops::Range;

use serde::Deserialize as _;
use toml::de::{DeTable, DeValue};

use super::raw::RawConfig;

/// Give up after this many schema errors: nobody reads more, and a fuzzer's
/// pathological input should not cost quadratic time.
const MAX_ERRORS: usize = 50;

/// An error before line/column resolution.
#[derive(Debug, Clone)]
pub(super) struct Located {
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
}

/// The result of deserializing.
pub(super) struct Deserialized {
    /// `None` when deserialization could not be completed (syntax error, or an
    /// error that could not be located): validation is then skipped.
    pub raw: Option<RawConfig>,
    pub errors: Vec<Located>,
    /// Key paths removed after an error, so validation does not also call them missing.
    pub removed: HashSet<String>,
}

pub(super) fn deserialize(text: &str) -> Deserialized {
    let mut out = Deserialized {
        raw: None,
        errors: Vec::new(),
        removed: HashSet::new(),
    };
    let mut doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            out.errors.push(syntax_error(text, e.span(), e.message()));
            return out;
        }
    };
    while out.errors.len() < MAX_ERRORS {
        let de = toml::de::Deserializer::from(doc.clone());
        let e = match RawConfig::deserialize(de) {
            Ok(raw) => {
                out.raw = Some(raw);
                return out;
            }
            Err(e) => e,
        };
        let path = e
            .span()
            .and_then(|span| locate_in_table(doc.get_ref(), span.start));
        let Some(path) = path else {
            out.errors.push(Located {
                span: e.span(),
                key: String::new(),
                message: humanize(e.message()),
            });
            return out;
        };
        let key = path_string(&path);
        let message = match e.message().strip_prefix("unknown field `") {
            Some(rest) => {
                let (message, suggestion) = unknown_key_message(doc.get_ref(), &path, rest);
                // "adress" → "did you mean address?" already says it; do not
                // also report "address" as missing.
                if let Some(s) = suggestion {
                    let mut meant = path.clone();
                    meant.pop();
                    meant.push(Seg::Key(s.to_string()));
                    out.removed.insert(path_string(&meant));
                }
                message
            }
            None => humanize(e.message()),
        };
        out.errors.push(Located {
            span: e.span(),
            key: key.clone(),
            message,
        });
        // Remove the whole key (an array element takes its array with it).
        let keep = path
            .iter()
            .rposition(|s| matches!(s, Seg::Key(_)))
            .map_or(0, |i| i + 1);
        if !remove_in_table(doc.get_mut(), &path[..keep]) {
            return out;
        }
        out.removed.insert(path_string(&path[..keep]));
    }
    out
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// `peer[1].allowed_ips[0]`; keys that are not bare TOML keys are quoted.
pub(super) fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(k);
                } else {
                    let _ = write!(out, "{k:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

fn covers(span: &Range<usize>, pos: usize) -> bool {
    span.start <= pos && pos < span.end.max(span.start + 1)
}

/// The deepest key or value whose span covers byte `pos`.
fn locate_in_table(table: &DeTable<'_>, pos: usize) -> Option<Vec<Seg>> {
    // Children first: a table's own span is only its header, so a match deeper
    // down is always the more precise one.
    for (k, v) in table.iter() {
        if let Some(mut sub) = locate_in_value(v.get_ref(), pos) {
            sub.insert(0, Seg::Key(k.get_ref().to_string()));
            return Some(sub);
        }
    }
    table
        .iter()
        .find(|(k, v)| covers(&k.span(), pos) || covers(&v.span(), pos))
        .map(|(k, _)| vec![Seg::Key(k.get_ref().to_string())])
}

fn locate_in_value(value: &DeValue<'_>, pos: usize) -> Option<Vec<Seg>> {
    match value {
        DeValue::Table(t) => locate_in_table(t, pos),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(mut sub) = locate_in_value(item.get_ref(), pos) {
                    sub.insert(0, Seg::Index(i));
                    return Some(sub);
                }
            }
            items
                .iter()
                .position(|item| covers(&item.span(), pos))
                .map(|i| vec![Seg::Index(i)])
        }
        _ => None,
    }
}

fn value_at<'a, 'i>(table: &'a DeTable<'i>, path: &[Seg]) -> Option<&'a DeValue<'i>> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut value = table.get(first.as_str())?.get_ref();
    for seg in rest {
        value = match (seg, value) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?.get_ref(),
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?.get_ref(),
            _ => return None,
        };
    }
    Some(value)
}

/// Remove the entry at `path`, which must end with a key.
fn remove_in_table(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    match path {
        [Seg::Key(k)] => table.remove(k.as_str()).is_some(),
        [Seg::Key(k), rest @ ..] => match table.get_mut(k.as_str()) {
            Some(v) => remove_in_value(v.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path) {
        (DeValue::Table(t), _) => remove_in_table(t, path),
        (DeValue::Array(a), [Seg::Index(i), rest @ ..]) => match a.get_mut(*i) {
            Some(item) => remove_in_value(item.get_mut(), rest),
            None => false,
        },
        _ => false,
    }
}

/// `rest` is serde's message after "unknown field `": "adress`, expected `address` or `mtu`".
/// Returns the message and the suggested key, if any.
fn unknown_key_message<'r>(
    doc: &DeTable<'_>,
    path: &[Seg],
    rest: &'r str,
) -> (String, Option<&'r str>) {
    let name = match path.last() {
        Some(Seg::Key(k)) => k.clone(),
        _ => rest.split('`').next().unwrap_or_default().to_string(),
    };
    let is_table = matches!(value_at(doc, path), Some(DeValue::Table(_)));
    // The known names are the backquoted words after "expected".
    let known: Vec<&str> = rest
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let mut msg = if is_table {
        format!("unknown table [{}]", path_string(path))
    } else {
        format!("unknown key {name:?}")
    };
    let suggestion = suggest(&name, &known);
    match suggestion {
        Some(best) => {
            let _ = write!(msg, "; did you mean {best:?}?");
        }
        None if known.is_empty() => msg.push_str("; this table takes no keys"),
        None => {
            let _ = write!(msg, "; expected one of: {}", known.join(", "));
        }
    }
    (msg, suggestion)
}

/// The closest known name within edit distance 2, if any.
pub(super) fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(&name.to_ascii_lowercase(), k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            let del = prev[j + 1] + 1;
            let ins = cur[j] + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// serde's "invalid type: string \"a\", expected i64" → "expected an integer, got string \"a\"".
/// A TOML syntax error as a sentence a person can act on: which key's
/// value (by the table headers above it, e.g. `peer[1].name`) and what to
/// write instead. The parser's own words ("invalid float, expected `nan`"
/// for an unquoted name) follow in parentheses.
fn syntax_error(text: &str, span: Option<Range<usize>>, parser: &str) -> Located {
    let parser = parser.trim_end();
    let mut at = span.as_ref().map_or(0, |s| s.start.min(text.len()));
    // Hostile input: never slice inside a character.
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = &text[line_start..line_end];
    let before = &text[..line_start];

    // The table the line is in: the last header above it, counting
    // `[[name]]` headers for the index.
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for l in before.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.0.trim().to_string();
        }
    }
    let key_and_value = line
        .split_once('=')
        .filter(|(k, _)| !k.trim().is_empty() && !k.trim_start().starts_with('['));
    let Some((key, value)) = key_and_value else {
        let message = if line.trim_start().starts_with('[') {
            format!(
                "TOML syntax error in a table header: write it as [name] or [[name]] \
                 ({parser})"
            )
        } else {
            format!(
                "TOML syntax error: each line is `key = value`, a [table] or a comment ({parser})"
            )
        };
        return Located {
            span,
            key: table,
            message,
        };
    };
    let key = key.trim();
    let path = if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    };
    let value = value.split(" #").next().unwrap_or_default().trim();
    let bare_word = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && !matches!(value, "true" | "false" | "inf" | "nan");
    let message = if bare_word {
        format!(
            "TOML syntax error: the value of `{key}` is text and must be in double quotes: \
             {key} = \"{value}\" ({parser})"
        )
    } else if value.starts_with('"') && value.matches('"').count() % 2 == 1 {
        format!(
            "TOML syntax error: the value of `{key}` has no closing quote: end it with \" on \
             the same line ({parser})"
        )
    } else {
        format!("TOML syntax error in the value of `{key}` ({parser})")
    };
    Located {
        span,
        key: path,
        message,
    }
}

fn humanize(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((got, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected {
        "i64" | "i128" | "u16" | "u32" | "u64" => "an integer",
        "a sequence" => "an array",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    format!("expected {expected}, got {got}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(text: &str) -> Located {
        let e = DeTable::parse(text).expect_err("a syntax error");
        syntax_error(text, e.span(), e.message())
    }

    #[test]
    fn syntax_errors_name_the_key_and_say_what_to_write() {
        let e = syntax("[interface]\nmtu = 1420\n[[peer]]\nname = \"a\"\n[[peer]]\nname = nas\n");
        assert_eq!(e.key, "peer[1].name");
        assert!(
            e.message
                .starts_with("TOML syntax error: the value of `name` is text and must be in double quotes: name = \"nas\""),
            "{}",
            e.message
        );
        let e = syntax("[interface]\naddress = \"100.96.0.1/16\nmtu = 1\n");
        assert_eq!(e.key, "interface.address");
        assert!(e.message.contains("has no closing quote"), "{}", e.message);
        let e = syntax("[interface]\nmtu = 14x0\n");
        assert_eq!(e.key, "interface.mtu");
        assert!(
            e.message
                .starts_with("TOML syntax error in the value of `mtu` ("),
            "{}",
            e.message
        );
        let e = syntax("[interface\n");
        assert!(e.message.contains("table header"), "{}", e.message);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("adress", "address"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(suggest("adress", &["name", "address"]), Some("address"));
        assert_eq!(suggest("zzz", &["name", "address"]), None);
    }

    #[test]
    fn paths_print_like_toml() {
        let p = [
            Seg::Key("peer".into()),
            Seg::Index(1),
            Seg::Key("allowed_ips".into()),
            Seg::Index(0),
        ];
        assert_eq!(path_string(&p), "peer[1].allowed_ips[0]");
        assert_eq!(path_string(&[Seg::Key("a b".into())]), "\"a b\"");
    }

    #[test]
    fn collects_every_schema_error() {
        let text = "[interface]\nadress = 1\nmtu = \"x\"\n[[peer]]\nnmae = 1\n[bogus]\n";
        let d = deserialize(text);
        let keys: Vec<&str> = d.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), 4, "{:?}", d.errors);
        for want in ["interface.adress", "interface.mtu", "peer[0].nmae", "bogus"] {
            assert!(keys.contains(&want), "{want} not in {keys:?}");
        }
        assert!(d.raw.is_some());
    }
}
