//! ECR lifecycle policy documents: ECR's own JSON (`rules[].rulePriority`,
//! `selection.tagStatus`, `tagPrefixList`/`tagPatternList`, `countType`, `countUnit`,
//! `countNumber`, `action.type = "expire"`), parsed and checked against ECR's constraints.
//!
//! A leaf: the configuration reads policies (`[[upstream.repository]] lifecycle_policy`)
//! and `core::lifecycle` evaluates them, and neither may import the other.

use crate::pattern::Pattern;
use serde::Deserialize;
use std::collections::HashSet;

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
