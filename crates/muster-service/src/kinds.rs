//! Result rules per job kind: a JSON Schema (draft 2020-12) every result must meet, and whether
//! results must be signed. Set by operators (`PUT /api/v1/kinds/{kind}`), checked here before a
//! completion reaches the store, so a refused result leaves the job as it was, still leased to
//! its runner, which may fix the result and complete again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_core::{Action, ErrorCode, JobId, Principal, RunnerId, authorize};
use muster_store::{KindSettingsRecord, NewAuditEntry, Page, PageRequest};
use serde_json::{Value, json};

use crate::jobs::page_request;
use crate::{Coordinator, ServiceError};

/// How long this coordinator trusts the rules it read; a change made here is seen at once, one
/// made by another coordinator sharing the database within this long.
const KIND_RULES_MAX_AGE: Duration = Duration::from_secs(5);

/// Audit actions of kind settings.
pub mod audit_actions {
    pub const KIND_SETTINGS_SET: &str = "kind.settings_set";
    pub const KIND_SETTINGS_DELETED: &str = "kind.settings_deleted";
}

pub use muster_store::KindSettingsRecord as KindSettings;

/// New rules for a kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindSettingsUpdate {
    pub result_schema: Option<Value>,
    pub require_signed_results: bool,
}

/// One kind's rules, ready to check results with.
struct CompiledRules {
    schema: Option<jsonschema::Validator>,
    require_signed_results: bool,
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("a JSON Schema is an object or a boolean".to_string());
    }
    jsonschema::draft202012::new(schema).map_err(|error| error.to_string())
}

impl CompiledRules {
    fn from_record(record: &KindSettingsRecord) -> CompiledRules {
        let schema = match &record.result_schema {
            Some(schema) => match compile(schema) {
                Ok(validator) => Some(validator),
                Err(error) => {
                    // Checked when set, so only a schema written by another version gets here.
                    tracing::error!(kind = %record.kind, %error, "stored result schema does not compile; results of this kind are not checked against it");
                    None
                }
            },
            None => None,
        };
        CompiledRules {
            schema,
            require_signed_results: record.require_signed_results,
        }
    }

    /// Whether `result` may complete a job of `kind`.
    fn check(&self, kind: &str, result: &Value, signed: bool) -> Result<(), ServiceError> {
        if self.require_signed_results && !signed {
            return Err(ServiceError::new(
                ErrorCode::SignatureRequired,
                format!(
                    "kind '{kind}' requires signed results: send the result in the envelope {{\"result\": ..., \"sig\": {{...}}}} signed by this runner's key"
                ),
            ));
        }
        if let Some(validator) = &self.schema
            && let Some(error) = validator.iter_errors(result).next()
        {
            let pointer = error.instance_path().to_string();
            let at = if pointer.is_empty() {
                "/ (the whole result)".to_string()
            } else {
                pointer
            };
            return Err(ServiceError::new(
                ErrorCode::ResultSchemaMismatch,
                format!(
                    "result at {at} does not meet the result_schema of kind '{kind}': {error} (schema rule {}); the job is unchanged and still yours",
                    error.schema_path()
                ),
            ));
        }
        Ok(())
    }
}

/// Each kind's compiled rules, by kind.
type RulesByKind = Arc<HashMap<String, Arc<CompiledRules>>>;

/// The rules of every kind that has some, as last read.
#[derive(Default)]
pub(crate) struct KindRules {
    cached: Mutex<Option<(Instant, RulesByKind)>>,
}

impl KindRules {
    pub(crate) fn invalidate(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = None;
        }
    }
}

fn check_kind_name(kind: &str) -> Result<(), ServiceError> {
    muster_core::check_kind("kind", kind)
        .map_err(|error| ServiceError::invalid_input(error.to_string()))
}

fn actor_of(principal: &Principal) -> String {
    crate::identity::actor_of(principal)
}

impl Coordinator {
    /// Set a kind's result rules, replacing any it had. A schema that is not a valid JSON
    /// Schema (draft 2020-12) is refused with `invalid_schema`, and nothing changes.
    pub async fn put_kind_settings(
        &self,
        principal: &Principal,
        kind: &str,
        update: KindSettingsUpdate,
    ) -> Result<KindSettings, ServiceError> {
        authorize(principal, Action::ManageKinds)?;
        check_kind_name(kind)?;
        let result_schema = update.result_schema.filter(|schema| !schema.is_null());
        if let Some(schema) = &result_schema {
            compile(schema).map_err(|error| {
                ServiceError::new(
                    ErrorCode::InvalidSchema,
                    format!("result_schema is not a valid JSON Schema (draft 2020-12): {error}"),
                )
            })?;
        }
        let now = self.clock.now();
        let audit = NewAuditEntry {
            at: now,
            actor: actor_of(principal),
            action: audit_actions::KIND_SETTINGS_SET.to_string(),
            subject: kind.to_string(),
            detail: json!({
                "has_result_schema": result_schema.is_some(),
                "require_signed_results": update.require_signed_results,
            }),
            organization_id: None,
        };
        let record = KindSettingsRecord {
            kind: kind.to_string(),
            result_schema,
            require_signed_results: update.require_signed_results,
            updated_at: now,
        };
        let stored = self.store.put_kind_settings(record, audit).await?;
        self.kind_rules.invalidate();
        Ok(stored)
    }

