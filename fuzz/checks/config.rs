//! `kith::config::parse` on arbitrary UTF-8 text.
//!
//! Invariant: it never panics, and a rejection is a non-empty list of errors
//! sorted by position, each in `fuzz.toml` at a real place in the text:
//! 1 ≤ line ≤ lines + 1 and 1 ≤ column ≤ characters on that line + 1.

use std::path::Path;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let errors = match kith::config::parse(path, text) {
        Ok(cfg) => {
            assert_eq!(cfg.source, path);
            return;
        }
        Err(errors) => errors.0,
    };
    assert!(!errors.is_empty(), "rejected without saying why");
    // `str::lines` drops a trailing empty line; `split('\n')` keeps it, which
    // is where an error at the very end of "...\n" points.
    let lines: Vec<&str> = text.split('\n').collect();
    for e in &errors {
        assert_eq!(e.file, path);
        assert!(e.line >= 1, "no line: {e:?}\ninput: {text:?}");
        assert!(e.column >= 1, "no column: {e:?}\ninput: {text:?}");
        assert!(e.line <= lines.len() + 1, "line past the end: {e:?}");
        if let Some(l) = lines.get(e.line - 1) {
            let chars = l.chars().count() + 1;
            assert!(
                e.column <= chars,
                "column past the line end: {e:?}\ninput: {text:?}"
            );
        }
        assert!(e.to_string().starts_with("fuzz.toml:"));
    }
    assert!(
        errors
            .windows(2)
            .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
        "errors not sorted by position: {errors:?}"
    );
}
