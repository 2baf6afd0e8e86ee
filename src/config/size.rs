//! Sizes (`"50GiB"`) and free-space amounts (`"10GiB"` or `"10%"`) as the config writes them.

use serde::{Deserialize, Deserializer};

/// A size in bytes, written `"50GiB"`, `"500MB"`, `"1048576"` (or a bare integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like \"50GiB\" or \"500MB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000u64.pow(4),
            "tib" => 1 << 40,
            u => return Err(format!("{s:?}: unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")),
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(i) if i >= 0 => Ok(ByteSize(i as u64)),
            toml::Value::String(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a size like \"50GiB\""))),
        }
    }
}

/// Free space: an absolute amount or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpaceAmount {
    Bytes(u64),
    Percent(f64),
}

impl SpaceAmount {
    /// The amount in bytes on a filesystem of `fs_size` bytes.
    pub fn bytes_of(self, fs_size: u64) -> u64 {
        match self {
            SpaceAmount::Bytes(b) => b,
            SpaceAmount::Percent(p) => (fs_size as f64 * p / 100.0) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for SpaceAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) if s.trim().ends_with('%') => {
                let p: f64 = s
                    .trim()
                    .trim_end_matches('%')
                    .trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a percentage like \"10%\"")))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(serde::de::Error::custom(format!("{s:?} must be between 0% and 100%")));
                }
                Ok(SpaceAmount::Percent(p))
            }
            toml::Value::String(s) => {
                ByteSize::parse(&s).map(|b| SpaceAmount::Bytes(b.0)).map_err(serde::de::Error::custom)
            }
            toml::Value::Integer(i) if i >= 0 => Ok(SpaceAmount::Bytes(i as u64)),
            other => Err(serde::de::Error::custom(format!("{other} is not a size (\"10GiB\") or a share (\"10%\")"))),
        }
    }
}

/// A speed in bytes per second, written `"50MiB/s"` (any size unit, then `/s`); `"0"` (or
/// `0`) means off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteRate(pub u64);

impl ByteRate {
    pub fn parse(s: &str) -> Result<ByteRate, String> {
        let t = s.trim();
        if t == "0" {
            return Ok(ByteRate(0));
        }
        let size =
            t.strip_suffix("/s").ok_or_else(|| format!("{s:?} is not a rate like \"50MiB/s\" (or \"0\": off)"))?;
        ByteSize::parse(size).map(|b| ByteRate(b.0))
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(0) => Ok(ByteRate(0)),
            toml::Value::String(s) => ByteRate::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a rate like \"50MiB/s\" (or \"0\": off)"))),
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::ByteRate;

    #[test]
    fn byte_rates_parse() {
        assert_eq!(ByteRate::parse("50MiB/s"), Ok(ByteRate(50 << 20)));
        assert_eq!(ByteRate::parse(" 1GB/s "), Ok(ByteRate(1_000_000_000)));
        assert_eq!(ByteRate::parse("0"), Ok(ByteRate(0)));
        assert!(ByteRate::parse("50MiB").is_err(), "a size is not a rate");
        assert!(ByteRate::parse("fast/s").is_err());
        let c: toml::Value = toml::from_str("r = 0").unwrap();
        assert_eq!(c["r"].clone().try_into::<ByteRate>().unwrap(), ByteRate(0));
    }
}
