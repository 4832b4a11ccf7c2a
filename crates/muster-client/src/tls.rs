//! How a client trusts a coordinator served over `https://`: the system's certificate
//! authorities, or one authority file (`--ca-cert`) for a coordinator with a private certificate.
//!
//! TLS is rustls with the ring provider, chosen explicitly per client, so nothing depends on a
//! process-wide default provider being installed first.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ClientError;

/// Which certificate authorities a client accepts a coordinator's certificate from.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// `None`: the system's authorities.
    authority: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl ClientTls {
    /// Trust the system's certificate authorities (the default).
    pub fn system() -> ClientTls {
        ClientTls::default()
    }

    /// Trust only the authorities in a PEM file, as `--ca-cert` / `MUSTER_CA_CERT` name it.
    pub fn from_authority_file(path: &Path) -> Result<ClientTls, ClientError> {
        let pem = std::fs::read(path).map_err(|error| {
            ClientError::Config(format!(
                "read the certificate authority file {}: {error}",
                path.display()
            ))
        })?;
        ClientTls::from_authority_pem(&pem)
            .map_err(|error| ClientError::Config(format!("{}: {error}", path.display())))
    }

    /// Trust only the authorities in `pem` (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_authority_pem(pem: &[u8]) -> Result<ClientTls, ClientError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ClientError::Config(format!("read PEM certificates: {error}")))?;
        if certificates.is_empty() {
            return Err(ClientError::Config(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in the certificate authority file"
                    .into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        let (_, unusable) = roots.add_parsable_certificates(certificates.iter().cloned());
        if unusable > 0 {
            return Err(ClientError::Config(format!(
                "{unusable} of {} certificates in the certificate authority file cannot be used as trust anchors",
                certificates.len()
            )));
        }
        Ok(ClientTls {
            authority: Some(Arc::new(certificates)),
        })
    }

    /// The trust anchors: the named authority, or the system's (read once per process).
    fn roots(&self) -> Result<RootCertStore, ClientError> {
        let mut roots = RootCertStore::empty();
        match &self.authority {
            Some(certificates) => {
                roots.add_parsable_certificates(certificates.iter().cloned());
            }
            None => {
                let system = system_authorities()?;
                roots.add_parsable_certificates(system.iter().cloned());
            }
        }
        Ok(roots)
    }
}

fn system_authorities() -> Result<&'static [CertificateDer<'static>], ClientError> {
    static SYSTEM: OnceLock<Result<Vec<CertificateDer<'static>>, String>> = OnceLock::new();
    let loaded = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(format!(
                "no certificate authorities were found in the system's store to check the coordinator's certificate with ({}); name an authority file with --ca-cert or MUSTER_CA_CERT",
                if errors.is_empty() {
                    "it is empty".to_string()
                } else {
                    errors.join("; ")
                }
            ));
        }
        Ok(found.certs)
    });
    match loaded {
        Ok(certificates) => Ok(certificates),
        Err(message) => Err(ClientError::Config(message.clone())),
    }
}

/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A `reqwest` client builder set up for `base_url`: with `https://`, trusting what `tls` says;
/// with `http://`, with no trust anchors at all (it never makes a TLS connection, and loading the
/// system's store would only cost time).
pub fn http_client_builder(
    base_url: &str,
    tls: &ClientTls,
) -> Result<reqwest::ClientBuilder, ClientError> {
    let roots = if base_url.trim_start().starts_with("https://") {
        tls.roots()?
    } else {
        RootCertStore::empty()
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Config(format!("set up TLS: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        // Below the coordinator's default --idle-timeout (60 s), so the client retires an idle
        // pooled connection before the coordinator closes it under a request being sent.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT))
}

/// What to do about a TLS failure, when `cause` is one whose remedy is known.
pub(crate) fn hint_for(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    // rustls errors reach us wrapped in io::Errors (one in another), whose `source()` skips
    // the wrapped error.
    let mut current: &(dyn std::error::Error + 'static) = cause;
    let tls_error = loop {
        if let Some(tls_error) = current.downcast_ref::<rustls::Error>() {
            break tls_error;
        }
        match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => current = inner,
            None => return None,
        }
    };
    use rustls::CertificateError;
    match tls_error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::UnknownIssuer => Some(
                "the coordinator's certificate is not from an authority this client trusts: name that authority's certificate with --ca-cert or MUSTER_CA_CERT",
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Some(
                    "the coordinator's certificate does not name the host of the server URL: connect by a name or address the certificate lists",
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Some("the coordinator's certificate has expired: renew it")
            }
            CertificateError::Other(other)
                if format!("{other:?}").contains("CaUsedAsEndEntity") =>
            {
                Some(
                    "the coordinator serves an authority's certificate as its own, as `openssl req -x509` makes by default: give it a server certificate issued by that authority, or make the self-signed one with `-addext basicConstraints=critical,CA:FALSE`",
                )
            }
            _ => None,
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Some("the server did not answer with TLS: if it serves plain HTTP, use an http:// URL")
        }
        _ => None,
    }
}
