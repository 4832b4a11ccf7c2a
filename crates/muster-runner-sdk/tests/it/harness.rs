//! The in-memory harness runs a runner without a coordinator and records what it did.

use anyhow::Result;
use muster_runner_sdk::testing::{
    Harness, InMemoryArtifacts, InMemoryInputs, RecordingControlPlane, StaticToken, run_runner,
};
use muster_runner_sdk::{
    AccessTokenProvider, ArtifactSink, ControlPlane, InputSource, Runner, TaskCtx,
};
use serde_json::json;

use crate::hello_runner::{HELLO_CAPABILITY, HELLO_OUTPUT_PATH, HelloRunner};

fn harness_with_greeting() -> Result<Harness> {
    let harness = Harness::new()?;
    harness.inputs.insert("greeting", b"hello, muster".to_vec());
    Ok(harness)
}

#[tokio::test]
async fn the_hello_runner_uppercases_its_input_and_reports_as_it_goes() -> Result<()> {
    let harness = harness_with_greeting()?;
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);

    harness.run(&HelloRunner, &lease).await?;

    assert_eq!(harness.artifacts.paths(), [HELLO_OUTPUT_PATH]);
    assert_eq!(
        harness.artifacts.get(HELLO_OUTPUT_PATH),
        Some(b"HELLO, MUSTER".to_vec())
    );
    assert_eq!(
        harness.control_plane.progress_reports(),
        [
            json!({ "progress": 0, "message": "started" }),
            json!({ "progress": 50, "message": "input read" }),
            json!({ "progress": 100, "message": "finished" }),
        ]
    );
    assert_eq!(
        harness.control_plane.last_progress(),
        Some(json!({ "progress": 100, "message": "finished" }))
    );
    assert_eq!(
        harness.control_plane.events(),
        [json!({ "event": "input_read", "cid": "greeting", "bytes": 13 })]
    );
    Ok(())
}

#[tokio::test]
async fn the_free_function_runs_a_boxed_runner_the_same_way() -> Result<()> {
    let harness = harness_with_greeting()?;
    let runner: Box<dyn Runner> = Box::new(HelloRunner);
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);

    run_runner(runner.as_ref(), &lease, &harness).await?;

    assert_eq!(
        harness.artifacts.get(HELLO_OUTPUT_PATH),
        Some(b"HELLO, MUSTER".to_vec())
    );
    Ok(())
}

#[tokio::test]
async fn a_runner_cancelled_before_it_starts_stops_without_output() -> Result<()> {
    let harness = harness_with_greeting()?;
    harness.control_plane.cancel();
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);

    let error = harness
        .run(&HelloRunner, &lease)
        .await
        .expect_err("a cancelled task must not complete");

    assert!(error.to_string().contains("cancelled"), "{error}");
    assert!(harness.artifacts.is_empty());
    assert!(harness.control_plane.events().is_empty());
    assert_eq!(
        harness.control_plane.progress_reports(),
        [json!({ "progress": 0, "message": "started" })]
    );
    Ok(())
}

