//! `muster kinds ...`: the result rules of each job kind (a JSON Schema results must meet, and
//! whether they must be signed).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use muster_api::{KindSettings, SetKindSettings};

use crate::connect::ConnectArgs;
use crate::output::{note, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum KindsCommand {
    /// Set a kind's result rules, replacing any it had.
    ///
    ///   muster kinds set bench --schema score.schema.json --require-signed-results
    #[command(verbatim_doc_comment)]
    Set(SetArgs),
    /// Show a kind's result rules.
    ///
    ///   muster kinds show bench --json
    #[command(verbatim_doc_comment)]
    Show {
        kind: String,
        #[arg(long)]
        json: bool,
    },
    /// List every kind that has result rules.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a kind's result rules: its results are taken unchecked again.
    Delete { kind: String },
}

#[derive(Args, Debug)]
pub(crate) struct SetArgs {
    kind: String,
    /// A file holding a JSON Schema (draft 2020-12) every result of the kind must meet.
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// Refuse completions of the kind that do not carry a signature by the runner's key.
    #[arg(long)]
    require_signed_results: bool,
    /// Print the stored settings as the API returns them.
    #[arg(long)]
    json: bool,
}

fn print_settings(settings: &KindSettings) -> anyhow::Result<()> {
    out!("{:<24}{}", "kind", settings.kind);
    out!(
        "{:<24}{}",
        "require signed results",
        settings.require_signed_results
    );
    out!("{:<24}{}", "updated", short_time(Some(settings.updated_at)));
    match &settings.result_schema {
        Some(schema) => {
            out!("result schema:");
            out!(
                "{}",
                serde_json::to_string_pretty(schema).context("format the schema")?
            );
        }
        None => out!("{:<24}none", "result schema"),
    }
    Ok(())
}

pub(crate) async fn run(command: KindsCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        KindsCommand::Set(args) => {
            let result_schema =
                match &args.schema {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("read schema file {}", path.display()))?;
                        Some(serde_json::from_str(&text).with_context(|| {
                            format!("schema file {} is not JSON", path.display())
                        })?)
                    }
                    None => None,
                };
            let request = SetKindSettings {
                result_schema,
                require_signed_results: args.require_signed_results,
            };
            let settings = client
                .put_kind_settings(&args.kind, &request)
                .await
                .context("set kind settings")?;
            if args.json {
                print_json(&settings)?;
            } else {
                note!("result rules of kind '{}' set", settings.kind);
            }
        }
        KindsCommand::Show { kind, json } => {
            let settings = client
                .get_kind_settings(&kind)
                .await
                .context("show kind settings")?;
            if json {
                print_json(&settings)?;
            } else {
                print_settings(&settings)?;
            }
        }
        KindsCommand::List { json } => {
            let mut kinds = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_kind_settings(Some(1000), cursor.as_deref())
                    .await
                    .context("list kind settings")?;
                kinds.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::json!({"items": kinds, "next_cursor": null}))?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = kinds
                .iter()
                .map(|settings| {
                    vec![
                        settings.kind.clone(),
                        if settings.result_schema.is_some() {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_string(),
                        settings.require_signed_results.to_string(),
                        short_time(Some(settings.updated_at)),
                    ]
                })
                .collect();
            print_table(&["KIND", "SCHEMA", "SIGNED ONLY", "UPDATED"], &rows);
        }
        KindsCommand::Delete { kind } => {
            client
                .delete_kind_settings(&kind)
                .await
                .context("delete kind settings")?;
            note!("result rules of kind '{kind}' removed");
        }
    }
    Ok(0)
}
