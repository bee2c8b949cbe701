//! Data rates as written in the config: `"20 Mbit/s"`, `"200Mbit/s"`,
//! `"1.5 Gbit/s"`, `"512 kB/s"`.
//!
//! Units are SI (k = 1000): `bit/s`, `kbit/s`, `Mbit/s`, `Gbit/s` for bits
//! and `B/s`, `kB/s`, `MB/s`, `GB/s` for bytes, matching how ISPs and
//! iperf3 state speeds. The unit is required, so "20" (bits or bytes?) is
//! never guessed. The value is kept in bytes per second, what the relay's
//! token buckets count.

/// Why a rate string was rejected; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("expected a number, e.g. \"20 Mbit/s\"")]
    ExpectedNumber,
    #[error(
        "the rate needs a unit: bit/s, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s or GB/s (e.g. \"20 Mbit/s\")"
    )]
    MissingUnit,
    #[error("unknown unit {unit:?}; use bit/s, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s or GB/s")]
    UnknownUnit { unit: String },
    #[error("a rate of 0 would drop everything; omit the key for no limit")]
    Zero,
    #[error("rate is too large")]
    Overflow,
}

/// (unit, bits per unit).
const UNITS: [(&str, u64); 8] = [
    ("bit/s", 1),
    ("kbit/s", 1_000),
    ("Mbit/s", 1_000_000),
    ("Gbit/s", 1_000_000_000),
    ("B/s", 8),
    ("kB/s", 8_000),
    ("MB/s", 8_000_000),
    ("GB/s", 8_000_000_000),
];

/// Parse a rate into bytes per second (rounded down, at least 1).
pub fn parse(text: &str) -> Result<u64, RateError> {
    let text = text.trim();
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = text.split_at(number_len);
    let unit = unit.trim_start();
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(RateError::ExpectedNumber);
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return Err(RateError::ExpectedNumber);
    }
    if unit.is_empty() {
        return Err(RateError::MissingUnit);
    }
    let Some(&(_, bits_per_unit)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(RateError::UnknownUnit {
            unit: unit.to_string(),
        });
    };
    // Exact decimal arithmetic: value = whole.frac × bits_per_unit / 8.
    let scale = 10u128
        .checked_pow(u32::try_from(frac.len()).map_err(|_| RateError::Overflow)?)
        .ok_or(RateError::Overflow)?;
    let digits: u128 = format!("{whole}{frac}")
        .parse()
        .map_err(|_| RateError::Overflow)?;
    let bits = digits
        .checked_mul(u128::from(bits_per_unit))
        .ok_or(RateError::Overflow)?
        / scale;
    if bits == 0 {
        return Err(RateError::Zero);
    }
    u64::try_from((bits / 8).max(1)).map_err(|_| RateError::Overflow)
}

/// Bytes per second in the unit people read best ("20 Mbit/s").
pub fn format(bytes_per_sec: u64) -> String {
    let bits = u128::from(bytes_per_sec) * 8;
    for (unit, per) in [
        ("Gbit/s", 1_000_000_000u128),
        ("Mbit/s", 1_000_000),
        ("kbit/s", 1_000),
    ] {
        if bits >= per && bits % per == 0 {
            return format!("{} {unit}", bits / per);
        }
    }
    format!("{bits} bit/s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse("20 Mbit/s"), Ok(2_500_000));
        assert_eq!(parse("200Mbit/s"), Ok(25_000_000));
        assert_eq!(parse("1.5 Gbit/s"), Ok(187_500_000));
        assert_eq!(parse("512 kB/s"), Ok(512_000));
        assert_eq!(parse("3 B/s"), Ok(3));
        assert_eq!(parse("8 bit/s"), Ok(1));
        assert_eq!(parse("1 bit/s"), Ok(1), "rounded up to the smallest bucket");
    }

    #[test]
    fn errors_say_what_to_write() {
        assert_eq!(parse("20"), Err(RateError::MissingUnit));
        assert_eq!(parse("Mbit/s"), Err(RateError::ExpectedNumber));
        assert_eq!(parse("1..5 Mbit/s"), Err(RateError::ExpectedNumber));
        assert_eq!(parse("0 Mbit/s"), Err(RateError::Zero));
        assert_eq!(
            parse("20 mbps"),
            Err(RateError::UnknownUnit {
                unit: "mbps".into()
            })
        );
        assert_eq!(
            parse("99999999999999999999999 GB/s"),
            Err(RateError::Overflow)
        );
    }

    #[test]
    fn format_reads_back() {
        for r in [2_500_000u64, 25_000_000, 125, 187_500_000, 3] {
            assert_eq!(parse(&format(r)), Ok(r), "{}", format(r));
        }
        assert_eq!(format(2_500_000), "20 Mbit/s");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }
    }
}