#[tokio::test]
async fn a_cancellation_arriving_mid_task_stops_the_runner_before_its_output() -> Result<()> {
    let harness = harness_with_greeting()?;
    harness.control_plane.cancel_after_events(1);
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);

    let error = harness
        .run(&HelloRunner, &lease)
        .await
        .expect_err("a task cancelled mid-way must not complete");

    assert!(
        error.to_string().contains("before writing the output"),
        "{error}"
    );
    assert!(harness.control_plane.cancelled());
    assert_eq!(harness.control_plane.events().len(), 1);
    assert!(harness.artifacts.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_lease_already_marked_cancel_reaches_the_runner_as_cancelled() -> Result<()> {
    let harness = harness_with_greeting()?;
    let mut lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);
    lease.cancel = true;

    assert!(harness.run(&HelloRunner, &lease).await.is_err());
    assert!(harness.control_plane.cancelled());
    assert!(harness.artifacts.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_lease_for_another_capability_is_refused_without_running() -> Result<()> {
    let harness = harness_with_greeting()?;
    let lease = Harness::lease_for("/examples/other/v1", ["greeting"]);

    let error = harness
        .run(&HelloRunner, &lease)
        .await
        .expect_err("a runner must not get a task for another capability");

    assert!(error.to_string().contains("/examples/other/v1"), "{error}");
    assert!(harness.control_plane.progress_reports().is_empty());
    Ok(())
}

#[tokio::test]
async fn missing_inputs_fail_the_task_naming_what_is_missing() -> Result<()> {
    let harness = Harness::new()?;

    let no_inputs = Harness::lease_for(HELLO_CAPABILITY, std::iter::empty::<String>());
    let error = harness
        .run(&HelloRunner, &no_inputs)
        .await
        .expect_err("the hello runner needs an input");
    assert!(error.to_string().contains("lists none"), "{error}");

    let unknown_input = Harness::lease_for(HELLO_CAPABILITY, ["nowhere"]);
    let error = harness
        .run(&HelloRunner, &unknown_input)
        .await
        .expect_err("an input the source does not have must fail the task");
    assert!(error.to_string().contains("\"nowhere\""), "{error}");
    assert!(harness.artifacts.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_context_hands_out_the_harness_token() -> Result<()> {
    let harness = Harness::new()?;
    let lease = Harness::lease_for(HELLO_CAPABILITY, ["greeting"]);
    let ctx: TaskCtx<'_> = harness.task_ctx(&lease);

    assert_eq!(ctx.access_token.get(), Harness::DEFAULT_TOKEN);
    assert_eq!(ctx.lease, &lease);
    assert_eq!(StaticToken::new("rotated").get(), "rotated");
    Ok(())
}

#[tokio::test]
async fn materialized_inputs_are_files_inside_the_scratch_directory() -> Result<()> {
    let inputs = InMemoryInputs::new()?;
    inputs.insert("plain", b"one".to_vec());
    inputs.insert("../../escape/attempt", b"two".to_vec());

    let plain = inputs.materialize_cid_to_temp("plain").await?;
    let hostile = inputs
        .materialize_cid_to_temp("../../escape/attempt")
        .await?;
    let with_meta = inputs.materialize_cid_with_meta("plain").await?;

    for path in [&plain, &hostile, &with_meta.path] {
        assert_eq!(path.parent(), Some(inputs.scratch_directory()), "{path:?}");
    }
    assert_eq!(std::fs::read(&plain)?, b"one");
    assert_eq!(std::fs::read(&hostile)?, b"two");
    assert_ne!(
        plain, with_meta.path,
        "each materialization gets its own file"
    );
    assert_eq!(with_meta.cid, "plain");
    assert_eq!(with_meta.root_dir, inputs.scratch_directory());

    assert!(inputs.materialize_cid_to_temp("absent").await.is_err());
    Ok(())
}

#[tokio::test]
async fn the_scratch_directory_is_removed_with_the_inputs() -> Result<()> {
    let inputs = InMemoryInputs::new()?;
    inputs.insert("a", b"a".to_vec());
    let path = inputs.materialize_cid_to_temp("a").await?;
    let directory = inputs.scratch_directory().to_path_buf();

    drop(inputs);

    assert!(!path.exists());
    assert!(!directory.exists());
    Ok(())
}

#[tokio::test]
async fn stored_artifacts_are_recorded_by_path_and_overwritten_by_later_writes() -> Result<()> {
    let artifacts = InMemoryArtifacts::new();
    let sink: &dyn ArtifactSink = &artifacts;
    let source_file = tempfile::NamedTempFile::new()?;
    std::fs::write(source_file.path(), b"from a file")?;

    sink.put_bytes("b.txt", b"first").await?;
    sink.put_bytes("b.txt", b"second").await?;
    sink.put_file("a.txt", source_file.path()).await?;

    assert_eq!(artifacts.paths(), ["a.txt", "b.txt"]);
    assert_eq!(artifacts.get("a.txt"), Some(b"from a file".to_vec()));
    assert_eq!(artifacts.get("b.txt"), Some(b"second".to_vec()));
    assert!(
        sink.put_file("c.txt", &source_file.path().with_extension("missing"))
            .await
            .is_err()
    );
    assert_eq!(artifacts.snapshot().len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_multipart_upload_appears_whole_and_only_once_finished() -> Result<()> {
    let artifacts = InMemoryArtifacts::new();

    let mut upload = artifacts.open_multipart("big.bin").await?;
    upload.write_chunk(b"chunk one, ").await?;
    upload.write_chunk(b"chunk two").await?;
    assert_eq!(artifacts.get("big.bin"), None);
    upload.finish().await?;
    assert_eq!(
        artifacts.get("big.bin"),
        Some(b"chunk one, chunk two".to_vec())
    );

    let mut abandoned = artifacts.open_multipart("abandoned.bin").await?;
    abandoned.write_chunk(b"partial").await?;
    drop(abandoned);
    assert_eq!(artifacts.paths(), ["big.bin"]);
    Ok(())
}

#[tokio::test]
async fn the_recording_control_plane_keeps_reports_in_order() -> Result<()> {
    let control_plane = RecordingControlPlane::new();
    let ctrl: &dyn ControlPlane = &control_plane;

    ctrl.progress(json!(10)).await?;
    ctrl.log_event(json!({ "n": 1 })).await?;
    ctrl.progress(json!(20)).await?;
    ctrl.log_event(json!({ "n": 2 })).await?;

    assert_eq!(control_plane.progress_reports(), [json!(10), json!(20)]);
    assert_eq!(
        control_plane.events(),
        [json!({ "n": 1 }), json!({ "n": 2 })]
    );
    assert!(!ctrl.is_cancelled().await);

    control_plane.cancel_after_events(2);
    assert!(
        ctrl.is_cancelled().await,
        "a threshold already reached cancels at once"
    );
    Ok(())
}
