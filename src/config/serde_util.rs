//! Deserializers shared by the sections: durations written like `"60s"`, listen addresses
//! written like `"127.0.0.1:5000"`. Each refusal says what a valid value looks like.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn option_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        // A bare number has no unit; say the string it most likely means.
        toml::Value::Integer(i) => Err(serde::de::Error::custom(format!(
            "{i} is not a duration: write it as a string with a unit, like \"{i}s\" (units: ms, s, m, h, d)"
        ))),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not a duration: write a string like \"30s\", \"5m\" or \"1h30m\""
        ))),
    }
}

/// A duration as the configuration and the command line write it: numbers each with a unit
/// (`"30s"`, `"5m"`, `"1h30m"`, `"500ms"`). A refusal names a valid spelling; for a last
/// number without a unit (`"1h30"`), the one it most likely means (`"1h30m"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        let t = s.trim();
        let hint = match e {
            humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                format!("did you mean \"{t}{}\"?", next_unit(t))
            }
            _ => "write numbers each with a unit, like \"30s\", \"5m\", \"1h30m\" or \"500ms\"".to_string(),
        };
        format!("{s:?} is not a duration: {hint} (units: ms, s, m, h, d)")
    })
}

/// The unit a trailing bare number most likely has: the next smaller one after the unit
/// before it (`1h30` → m, `5m30` → s), or seconds.
fn next_unit(s: &str) -> &'static str {
    let before = s.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end();
    let unit: String = before.chars().rev().take_while(|c| c.is_ascii_alphabetic()).collect();
    match unit.chars().rev().collect::<String>().as_str() {
        "d" | "days" | "day" => "h",
        "h" | "hr" | "hrs" | "hour" | "hours" => "m",
        "m" | "min" | "mins" | "minute" | "minutes" => "s",
        "s" | "sec" | "secs" | "second" | "seconds" => "ms",
        _ => "s",
    }
}

/// A listen address: an IP address and a port (`"127.0.0.1:5000"`, `"0.0.0.0:5000"`,
/// `"[::1]:5000"`). Host names are not resolved: a listener binds an address, and which of
/// a name's addresses is meant (`localhost` is 127.0.0.1 and ::1) would be a guess.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        let hint = match s.trim().rsplit_once(':') {
            Some(("localhost", port)) => format!(" (for localhost write \"127.0.0.1:{port}\")"),
            Some((_, port)) if port.parse::<u16>().is_ok() => {
                format!(
                    " (host names are not resolved: write an IP address, e.g. \"0.0.0.0:{port}\" for every interface)"
                )
            }
            _ => String::new(),
        };
        format!("{s:?} is not an IP address and port like \"127.0.0.1:5000\" or \"[::1]:5000\"{hint}")
    })
}

pub(super) fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_a_valid_value() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        let e = parse_duration("1h30").unwrap_err();
        assert!(e.contains("did you mean \"1h30m\"?"), "{e}");
        assert!(parse_duration("5m30").unwrap_err().contains("\"5m30s\""));
        assert!(parse_duration("30").unwrap_err().contains("\"30s\""));
        assert!(parse_duration("soon").unwrap_err().contains("\"1h30m\""));
        let e = parse_listen("localhost:5000").unwrap_err();
        assert!(e.contains("\"127.0.0.1:5000\""), "{e}");
        let e = parse_listen("proxy.internal:5000").unwrap_err();
        assert!(e.contains("\"0.0.0.0:5000\""), "{e}");
        assert_eq!(parse_listen(" [::1]:5000 "), Ok("[::1]:5000".parse().unwrap()));
    }

    #[test]
    fn a_bare_number_is_no_duration_and_the_error_says_which_string() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "duration")]
            #[allow(dead_code)]
            d: Duration,
        }
        let e = toml::from_str::<T>("d = 30").unwrap_err().to_string();
        assert!(e.contains("write it as a string with a unit, like \"30s\""), "{e}");
    }
}
