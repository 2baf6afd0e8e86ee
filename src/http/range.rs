//! `Range` headers on blob GETs, per RFC 9110 §14.2: one byte range (`bytes=a-b`,
//! `bytes=a-`, `bytes=-n`) is served as a 206; anything the server may ignore is served as
//! if there were no `Range` at all (a 200 with the whole blob): several ranges (we do not
//! build `multipart/byteranges`; registry clients only ever ask for one), and a range unit
//! other than `bytes`. A syntactically invalid byte-range set is refused (400), which §14.2
//! also allows; an unsatisfiable single range is the handler's 416.

/// What a `Range` header asks of a blob response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// One byte range: a 206, or a 416 when it lies outside the blob.
    Single(ByteRange),
    /// Ignored, as §14.2 allows: answer with the whole blob (200).
    Whole(Ignored),
}

/// Why a `Range` header is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// A valid set of several byte ranges.
    Multiple,
    /// A range unit other than `bytes` (e.g. `items=0-1`).
    UnknownUnit,
}

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
    #[error("malformed Range header: expected a byte range like bytes=0-1023")]
    Malformed,
}

/// `token` characters (RFC 9110 §5.6.2), the grammar of a range unit.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

impl RangeRequest {
    pub fn parse(h: &str) -> Result<RangeRequest, RangeError> {
        let (unit, set) = h.trim().split_once('=').ok_or(RangeError::Malformed)?;
        let unit = unit.trim();
        if !is_token(unit) {
            return Err(RangeError::Malformed);
        }
        // Range units are case-insensitive (§14.1).
        if !unit.eq_ignore_ascii_case("bytes") {
            return Ok(RangeRequest::Whole(Ignored::UnknownUnit));
        }
        // A list: empty elements are allowed (§5.6.1) but at least one range is needed,
        // and every range must be valid.
        let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
        let first = ByteRange::parse_spec(specs.next().ok_or(RangeError::Malformed)?)?;
        let mut several = false;
        for spec in specs {
            ByteRange::parse_spec(spec)?;
            several = true;
        }
        Ok(if several { RangeRequest::Whole(Ignored::Multiple) } else { RangeRequest::Single(first) })
    }
}

impl ByteRange {
    /// One `range-spec`: `a-b`, `a-` or `-n`.
    pub fn parse_spec(spec: &str) -> Result<ByteRange, RangeError> {
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
    fn parses_single_ranges() {
        let single = |h: &str| RangeRequest::parse(h);
        assert_eq!(single("bytes=0-9"), Ok(RangeRequest::Single(ByteRange::FromTo(0, 9))));
        assert_eq!(single("bytes=5-"), Ok(RangeRequest::Single(ByteRange::From(5))));
        assert_eq!(single("bytes=-5"), Ok(RangeRequest::Single(ByteRange::Suffix(5))));
        assert_eq!(single("Bytes = 0-9"), Ok(RangeRequest::Single(ByteRange::FromTo(0, 9))));
        // An empty list element is not a second range.
        assert_eq!(single("bytes=0-9, "), Ok(RangeRequest::Single(ByteRange::FromTo(0, 9))));
    }

    #[test]
    fn ignores_what_rfc_9110_lets_a_server_ignore() {
        assert_eq!(RangeRequest::parse("bytes=0-1,3-4"), Ok(RangeRequest::Whole(Ignored::Multiple)));
        assert_eq!(RangeRequest::parse("bytes=0-0, 2-3, -1"), Ok(RangeRequest::Whole(Ignored::Multiple)));
        assert_eq!(RangeRequest::parse("items=0-1"), Ok(RangeRequest::Whole(Ignored::UnknownUnit)));
        assert_eq!(RangeRequest::parse("pages=anything"), Ok(RangeRequest::Whole(Ignored::UnknownUnit)));
    }

    #[test]
    fn refuses_invalid_byte_ranges() {
        for bad in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=a-b",
            "bytes=9-0",
            "bytes=+1-2",
            "bytes=99999999999999999999-",
            "bytes=0-1,x",
            "bytes=0-1,5-2",
            "=0-1",
            "by tes=0-1",
        ] {
            assert_eq!(RangeRequest::parse(bad), Err(RangeError::Malformed), "{bad}");
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
