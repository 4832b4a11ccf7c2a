//! `muster runners keys ...` (the allowlist of runner keys) and `muster audit` (the log of
//! security events).

use anyhow::Context;
use clap::{Args, Subcommand};
use muster_api::AddRunnerKey;

use crate::connect::ConnectArgs;
use crate::output::{note, or_dash, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// List the runner keys on the allowlist, oldest first.
    ///
    ///   muster runners keys list --json
    #[command(verbatim_doc_comment)]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put a runner's public key on the allowlist (what `muster runner keygen` printed).
    ///
    ///   muster runners keys add 32F0NggnJw2Vhi/99+g6ewRH7kRzXG2jZ4trNhuD+aM= --note "gpu-box-1"
    #[command(verbatim_doc_comment)]
    Add(AddKeyArgs),
    /// Take a key off the allowlist by its fingerprint.
    ///
    ///   muster runners keys remove sha256:5e1f...
    #[command(verbatim_doc_comment)]
    Remove { fingerprint: String },
}

#[derive(Args, Debug)]
pub(crate) struct AddKeyArgs {
    /// The Ed25519 public key: standard base64 of its 32 raw bytes.
    public_key: String,
    /// Free text for operators: whose machine this is.
    #[arg(long)]
    note: Option<String>,
    /// The organization (tenant) runners registering with this key belong to.
    #[arg(long)]
    organization: Option<String>,
    /// Print the key entry as the API returns it.
    #[arg(long)]
    json: bool,
}

/// `muster audit`: the log of security events, newest first.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Only entries of this action, e.g. runner_key.added.
    #[arg(long)]
    action: Option<String>,
    /// Only this organization's entries (an admin of one organization reads its own only).
    #[arg(long = "org", visible_alias = "organization")]
    organization: Option<String>,
    /// At most this many entries [default: 50].
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print `{"items": [...], "next_cursor": ...}` as the API returns it.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run_keys(command: KeysCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        KeysCommand::List { json } => {
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_runner_keys(Some(1000), cursor.as_deref())
                    .await
                    .context("list runner keys")?;
                keys.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::json!({"items": keys, "next_cursor": null}))?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|key| {
                    vec![
                        key.fingerprint.clone(),
                        or_dash(key.note.as_deref()),
                        or_dash(key.organization_id.as_deref()),
                        short_time(Some(key.created_at)),
                    ]
                })
                .collect();
            print_table(&["FINGERPRINT", "NOTE", "ORGANIZATION", "ADDED"], &rows);
        }
        KeysCommand::Add(args) => {
            let request = AddRunnerKey {
                public_key: args.public_key,
                note: args.note,
                organization_id: args.organization,
            };
            let (key, created) = client
                .add_runner_key(&request)
                .await
                .context("add runner key")?;
            if args.json {
                print_json(&key)?;
            } else {
                out!("{}", key.fingerprint);
                if created {
                    note!("key {} added to the allowlist", key.fingerprint);
                } else {
                    note!(
                        "key {} was already on the allowlist (left as it was)",
                        key.fingerprint
                    );
                }
            }
        }
        KeysCommand::Remove { fingerprint } => {
            client
                .remove_runner_key(&fingerprint)
                .await
                .context("remove runner key")?;
            note!("key {fingerprint} removed from the allowlist");
        }
    }
    Ok(0)
}

pub(crate) async fn run_audit(args: AuditArgs, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    let page = client
        .list_audit_of(
            args.organization.as_deref(),
            args.action.as_deref(),
            Some(args.limit),
            None,
        )
        .await
        .context("read the audit log")?;
    if args.json {
        print_json(&page)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|entry| {
            vec![
                short_time(Some(entry.at)),
                entry.action.clone(),
                entry.actor.clone(),
                entry.subject.clone(),
            ]
        })
        .collect();
    print_table(&["AT", "ACTION", "ACTOR", "SUBJECT"], &rows);
    if page.next_cursor.is_some() {
        note!(
            "showing the newest {}; pass --limit to see more",
            page.items.len()
        );
    }
    Ok(0)
}
