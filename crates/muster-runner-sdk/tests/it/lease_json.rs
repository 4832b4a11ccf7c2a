//! `LeaseEnvelope` and `TaskSpec` read and write the seed contract's JSON.

use anyhow::Result;
use chrono::{TimeZone, Utc};
use muster_runner_sdk::testing::Harness;
use muster_runner_sdk::{LeaseEnvelope, TaskSpec};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

const TASK_ID: &str = "0195f3a2-7c1e-7b8a-9d4e-2f6a8c0b1d3e";
const JOB_ID: &str = "0195f3a2-7c1e-7b8a-9d4e-2f6a8c0b1d3f";
const DOMAIN_ID: &str = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";

#[test]
fn a_lease_with_only_the_required_fields_gets_defaults_everywhere_else() -> Result<()> {
    let lease: LeaseEnvelope =
        serde_json::from_value(json!({ "task": { "id": TASK_ID, "capability": "x" } }))?;

    assert_eq!(lease.task.id, Uuid::parse_str(TASK_ID)?);
    assert_eq!(lease.task.capability, "x");
    // The harness's lease has every optional field at its default and a fresh id.
    let mut expected = Harness::lease_for("x", std::iter::empty::<String>());
    expected.task.id = lease.task.id;
    assert_eq!(lease, expected);

    let written = serde_json::to_string(&lease)?;
    let read_back: LeaseEnvelope = serde_json::from_str(&written)?;
    assert_eq!(read_back, lease);
    Ok(())
}

fn lease_with_every_field_set() -> Value {
    json!({
        "access_token": "token-1",
        "access_token_expires_at": "2026-01-13T10:30:00Z",
        "lease_expires_at": "2026-01-13T10:05:00Z",
        "cancel": true,
        "status": "leased",
        "domain_id": DOMAIN_ID,
        "domain_server_url": "https://domain.example.test/base/",
        "task": {
            "id": TASK_ID,
            "job_id": JOB_ID,
            "capability": "/reconstruction/legacy/v1",
            "capability_filters": { "gpu": true },
            "inputs_cids": ["cid-a", "cid-b"],
            "outputs_prefix": "jobs/42/",
            "label": "refine",
            "stage": "second",
            "meta": { "quality": "high", "passes": 3 },
            "priority": -5,
            "attempts": 2,
            "max_attempts": 4,
            "deps_remaining": 0,
            "status": "running",
            "mode": "batch",
            "organization_filter": "org-7",
            "billing_units": "gpu_seconds",
            "estimated_credit_cost": "12.50",
            "debited_amount": "11.75",
            "debited_at": "2026-01-13T11:00:00Z",
            "lease_expires_at": "2026-01-13T10:05:00Z"
        }
    })
}

#[test]
fn a_lease_with_every_field_set_reads_each_field_and_writes_the_same_json() -> Result<()> {
    let original = lease_with_every_field_set();
    let lease: LeaseEnvelope = serde_json::from_value(original.clone())?;

    let lease_expiry = Utc.with_ymd_and_hms(2026, 1, 13, 10, 5, 0).single();
    assert_eq!(lease.access_token.as_deref(), Some("token-1"));
    assert_eq!(
        lease.access_token_expires_at,
        Utc.with_ymd_and_hms(2026, 1, 13, 10, 30, 0).single()
    );
    assert_eq!(lease.lease_expires_at, lease_expiry);
    assert!(lease.cancel);
    assert_eq!(lease.status.as_deref(), Some("leased"));
    assert_eq!(lease.domain_id, Some(Uuid::parse_str(DOMAIN_ID)?));
    assert_eq!(
        lease.domain_server_url,
        Some(Url::parse("https://domain.example.test/base/")?)
    );

    let task: &TaskSpec = &lease.task;
    assert_eq!(task.id, Uuid::parse_str(TASK_ID)?);
    assert_eq!(task.job_id, Some(Uuid::parse_str(JOB_ID)?));
    assert_eq!(task.capability, "/reconstruction/legacy/v1");
    assert_eq!(task.capability_filters, json!({ "gpu": true }));
    assert_eq!(task.inputs_cids, ["cid-a", "cid-b"]);
    assert_eq!(task.outputs_prefix.as_deref(), Some("jobs/42/"));
    assert_eq!(task.label.as_deref(), Some("refine"));
    assert_eq!(task.stage.as_deref(), Some("second"));
    assert_eq!(task.meta, json!({ "quality": "high", "passes": 3 }));
    assert_eq!(task.priority, Some(-5));
    assert_eq!(task.attempts, Some(2));
    assert_eq!(task.max_attempts, Some(4));
    assert_eq!(task.deps_remaining, Some(0));
    assert_eq!(task.status.as_deref(), Some("running"));
    assert_eq!(task.mode.as_deref(), Some("batch"));
    assert_eq!(task.organization_filter.as_deref(), Some("org-7"));
    assert_eq!(task.billing_units.as_deref(), Some("gpu_seconds"));
    assert_eq!(task.estimated_credit_cost.as_deref(), Some("12.50"));
    assert_eq!(task.debited_amount.as_deref(), Some("11.75"));
    assert_eq!(
        task.debited_at,
        Utc.with_ymd_and_hms(2026, 1, 13, 11, 0, 0).single()
    );
    assert_eq!(task.lease_expires_at, lease_expiry);

    assert_eq!(serde_json::to_value(&lease)?, original);
    let read_back: LeaseEnvelope = serde_json::from_str(&serde_json::to_string(&lease)?)?;
    assert_eq!(read_back, lease);
    Ok(())
}

#[test]
fn a_task_spec_round_trips_on_its_own() -> Result<()> {
    let task_json = lease_with_every_field_set()["task"].clone();
    let task: TaskSpec = serde_json::from_value(task_json.clone())?;
    assert_eq!(serde_json::to_value(&task)?, task_json);

    let minimal: TaskSpec = serde_json::from_value(json!({ "id": TASK_ID, "capability": "y" }))?;
    assert!(minimal.inputs_cids.is_empty());
    assert_eq!(minimal.meta, Value::Null);
    assert_eq!(minimal.capability_filters, Value::Null);
    assert_eq!(
        serde_json::from_value::<TaskSpec>(serde_json::to_value(&minimal)?)?,
        minimal
    );
    Ok(())
}

#[test]
fn the_required_fields_are_required() {
    let missing = [
        ("task", json!({ "cancel": false })),
        ("task.id", json!({ "task": { "capability": "x" } })),
        ("task.capability", json!({ "task": { "id": TASK_ID } })),
    ];
    for (field, lease_json) in missing {
        let error = serde_json::from_value::<LeaseEnvelope>(lease_json)
            .err()
            .unwrap_or_else(|| panic!("a lease without {field} must be rejected"));
        let leaf = field.rsplit('.').next().unwrap_or(field);
        assert!(
            error
                .to_string()
                .contains(&format!("missing field `{leaf}`")),
            "{field}: {error}"
        );
    }
}

#[test]
fn malformed_typed_fields_are_rejected() {
    let bad_values = [
        json!({ "task": { "id": "not-a-uuid", "capability": "x" } }),
        json!({ "lease_expires_at": "yesterday", "task": { "id": TASK_ID, "capability": "x" } }),
        json!({ "domain_server_url": "not a url", "task": { "id": TASK_ID, "capability": "x" } }),
        json!({ "cancel": "yes", "task": { "id": TASK_ID, "capability": "x" } }),
    ];
    for lease_json in bad_values {
        assert!(
            serde_json::from_value::<LeaseEnvelope>(lease_json.clone()).is_err(),
            "{lease_json} must be rejected"
        );
    }
}
