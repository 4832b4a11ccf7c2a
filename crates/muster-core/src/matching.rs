use std::collections::BTreeMap;

use crate::job::spec_error;
use crate::text::{TextRule, check_field, check_key};
use crate::{JobSpecError, RunnerStatus, Timestamp};

/// Labels, tags or resources one job requires or one runner offers, at most.
pub const MAX_CAPABILITY_ENTRIES: usize = 64;
/// Longest label key or value, tag or resource name, in characters.
pub const MAX_CAPABILITY_NAME_LEN: usize = 128;

/// Labels, tags and resources: what a job requires, or what a runner offers.
///
/// A runner meets a requirement when it has every label with the same value, every tag, and at
/// least each resource amount.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Capabilities {
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub resources: BTreeMap<String, f64>,
}

impl Capabilities {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.tags.is_empty() && self.resources.is_empty()
    }

    /// Whether `offer` satisfies every requirement in `self`.
    pub fn are_met_by(&self, offer: &Capabilities) -> bool {
        let labels_match = self
            .labels
            .iter()
            .all(|(key, value)| offer.labels.get(key) == Some(value));
        let tags_present = self.tags.iter().all(|tag| offer.tags.contains(tag));
        let resources_suffice = self.resources.iter().all(|(name, needed)| {
            offer
                .resources
                .get(name)
                .is_some_and(|available| available >= needed)
        });
        labels_match && tags_present && resources_suffice
    }

    /// The first of what `self` (a claim's declaration) offers beyond `bound` (what the runner
    /// may offer), named as the field it stands in (`labels.gpu`, `tags[q8_0]`,
    /// `resources.vram_gb`); `None` when the declaration only narrows `bound`. A declaration is
    /// within `bound` exactly when `bound` meets it taken as requirements.
    pub fn first_beyond(&self, bound: &Capabilities) -> Option<String> {
        if let Some((key, value)) = self
            .labels
            .iter()
            .find(|(key, value)| bound.labels.get(*key) != Some(*value))
        {
            return Some(match bound.labels.get(key) {
                Some(registered) => format!(
                    "labels.{key} is '{value}' here but '{registered}' in the runner's registration"
                ),
                None => format!("labels.{key} is not in the runner's registration"),
            });
        }
        if let Some(tag) = self.tags.iter().find(|tag| !bound.tags.contains(tag)) {
            return Some(format!("tags: '{tag}' is not in the runner's registration"));
        }
        self.resources.iter().find_map(|(name, amount)| {
            match bound.resources.get(name) {
                Some(registered) if registered >= amount => None,
                Some(registered) => Some(format!(
                    "resources.{name} is {amount} here but {registered} in the runner's registration"
                )),
                None => Some(format!("resources.{name} is not in the runner's registration")),
            }
        })
    }

    /// Reject shapes no sane caller sends: too many entries, empty or huge names, control
    /// characters, negative or non-finite amounts. `prefix` names where the capabilities stand
    /// in the request (`requirements`, or `""` when labels, tags and resources are top-level
    /// fields of the body) and starts every field name in the error.
    pub fn validate(&self, prefix: &str) -> Result<(), JobSpecError> {
        let field = |part: &str| {
            if prefix.is_empty() {
                part.to_string()
            } else {
                format!("{prefix}.{part}")
            }
        };
        let too_many = |part: &str| {
            spec_error(
                field(part),
                format!("at most {MAX_CAPABILITY_ENTRIES} entries"),
            )
        };
        if self.labels.len() > MAX_CAPABILITY_ENTRIES {
            return Err(too_many("labels"));
        }
        if self.tags.len() > MAX_CAPABILITY_ENTRIES {
            return Err(too_many("tags"));
        }
        if self.resources.len() > MAX_CAPABILITY_ENTRIES {
            return Err(too_many("resources"));
        }
        for (key, value) in &self.labels {
            check_key(
                &field("labels"),
                key,
                TextRule::key(MAX_CAPABILITY_NAME_LEN),
            )?;
            check_field(
                &field(&format!("labels.{key}")),
                value,
                TextRule::optional(MAX_CAPABILITY_NAME_LEN),
            )?;
        }
        for (index, tag) in self.tags.iter().enumerate() {
            check_field(
                &field(&format!("tags[{index}]")),
                tag,
                TextRule::key(MAX_CAPABILITY_NAME_LEN),
            )?;
        }
        for (name, amount) in &self.resources {
            check_key(
                &field("resources"),
                name,
                TextRule::key(MAX_CAPABILITY_NAME_LEN),
            )?;
            if !amount.is_finite() || *amount < 0.0 {
                return Err(spec_error(
                    field(&format!("resources.{name}")),
                    format!("must be a finite number at least 0, got {amount}"),
                ));
            }
        }
        Ok(())
    }
}

