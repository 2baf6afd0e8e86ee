//! An error as one line of text with its whole cause chain, for logs and error messages:
//! hyper's and the AWS SDK's top-level messages ("client error (Connect)", "dispatch
//! failure") say little on their own. Used by every source (upstream, shared, cluster).

/// `e`, then each of its sources, joined by ": ".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
