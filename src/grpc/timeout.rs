//! The `grpc-timeout` request header: at most 8 ASCII digits followed by a
//! unit, `H` hours, `M` minutes, `S` seconds, `m` milliseconds,
//! `u` microseconds or `n` nanoseconds.

use std::time::Duration;

/// Most digits the spec allows in the value.
const MAX_DIGITS: usize = 8;
/// Largest value that fits in [`MAX_DIGITS`] digits.
const MAX_VALUE: u64 = 99_999_999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutError {
    #[error("grpc-timeout {0:?} has no digits")]
    NoDigits(String),
    #[error("grpc-timeout {0:?} has more than 8 digits")]
    TooManyDigits(String),
    #[error("grpc-timeout {0:?} has an unknown unit (expected one of H M S m u n)")]
    BadUnit(String),
    #[error("grpc-timeout {0:?} is not ASCII digits and a unit")]
    Malformed(String),
}

/// Parses a `grpc-timeout` value, e.g. `"250m"` -> 250 ms.
pub fn parse(value: &[u8]) -> Result<Duration, TimeoutError> {
    let shown = || String::from_utf8_lossy(value).into_owned();
    let Some((&unit, digits)) = value.split_last() else {
        return Err(TimeoutError::NoDigits(shown()));
    };
    if digits.is_empty() {
        return Err(TimeoutError::NoDigits(shown()));
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(TimeoutError::Malformed(shown()));
    }
    if digits.len() > MAX_DIGITS {
        return Err(TimeoutError::TooManyDigits(shown()));
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(TimeoutError::BadUnit(shown())),
    })
}

/// Formats `timeout` for the header in the finest unit that fits in 8
/// digits, rounding up so the server never gives up before the client.
pub fn encode(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= u128::from(MAX_VALUE) {
            return format!("{n}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse(b"2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse(b"3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse(b"4S"), Ok(Duration::from_secs(4)));
        assert_eq!(parse(b"250m"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(b"7u"), Ok(Duration::from_micros(7)));
        assert_eq!(parse(b"99999999n"), Ok(Duration::from_nanos(99_999_999)));
        assert_eq!(parse(b"0m"), Ok(Duration::ZERO));
        assert_eq!(
            parse(b"99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(matches!(parse(b""), Err(TimeoutError::NoDigits(_))));
        assert!(matches!(parse(b"m"), Err(TimeoutError::NoDigits(_))));
        assert!(matches!(
            parse(b"123456789m"),
            Err(TimeoutError::TooManyDigits(_))
        ));
        assert!(matches!(parse(b"10s"), Err(TimeoutError::BadUnit(_))));
        assert!(matches!(parse(b"10"), Err(TimeoutError::BadUnit(_))));
        assert!(matches!(parse(b"-1m"), Err(TimeoutError::Malformed(_))));
        assert!(matches!(parse(b"1 m"), Err(TimeoutError::Malformed(_))));
        assert!(matches!(parse(b"1.5S"), Err(TimeoutError::Malformed(_))));
    }

    #[test]
    fn encoding_picks_the_finest_unit_that_fits_and_round_trips() {
        assert_eq!(encode(Duration::from_millis(50)), "50000000n");
        assert_eq!(encode(Duration::from_millis(500)), "500000u");
        assert_eq!(encode(Duration::from_millis(200)), "200000u");
        assert_eq!(encode(Duration::from_secs(1)), "1000000u");
        assert_eq!(encode(Duration::from_secs(3600)), "3600000m");
        assert_eq!(encode(Duration::ZERO), "0n");
        assert_eq!(encode(Duration::MAX), "99999999H");
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(200),
            Duration::from_secs(86_400),
            Duration::from_secs(10_000_000),
        ] {
            let back = parse(encode(d).as_bytes()).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
            assert!(
                back - d < d / 1000 + Duration::from_nanos(1),
                "{d:?} -> {back:?}"
            );
        }
    }
}
