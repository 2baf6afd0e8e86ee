//! An event as a CloudEvents 1.0 HTTP request, in either content mode of the HTTP binding:
//! binary (attributes in `ce-*` headers, `data` as the JSON body) or structured (the whole
//! event as one `application/cloudevents+json` document).

use super::event::Event;
use super::webhook::Mode;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

pub const SPEC_VERSION: &str = "1.0";

/// The POST that delivers `event` to `url`. `extra` (configured headers) go first, so they
/// cannot replace the CloudEvents attributes or the content type.
pub fn request(mode: Mode, url: &Uri, extra: &HeaderMap, source: &str, event: &Event) -> Request<Full<Bytes>> {
    let mut headers = extra.clone();
    let body = match mode {
        Mode::Binary => {
            let mut put = |name: &'static str, value: String| {
                // Values are ours (ids, names, digests, RFC 3339 times) or the operator's
                // source; one that is not a valid header value is left out, not a panic.
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            };
            put("ce-specversion", SPEC_VERSION.into());
            put("ce-id", event.id.clone());
            put("ce-source", source.into());
            put("ce-type", event.kind.ce_type());
            put("ce-time", event.time_rfc3339());
            if let Some(s) = event.subject() {
                put("ce-subject", s);
            }
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            serde_json::to_vec(&event.data())
        }
        Mode::Structured => {
            let mut doc = serde_json::json!({
                "specversion": SPEC_VERSION,
                "id": event.id,
                "source": source,
                "type": event.kind.ce_type(),
                "time": event.time_rfc3339(),
                "datacontenttype": "application/json",
                "data": event.data(),
            });
            if let Some(s) = event.subject() {
                doc["subject"] = s.into();
            }
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
            serde_json::to_vec(&doc)
        }
    }
    .unwrap_or_default();
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = url.clone();
    *req.headers_mut() = headers;
    req.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static(crate::oci::USER_AGENT));
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::oci::Digest;

    #[test]
    fn binary_and_structured_carry_the_required_attributes() {
        let d = Digest::of_bytes(b"x");
        let e = Event::new(EventKind::Evicted).digest(&d).size(1);
        let url: Uri = "http://127.0.0.1:9/hook".parse().unwrap();
        let mut extra = HeaderMap::new();
        extra.insert("authorization", HeaderValue::from_static("Bearer t"));
        extra.insert("ce-type", HeaderValue::from_static("spoofed"));

        let b = request(Mode::Binary, &url, &extra, "/pullthrough", &e);
        let h = b.headers();
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-type"], "io.pullthrough.evicted");
        assert_eq!(h["ce-id"], e.id.as_str());
        assert_eq!(h["ce-source"], "/pullthrough");
        assert_eq!(h["ce-subject"], d.to_string().as_str());
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");

        let s = request(Mode::Structured, &url, &extra, "/pullthrough", &e);
        assert_eq!(s.headers()[header::CONTENT_TYPE], "application/cloudevents+json");
        assert_eq!(b.method(), Method::POST);
    }
}
