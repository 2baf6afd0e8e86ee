//! Checking a source's answer to a resumed read (`Range: bytes=<received>-`): a `206` whose
//! `Content-Range` starts at the byte received and runs to the end of the blob (of the size
//! announced first), or a `200` of the whole blob, whose first `received` bytes are read past.
//! Anything else is a source to skip: a byte from the wrong offset never reaches the
//! pipeline's hash, so it never costs more than the attempt.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

/// Where a read stands: the bytes already received, and the blob's size when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub received: u64,
    pub total: Option<u64>,
}

impl At {
    /// A first read, from byte 0.
    pub const START: At = At { received: 0, total: None };
}

/// A source's answer to a read at `At`, as its headers state it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// `206 Partial Content`, rather than `200`.
    pub partial: bool,
    /// The body's length (`Content-Length`), when sent.
    pub len: Option<u64>,
    pub content_range: Option<&'a str>,
}

/// How to read an answer that fits: the bytes to read past, and the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub skip: u64,
    pub total: Option<u64>,
}

/// Why an answer does not fit the read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeRefused {
    #[error("answered bytes={wanted}- with Content-Range {got:?}")]
    Wrong { wanted: u64, got: String },
    #[error("answered bytes={wanted}- with a 206 and no Content-Range")]
    Missing { wanted: u64 },
    #[error("answered with {len} bytes for a blob of {total}")]
    Length { len: u64, total: u64 },
}

/// Whether `answer` continues the read at `at`, and how.
pub fn fit(at: At, answer: Answer<'_>) -> Result<Fit, RangeRefused> {
    if !answer.partial {
        if let (Some(len), Some(total)) = (answer.len, at.total) {
            if len != total {
                return Err(RangeRefused::Length { len, total });
            }
        }
        return Ok(Fit { skip: at.received, total: at.total.or(answer.len) });
    }
    let wanted = at.received;
    let got = answer.content_range.ok_or(RangeRefused::Missing { wanted })?;
    let wrong = || RangeRefused::Wrong { wanted, got: got.to_string() };
    let (first, last, total) = parse(got).ok_or_else(wrong)?;
    let fits = first == wanted
        && last.checked_add(1) == Some(total)
        && at.total.is_none_or(|t| t == total)
        && answer.len.is_none_or(|l| Some(l) == total.checked_sub(first));
    if !fits {
        return Err(wrong());
    }
    Ok(Fit { skip: 0, total: Some(total) })
}

/// `bytes <first>-<last>/<total>`.
fn parse(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// `chunks` without their first `skip` bytes (a whole blob sent to a resumed read).
pub fn skip_prefix<E: Send + 'static>(
    chunks: BoxStream<'static, Result<Bytes, E>>,
    skip: u64,
) -> BoxStream<'static, Result<Bytes, E>> {
    if skip == 0 {
        return chunks;
    }
    let mut left = skip;
    chunks
        .filter_map(move |r| {
            let out = match r {
                Ok(mut b) if left > 0 => {
                    let n = left.min(b.len() as u64);
                    left -= n;
                    let rest = b.split_off(n as usize);
                    (!rest.is_empty()).then_some(Ok(rest))
                }
                other => Some(other),
            };
            std::future::ready(out)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(partial: bool, len: Option<u64>, cr: Option<&str>) -> Answer<'_> {
        Answer { partial, len, content_range: cr }
    }

    #[test]
    fn a_first_read_takes_the_announced_length() {
        assert_eq!(fit(At::START, answer(false, Some(10), None)), Ok(Fit { skip: 0, total: Some(10) }));
        assert_eq!(fit(At::START, answer(false, None, None)), Ok(Fit { skip: 0, total: None }));
    }

    #[test]
    fn a_range_must_start_at_the_byte_received_and_run_to_the_announced_end() {
        let at = At { received: 40, total: Some(100) };
        let ok = Ok(Fit { skip: 0, total: Some(100) });
        assert_eq!(fit(at, answer(true, Some(60), Some("bytes 40-99/100"))), ok);
        assert_eq!(fit(at, answer(true, None, Some("bytes 40-99/100"))), ok);
        for wrong in
            ["bytes 0-99/100", "bytes 41-99/100", "bytes 40-98/100", "bytes 40-99/101", "bytes 40-99/*", "40-99/100"]
        {
            assert!(matches!(fit(at, answer(true, None, Some(wrong))), Err(RangeRefused::Wrong { .. })), "{wrong}");
        }
        assert!(matches!(fit(at, answer(true, Some(59), Some("bytes 40-99/100"))), Err(RangeRefused::Wrong { .. })));
        assert_eq!(fit(at, answer(true, None, None)), Err(RangeRefused::Missing { wanted: 40 }));
        // The size unknown until now: the range states it.
        let at = At { received: 40, total: None };
        assert_eq!(fit(at, answer(true, None, Some("bytes 40-99/100"))), ok);
    }

    #[test]
    fn a_whole_blob_answer_is_read_past_the_prefix_if_its_length_is_right() {
        let at = At { received: 40, total: Some(100) };
        assert_eq!(fit(at, answer(false, Some(100), None)), Ok(Fit { skip: 40, total: Some(100) }));
        assert_eq!(fit(at, answer(false, Some(99), None)), Err(RangeRefused::Length { len: 99, total: 100 }));
    }

    #[tokio::test]
    async fn skipping_a_prefix_splits_the_chunk_it_ends_in() {
        let chunks: Vec<Result<Bytes, ()>> =
            vec![Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"defg")), Ok(Bytes::from_static(b"hi"))];
        let s = futures_util::stream::iter(chunks).boxed();
        let got: Vec<_> = skip_prefix(s, 5).collect().await;
        assert_eq!(got, vec![Ok(Bytes::from_static(b"fg")), Ok(Bytes::from_static(b"hi"))]);
    }
}
