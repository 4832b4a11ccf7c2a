//! `muster runners ...`: the runner registry.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use muster_api::{CreateRunner, Runner};
use uuid::Uuid;

use crate::connect::ConnectArgs;
use crate::output::{or_dash, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum RunnersCommand {
    /// List registered runners with their status.
    ///
    ///   muster runners list --json
    #[command(verbatim_doc_comment)]
    List {
        /// Only this organization's runners (cluster-scoped runners belong to none).
        #[arg(long = "org", visible_alias = "organization")]
        organization: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one runner: status, kinds, labels, resources, running jobs.
    ///
    ///   muster runners show 0192...
    #[command(verbatim_doc_comment)]
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Register a runner and print its token (shown this once).
    ///
    ///   muster runners create gpu-box-1 --label gpu=a100
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// Delete a runner: its token stops working and the jobs it holds go back to the queue.
    ///
    ///   muster runners delete 0192...
    #[command(verbatim_doc_comment)]
    Delete { id: Uuid },
    /// Approve a runner waiting for approval (ENROLLMENT pending in `muster runners list`): it
    /// is enrolled, its key joins the allowlist, and it may claim jobs at once.
    ///
    ///   muster runners approve 0192...
    #[command(verbatim_doc_comment)]
    Approve { id: Uuid },
    /// Reject a runner that registered with its key: its tokens stop working, the jobs it holds
    /// go back to the queue, and its key leaves the allowlist, so it cannot register again
    /// until an operator adds the key.
    ///
    ///   muster runners reject 0192...
    #[command(verbatim_doc_comment)]
    Reject { id: Uuid },
    /// The allowlist of runner keys: which keys may register runners themselves.
    Keys {
        #[command(subcommand)]
        command: crate::identity::KeysCommand,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// A name for people.
    name: String,
    /// A label jobs can require, KEY=VALUE (repeatable); the runner cannot override it.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A tag jobs can require (repeatable). With --tag or --resource given, the runner's
    /// capabilities are fixed: its claims may narrow them, never widen them. Without either, it
    /// declares its own at each claim and is trusted to tell the truth.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A resource amount jobs can require, NAME=NUMBER (repeatable); fixes the capabilities as
    /// --tag does.
    #[arg(long = "resource", value_name = "NAME=NUMBER")]
    resources: Vec<String>,
    /// The organization the runner belongs to (its id, as `muster orgs list` shows it): it
    /// takes that organization's jobs only. Without it the runner is cluster-scoped: it takes
    /// jobs of every organization that allows shared runners.
    #[arg(
        long = "org",
        visible_alias = "organization",
        value_name = "ORGANIZATION"
    )]
    organization: Option<String>,
    /// Print `{"runner": {...}, "token": "..."}` as the API returns it.
    #[arg(long)]
    json: bool,
}

fn status_name(runner: &Runner) -> String {
    serde_json::to_value(runner.status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn enrollment_name(runner: &Runner) -> String {
    serde_json::to_value(runner.enrollment)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn print_runner(runner: &Runner) {
    let field = |name: &str, value: String| out!("{name:<14}{value}");
    field("id", runner.id.to_string());
    field("name", runner.name.clone());
    field("status", status_name(runner));
    field("enrollment", enrollment_name(runner));
    field("key", or_dash(runner.key_fingerprint.as_deref()));
    field(
        "token expires",
        match runner.token_expires_at {
            Some(at) => short_time(Some(at)),
            None => "never (created by an operator)".to_string(),
        },
    );
    field(
        "capabilities",
        if runner.capabilities_bound {
            "bound: claims may narrow them, never widen them".to_string()
        } else {
            "declared at each claim (trusted)".to_string()
        },
    );
    field("kinds", runner.kinds.join(", "));
    field(
        "labels",
        runner
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    field("tags", runner.tags.join(", "));
    field(
        "resources",
        runner
            .resources
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    field("hostname", or_dash(runner.hostname.as_deref()));
    field("version", or_dash(runner.version.as_deref()));
    field("running jobs", runner.running_jobs.to_string());
    field("last heartbeat", short_time(runner.last_heartbeat_at));
    field("created", short_time(Some(runner.created_at)));
}

pub(crate) async fn run(command: RunnersCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        RunnersCommand::List { organization, json } => {
            let mut runners = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_runners_of(organization.as_deref(), Some(1000), cursor.as_deref())
                    .await
                    .context("list runners")?;
                runners.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::json!({"items": runners, "next_cursor": null}))?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = runners
                .iter()
                .map(|runner| {
                    vec![
                        runner.id.to_string(),
                        runner.name.clone(),
                        status_name(runner),
                        enrollment_name(runner),
                        runner.kinds.join(","),
                        runner.running_jobs.to_string(),
                        short_time(runner.last_heartbeat_at),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "STATUS",
                    "ENROLLMENT",
                    "KINDS",
                    "RUNNING",
                    "LAST HEARTBEAT",
                ],
                &rows,
            );
        }
        RunnersCommand::Show { id, json } => {
            let runner = client.get_runner(id).await.context("show runner")?;
            if json {
                print_json(&runner)?;
            } else {
                print_runner(&runner);
            }
        }
        RunnersCommand::Create(args) => {
            let mut labels = std::collections::BTreeMap::new();
            for pair in &args.labels {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("--label '{pair}' is not KEY=VALUE")
                };
                labels.insert(key.to_string(), value.to_string());
            }
            let mut resources = std::collections::BTreeMap::new();
            for pair in &args.resources {
                let amount = pair
                    .split_once('=')
                    .and_then(|(name, amount)| Some((name, amount.trim().parse::<f64>().ok()?)));
                let Some((name, amount)) = amount else {
                    bail!("--resource '{pair}' is not NAME=NUMBER")
                };
                resources.insert(name.to_string(), amount);
            }
            let binds = !args.tags.is_empty() || !resources.is_empty();
            let request = CreateRunner {
                name: args.name,
                labels,
                tags: binds.then_some(args.tags),
                resources: binds.then_some(resources),
                organization_id: args.organization,
            };
            let created = client
                .create_runner(&request)
                .await
                .context("create runner")?;
            if args.json {
                print_json(&created)?;
            } else {
                out!("{}", created.token);
                crate::output::note!(
                    "runner {} registered; the token above is shown only now. Start it with:\n  muster runner --server {} --token {}",
                    created.runner.id,
                    client.base_url(),
                    created.token
                );
            }
        }
        RunnersCommand::Delete { id } => {
            client.delete_runner(id).await.context("delete runner")?;
            crate::output::note!("runner {id} deleted");
        }
        RunnersCommand::Approve { id } => {
            let runner = client.approve_runner(id).await.context("approve runner")?;
            crate::output::note!(
                "runner {} ({}) approved: enrolled, key {} on the allowlist",
                runner.name,
                runner.id,
                or_dash(runner.key_fingerprint.as_deref())
            );
        }
        RunnersCommand::Reject { id } => {
            let runner = client.reject_runner(id).await.context("reject runner")?;
            crate::output::note!(
                "runner {} ({}) rejected: its tokens are revoked and key {} is off the allowlist",
                runner.name,
                runner.id,
                or_dash(runner.key_fingerprint.as_deref())
            );
        }
        RunnersCommand::Keys { command } => {
            return crate::identity::run_keys(command, connect).await;
        }
    }
    Ok(0)
}
