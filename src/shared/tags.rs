//! Tag records in the bucket: which digest a tag pointed to when some node last asked the
//! upstream, so that other nodes answer it within the tag TTL without asking again.

use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records are small JSON documents; anything larger is not ours.
pub const MAX_TAG_RECORD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTag {
    pub digest: Digest,
    pub media_type: String,
    /// When the upstream last confirmed this tag → digest.
    pub checked_at: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct OnBucket {
    digest: String,
    media_type: String,
    checked_at_ms: u64,
}

impl SharedTag {
    pub fn encode(&self) -> Vec<u8> {
        let v = OnBucket {
            digest: self.digest.to_string(),
            media_type: self.media_type.clone(),
            checked_at_ms: self.checked_at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64,
        };
        serde_json::to_vec(&v).expect("a tag record serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<SharedTag, String> {
        let v: OnBucket = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let digest = v.digest.parse().map_err(|e: crate::oci::DigestError| e.to_string())?;
        if v.media_type.is_empty() || v.media_type.len() > 255 {
            return Err("bad media type".into());
        }
        Ok(SharedTag {
            digest,
            media_type: v.media_type,
            checked_at: UNIX_EPOCH + Duration::from_millis(v.checked_at_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let t = SharedTag {
            digest: format!("sha256:{}", "0".repeat(64)).parse().unwrap(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            checked_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        assert_eq!(SharedTag::decode(&t.encode()).unwrap(), t);
        assert!(SharedTag::decode(b"{}").is_err());
        assert!(SharedTag::decode(br#"{"digest":"sha256:zz","media_type":"x","checked_at_ms":1}"#).is_err());
        assert!(SharedTag::decode(b"\xff").is_err());
    }
}
