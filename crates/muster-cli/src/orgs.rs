//! `muster orgs ...`: organizations, the tenants of a coordinator (bootstrap admin token only).

use anyhow::Context;
use clap::Subcommand;
use muster_api::{CreateOrganization, Organization};

use crate::connect::ConnectArgs;
use crate::output::{note, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum OrgsCommand {
    /// Create an organization; its id is made from its name (`Acme Corp` is `acme-corp`).
    ///
    ///   muster orgs create "Acme Corp" --no-shared-runners
    #[command(verbatim_doc_comment)]
    Create {
        /// Shown in lists; unique.
        name: String,
        /// Cluster-scoped runners (those of no organization) may not take its jobs: only its
        /// own runners may.
        #[arg(long)]
        no_shared_runners: bool,
        /// Print the organization as the API returns it.
        #[arg(long)]
        json: bool,
    },
    /// List organizations, oldest first (`default` first).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one organization.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete an organization with no unfinished jobs, runners, user tokens or unfinished
    /// workloads left; its finished jobs stay. `default` always stays.
    Delete { id: String },
}

fn print_organization(organization: &Organization) {
    out!("{:<22}{}", "id", organization.id);
    out!("{:<22}{}", "name", organization.name);
    out!(
        "{:<22}{}",
        "shared runners",
        if organization.allow_shared_runners {
            "allowed"
        } else {
            "refused"
        }
    );
    out!(
        "{:<22}{}",
        "created",
        short_time(Some(organization.created_at))
    );
}

pub(crate) async fn run(command: OrgsCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        OrgsCommand::Create {
            name,
            no_shared_runners,
            json,
        } => {
            let organization = client
                .create_organization(&CreateOrganization {
                    name,
                    allow_shared_runners: Some(!no_shared_runners),
                })
                .await
                .context("create the organization")?;
            if json {
                print_json(&organization)?;
            } else {
                note!(
                    "organization '{}' created with id {}",
                    organization.name,
                    organization.id
                );
                out!("{}", organization.id);
            }
        }
        OrgsCommand::List { json } => {
            let mut organizations = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_organizations(Some(1000), cursor.as_deref())
                    .await
                    .context("list organizations")?;
                organizations.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::json!({"items": organizations, "next_cursor": null}))?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = organizations
                .iter()
                .map(|organization| {
                    vec![
                        organization.id.clone(),
                        organization.name.clone(),
                        if organization.allow_shared_runners {
                            "allowed"
                        } else {
                            "refused"
                        }
                        .to_string(),
                        short_time(Some(organization.created_at)),
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "SHARED RUNNERS", "CREATED"], &rows);
        }
        OrgsCommand::Show { id, json } => {
            let organization = client
                .get_organization(&id)
                .await
                .context("show the organization")?;
            if json {
                print_json(&organization)?;
            } else {
                print_organization(&organization);
            }
        }
        OrgsCommand::Delete { id } => {
            client
                .delete_organization(&id)
                .await
                .context("delete the organization")?;
            note!("organization '{id}' deleted");
        }
    }
    Ok(0)
}
