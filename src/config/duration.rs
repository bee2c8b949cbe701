//! Human durations as written in the config: `"50us"`, `"500ms"`, `"25s"`,
//! `"2m"`, `"1h"`, or combinations in decreasing unit order such as `"1m30s"`.
//!
//! Strict on purpose: no spaces, no fractions, each unit at most once and
//! largest first, so a value has one obvious reading. [`format`] writes the
//! canonical form that [`parse`] reads back.

use std::time::Duration;

/// Why a duration string was rejected; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write e.g. \"25s\"")]
    Empty,
    #[error("expected a number at {at:?}; write e.g. \"25s\", \"500ms\" or \"1m30s\"")]
    ExpectedNumber { at: String },
    #[error("number {number} has no unit; add one of us, ms, s, m, h (e.g. \"{number}s\")")]
    MissingUnit { number: String },
    #[error(
        "unexpected {at:?}; use whole numbers with units, e.g. \"1s500ms\" rather than \"1.5s\""
    )]
    Unexpected { at: String },
    #[error("unknown unit {unit:?}; use us, ms, s, m or h")]
    UnknownUnit { unit: String },
    #[error(
        "unit {unit:?} is repeated or out of order; write units largest first, each once (e.g. \"1h2m3s\")"
    )]
    UnitOrder { unit: String },
    #[error("duration is too large")]
    Overflow,
}

/// Units largest first, in microseconds; the index is the order rank.
const UNITS: [(&str, u64); 5] = [
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

/// Parse a duration such as `"1m30s"` (microsecond resolution).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = text;
    let mut total_us: u64 = 0;
    // Rank of the last unit seen; the next must have a strictly larger rank.
    let mut last_rank: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::ExpectedNumber {
                at: rest.to_string(),
            });
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(if after.is_empty() {
                DurationError::MissingUnit {
                    number: number.to_string(),
                }
            } else {
                DurationError::Unexpected {
                    at: after.to_string(),
                }
            });
        }
        let (rank, scale) = UNITS
            .iter()
            .enumerate()
            .find(|(_, (name, _))| *name == unit)
            .map(|(rank, (_, scale))| (rank, *scale))
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_string(),
            })?;
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(DurationError::UnitOrder {
                unit: unit.to_string(),
            });
        }
        last_rank = Some(rank);
        let n: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
        total_us = n
            .checked_mul(scale)
            .and_then(|us| total_us.checked_add(us))
            .ok_or(DurationError::Overflow)?;
        rest = after;
    }
    Ok(Duration::from_micros(total_us))
}

/// The canonical text of `d` (truncated to microseconds): `"1m30s"`, `"0s"`.
pub fn format(d: Duration) -> String {
    let mut us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, scale) in UNITS {
        let n = us / scale;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(name);
            us -= n * scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_documented_forms() {
        let cases = [
            ("500ms", 500),
            ("25s", 25_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1h1m1s1ms", 3_661_001),
            ("0s", 0),
            ("007s", 7_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        assert_eq!(parse("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(parse("1ms500us"), Ok(Duration::from_micros(1500)));
    }

    #[test]
    fn rejects_with_reason() {
        use DurationError::*;
        assert_eq!(parse(""), Err(Empty));
        assert_eq!(
            parse("25"),
            Err(MissingUnit {
                number: "25".into()
            })
        );
        assert_eq!(parse("s"), Err(ExpectedNumber { at: "s".into() }));
        assert_eq!(parse("5d"), Err(UnknownUnit { unit: "d".into() }));
        assert_eq!(parse("30s1m"), Err(UnitOrder { unit: "m".into() }));
        assert_eq!(parse("1s1s"), Err(UnitOrder { unit: "s".into() }));
        assert_eq!(parse("1.5s"), Err(Unexpected { at: ".5s".into() }));
        assert_eq!(parse("1 s"), Err(Unexpected { at: " s".into() }));
        assert_eq!(parse(" 1s"), Err(ExpectedNumber { at: " 1s".into() }));
        assert_eq!(parse("-1s"), Err(ExpectedNumber { at: "-1s".into() }));
        assert_eq!(parse("99999999999999999999999h"), Err(Overflow));
        assert_eq!(parse("9999999999999999h"), Err(Overflow));
        assert!(parse("1é").is_err());
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_micros(50)), "50us");
    }

    proptest! {
        #[test]
        fn round_trip(us in 0u64..=u64::MAX / 4) {
            let d = Duration::from_micros(us);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }

        #[test]
        fn combos_add_up(h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            prop_assert_eq!(parse(&text), Ok(want));
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse(&text);
        }
    }
}
