//! The storage conformance suite, run against every backend.
//!
//! The tests themselves live in `conformance` and know only the `Store` trait. A backend joins by
//! giving two functions (open a fresh empty store; open one with a given log cap) to
//! `conformance_suite!`, which makes one `#[tokio::test]` per conformance test. Adding a test
//! means writing it in `conformance` and naming it once in the list below.
//!
//! Both backends run it: `sqlite` on a temporary file, `postgres` on a fresh database of a real
//! PostgreSQL server this process starts (`muster_test_support::PostgresCluster`).
//!
//! Beside it: `blobs` tests the artifact stores, `sqlite_schema` the SQLite migrations,
//! `postgres_backend` what only PostgreSQL promises (several coordinators on one database, outages),
//! `postgres_tls` TLS to the database.

#![allow(
    unreachable_pub,
    reason = "the conformance functions are `pub` on purpose: they are the interface every backend instantiates"
)]

mod blobs;
mod conformance;
mod postgres_backend;
mod postgres_tls;
mod sqlite_schema;

/// Instantiate every conformance test for one backend.
///
/// `open` is an async fn returning `anyhow::Result<conformance::OpenedStore>`;
/// `open_with_log_cap` the same taking the log cap in bytes.
macro_rules! conformance_suite {
    (open: $open:path, open_with_log_cap: $open_with_log_cap:path $(,)?) => {
        conformance_suite!(@store_tests $open;
            // claims
            concurrent_claimers_claim_every_job_exactly_once,
            claims_take_the_lowest_priority_number_first_then_the_oldest,
            claims_order_by_priority_across_kinds,
            claims_respect_max_jobs,
            a_submit_handed_off_to_a_waiting_runner_is_leased_to_it_at_once,
            claims_only_take_the_runners_kinds,
            claims_match_labels_tags_and_resources,
            registration_labels_count_for_matching_and_cannot_be_overridden,
            jobs_scheduled_for_later_are_claimed_only_once_due,
            jobs_anyone_can_take_are_not_hidden_behind_jobs_nobody_can_take,
            claims_by_unknown_or_deleted_runners_are_refused,
            a_claim_records_the_lease_attempt_and_what_the_runner_declared,
            claims_arriving_together_are_each_answered_as_their_own,
            a_claim_naming_a_kind_twice_takes_each_job_once,
            // fencing
            calls_by_another_runner_are_refused_and_change_nothing,
            calls_with_a_stale_or_future_epoch_are_refused_and_change_nothing,
            after_a_reclaim_by_another_runner_the_old_holder_is_refused,
            calls_on_unleased_jobs_are_refused,
            calls_on_unknown_jobs_are_not_found,
            // reaping
            an_expired_lease_returns_the_job_to_pending_after_backoff,
            a_lease_renewed_by_heartbeats_is_not_reaped,
            a_job_held_for_many_leases_is_reaped_only_after_its_last_renewal_lapses,
            the_last_attempt_lost_to_lease_expiry_fails_the_job,
            an_attempt_past_its_timeout_is_timed_out,
            reap_applies_each_deadline_once,
            reap_handles_at_most_its_limit_per_call,
            reap_leaves_pending_and_finished_jobs_alone,
            // retention
            finished_jobs_past_the_cutoff_are_deleted_with_their_logs_and_dags,
            pruning_walks_in_bounded_steps_and_keeps_jobs_retried_meanwhile,
            // retries
            a_retryable_failure_waits_out_a_doubling_backoff_until_attempts_run_out,
            a_failure_that_is_not_retryable_fails_the_job_at_once,
            retry_is_allowed_only_from_failed_or_cancelled,
            retry_of_failed_and_cancelled_jobs_requeues_them_with_growing_epochs,
            // cancel
            cancel_of_a_pending_job_cancels_it_at_once,
            cancel_of_a_claimed_job_asks_the_runner_to_stop_and_its_failure_ends_it_cancelled,
            a_cancel_the_runner_never_confirms_ends_when_the_grace_passes,
            a_cancelling_job_whose_attempt_times_out_ends_cancelled_not_retried,
            completing_a_cancelling_job_completes_it,
            cancel_of_a_finished_job_is_refused,
            a_runner_reporting_reason_cancelled_ends_the_job_without_a_retry,
            cancels_racing_claims_leave_every_job_either_claimed_or_cancelled,
            // logs
            log_entries_resent_with_their_seq_are_stored_once,
            next_seq_starts_at_zero_and_read_logs_pages_by_after_seq,
            next_seq_never_passes_what_is_stored_however_far_the_cursor,
            log_positions_follow_appends_and_the_end_of_a_job_and_skip_unknown_jobs,
            log_search_finds_text_and_levels_within_its_window_and_never_passes_the_end,
            // listing
            list_jobs_is_newest_first_and_cursors_visit_every_job_once,
            list_jobs_cursors_stay_stable_while_new_jobs_arrive,
            list_jobs_filters_by_state_kind_and_runner,
            lists_of_failed_cancelled_and_leased_jobs_follow_every_change_of_state,
            cursors_the_store_never_gave_out_are_rejected,
            list_runners_is_newest_first_and_cursors_visit_every_runner_once,
            // runners
            runners_are_created_read_listed_and_deleted,
            deleting_a_runner_releases_the_jobs_it_holds,
            runner_heartbeat_records_the_runner_and_names_the_jobs_to_stop,
            a_draining_runner_claims_nothing_until_it_is_active_again,
            // batches
            complete_jobs_answers_each_item_in_order_and_commits_only_the_valid_ones,
            single_completions_arriving_together_are_each_answered_as_their_own,
            an_empty_completion_batch_answers_nothing,
            // artifacts
            inputs_are_stored_with_the_job_in_the_order_given,
            recorded_outputs_merge_by_name_and_start_the_job,
            complete_records_outputs_in_the_same_commit,
            outputs_are_cleared_when_the_job_is_claimed_again,
            a_job_holds_a_bounded_number_of_outputs_and_a_refusal_changes_nothing,
            named_artifacts_are_every_jobs_inputs_and_outputs_until_the_job_is_deleted,
            // artifact records (upload quotas)
            artifact_usage_counts_records_by_runner_and_in_total,
            artifacts_are_granted_to_organizations_and_readable_by_the_runners_that_need_them,
            a_taken_artifact_record_is_no_longer_counted_and_can_be_put_back,
            recording_an_artifact_again_charges_only_the_new_record,
            artifact_records_written_at_once_are_each_counted_once,
            a_deleted_runners_artifacts_stay_counted_until_collected,
            // submission, activity, depths, signal
            a_submitted_job_is_stored_exactly_as_given,
            a_submitted_batch_is_stored_all_or_nothing,
            submitting_an_idempotency_key_again_returns_the_first_job,
            progress_and_heartbeats_start_the_job_and_record_progress,
            complete_stores_the_result_once,
            read_dag_returns_the_last_synced_dag,
            an_activity_records_all_it_holds_in_one_commit_or_nothing,
            queue_depths_count_jobs_by_kind_and_state,
            outcome_counts_add_up_by_minute_and_outcome_and_old_minutes_are_forgotten,
            // workloads
            a_workload_is_recorded_once_exactly_as_given_for_a_live_runner,
            reports_move_a_workload_forward_and_keep_a_history_of_its_statuses,
            reports_sent_at_once_change_the_status_once,
            workloads_are_listed_newest_first_by_thread_runner_organization_and_status,
            a_deleted_workload_is_gone_with_its_history,
            deleting_a_runner_fails_its_unfinished_workloads_and_leaves_the_rest,
            the_pending_signal_moves_whenever_jobs_may_have_become_claimable,
            ping_answers,
        );
        // Runner identity (key allowlist, audit log), in a module of its own so that
        // `cargo test identity` runs just these.
        mod identity {
            use super::*;

            conformance_suite!(@store_tests $open;
                an_added_runner_key_reads_back_and_is_audited,
                adding_a_fingerprint_again_changes_nothing_and_records_nothing,
                runner_keys_list_oldest_first_across_pages,
                a_removed_runner_key_is_gone_and_audited_once,
                the_audit_log_lists_newest_first_by_action_a_page_at_a_time,
                audit_detail_round_trips_as_json,
                a_key_and_its_audit_entry_are_committed_together,
            );
        }
        // Runners registering by key, in a module of its own so that `cargo test enrollment`
        // runs just these.
        mod enrollment {
            use super::*;

            conformance_suite!(@store_tests $open;
                a_key_registration_is_an_upsert_that_rotates_the_token_with_an_overlap,
                approving_enrolls_the_runner_and_allows_its_key_in_one_commit,
                removing_a_key_revokes_its_runner_and_releases_its_leases_in_one_commit,
            );
        }
        // Result signatures stored with results, in a module of its own so that
        // `cargo test result_signature` runs just these.
        mod result_signatures {
            use super::*;

            conformance_suite!(@store_tests $open;
                a_result_signature_is_stored_with_its_result_and_an_unsigned_result_reads_back_null,
                the_kinds_of_held_jobs_are_read_for_their_runner_only_while_it_holds_them,
            );
        }
        // Organizations and user tokens, in a module of their own so that `cargo test
        // organizations` runs just these.
        mod organizations {
            use super::*;

            conformance_suite!(@store_tests $open;
                the_default_organization_is_there_and_organizations_list_oldest_first,
                an_organization_is_deleted_only_when_nothing_is_left_in_it,
                user_tokens_are_found_by_hash_listed_by_organization_touched_and_revoked,
                a_runner_claims_its_organizations_jobs_and_a_shared_one_only_those_that_allow_it,
                an_idempotency_key_names_one_job_per_organization,
                job_counts_are_told_by_organization_whether_or_not_it_shares_runners,
                sessions_are_found_by_hash_ended_once_and_gone_with_their_token,
            );
        }
        // The attempt history, in a module of its own so that `cargo test attempts` runs just
        // these.
        mod attempts {
            use super::*;

            conformance_suite!(@store_tests $open;
                attempts_that_end_without_completing_are_kept_and_a_completed_one_stays_in_the_job,
                a_cancelled_attempt_a_released_one_and_a_retried_job_keep_their_attempts,
            );
        }
        // Job kinds' result rules, in a module of its own so that `cargo test kinds` runs just
        // these.
        mod kinds {
            use super::*;

            conformance_suite!(@store_tests $open;
                kind_settings_put_then_get_round_trip,
                kind_settings_put_again_replaces_and_audits_each_time,
                kind_settings_list_by_kind_in_byte_order_across_pages,
                deleted_kind_settings_are_gone_and_audited_once,
                kind_settings_without_a_schema_round_trip,
            );
        }
        conformance_suite!(@factory_tests $open_with_log_cap;
            entries_past_the_log_cap_are_dropped_after_one_truncation_notice,
            sequence_numbers_sent_out_of_order_cannot_get_past_the_log_cap,
            each_log_slot_is_stored_and_counted_once_whether_named_twice_in_a_call_or_filled_late,
        );
    };
    (@store_tests $open:path; $($test:ident),* $(,)?) => {
        $(
            // Several worker threads, so tasks a test spawns really run in parallel.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() -> anyhow::Result<()> {
                let opened = $open().await?;
                let outcome = crate::conformance::$test(std::sync::Arc::clone(&opened.store)).await;
                drop(opened);
                outcome
            }
        )*
    };
    (@factory_tests $open_with_log_cap:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() -> anyhow::Result<()> {
                crate::conformance::$test($open_with_log_cap).await
            }
        )*
    };
}

mod sqlite {
    use crate::conformance::OpenedStore;

    async fn open() -> anyhow::Result<OpenedStore> {
        let (directory, store) = muster_test_support::temp_sqlite_store()?;
        Ok(OpenedStore::new(store, directory))
    }

    async fn open_with_log_cap(log_cap_bytes: u64) -> anyhow::Result<OpenedStore> {
        let (directory, store) =
            muster_test_support::temp_sqlite_store_with_log_cap(log_cap_bytes)?;
        Ok(OpenedStore::new(store, directory))
    }

    conformance_suite!(open: open, open_with_log_cap: open_with_log_cap);
}

mod postgres {
    use crate::conformance::OpenedStore;

    async fn open() -> anyhow::Result<OpenedStore> {
        let (database, store) = muster_test_support::temp_postgres_store().await?;
        Ok(OpenedStore::new(store, database))
    }

    async fn open_with_log_cap(log_cap_bytes: u64) -> anyhow::Result<OpenedStore> {
        let (database, store) =
            muster_test_support::temp_postgres_store_with_log_cap(log_cap_bytes).await?;
        Ok(OpenedStore::new(store, database))
    }

    conformance_suite!(open: open, open_with_log_cap: open_with_log_cap);
}
