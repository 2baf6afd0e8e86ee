//! ECR lifecycle policies, evaluated over the images a cached repository holds.
//!
//! The policy document is ECR's own JSON (`rules[].rulePriority`, `selection.tagStatus`,
//! `tagPrefixList`/`tagPatternList`, `countType`, `countUnit`, `countNumber`,
//! `action.type = "expire"`), with ECR's semantics: rules apply in priority order, and an
//! image selected by a rule is never considered by a lower-priority one. Seen from the
//! cache, an image's "push time" is when it entered the cache (as in ECR's own pull-through
//! cache). `sinceImagePulled` (days since the cache last served the image) is an extension.

use crate::oci::Digest;
use crate::pattern::Pattern;
use serde::Deserialize;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub rule_priority: u32,
    #[serde(default)]
    pub description: Option<String>,
    pub selection: Selection,
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selection {
    pub tag_status: TagStatus,
    #[serde(default)]
    pub tag_prefix_list: Vec<String>,
    #[serde(default)]
    pub tag_pattern_list: Vec<Pattern>,
    pub count_type: CountType,
    #[serde(default)]
    pub count_unit: Option<CountUnit>,
    pub count_number: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CountType {
    ImageCountMoreThan,
    SinceImagePushed,
    SinceImagePulled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountUnit {
    Days,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: ActionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Expire,
}

/// A validated policy as it appears in the config: ECR's JSON text, or the same fields
/// written as a TOML table.
#[derive(Debug, Clone)]
pub struct LifecyclePolicy(pub Policy);

impl<'de> Deserialize<'de> for LifecyclePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let policy: Policy = match v {
            serde_json::Value::String(s) => serde_json::from_str(&s),
            v => serde_json::from_value(v),
        }
        .map_err(|e| serde::de::Error::custom(format!("not an ECR lifecycle policy: {e}")))?;
        policy.validate().map_err(serde::de::Error::custom)?;
        Ok(LifecyclePolicy(policy))
    }
}

impl Policy {
    /// ECR's own constraints on a policy document.
    pub fn validate(&self) -> Result<(), String> {
        let mut prios = HashSet::new();
        for r in &self.rules {
            let p = r.rule_priority;
            if !prios.insert(p) {
                return Err(format!("rulePriority {p} is used twice"));
            }
            let s = &r.selection;
            let lists = !s.tag_prefix_list.is_empty() as u8 + !s.tag_pattern_list.is_empty() as u8;
            match s.tag_status {
                TagStatus::Tagged if lists != 1 => {
                    return Err(format!(
                        "rule {p}: tagStatus \"tagged\" needs exactly one of tagPrefixList or tagPatternList"
                    ))
                }
                TagStatus::Untagged | TagStatus::Any if lists != 0 => {
                    return Err(format!("rule {p}: tag lists are only allowed with tagStatus \"tagged\""))
                }
                _ => {}
            }
            match (s.count_type, s.count_unit) {
                (CountType::ImageCountMoreThan, Some(_)) => {
                    return Err(format!("rule {p}: imageCountMoreThan takes no countUnit"))
                }
                (CountType::SinceImagePushed | CountType::SinceImagePulled, None) => {
                    return Err(format!("rule {p}: {:?} needs countUnit \"days\"", s.count_type))
                }
                _ => {}
            }
            if s.count_number == 0 && s.count_type != CountType::ImageCountMoreThan {
                return Err(format!("rule {p}: countNumber must be at least 1"));
            }
        }
        let max = self.rules.iter().map(|r| r.rule_priority).max();
        if let Some(any) = self.rules.iter().find(|r| r.selection.tag_status == TagStatus::Any) {
            if Some(any.rule_priority) != max {
                return Err("a rule with tagStatus \"any\" must have the highest rulePriority".into());
            }
        }
        Ok(())
    }
}

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
