//! HTTPS: the coordinator's certificate and key (`--tls-cert`, `--tls-key`), and reloading of
//! the files when they change, so a renewed certificate is served without a restart. Handshakes
//! run in each connection's own task (`connections.rs`), so a slow client delays no other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The certificate chain and private key files, PEM.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// Why the certificate or key cannot be served; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Unusable { path: PathBuf, problem: String },
}

/// How often the files are looked at for a renewed certificate.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(30);

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn unusable(path: &Path, problem: impl Into<String>) -> TlsSetupError {
    TlsSetupError::Unusable {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Read and check the certificate chain and key: the key must be the certificate's.
pub fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let certificate_pem = read(&files.certificate)?;
    let chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unusable(&files.certificate, format!("not PEM certificates: {error}")))?;
    if chain.is_empty() {
        return Err(unusable(
            &files.certificate,
            "holds no certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    let key_pem = read(&files.private_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        unusable(
            &files.private_key,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| {
            unusable(
                &files.private_key,
                format!("cannot sign with this key: {error}"),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|error| {
        unusable(
            &files.private_key,
            format!(
                "is not the key of the certificate in {} ({error})",
                files.certificate.display()
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

/// Serves the certificate loaded last; swapped when the files change.
#[derive(Debug)]
struct CurrentCertificate {
    certified: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.certified.read() {
            Ok(current) => Some(Arc::clone(&current)),
            Err(poisoned) => Some(Arc::clone(&poisoned.into_inner())),
        }
    }
}

/// The TLS setup a listener serves with, loaded and checked before the coordinator says it is
/// listening.
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<CurrentCertificate>,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsSetupError> {
        let certified = load_certified_key(files)?;
        let current = Arc::new(CurrentCertificate {
            certified: RwLock::new(certified),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| unusable(&files.certificate, format!("set up TLS: {error}")))?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
        // h2 for gRPC (and HTTP/2 clients), HTTP/1.1 for the rest; the connection serves
        // whichever the client picks.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            files: files.clone(),
            current,
            config: Arc::new(config),
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// Look at the files every [`RELOAD_CHECK_INTERVAL`]; when either changed, load them again and
/// serve the new certificate from the next handshake on. A change that does not load (a key
/// written before its certificate, a broken file) keeps the old certificate and is logged.
async fn reload_on_change(
    files: TlsFiles,
    current: Arc<CurrentCertificate>,
    check_interval: Duration,
    stop: CancellationToken,
) {
    let stamp = |files: &TlsFiles| (modified(&files.certificate), modified(&files.private_key));
    let mut loaded = stamp(&files);
    let mut interval = tokio::time::interval(check_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = stamp(&files);
        if now == loaded {
            continue;
        }
        match load_certified_key(&files) {
            Ok(certified) => {
                match current.certified.write() {
                    Ok(mut slot) => *slot = certified,
                    Err(poisoned) => *poisoned.into_inner() = certified,
                }
                loaded = now;
                tracing::info!(
                    certificate = %files.certificate.display(),
                    "serving the renewed TLS certificate"
                );
            }
            Err(error) => {
                // Logged once per change, and looked at again at the next tick: the other file
                // of a pair is often written a moment later.
                let error = format!("{:#}", anyhow::Error::new(error));
                tracing::warn!(%error, "the changed TLS files do not load; still serving the previous certificate");
                loaded = now;
            }
        }
    }
}

impl ServerTls {
    /// The acceptor that serves this certificate, and from now on the renewed certificate each
    /// time the files change, until `stop`.
    pub(crate) fn start(self, stop: &CancellationToken) -> TlsAcceptor {
        tokio::spawn(reload_on_change(
            self.files.clone(),
            self.current.clone(),
            RELOAD_CHECK_INTERVAL,
            stop.child_token(),
        ));
        TlsAcceptor::from(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_test_support::TestCertificateAuthority;

    fn served(current: &CurrentCertificate) -> Vec<u8> {
        let certified = current.certified.read().expect("lock").clone();
        certified.cert[0].as_ref().to_vec()
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_and_a_broken_one_is_not() {
        let authority = TestCertificateAuthority::new("reload authority").expect("authority");
        let directory = tempfile::tempdir().expect("temp dir");
        let first = authority
            .issue_server_certificate(&["localhost"])
            .expect("certificate");
        let files = first.write_to(directory.path(), "server").expect("write");
        let files = TlsFiles {
            certificate: files.certificate,
            private_key: files.private_key,
        };
        let tls = ServerTls::load(&files).expect("load");
        let original = served(&tls.current);
        let stop = CancellationToken::new();
        tokio::spawn(reload_on_change(
            files.clone(),
            tls.current.clone(),
            Duration::from_millis(20),
            stop.clone(),
        ));

        // A broken certificate file keeps the old certificate in service.
        std::fs::write(&files.certificate, "not a certificate").expect("break");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(served(&tls.current), original);

        // A renewed pair is picked up.
        let renewed = authority
            .issue_server_certificate(&["localhost"])
            .expect("certificate");
        // Modification times can be coarse: make sure the new files look changed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        renewed.write_to(directory.path(), "server").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while served(&tls.current) == original {
            assert!(
                std::time::Instant::now() < deadline,
                "the renewed certificate was not served within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expected =
            CertificateDer::from_pem_slice(renewed.certificate_pem.as_bytes()).expect("PEM");
        assert_eq!(served(&tls.current), expected.as_ref().to_vec());
        stop.cancel();
    }
}
