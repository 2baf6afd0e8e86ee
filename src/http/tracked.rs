//! Response bodies that report how they ended: sent to the last byte, cut by an error, or
//! dropped early (the client went away). The request log is written from here, so it can
//! say how long the whole response took, and a connection counts a request as in flight
//! until its body is done. The cost on the data path is one addition per frame.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every byte was handed to the connection.
    Complete,
    /// The body stream failed (an upstream broke off, a verification failed): the transfer
    /// was aborted.
    Failed,
    /// Dropped before its end: the client disconnected, or the connection was cut.
    Abandoned,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Failed => "failed",
            Ending::Abandoned => "abandoned",
        }
    }
}

/// What a body's end is reported to; called exactly once.
pub trait OnEnd: Send + 'static {
    /// `sent`: the body bytes handed to the connection; `at`: when the body ended.
    fn on_end(self, how: Ending, sent: u64, at: Instant);
}

/// A response whose body's end is reported to `on_end`.
pub fn track<B: Body, E: OnEnd>(resp: http::Response<B>, on_end: E) -> http::Response<Tracked<B, E>> {
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    resp.map(|b| {
        let mut t = Tracked::new(b, on_end);
        t.length = length;
        t
    })
}

/// A body `B` whose end is reported to `E`.
pub struct Tracked<B, E: OnEnd> {
    inner: B,
    sent: u64,
    /// Empty from the start (HEAD, errors without a body): complete even if never polled.
    empty: bool,
    /// The announced `Content-Length`: hyper stops polling once it is sent, so reaching it
    /// is the end.
    length: Option<u64>,
    on_end: Option<E>,
}

impl<B: Body, E: OnEnd> Tracked<B, E> {
    pub fn new(inner: B, on_end: E) -> Self {
        let empty = inner.is_end_stream();
        Tracked { inner, sent: 0, empty, length: None, on_end: Some(on_end) }
    }

    fn end(&mut self, how: Ending) {
        if let Some(e) = self.on_end.take() {
            e.on_end(how, self.sent, Instant::now());
        }
    }
}

impl<B, E> Body for Tracked<B, E>
where
    B: Body<Data = Bytes> + Unpin,
    E: OnEnd + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let r = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &r {
            Some(Ok(f)) => {
                this.sent += f.data_ref().map_or(0, |d| d.len() as u64);
                if this.inner.is_end_stream() || this.length == Some(this.sent) {
                    this.end(Ending::Complete);
                }
            }
            Some(Err(_)) => this.end(Ending::Failed),
            None => this.end(Ending::Complete),
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, E: OnEnd> Drop for Tracked<B, E> {
    fn drop(&mut self) {
        if let Some(e) = self.on_end.take() {
            // Never polled to its end: complete only if there was nothing to send.
            let how = if self.empty || self.length == Some(self.sent) { Ending::Complete } else { Ending::Abandoned };
            e.on_end(how, self.sent, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Option<(Ending, u64)>>>);

    impl OnEnd for Seen {
        fn on_end(self, how: Ending, sent: u64, _: Instant) {
            *self.0.lock().unwrap() = Some((how, sent));
        }
    }

    fn seen(s: &Seen) -> Option<(Ending, u64)> {
        *s.0.lock().unwrap()
    }

    #[tokio::test]
    async fn reports_complete_failed_and_abandoned() {
        let s = Seen::default();
        let b = Tracked::new(Full::new(Bytes::from_static(b"hello")), s.clone());
        let _ = b.collect().await;
        assert_eq!(seen(&s), Some((Ending::Complete, 5)));

        let s = Seen::default();
        drop(Tracked::new(Empty::<Bytes>::new(), s.clone()));
        assert_eq!(seen(&s), Some((Ending::Complete, 0)));

        let s = Seen::default();
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"abc"))), Err(std::io::Error::other("cut"))];
        let b = Tracked::new(StreamBody::new(futures_util::stream::iter(chunks)), s.clone());
        assert!(b.collect().await.is_err());
        assert_eq!(seen(&s), Some((Ending::Failed, 3)));

        // A stream that announced its length is complete once that much is sent, even if
        // never polled to its end (hyper stops there).
        let s = Seen::default();
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![Ok(Frame::data(Bytes::from_static(b"abc")))];
        let resp = http::Response::builder()
            .header("content-length", "3")
            .body(StreamBody::new(futures_util::stream::iter(chunks)))
            .unwrap();
        let mut b = track(resp, s.clone()).into_body();
        let _ = b.frame().await;
        assert_eq!(seen(&s), Some((Ending::Complete, 3)));

        let s = Seen::default();
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"abc"))), Ok(Frame::data(Bytes::from_static(b"def")))];
        let mut b = Tracked::new(StreamBody::new(futures_util::stream::iter(chunks)), s.clone());
        let _ = b.frame().await;
        drop(b);
        assert_eq!(seen(&s), Some((Ending::Abandoned, 3)));
    }
}
