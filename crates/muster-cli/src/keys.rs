//! `muster runner keygen PATH`: a new Ed25519 identity for a runner, as a PEM PKCS#8 file only
//! its owner can read (the format bakeoff's `save_private_key` writes and its
//! `load_private_key` reads).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use muster_core::identity::RunnerSigningKey;
use rand::RngCore;

#[derive(Args, Debug, Clone)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (created with mode 0600; its directory must exist).
    path: PathBuf,
    /// Replace a key file that is already there. Without it an existing key is never
    /// overwritten: that key may be the identity a coordinator knows this runner by.
    #[arg(long)]
    force: bool,
}

pub(crate) fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let mut secret = [0u8; 32];
    // The thread generator is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut secret);
    let key = RunnerSigningKey::from_secret_bytes(secret);
    let pem = key.to_pkcs8_pem()?;
    let path = &args.path;
    if path.exists() && !args.force {
        bail!(
            "{} already exists; it may be the key a coordinator knows this runner by. Pass --force to replace it",
            path.display()
        );
    }
    // Written next to the target and renamed over it, so a crash never leaves half a key, and
    // created 0600 so the secret is never readable by others, not even for a moment.
    let temporary = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("create key file {}", temporary.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write key file {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("move the key into place at {}", path.display()))?;
    let public_key = key.public_key();
    println!("wrote a new Ed25519 key to {}", path.display());
    println!("fingerprint: {}", public_key.fingerprint());
    println!("public key:  {}", public_key.to_base64());
    println!(
        "allow it with: muster runners keys add {}",
        public_key.to_base64()
    );
    Ok(())
}