    /// A kind's result rules; `not_found` when it has none.
    pub async fn get_kind_settings(
        &self,
        principal: &Principal,
        kind: &str,
    ) -> Result<KindSettings, ServiceError> {
        authorize(principal, Action::ReadKinds)?;
        check_kind_name(kind)?;
        self.store.get_kind_settings(kind).await?.ok_or_else(|| {
            ServiceError::not_found(format!(
                "kind '{kind}' has no settings (set them with PUT /api/v1/kinds/{{kind}})"
            ))
        })
    }

    /// Every kind's rules, by kind name.
    pub async fn list_kind_settings(
        &self,
        principal: &Principal,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<Page<KindSettings>, ServiceError> {
        authorize(principal, Action::ReadKinds)?;
        Ok(self
            .store
            .list_kind_settings(page_request(limit, cursor)?)
            .await?)
    }

    /// Remove a kind's rules: its results are taken unchecked again.
    pub async fn delete_kind_settings(
        &self,
        principal: &Principal,
        kind: &str,
    ) -> Result<(), ServiceError> {
        authorize(principal, Action::ManageKinds)?;
        check_kind_name(kind)?;
        let audit = NewAuditEntry {
            at: self.clock.now(),
            actor: actor_of(principal),
            action: audit_actions::KIND_SETTINGS_DELETED.to_string(),
            subject: kind.to_string(),
            detail: json!({}),
            organization_id: None,
        };
        self.store.delete_kind_settings(kind, audit).await?;
        self.kind_rules.invalidate();
        Ok(())
    }

    /// The rules of every kind that has some, read again when older than
    /// [`KIND_RULES_MAX_AGE`].
    async fn kind_rules(&self) -> Result<RulesByKind, ServiceError> {
        if let Ok(cached) = self.kind_rules.cached.lock()
            && let Some((read_at, rules)) = cached.as_ref()
            && read_at.elapsed() < KIND_RULES_MAX_AGE
        {
            return Ok(Arc::clone(rules));
        }
        let mut rules = HashMap::new();
        let mut cursor = None;
        loop {
            let page = self
                .store
                .list_kind_settings(PageRequest {
                    limit: 1000,
                    cursor,
                })
                .await?;
            for record in &page.items {
                rules.insert(
                    record.kind.clone(),
                    Arc::new(CompiledRules::from_record(record)),
                );
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let rules = Arc::new(rules);
        if let Ok(mut cached) = self.kind_rules.cached.lock() {
            *cached = Some((Instant::now(), Arc::clone(&rules)));
        }
        Ok(rules)
    }

    /// Check `result` against the rules of `job`'s kind, before the completion is stored, as
    /// [`Coordinator::check_results_rules`] does for one.
    pub(crate) async fn check_result_rules(
        &self,
        runner: RunnerId,
        job: JobId,
        result: &Value,
        signed: bool,
    ) -> Result<(), ServiceError> {
        let mut outcomes = self
            .check_results_rules(runner, &[(job, result, signed)])
            .await?;
        outcomes.pop().unwrap_or(Ok(()))
    }

    /// Check each result (of a job, whether it came signed) against the rules of its job's
    /// kind, before the completions are stored; answers each one's outcome in order. Reads the
    /// jobs' kinds (in one read) only when some kind has rules. A job this runner does not hold
    /// is left to the store to refuse (`lease_lost`), so its rules are never shown to another
    /// runner.
    pub(crate) async fn check_results_rules(
        &self,
        runner: RunnerId,
        items: &[(JobId, &Value, bool)],
    ) -> Result<Vec<Result<(), ServiceError>>, ServiceError> {
        let rules = self.kind_rules().await?;
        if rules.is_empty() || items.is_empty() {
            return Ok(items.iter().map(|_| Ok(())).collect());
        }
        let kinds = self
            .store
            .kinds_of_held_jobs(runner, items.iter().map(|(job, _, _)| *job).collect())
            .await?;
        Ok(items
            .iter()
            .map(|(job, result, signed)| {
                match kinds
                    .get(job)
                    .and_then(|kind| rules.get(kind).map(|rule| (kind, rule)))
                {
                    Some((kind, rule)) => rule.check(kind, result, *signed),
                    None => Ok(()),
                }
            })
            .collect())
    }
}
