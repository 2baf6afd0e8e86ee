//! ECR lifecycle policies, evaluated over the images a cached repository holds.
//!
//! The policy document is ECR's own JSON (`rules[].rulePriority`, `selection.tagStatus`,
//! `tagPrefixList`/`tagPatternList`, `countType`, `countUnit`, `countNumber`,
//! `action.type = "expire"`), with ECR's semantics: rules apply in priority order, and an
//! image selected by a rule is never considered by a lower-priority one. Seen from the
//! cache, an image's "push time" is when it entered the cache (as in ECR's own pull-through
//! cache). `sinceImagePulled` (days since the cache last served the image) is an extension.

pub use crate::lifecycle_policy::{
    Action, ActionKind, CountType, CountUnit, LifecyclePolicy, Policy, Rule, Selection, TagStatus,
};
use crate::oci::Digest;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// One image of a repository, as lifecycle rules see it.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub pushed_at: SystemTime,
    pub pulled_at: SystemTime,
}

impl Selection {
    fn selects(&self, img: &Image) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => img.tags.is_empty(),
            // ECR: with several entries, an image must match every one of them.
            TagStatus::Tagged => {
                !img.tags.is_empty()
                    && self.tag_prefix_list.iter().all(|p| img.tags.iter().any(|t| t.starts_with(p.as_str())))
                    && self.tag_pattern_list.iter().all(|p| img.tags.iter().any(|t| p.matches(t)))
            }
        }
    }
}

/// The images `policy` expires, at time `now`.
pub fn evaluate(policy: &Policy, images: &[Image], now: SystemTime) -> Vec<Digest> {
    let mut rules: Vec<&Rule> = policy.rules.iter().collect();
    rules.sort_by_key(|r| r.rule_priority);
    let mut claimed: HashSet<&Digest> = HashSet::new();
    let mut expired = Vec::new();
    for rule in rules {
        let s = &rule.selection;
        let mut selected: Vec<&Image> =
            images.iter().filter(|i| !claimed.contains(&i.digest) && s.selects(i)).collect();
        let days = Duration::from_secs(86_400 * s.count_number);
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        match s.count_type {
            CountType::ImageCountMoreThan => {
                // Newest first; ties broken by digest so the outcome is deterministic.
                selected.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.digest.cmp(&b.digest)));
                expired.extend(selected.iter().skip(s.count_number as usize).map(|i| i.digest.clone()));
            }
            CountType::SinceImagePushed => {
                expired.extend(selected.iter().filter(|i| age(i.pushed_at) > days).map(|i| i.digest.clone()))
            }
            CountType::SinceImagePulled => {
                expired.extend(selected.iter().filter(|i| age(i.pulled_at) > days).map(|i| i.digest.clone()))
            }
        }
        claimed.extend(selected.iter().map(|i| &i.digest));
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        let p: Policy = serde_json::from_str(json).unwrap();
        p.validate().unwrap();
        p
    }

    fn img(n: u8, tags: &[&str], pushed_days_ago: u64, pulled_days_ago: u64) -> Image {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 * 86_400);
        Image {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)).parse().unwrap(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            pushed_at: now - Duration::from_secs(pushed_days_ago * 86_400 + n as u64),
            pulled_at: now - Duration::from_secs(pulled_days_ago * 86_400),
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 * 86_400)
    }

    fn ids(v: Vec<Digest>) -> Vec<String> {
        let mut v: Vec<_> = v.into_iter().map(|d| d.hex()[..2].to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn untagged_since_pushed() {
        let p = policy(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#,
        );
        let images = [img(1, &[], 10, 0), img(2, &[], 3, 0), img(3, &["v1"], 30, 0)];
        assert_eq!(ids(evaluate(&p, &images, now())), ["01"]);
    }

    #[test]
    fn keep_last_n_matching_tags_and_priority_claims() {
        let p = policy(
            r#"{"rules":[
            {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}},
            {"rulePriority":2,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}
        ]}"#,
        );
        // prod images by age: 1 (newest), 2, 3; others: 4 (newer), 5.
        let images = [
            img(1, &["prod-3"], 1, 0),
            img(2, &["prod-2"], 2, 0),
            img(3, &["prod-1", "x"], 3, 0),
            img(4, &["dev"], 0, 0),
            img(5, &[], 5, 0),
        ];
        // Rule 1 keeps 1 and 2, expires 3; rule 2 sees only 4 and 5, keeps 4, expires 5.
        assert_eq!(ids(evaluate(&p, &images, now())), ["03", "05"]);
    }

    #[test]
    fn patterns_and_pull_age() {
        let p = policy(
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["v*-rc*"],"countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"expire"}}]}"#,
        );
        let images = [img(1, &["v1-rc1"], 90, 40), img(2, &["v1-rc2"], 90, 5), img(3, &["v1"], 90, 90)];
        assert_eq!(ids(evaluate(&p, &images, now())), ["01"]);
    }

    #[test]
    fn rejects_invalid_policies() {
        for bad in [
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1},"action":{"type":"expire"}}]}"#,
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
        ] {
            let p: Policy = serde_json::from_str(bad).unwrap();
            assert!(p.validate().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Policy>(r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"archive"}}]}"#).is_err());
    }
}
