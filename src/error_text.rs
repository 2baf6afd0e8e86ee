//! An error as one line of text with its whole cause chain, for logs and error messages:
//! hyper's and the AWS SDK's top-level messages ("client error (Connect)", "dispatch
//! failure") say little on their own. Used by every source (upstream, shared, cluster) and
//! by the binary for what it prints.

/// `e`, then each of its sources, joined by ": "; a cause whose text is quoted already
/// (e.g. "cannot read config file x: No such file or directory") is not repeated, nor is an
/// empty one.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        cause: Option<Box<E>>,
    }

    fn chain(texts: &[&'static str]) -> E {
        texts.iter().rev().fold(None, |cause, text| Some(E { text, cause: cause.map(Box::new) })).unwrap()
    }

    #[test]
    fn each_cause_once() {
        assert_eq!(error_chain(&chain(&["fill failed", "connect", "refused"])), "fill failed: connect: refused");
        assert_eq!(error_chain(&chain(&["cannot read x: not found", "not found"])), "cannot read x: not found");
        assert_eq!(error_chain(&chain(&["a", "", "b"])), "a: b");
    }
}
