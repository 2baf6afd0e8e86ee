//! Deserializers shared by the sections: durations written like `"60s"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

pub(super) fn option_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"60s\", \"5m\" or \"1h\": {e}")))
}
