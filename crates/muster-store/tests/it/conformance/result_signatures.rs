//! Result signatures: a completion's verified signature is stored with its result and read
//! back on every path that reads the job (single, single with outputs, batch, listing); a
//! completion without one reads back null, and repeating a completion changes neither.

use std::sync::Arc;

use anyhow::{Context, ensure};
use muster_core::identity::VerifiedResultSignature;
use muster_core::{JobId, JobRecord};
use muster_store::{CompletionItem, JobFilter, Store};
use serde_json::json;

use super::{
    T0, at, call_for, claim, list_all_jobs, no_outputs, outputs, register_runner, submit_many,
};

fn signature(tag: &str) -> VerifiedResultSignature {
    VerifiedResultSignature {
        key_fingerprint: format!("sha256:{}", "ab".repeat(32)),
        sha256: format!("{:0>64}", hex_of(tag)),
        signature: format!("c2lnbmF0dXJlIG9m{tag}=="),
        signed_at: "2026-12-02T10:00:00Z".to_string(),
        signer_runner_id: format!("signer-{tag}"),
    }
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn find(jobs: &[JobRecord], id: JobId) -> anyhow::Result<&JobRecord> {
    jobs.iter()
        .find(|job| job.id == id)
        .with_context(|| format!("job {id} is listed"))
}

pub async fn a_result_signature_is_stored_with_its_result_and_an_unsigned_result_reads_back_null(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    submit_many(store, "signed", 5, T0).await?;
    let runner = register_runner(store, "signer").await?;
    let claimed = claim(store, runner, &["signed"], 5, at(1_000)).await?;
    ensure!(claimed.len() == 5, "claimed {} of 5", claimed.len());
    let [single, unsigned, with_outputs, batch_signed, batch_unsigned] =
        [0, 1, 2, 3, 4].map(|index| &claimed[index]);

    let answered = store
        .complete_job_signed(
            call_for(single, runner),
            json!({"n": 1}),
            Some(signature("single")),
            no_outputs(),
            at(2_000),
        )
        .await
        .context("a signed completion")?;
    ensure!(
        answered.result_signature == Some(signature("single")),
        "the completion's answer carries the signature, got {:?}",
        answered.result_signature
    );
    let answered = store
        .complete_job(
            call_for(unsigned, runner),
            json!({"n": 2}),
            no_outputs(),
            at(2_000),
        )
        .await
        .context("an unsigned completion")?;
    ensure!(answered.result_signature.is_none());
    let answered = store
        .complete_job_signed(
            call_for(with_outputs, runner),
            json!({"n": 3}),
            Some(signature("outputs")),
            outputs(&[("report", 3)]),
            at(2_000),
        )
        .await
        .context("a signed completion with outputs")?;
    ensure!(answered.result_signature == Some(signature("outputs")));

    let answers = store
        .complete_jobs(
            runner,
            vec![
                CompletionItem {
                    job: batch_signed.job.id,
                    epoch: Some(batch_signed.lease.epoch),
                    result: json!({"n": 4}),
                    signature: Some(signature("batch")),
                },
                CompletionItem {
                    job: batch_unsigned.job.id,
                    epoch: Some(batch_unsigned.lease.epoch),
                    result: json!({"n": 5}),
                    signature: None,
                },
            ],
            at(2_000),
        )
        .await
        .context("a batch of a signed and an unsigned completion")?;
    ensure!(
        answers.iter().all(Result::is_ok),
        "both items complete: {answers:?}"
    );

    let expected = [
        (single.job.id, Some(signature("single"))),
        (unsigned.job.id, None),
        (with_outputs.job.id, Some(signature("outputs"))),
        (batch_signed.job.id, Some(signature("batch"))),
        (batch_unsigned.job.id, None),
    ];
    let listed = list_all_jobs(store, JobFilter::default(), 2).await?;
    for (id, signature) in &expected {
        let read = store.get_job(*id).await.context("read the job back")?;
        ensure!(
            read.result_signature == *signature,
            "job {id} reads back with {:?}, expected {signature:?}",
            read.result_signature
        );
        ensure!(
            find(&listed, *id)?.result_signature == *signature,
            "job {id} is listed with the signature it reads back with"
        );
    }

    // The same completion again (its answer was lost), signed differently or not at all,
    // changes nothing: the first result keeps its signature, the unsigned one stays unsigned.
    store
        .complete_job(
            call_for(single, runner),
            json!({"n": 1}),
            no_outputs(),
            at(3_000),
        )
        .await
        .context("a repeated completion without the signature")?;
    store
        .complete_jobs(
            runner,
            vec![CompletionItem {
                job: batch_unsigned.job.id,
                epoch: Some(batch_unsigned.lease.epoch),
                result: json!({"n": 5}),
                signature: Some(signature("late")),
            }],
            at(3_000),
        )
        .await
        .context("a repeated batch completion with a signature")?;
    let single_after = store.get_job(single.job.id).await?;
    ensure!(single_after.result_signature == Some(signature("single")));
    let unsigned_after = store.get_job(batch_unsigned.job.id).await?;
    ensure!(
        unsigned_after.result_signature.is_none(),
        "a repeat does not sign an unsigned result, got {:?}",
        unsigned_after.result_signature
    );
    Ok(())
}

pub async fn the_kinds_of_held_jobs_are_read_for_their_runner_only_while_it_holds_them(
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let store = store.as_ref();
    let alpha = submit_many(store, "alpha", 2, T0).await?;
    let beta = submit_many(store, "beta", 1, T0).await?;
    let pending = submit_many(store, "pending", 1, T0).await?;
    let holder = register_runner(store, "holder").await?;
    let other = register_runner(store, "other").await?;
    let claimed = claim(store, holder, &["alpha", "beta"], 3, at(1_000)).await?;
    ensure!(claimed.len() == 3, "claimed {} of 3", claimed.len());
    let finished = claimed
        .iter()
        .find(|job| job.job.id == alpha[1].id)
        .context("the second alpha job was claimed")?;
    store
        .complete_job(
            call_for(finished, holder),
            json!({}),
            no_outputs(),
            at(2_000),
        )
        .await?;
    let unknown = JobId::new(T0, 0x0BAD);
    let asked = vec![alpha[0].id, alpha[1].id, beta[0].id, pending[0].id, unknown];

    let kinds = store.kinds_of_held_jobs(holder, asked.clone()).await?;
    ensure!(
        kinds
            == [
                (alpha[0].id, "alpha".to_string()),
                (beta[0].id, "beta".to_string())
            ]
            .into_iter()
            .collect(),
        "only the jobs the runner holds, by job (not the finished, pending or unknown ones): {kinds:?}"
    );
    let of_other = store.kinds_of_held_jobs(other, asked).await?;
    ensure!(
        of_other.is_empty(),
        "another runner holds none: {of_other:?}"
    );
    ensure!(
        store
            .kinds_of_held_jobs(holder, Vec::new())
            .await?
            .is_empty(),
        "nothing asked, nothing answered"
    );
    Ok(())
}