/// Why a pending job is not being taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingReason {
    /// `run_after` is in the future, including the backoff before a retry.
    Scheduled,
    /// No runner seen recently hosts this job's kind.
    NoRunnerForKind,
    /// Runners for the kind are up, but none meets the requirements.
    RequirementsUnmet,
}

impl PendingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PendingReason::Scheduled => "scheduled",
            PendingReason::NoRunnerForKind => "no_runner_for_kind",
            PendingReason::RequirementsUnmet => "requirements_unmet",
        }
    }
}

/// What the coordinator last heard from a runner, for explaining pending jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSnapshot {
    pub status: RunnerStatus,
    pub kinds: Vec<String>,
    pub offer: Capabilities,
    /// `None`: cluster-scoped.
    pub organization_id: Option<String>,
}

impl RunnerSnapshot {
    /// Whether this runner may take a job of `organization` at all, whatever its kind.
    pub fn may_take_from(&self, organization: &crate::JobOrganization) -> bool {
        crate::organization::runner_may_take(
            self.organization_id.as_deref(),
            &organization.id,
            organization.shared_runners,
        )
    }
}

/// Why a pending job waits, or `None` when some online runner could take it and it is only
/// waiting for capacity.
pub fn pending_reason(
    kind: &str,
    requirements: &Capabilities,
    run_after: Timestamp,
    now: Timestamp,
    runners: &[RunnerSnapshot],
) -> Option<PendingReason> {
    if run_after > now {
        return Some(PendingReason::Scheduled);
    }
    let mut for_kind = runners
        .iter()
        .filter(|runner| runner.status == RunnerStatus::Online)
        .filter(|runner| runner.kinds.iter().any(|hosted| hosted == kind))
        .peekable();
    if for_kind.peek().is_none() {
        return Some(PendingReason::NoRunnerForKind);
    }
    if for_kind.any(|runner| requirements.are_met_by(&runner.offer)) {
        None
    } else {
        Some(PendingReason::RequirementsUnmet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(labels: &[(&str, &str)], tags: &[&str], resources: &[(&str, f64)]) -> Capabilities {
        Capabilities {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: tags.iter().map(|tag| tag.to_string()).collect(),
            resources: resources.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn a_declaration_may_narrow_what_is_bound_but_never_widen_it() {
        let bound = caps(
            &[("gpu", "a100")],
            &["q4_k_m", "q8_0"],
            &[("vram_gb", 40.0)],
        );
        let within = [
            caps(&[], &[], &[]),
            caps(&[("gpu", "a100")], &["q8_0"], &[("vram_gb", 40.0)]),
            caps(&[], &["q4_k_m"], &[("vram_gb", 0.5)]),
        ];
        for declaration in within {
            assert_eq!(declaration.first_beyond(&bound), None, "{declaration:?}");
            assert!(
                declaration.are_met_by(&bound),
                "the same rule, read the other way"
            );
        }
        let beyond = [
            (
                caps(&[("gpu", "h100")], &[], &[]),
                "labels.gpu is 'h100' here but 'a100'",
            ),
            (caps(&[("zone", "x")], &[], &[]), "labels.zone is not in"),
            (caps(&[], &["fp16"], &[]), "'fp16' is not in"),
            (
                caps(&[], &[], &[("vram_gb", 80.0)]),
                "resources.vram_gb is 80 here but 40",
            ),
            (caps(&[], &[], &[("cpus", 1.0)]), "resources.cpus is not in"),
        ];
        for (declaration, named) in beyond {
            let problem = declaration
                .first_beyond(&bound)
                .expect("beyond the registration");
            assert!(problem.contains(named), "{problem}");
            assert!(!declaration.are_met_by(&bound));
        }
    }

    #[test]
    fn matching_table() {
        let offer = caps(
            &[("gpu", "a100"), ("zone", "eu")],
            &["q4_k_m", "q8_0"],
            &[("vram_gb", 40.0), ("cpus", 8.0)],
        );
        let cases = [
            (caps(&[], &[], &[]), true),
            (caps(&[("gpu", "a100")], &[], &[]), true),
            (caps(&[("gpu", "h100")], &[], &[]), false),
            (caps(&[("arch", "arm")], &[], &[]), false),
            (caps(&[], &["q4_k_m"], &[]), true),
            (caps(&[], &["q4_k_m", "q8_0"], &[]), true),
            (caps(&[], &["fp16"], &[]), false),
            (caps(&[], &[], &[("vram_gb", 40.0)]), true),
            (caps(&[], &[], &[("vram_gb", 40.5)]), false),
            (caps(&[], &[], &[("memory_gb", 1.0)]), false),
            (caps(&[("gpu", "a100")], &["q8_0"], &[("cpus", 4.0)]), true),
        ];
        for (requirements, expected) in cases {
            assert_eq!(
                requirements.are_met_by(&offer),
                expected,
                "{requirements:?}"
            );
        }
    }

    #[test]
    fn pending_reasons() {
        let now = Timestamp(10_000);
        let gpu_runner = RunnerSnapshot {
            status: RunnerStatus::Online,
            kinds: vec!["train".into()],
            offer: caps(&[("gpu", "a100")], &[], &[]),
            organization_id: None,
        };
        let offline = RunnerSnapshot {
            status: RunnerStatus::Offline,
            kinds: vec!["exec".into()],
            offer: Capabilities::default(),
            organization_id: None,
        };
        let none = Capabilities::default();
        let needs_h100 = caps(&[("gpu", "h100")], &[], &[]);
        let runners = [gpu_runner, offline];
        assert_eq!(
            pending_reason("train", &none, Timestamp(20_000), now, &runners),
            Some(PendingReason::Scheduled)
        );
        assert_eq!(
            pending_reason("exec", &none, now, now, &runners),
            Some(PendingReason::NoRunnerForKind)
        );
        assert_eq!(
            pending_reason("train", &needs_h100, now, now, &runners),
            Some(PendingReason::RequirementsUnmet)
        );
        assert_eq!(pending_reason("train", &none, now, now, &runners), None);
    }

    #[test]
    fn validation_rejects_negative_and_non_finite_resources() {
        assert!(
            caps(&[], &[], &[("cpus", f64::NAN)])
                .validate("requirements")
                .is_err()
        );
        assert!(
            caps(&[], &[], &[("cpus", -2.0)])
                .validate("requirements")
                .is_err()
        );
        assert!(
            caps(&[], &[], &[("cpus", 2.0)])
                .validate("requirements")
                .is_ok()
        );
    }

    #[test]
    fn validation_refuses_control_characters_and_empty_names_naming_the_field() {
        let cases = [
            (
                caps(&[("", "a100")], &[], &[]),
                "requirements.labels",
                "empty",
            ),
            (
                caps(&[("g\0pu", "a100")], &[], &[]),
                "requirements.labels",
                "U+0000",
            ),
            (
                caps(&[("gpu", "a\u{7}")], &[], &[]),
                "requirements.labels.gpu",
                "U+0007",
            ),
            (
                caps(&[], &["ok", "fine", "t\nx"], &[]),
                "requirements.tags[2]",
                "U+000A",
            ),
            (caps(&[], &["ok", ""], &[]), "requirements.tags[1]", "empty"),
            (
                caps(&[], &[], &[("", 1.0)]),
                "requirements.resources",
                "empty",
            ),
            (
                caps(&[], &[], &[("vram\u{9f}", 1.0)]),
                "requirements.resources",
                "U+009F",
            ),
        ];
        for (capabilities, field, problem) in cases {
            let error = capabilities.validate("requirements").expect_err("refused");
            assert_eq!(error.field, field, "{error}");
            assert!(error.problem.contains(problem), "{error}");
        }
        // Top-level fields (a claim's labels, tags and resources) have no prefix.
        let error = caps(&[], &["a", "b", "\0"], &[])
            .validate("")
            .expect_err("NUL tag");
        assert_eq!(error.field, "tags[2]");
        // An empty label value is a value.
        assert_eq!(
            caps(&[("gpu", "")], &[], &[]).validate("requirements"),
            Ok(())
        );
    }
}
