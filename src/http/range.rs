//! Single byte-range requests (`Range: bytes=a-b`, `bytes=a-`, `bytes=-n`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b`, inclusive.
    FromTo(u64, u64),
    /// `a-`
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("malformed Range header: expected a single range like bytes=0-1023")]
    Malformed,
    #[error("only a single byte range is supported")]
    Multiple,
}

impl ByteRange {
    pub fn parse(h: &str) -> Result<ByteRange, RangeError> {
        let spec = h.trim().strip_prefix("bytes=").ok_or(RangeError::Malformed)?.trim();
        if spec.contains(',') {
            return Err(RangeError::Multiple);
        }
        let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(RangeError::Malformed);
            }
            s.parse().map_err(|_| RangeError::Malformed)
        };
        match (a.trim(), b.trim()) {
            ("", n) => Ok(ByteRange::Suffix(num(n)?)),
            (a, "") => Ok(ByteRange::From(num(a)?)),
            (a, b) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(RangeError::Malformed);
                }
                Ok(ByteRange::FromTo(a, b))
            }
        }
    }

    /// `[start, end)` within a blob of `len` bytes, or `None` if unsatisfiable.
    pub fn resolve(self, len: u64) -> Option<(u64, u64)> {
        let (s, e) = match self {
            ByteRange::FromTo(a, b) => (a, b.saturating_add(1).min(len)),
            ByteRange::From(a) => (a, len),
            ByteRange::Suffix(n) => (len.saturating_sub(n), len),
        };
        (s < e && s < len).then_some((s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(ByteRange::parse("bytes=0-9"), Ok(ByteRange::FromTo(0, 9)));
        assert_eq!(ByteRange::parse("bytes=5-"), Ok(ByteRange::From(5)));
        assert_eq!(ByteRange::parse("bytes=-5"), Ok(ByteRange::Suffix(5)));
        assert_eq!(ByteRange::parse("bytes=0-1,3-4"), Err(RangeError::Multiple));
        for bad in [
            "",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=9-0",
            "items=0-1",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(ByteRange::parse(bad), Err(RangeError::Malformed), "{bad}");
        }
    }

    #[test]
    fn resolves() {
        assert_eq!(ByteRange::FromTo(0, 9).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::From(4).resolve(5), Some((4, 5)));
        assert_eq!(ByteRange::From(5).resolve(5), None);
        assert_eq!(ByteRange::Suffix(2).resolve(5), Some((3, 5)));
        assert_eq!(ByteRange::Suffix(9).resolve(5), Some((0, 5)));
        assert_eq!(ByteRange::Suffix(0).resolve(5), None);
    }
}
