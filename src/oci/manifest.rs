//! What a manifest or index points at: the digests it references, for reachability
//! (garbage collection, pins, export).

use super::digest::Digest;

/// Every digest a manifest references: its config, layers, child manifests and subject.
/// Unparseable input yields nothing (a manifest that cannot be read references nothing we
/// could keep alive anyway).
pub fn references(body: &[u8]) -> Vec<Digest> {
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        config: Option<Desc>,
        #[serde(default)]
        layers: Vec<Desc>,
        #[serde(default)]
        manifests: Vec<Desc>,
        subject: Option<Desc>,
    }
    let Ok(doc) = serde_json::from_slice::<Doc>(body) else {
        return Vec::new();
    };
    doc.config
        .into_iter()
        .chain(doc.layers)
        .chain(doc.manifests)
        .chain(doc.subject)
        .filter_map(|d| d.digest.parse().ok())
        .collect()
}

/// The child manifests of an index, with their platforms (`os/arch[/variant]`).
pub fn index_children(body: &[u8]) -> Vec<(Digest, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: String,
        platform: Option<Platform>,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        manifests: Vec<Desc>,
    }
    let Ok(doc) = serde_json::from_slice::<Doc>(body) else {
        return Vec::new();
    };
    doc.manifests
        .into_iter()
        .filter_map(|d| {
            let p = d.platform.map(|p| match p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            });
            Some((d.digest.parse().ok()?, p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_references() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let m = format!(r#"{{"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"bad"}}]}}"#);
        assert_eq!(references(m.as_bytes()).len(), 2);
        let i = format!(
            r#"{{"manifests":[{{"digest":"{a}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        assert_eq!(index_children(i.as_bytes()), vec![(a.parse().unwrap(), Some("linux/arm64/v8".to_string()))]);
        assert!(references(b"nope").is_empty());
    }
}
