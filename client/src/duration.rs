//! Durations as operators type them on a command line or in an environment
//! variable: `250ms`, `5s`, `2m`, `1h 30m` (humantime's forms), or a plain
//! number of seconds (`5`, `0.5`).

use std::time::Duration;

/// Parses a positive duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds),
        Ok(_) => return Err(format!("{text:?}: a duration must be positive")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration ({e}); try 500ms, 5s, 1m"))?,
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_or_as_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("5"), Ok(ms(5000)));
        assert_eq!(parse_duration("0.5"), Ok(ms(500)));
        for bad in ["", "0", "0s", "-1", "5 parsecs", "fast", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
