//! How a peer asks for a blob, as the token-authenticated peer path carries it: who asks
//! (`x-pullthrough-from`, its advertised URL) and on what terms (`x-pullthrough-ask`).
//! An owner that is already sending a blob to `max_peer_streams` peers answers a
//! `referable` ask with `307` and `x-pullthrough-referral: <peer URL>`, naming a node that
//! is receiving the blob; the asker then asks that node once, `referred`.

use super::Peer;

/// The header naming the asking node (its advertised URL).
pub const FROM_HEADER: &str = "x-pullthrough-from";
/// The header carrying an [`Ask`].
pub const ASK_HEADER: &str = "x-pullthrough-ask";
/// The header of a referral answer: the peer to ask instead.
pub const REFERRAL_HEADER: &str = "x-pullthrough-referral";

/// The terms of a peer's blob request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A first ask of the owner: the answer may be a referral to another receiving node.
    Referable,
    /// The owner referred the asker here: serve from a fill in flight or a blob on disk,
    /// never start a fill, never refer further.
    Referred,
    /// Serve it yourself, no referral: the asker's referral failed or was refused (also what
    /// an ask without the header means, as nodes that predate referrals send).
    Direct,
}

impl Ask {
    pub fn as_str(self) -> &'static str {
        match self {
            Ask::Referable => "referable",
            Ask::Referred => "referred",
            Ask::Direct => "direct",
        }
    }

    /// The header's value; anything unknown is `Direct` (serve, as before referrals).
    pub fn parse(value: Option<&str>) -> Ask {
        match value.map(str::trim) {
            Some("referable") => Ask::Referable,
            Some("referred") => Ask::Referred,
            _ => Ask::Direct,
        }
    }
}

/// A peer's blob request, as the serving node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAsk {
    /// The asking node, when it said (nodes that predate referrals do not).
    pub from: Option<Peer>,
    pub ask: Ask,
}

impl PeerAsk {
    /// From the request's headers' values. An ask that does not name its node cannot be
    /// recorded, so it cannot be referred: it is served directly.
    pub fn parse(from: Option<&str>, ask: Option<&str>) -> PeerAsk {
        let from = from.map(Peer::new).filter(|p| !p.as_str().is_empty());
        let ask = match (Ask::parse(ask), &from) {
            (Ask::Referable, None) => Ask::Direct,
            (a, _) => a,
        };
        PeerAsk { from, ask }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_anonymous_asks_are_served_directly() {
        assert_eq!(PeerAsk::parse(None, None).ask, Ask::Direct);
        assert_eq!(PeerAsk::parse(None, Some("referable")).ask, Ask::Direct);
        assert_eq!(PeerAsk::parse(Some("http://a:1"), Some("bogus")).ask, Ask::Direct);
        let a = PeerAsk::parse(Some("http://a:1/"), Some("referable"));
        assert_eq!((a.from.unwrap().as_str(), a.ask), ("http://a:1", Ask::Referable));
        assert_eq!(PeerAsk::parse(None, Some("referred")).ask, Ask::Referred);
    }
}
