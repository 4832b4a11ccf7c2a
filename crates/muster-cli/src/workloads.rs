//! `muster workloads ...`: the workload registry (what runners host).

use anyhow::Context;
use clap::Subcommand;
use muster_api::Workload;
use muster_client::WorkloadQuery;
use uuid::Uuid;

use crate::connect::ConnectArgs;
use crate::output::{note, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum WorkloadsCommand {
    /// List workloads, newest first: a page of them, with the cursor of the next.
    ///
    ///   muster workloads list --thread thread-42
    ///   muster workloads list --status running,stopping --runner 0192...
    #[command(verbatim_doc_comment)]
    List {
        /// Only the workloads of this thread.
        #[arg(long = "thread", value_name = "THREAD_ID")]
        thread: Option<String>,
        /// Only workloads in one of these statuses: starting, running, stopping, stopped,
        /// failed (comma-separated).
        #[arg(long, value_name = "STATUS[,STATUS...]")]
        status: Option<String>,
        /// Only the workloads this runner hosts.
        #[arg(long = "runner", value_name = "RUNNER_ID")]
        runner: Option<Uuid>,
        /// Only this organization's workloads.
        #[arg(long = "org", visible_alias = "organization")]
        organization: Option<String>,
        /// How many to show (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Where to start: the cursor a previous list printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Print the page as the API returns it (`{"items", "next_cursor"}`).
        #[arg(long)]
        json: bool,
    },
    /// Show one workload: its runner, thread, status, containers and status history.
    ///
    ///   muster workloads show wl-1
    #[command(verbatim_doc_comment)]
    Show {
        id: String,
        /// Print `{"workload": {...}, "history": [...]}`.
        #[arg(long)]
        json: bool,
    },
}

fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The status as the table shows it: a stale one says so.
fn status_cell(workload: &Workload) -> String {
    let status = wire_name(&workload.status);
    if workload.stale {
        format!("{status} (stale: runner offline)")
    } else {
        status
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}

pub(crate) async fn run(command: WorkloadsCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        WorkloadsCommand::List {
            thread,
            status,
            runner,
            organization,
            limit,
            cursor,
            json,
        } => {
            let page = client
                .list_workloads(&WorkloadQuery {
                    thread_id: thread,
                    runner_id: runner,
                    status,
                    organization_id: organization,
                    limit: Some(limit),
                    cursor,
                })
                .await
                .context("list workloads")?;
            if json {
                print_json(&page)?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = page
                .items
                .iter()
                .map(|workload| {
                    vec![
                        workload.id.clone(),
                        status_cell(workload),
                        workload.runner_id.to_string(),
                        or_dash(&workload.thread_id),
                        workload.containers.len().to_string(),
                        short_time(Some(workload.updated_at)),
                    ]
                })
                .collect();
            print_table(
                &["ID", "STATUS", "RUNNER", "THREAD", "CONTAINERS", "UPDATED"],
                &rows,
            );
            if let Some(next) = page.next_cursor {
                note!("more: muster workloads list --cursor {next} (with the same filters)");
            }
        }
        WorkloadsCommand::Show { id, json } => {
            let workload = client.get_workload(&id).await.context("show workload")?;
            let history = client
                .workload_history(&id)
                .await
                .context("read the workload's history")?;
            if json {
                print_json(&serde_json::json!({"workload": workload, "history": history.items}))?;
                return Ok(0);
            }
            let field = |name: &str, value: String| out!("{name:<14}{value}");
            field("id", workload.id.clone());
            field("status", status_cell(&workload));
            field("reason", or_dash(&workload.status_reason));
            field("runner", workload.runner_id.to_string());
            field("thread", or_dash(&workload.thread_id));
            field("agent", or_dash(&workload.agent_id));
            field("organization", workload.organization_id.clone());
            field("ziti identity", or_dash(&workload.ziti_identity_id));
            field("created", short_time(Some(workload.created_at)));
            field("updated", short_time(Some(workload.updated_at)));
            out!("");
            let containers: Vec<Vec<String>> = workload
                .containers
                .iter()
                .map(|container| {
                    vec![
                        container.container_id.clone(),
                        or_dash(&container.name),
                        wire_name(&container.role),
                        or_dash(&container.image),
                        wire_name(&container.status),
                    ]
                })
                .collect();
            print_table(
                &["CONTAINER", "NAME", "ROLE", "IMAGE", "STATUS"],
                &containers,
            );
            out!("");
            let changes: Vec<Vec<String>> = history
                .items
                .iter()
                .map(|change| {
                    vec![
                        short_time(Some(change.at)),
                        wire_name(&change.status),
                        or_dash(&change.reason),
                    ]
                })
                .collect();
            print_table(&["AT", "STATUS", "REASON"], &changes);
        }
    }
    Ok(0)
}
