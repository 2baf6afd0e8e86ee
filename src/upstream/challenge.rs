//! `WWW-Authenticate` challenges (RFC 7235), as registries send them on 401.

use std::collections::HashMap;

/// One parsed challenge: the scheme (lowercased) and its parameters (keys lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parse every challenge in one header value: `Bearer realm="…",service="…", Basic realm="…"`.
/// Malformed input yields what could be parsed before the fault, never a panic.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
    loop {
        skip_ws(&mut i);
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            return out;
        }
        let word = &header[start..i];
        // A word followed by '=' is a parameter of the current challenge; otherwise it is a
        // new scheme.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'\\' if i + 1 < b.len() => {
                            // The escaped character may be multi-byte: step over it whole.
                            let ch = header[i + 1..].chars().next().unwrap_or('\u{fffd}');
                            v.push(ch);
                            i += 1 + ch.len_utf8();
                        }
                        b'"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        _ => {
                            // Push whole UTF-8 characters, not bytes.
                            let ch = header[i..].chars().next().unwrap_or('\u{fffd}');
                            v.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if !closed {
                    return out;
                }
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' && b[i] != b' ' {
                    i += 1;
                }
                header[s..i].to_string()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge { scheme: word.to_ascii_lowercase(), params: HashMap::new() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/nginx:pull"));
    }

    #[test]
    fn several_challenges_and_odd_spacing() {
        let c = parse_challenges(r#"Basic realm="a \"q\" b", Bearer realm=https://x/t , service = "s""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some(r#"a "q" b"#));
        assert_eq!(c[1].param("realm"), Some("https://x/t"));
        assert_eq!(c[1].param("service"), Some("s"));
    }

    #[test]
    fn malformed_input_does_not_panic() {
        for s in [
            "",
            "=",
            "Bearer realm=\"unterminated",
            "Bearer realm=\"\\",
            "ü",
            "Bearer ü=1",
            ",,,",
            "Bearer r=\"a\\ҥb\"x",
        ] {
            let _ = parse_challenges(s);
        }
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }
}
