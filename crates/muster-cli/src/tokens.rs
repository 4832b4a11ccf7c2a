//! `muster tokens ...` (admin role) and `muster whoami`: user tokens with roles, scoped to one
//! organization or to every one.

use anyhow::{Context, bail};
use clap::Subcommand;
use muster_api::{CreateUserToken, UserTokenInfo};
use time::OffsetDateTime;

use crate::connect::ConnectArgs;
use crate::output::{note, or_dash, out, print_json, print_table, short_time};

#[derive(Subcommand, Debug)]
pub(crate) enum TokensCommand {
    /// Mint a user token; it is printed this once (only its hash is kept).
    ///
    ///   muster tokens create ci --role submitter --org acme-corp --expires-in 90d
    #[command(verbatim_doc_comment)]
    Create {
        /// What the token is for ("ci", "alice's laptop"): shown in lists.
        name: String,
        /// viewer (read), submitter (+ submit, cancel, retry, upload), operator (+ runners, runner
        /// keys, kinds) or admin (+ user tokens, audit).
        #[arg(long)]
        role: String,
        /// The organization it acts in. An admin of one organization mints tokens of its own
        /// only; without --org, the bootstrap admin mints a token of every organization.
        #[arg(long = "org", visible_alias = "organization")]
        organization: Option<String>,
        /// Stop working after this long (`30d`, `12h`); never by default.
        #[arg(long, conflicts_with = "expires_at", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Stop working at this time (RFC 3339, e.g. 2027-01-31T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        /// Print the answer as the API returns it (with the token).
        #[arg(long)]
        json: bool,
    },
    /// List user tokens, oldest first (never the tokens themselves).
    List {
        /// Only this organization's tokens.
        #[arg(long = "org", visible_alias = "organization")]
        organization: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user token by its id: it fails from its next request on.
    Revoke { id: uuid::Uuid },
}

fn expiry(
    expires_in: Option<std::time::Duration>,
    expires_at: Option<String>,
) -> anyhow::Result<Option<OffsetDateTime>> {
    if let Some(duration) = expires_in {
        let duration = time::Duration::try_from(duration).context("read --expires-in")?;
        return Ok(Some(OffsetDateTime::now_utc() + duration));
    }
    match expires_at {
        None => Ok(None),
        Some(text) => {
            match OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339) {
                Ok(at) => Ok(Some(at)),
                Err(error) => bail!(
                    "--expires-at '{text}': {error}; write it as RFC 3339, e.g. 2027-01-31T00:00:00Z"
                ),
            }
        }
    }
}

fn scope_text(organization: Option<&str>) -> String {
    organization.map_or_else(|| "every organization".to_string(), str::to_string)
}

fn token_row(token: &UserTokenInfo) -> Vec<String> {
    vec![
        token.id.to_string(),
        token.name.clone(),
        token.role.clone(),
        scope_text(token.organization_id.as_deref()),
        short_time(Some(token.created_at)),
        or_dash(token.expires_at.map(|at| short_time(Some(at))).as_deref()),
        or_dash(token.last_used_at.map(|at| short_time(Some(at))).as_deref()),
    ]
}

pub(crate) async fn run(command: TokensCommand, connect: &ConnectArgs) -> anyhow::Result<u8> {
    let client = connect.client()?;
    match command {
        TokensCommand::Create {
            name,
            role,
            organization,
            expires_in,
            expires_at,
            json,
        } => {
            let expires_at = expiry(expires_in, expires_at)?;
            let created = client
                .create_user_token(&CreateUserToken {
                    name,
                    role,
                    organization_id: organization,
                    expires_at,
                })
                .await
                .context("create the user token")?;
            if json {
                print_json(&created)?;
            } else {
                let info = &created.token_info;
                note!(
                    "user token '{}' ({}) created: role {} in {}{}; it is shown this once, keep it in a secret store",
                    info.name,
                    info.id,
                    info.role,
                    scope_text(info.organization_id.as_deref()),
                    info.expires_at
                        .map(|at| format!(", expires {} UTC", short_time(Some(at))))
                        .unwrap_or_default()
                );
                out!("{}", created.token);
            }
        }
        TokensCommand::List { organization, json } => {
            let mut tokens = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client
                    .list_user_tokens(organization.as_deref(), Some(1000), cursor.as_deref())
                    .await
                    .context("list user tokens")?;
                tokens.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            if json {
                print_json(&serde_json::json!({"items": tokens, "next_cursor": null}))?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = tokens.iter().map(token_row).collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "ROLE",
                    "ORGANIZATION",
                    "CREATED",
                    "EXPIRES",
                    "LAST USED",
                ],
                &rows,
            );
        }
        TokensCommand::Revoke { id } => {
            client
                .revoke_user_token(id)
                .await
                .context("revoke the user token")?;
            note!("user token {id} revoked: it fails from its next request on");
        }
    }
    Ok(0)
}

/// `muster whoami`: the token's kind, role and organization.
pub(crate) async fn whoami(connect: &ConnectArgs, json: bool) -> anyhow::Result<u8> {
    let client = connect.client()?;
    let identity = client.whoami().await.context("ask who this token is")?;
    if json {
        print_json(&identity)?;
        return Ok(0);
    }
    out!("{:<16}{}", "token", identity.kind);
    out!("{:<16}{}", "role", identity.role);
    out!(
        "{:<16}{}",
        "organization",
        scope_text(identity.organization_id.as_deref())
    );
    if let Some(info) = &identity.token_info {
        out!("{:<16}{} ({})", "name", info.name, info.id);
        out!(
            "{:<16}{}",
            "expires",
            info.expires_at
                .map(|at| short_time(Some(at)))
                .unwrap_or_else(|| "never".to_string())
        );
    }
    Ok(0)
}
