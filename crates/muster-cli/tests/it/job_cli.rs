//! The user commands (`muster job ...`, `muster runners ...`) as a person or a script uses them:
//! real processes against a `muster server` and a `muster runner --exec`, checking exit codes,
//! what goes to stdout (machine-readable) and what to stderr.

use serde_json::Value;
use uuid::Uuid;

use crate::fleet::Coordinator;
use crate::process::{
    ADMIN_TOKEN, COMMAND_BOUND, CliOutput, RunnerProcess, admin_cli, admin_ok, muster, run_bounded,
};

fn run(server: &str, args: &[&str]) -> CliOutput {
    run_bounded(&mut admin_cli(server, args), COMMAND_BOUND)
}

fn json(output: &CliOutput) -> Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("stdout is one JSON document ({error}): {output:?}"))
}

/// stdout of `muster job submit` without --json: the new job's id and nothing else.
fn submitted_id(output: &CliOutput) -> Uuid {
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {output:?}");
    Uuid::parse_str(lines[0]).unwrap_or_else(|error| panic!("a UUID ({error}): {output:?}"))
}

fn non_empty_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_and_runner_commands_against_a_real_fleet() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    tokio::task::block_in_place(|| {
        // Register the runner with the CLI and start it with the token the CLI printed: the
        // documented way to add a runner.
        let created = admin_ok(&url, &["runners", "create", "cli-runner", "--json"]);
        let created = json(&created);
        let token = created["token"].as_str().unwrap_or_default().to_string();
        assert!(token.starts_with("muster_runner_"), "{created}");
        assert_eq!(created["runner"]["name"], "cli-runner", "{created}");
        let runner_id = created["runner"]["id"]
            .as_str()
            .expect("a runner id")
            .to_string();
        let mut runner = RunnerProcess::start(&url, &token, 2, &[]);

        // Submit with --server/--token flags (no environment), after the subcommand.
        let mut submit = muster();
        submit.args([
            "job",
            "submit",
            "--server",
            &url,
            "--token",
            ADMIN_TOKEN,
            "--",
            "echo",
            "hello",
        ]);
        let hello = run_bounded(&mut submit, COMMAND_BOUND);
        assert!(hello.status.success(), "{hello:?}");
        let hello = submitted_id(&hello).to_string();

        let waited = admin_ok(&url, &["job", "wait", &hello, "--timeout", "45"]);
        assert!(
            waited.stdout.trim().is_empty(),
            "wait reports on stderr: {waited:?}"
        );
        let logs = admin_ok(&url, &["job", "logs", &hello]);
        assert!(
            logs.stdout.contains("hello"),
            "the log shows the output: {logs:?}"
        );
        // A finished job's live log replays and then ends instead of hanging.
        let followed = admin_ok(&url, &["job", "logs", &hello, "-f"]);
        assert!(followed.stdout.contains("hello"), "{followed:?}");

        let shown = json(&admin_ok(&url, &["job", "show", &hello, "--json"]));
        assert_eq!(shown["id"], hello.as_str(), "{shown}");
        assert_eq!(shown["state"], "completed", "{shown}");
        assert_eq!(shown["result"]["exit_code"], 0, "{shown}");
        assert_eq!(shown["runner_id"], runner_id.as_str(), "{shown}");
        assert_eq!(
            shown["payload"]["command"],
            serde_json::json!(["echo", "hello"]),
            "{shown}"
        );
        let human = admin_ok(&url, &["job", "show", &hello]);
        assert!(human.stdout.contains("completed"), "{human:?}");

        // --json prints the whole job, an exec job with the command as its payload.
        let hi = json(&admin_ok(
            &url,
            &["job", "submit", "--json", "--", "echo", "hi"],
        ));
        assert_eq!(hi["kind"], "exec", "{hi}");
        assert_eq!(
            hi["payload"]["command"],
            serde_json::json!(["echo", "hi"]),
            "{hi}"
        );
        let hi_id = hi["id"].as_str().expect("an id").to_string();
        Uuid::parse_str(&hi_id).expect("the id is a UUID");

        // `logs -f` on a job still running prints lines as they come and returns when it ends.
        let live = submitted_id(&admin_ok(
            &url,
            &[
                "job",
                "submit",
                "--",
                "sh",
                "-c",
                "echo to-out; echo to-err >&2; sleep 1; echo last",
            ],
        ))
        .to_string();
        let followed = admin_ok(&url, &["job", "logs", &live, "-f", "--json"]);
        let entries: Vec<Value> = followed
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
            .collect();
        let levels: Vec<(&str, &str)> = entries
            .iter()
            .map(|entry| {
                (
                    entry["message"].as_str().unwrap_or_default(),
                    entry["level"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        // stdout lines are `info`, stderr lines `warn`; the order between the two pipes is not
        // promised, the order within each is.
        let mut sorted = levels.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![("last", "info"), ("to-err", "warn"), ("to-out", "info")],
            "{followed:?}"
        );
        let out_position = levels.iter().position(|(m, _)| *m == "to-out");
        let last_position = levels.iter().position(|(m, _)| *m == "last");
        assert!(out_position < last_position, "{levels:?}");
        let live_job = json(&admin_ok(&url, &["job", "show", &live, "--json"]));
        assert_eq!(
            live_job["state"], "completed",
            "-f returned only once the job ended: {live_job}"
        );

        // A failing command with one attempt: the job fails and `wait` says so by its exit code.
        let failing = admin_ok(
            &url,
            &[
                "job",
                "submit",
                "--max-attempts",
                "1",
                "--",
                "sh",
                "-c",
                "exit 3",
            ],
        );
        let failing = submitted_id(&failing).to_string();
        let waited = run(&url, &["job", "wait", &failing, "--timeout", "45"]);
        assert_eq!(
            waited.status.code(),
            Some(1),
            "a failed job: exit 1: {waited:?}"
        );
        assert!(waited.stderr.contains("failed"), "{waited:?}");
        assert!(waited.stderr.contains("code 3"), "says why: {waited:?}");
        let failed = json(&admin_ok(&url, &["job", "show", &failing, "--json"]));
        assert_eq!(failed["state"], "failed", "{failed}");
        assert_eq!(failed["attempt"], 1, "{failed}");
        assert_eq!(failed["error"]["reason"], "runner_error", "{failed}");
        // `job show` lists the attempt: its runner, and why it failed.
        let shown = admin_ok(&url, &["job", "show", &failing]);
        let attempts_line = shown
            .stdout
            .lines()
            .find(|line| line.starts_with("attempts"))
            .unwrap_or_else(|| panic!("no attempts in job show: {shown:?}"));
        assert!(
            attempts_line.contains("failed (runner_error:")
                && attempts_line.contains(failed["runner_id"].as_str().unwrap_or("-")),
            "{attempts_line}"
        );

        let listed = json(&admin_ok(&url, &["job", "list", "--json"]));
        let items = listed["items"]
            .as_array()
            .unwrap_or_else(|| panic!("items: {listed}"));
        for id in [&hello, &hi_id, &failing] {
            assert!(
                items.iter().any(|job| job["id"] == id.as_str()),
                "job list has {id}: {listed}"
            );
        }
        let completed = json(&admin_ok(
            &url,
            &["job", "list", "--state", "failed", "--json"],
        ));
        let failed_ids: Vec<&str> = completed["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|job| job["id"].as_str())
            .collect();
        assert_eq!(
            failed_ids,
            vec![failing.as_str()],
            "--state filters: {completed}"
        );

        let runners = json(&admin_ok(&url, &["runners", "list", "--json"]));
        let mine = runners["items"]
            .as_array()
            .unwrap_or_else(|| panic!("items: {runners}"))
            .iter()
            .find(|runner| runner["id"] == runner_id.as_str())
            .unwrap_or_else(|| panic!("the runner is listed: {runners}"));
        assert_eq!(mine["status"], "online", "{mine}");
        assert!(
            mine["kinds"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "exec")),
            "the runner declared exec: {mine}"
        );

        // Errors: a non-zero exit and one `error:` line on stderr, nothing on stdout.
        let unknown = Uuid::now_v7().to_string();
        for args in [
            vec!["job", "show", unknown.as_str()],
            vec!["job", "logs", unknown.as_str()],
            vec!["job", "logs", "-f", unknown.as_str()],
            vec!["job", "cancel", unknown.as_str()],
            vec!["job", "wait", unknown.as_str(), "--timeout", "5"],
        ] {
            let output = run(&url, &args);
            assert!(!output.status.success(), "{args:?} must fail: {output:?}");
            assert_ne!(output.status.code(), Some(0));
            let lines = non_empty_lines(&output.stderr);
            assert_eq!(lines.len(), 1, "{args:?}: one line on stderr: {output:?}");
            assert!(lines[0].starts_with("error:"), "{args:?}: {output:?}");
            assert!(output.stdout.trim().is_empty(), "{args:?}: {output:?}");
        }
        // An unreachable coordinator is an error too, not a hang: port 1 on loopback refuses.
        let output = run("http://127.0.0.1:1", &["job", "list"]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let lines = non_empty_lines(&output.stderr);
        assert_eq!(lines.len(), 1, "one line on stderr: {output:?}");
        assert!(
            lines[0].starts_with("error:") && lines[0].contains("reach"),
            "{output:?}"
        );

        assert!(
            runner.try_wait().is_none(),
            "the runner died:\n{}",
            runner.output()
        );
    });
}

/// Help is where people look first; both commands show a command line to copy.
#[test]
fn job_and_runner_help_show_examples() {
    for (args, example) in [
        (&["job", "--help"][..], "muster job submit --"),
        (&["runner", "--help"][..], "muster runner --server"),
        (&["job", "submit", "--help"][..], "muster job submit --"),
    ] {
        let output = run_bounded(muster().args(args), COMMAND_BOUND);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(
            output.stdout.contains(example),
            "`muster {}` shows an example like {example:?}:\n{}",
            args.join(" "),
            output.stdout
        );
    }
}

/// An input uploaded with `--input`, read by the command from `$MUSTER_INPUT_DIR`, written back
/// into `$MUSTER_OUTPUT_DIR`, and downloaded with `muster job download`: the bytes survive the
/// round trip through two artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_written_by_a_job_downloads_with_the_same_bytes() {
    let fleet = Coordinator::start();
    let url = fleet.server.base_url.clone();
    tokio::task::block_in_place(|| {
        let created = json(&admin_ok(
            &url,
            &["runners", "create", "artifact-runner", "--json"],
        ));
        let token = created["token"].as_str().unwrap_or_default().to_string();
        let _runner = RunnerProcess::start(&url, &token, 1, &[]);
        let directory = tempfile::tempdir().expect("a temporary directory");
        let input = directory.path().join("input.bin");
        let bytes: Vec<u8> = (0..200_000u32).map(|index| (index % 251) as u8).collect();
        std::fs::write(&input, &bytes).expect("write the input");
        let input_arg = input.to_string_lossy().into_owned();
        let submitted = admin_ok(
            &url,
            &[
                "job",
                "submit",
                "--input",
                &input_arg,
                "--",
                "sh",
                "-c",
                "cat \"$MUSTER_INPUT_DIR\"/* > \"$MUSTER_OUTPUT_DIR/copy.bin\"",
            ],
        );
        let id = submitted_id(&submitted).to_string();
        admin_ok(&url, &["job", "wait", &id, "--timeout", "50"]);
        let shown = json(&admin_ok(&url, &["job", "show", &id, "--json"]));
        assert!(
            shown["outputs"]["copy.bin"]
                .as_str()
                .is_some_and(|artifact| artifact.starts_with("sha256:")),
            "the output is recorded on the job: {shown}"
        );
        let target = directory.path().join("downloaded.bin");
        let target_arg = target.to_string_lossy().into_owned();
        admin_ok(
            &url,
            &["job", "download", &id, "copy.bin", "--output", &target_arg],
        );
        let downloaded = std::fs::read(&target).expect("read the download");
        assert_eq!(downloaded.len(), bytes.len());
        assert!(downloaded == bytes, "the downloaded bytes are the input's");
        let missing = run(&url, &["job", "download", &id, "nope.bin"]);
        assert!(
            !missing.status.success(),
            "an unknown output name fails: {missing:?}"
        );
        assert!(
            missing.stderr.contains("copy.bin"),
            "the error names the outputs there are: {missing:?}"
        );
    });
}
