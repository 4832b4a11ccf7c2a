//! The dashboard in a real browser: Chromium (Debian's `chromium`, headless) driven by
//! Playwright (`crates/muster-server/tests/browser/dashboard.py`) against a real coordinator
//! process with a real `muster runner --exec`. The script signs in, watches jobs go pending →
//! running → completed live, follows logs through a proxy that cuts the connection, cancels
//! from the page, holds a viewer and an operator to their buttons and refuses a CSRF-less POST,
//! draws a step DAG a runner syncs, checks every page with axe-core, and takes screenshots
//! (kept in `target/screenshots/dashboard`, which CI keeps as artifacts).
//!
//! Needs Chromium, the test venv with `playwright`, and axe-core from npm: `bash .ci/run`
//! installs all three; without one the test fails and says what to install.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use muster_client::api::{CreateRunner, CreateUserToken};

use crate::process::{ADMIN_TOKEN, RunnerProcess, ServerProcess, run_bounded};

/// The whole browser script, bounded so a hung browser cannot hang the suite.
const BROWSER_SCRIPT_BOUND: Duration = Duration::from_secs(300);

fn chromium() -> PathBuf {
    let path = std::env::var_os("MUSTER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "no Chromium at {}: install Debian's package (`apt-get install -y chromium`; bash .ci/run \
         does this) or point MUSTER_CHROMIUM at a Chromium binary",
        path.display()
    );
    path
}

fn axe_core() -> PathBuf {
    let path = std::env::var_os("MUSTER_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            muster_test_support::workspace_file(
                "target/browser-tools/node_modules/axe-core/axe.min.js",
            )
        });
    assert!(
        path.exists(),
        "no axe-core at {}: run `npm install --prefix target/browser-tools axe-core@4.10.3` \
         (bash .ci/run does this) or point MUSTER_AXE_JS at axe.min.js",
        path.display()
    );
    path
}

fn playwright_python() -> PathBuf {
    let python = muster_test_support::test_python();
    let found = Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "the test venv ({}) has no playwright: `target/python-venv/bin/pip install -r \
         tools/python-requirements.txt` (bash .ci/run does this)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_shows_jobs_live_and_holds_each_role_to_its_buttons() {
    let chromium = chromium();
    let axe = axe_core();
    let python = playwright_python();
    let data_dir = tempfile::tempdir().expect("a data directory");
    let server = ServerProcess::start(data_dir.path(), Some(ADMIN_TOKEN));
    let url = server.base_url.clone();
    let client = server.client(ADMIN_TOKEN);
    let mint = |role: &str| {
        let client = client.clone();
        let role = role.to_string();
        async move {
            client
                .create_user_token(&CreateUserToken {
                    name: format!("dashboard {role}"),
                    role,
                    organization_id: None,
                    expires_at: None,
                })
                .await
                .expect("mint a user token")
                .token
        }
    };
    let viewer = mint("viewer").await;
    let operator = mint("operator").await;
    let runner_token = |name: &str| {
        let client = client.clone();
        let name = name.to_string();
        async move {
            client
                .create_runner(&CreateRunner {
                    name,
                    ..Default::default()
                })
                .await
                .expect("create a runner")
                .token
        }
    };
    let exec_token = runner_token("exec-runner").await;
    let graph_token = runner_token("graph-runner").await;
    let _runner = RunnerProcess::start(&url, &exec_token, 2, &[]);

    let screenshots = muster_test_support::workspace_file("target/screenshots/dashboard");
    std::fs::create_dir_all(&screenshots).expect("a screenshot directory");
    let script =
        muster_test_support::workspace_file("crates/muster-server/tests/browser/dashboard.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("MUSTER_URL", &url)
        .env("MUSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("MUSTER_VIEWER_TOKEN", &viewer)
        .env("MUSTER_OPERATOR_TOKEN", &operator)
        .env("MUSTER_DAG_RUNNER_TOKEN", &graph_token)
        .env("MUSTER_CHROMIUM", &chromium)
        .env("MUSTER_AXE_JS", &axe)
        .env("MUSTER_SCREENSHOT_DIR", &screenshots);
    let output =
        tokio::task::spawn_blocking(move || run_bounded(&mut command, BROWSER_SCRIPT_BOUND))
            .await
            .expect("run the browser script");
    assert!(
        output.status.success(),
        "the browser script failed:\n{output:?}\n--- coordinator ---\n{}",
        server.stderr()
    );
    assert!(
        output.stdout.contains("ok: all dashboard steps passed"),
        "{output:?}"
    );
    for shot in [
        "sign-in.png",
        "overview.png",
        "jobs.png",
        "job-running.png",
        "job-completed.png",
        "job-dag.png",
        "runners.png",
        "jobs-phone.png",
        "job-dark.png",
        "keys.png",
        "kinds.png",
        "tokens.png",
        "organizations.png",
        "audit.png",
        "job-attempts.png",
    ] {
        let path = screenshots.join(shot);
        let size = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
        assert!(size > 1_000, "no screenshot {}", path.display());
    }
}
