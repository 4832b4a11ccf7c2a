//! Matching cases the unit tests in `src/matching.rs` leave out: empty offers, duplicated or
//! partly met requirements, and which runners count when explaining why a job waits.

use muster_core::{
    Capabilities, PendingReason, RunnerSnapshot, RunnerStatus, Timestamp, pending_reason,
};

fn capabilities(labels: &[(&str, &str)], tags: &[&str], resources: &[(&str, f64)]) -> Capabilities {
    Capabilities {
        labels: labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        resources: resources
            .iter()
            .map(|(name, amount)| (name.to_string(), *amount))
            .collect(),
    }
}

#[test]
fn requirements_against_offers_beyond_the_unit_table() {
    let nothing = Capabilities::default();
    let cases: Vec<(&str, Capabilities, Capabilities, bool)> = vec![
        (
            "nothing required, nothing offered",
            nothing.clone(),
            nothing.clone(),
            true,
        ),
        (
            "a label required, nothing offered",
            capabilities(&[("gpu", "a100")], &[], &[]),
            nothing.clone(),
            false,
        ),
        (
            "a tag required, nothing offered",
            capabilities(&[], &["q8_0"], &[]),
            nothing.clone(),
            false,
        ),
        (
            "a zero resource required, resource not offered",
            capabilities(&[], &[], &[("vram_gb", 0.0)]),
            nothing.clone(),
            false,
        ),
        (
            "a zero resource required and offered as zero",
            capabilities(&[], &[], &[("vram_gb", 0.0)]),
            capabilities(&[], &[], &[("vram_gb", 0.0)]),
            true,
        ),
        (
            "label values compare exactly, case included",
            capabilities(&[("gpu", "A100")], &[], &[]),
            capabilities(&[("gpu", "a100")], &[], &[]),
            false,
        ),
        (
            "a label name is not a tag",
            capabilities(&[], &["gpu"], &[]),
            capabilities(&[("gpu", "a100")], &[], &[]),
            false,
        ),
        (
            "tags: the offer is a strict superset",
            capabilities(&[], &["q4_k_m"], &[]),
            capabilities(&[], &["fp16", "q4_k_m", "q8_0"], &[]),
            true,
        ),
        (
            "tags: one of two missing",
            capabilities(&[], &["q4_k_m", "fp8"], &[]),
            capabilities(&[], &["q4_k_m", "q8_0"], &[]),
            false,
        ),
        (
            "tags: a requirement listed twice is met once",
            capabilities(&[], &["q8_0", "q8_0"], &[]),
            capabilities(&[], &["q8_0"], &[]),
            true,
        ),
        (
            "resources: fractional amounts compare as numbers",
            capabilities(&[], &[], &[("memory_gb", 15.5)]),
            capabilities(&[], &[], &[("memory_gb", 15.75)]),
            true,
        ),
        (
            "all three parts must hold: resources short",
            capabilities(&[("zone", "eu")], &["q8_0"], &[("cpus", 16.0)]),
            capabilities(&[("zone", "eu")], &["q8_0"], &[("cpus", 8.0)]),
            false,
        ),
        (
            "all three parts hold",
            capabilities(&[("zone", "eu")], &["q8_0"], &[("cpus", 8.0)]),
            capabilities(
                &[("zone", "eu"), ("rack", "7")],
                &["q8_0"],
                &[("cpus", 8.0), ("vram_gb", 24.0)],
            ),
            true,
        ),
    ];
    for (name, requirements, offer, expected) in cases {
        assert_eq!(requirements.are_met_by(&offer), expected, "{name}");
    }
}

fn runner(status: RunnerStatus, kinds: &[&str], offer: Capabilities) -> RunnerSnapshot {
    RunnerSnapshot {
        status,
        kinds: kinds.iter().map(|kind| kind.to_string()).collect(),
        offer,
        organization_id: None,
    }
}

/// A named case: what the job needs, when it is asked, the runners there are, the answer.
type PendingCase = (
    &'static str,
    Capabilities,
    Timestamp,
    Vec<RunnerSnapshot>,
    Option<PendingReason>,
);

#[test]
fn pending_reasons_beyond_the_unit_table() {
    let now = Timestamp(50_000);
    let none = Capabilities::default();
    let needs_gpu = capabilities(&[("gpu", "a100")], &[], &[]);
    let gpu = capabilities(&[("gpu", "a100")], &[], &[]);
    let cases: Vec<PendingCase> = vec![
        (
            "no runners at all",
            none.clone(),
            now,
            vec![],
            Some(PendingReason::NoRunnerForKind),
        ),
        (
            "scheduled wins even when nobody could take it",
            needs_gpu.clone(),
            Timestamp(50_001),
            vec![],
            Some(PendingReason::Scheduled),
        ),
        (
            "due exactly now is not scheduled",
            none.clone(),
            now,
            vec![runner(RunnerStatus::Online, &["exec"], none.clone())],
            None,
        ),
        (
            "a draining runner does not count",
            none.clone(),
            now,
            vec![runner(RunnerStatus::Draining, &["exec"], none.clone())],
            Some(PendingReason::NoRunnerForKind),
        ),
        (
            "an offline runner that would match does not count",
            needs_gpu.clone(),
            now,
            vec![
                runner(RunnerStatus::Offline, &["exec"], gpu.clone()),
                runner(RunnerStatus::Online, &["exec"], none.clone()),
            ],
            Some(PendingReason::RequirementsUnmet),
        ),
        (
            "one matching runner among several is enough",
            needs_gpu.clone(),
            now,
            vec![
                runner(RunnerStatus::Online, &["exec"], none.clone()),
                runner(RunnerStatus::Online, &["build", "exec"], gpu.clone()),
            ],
            None,
        ),
        (
            "a matching runner of another kind does not count",
            needs_gpu.clone(),
            now,
            vec![
                runner(RunnerStatus::Online, &["build"], gpu.clone()),
                runner(RunnerStatus::Online, &["exec"], none.clone()),
            ],
            Some(PendingReason::RequirementsUnmet),
        ),
    ];
    for (name, requirements, run_after, runners, expected) in cases {
        assert_eq!(
            pending_reason("exec", &requirements, run_after, now, &runners),
            expected,
            "{name}"
        );
    }
}

#[test]
fn pending_reason_names_are_the_api_names() {
    assert_eq!(PendingReason::Scheduled.as_str(), "scheduled");
    assert_eq!(
        PendingReason::NoRunnerForKind.as_str(),
        "no_runner_for_kind"
    );
    assert_eq!(
        PendingReason::RequirementsUnmet.as_str(),
        "requirements_unmet"
    );
}
