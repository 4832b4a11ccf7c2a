//! TLS to PostgreSQL, with libpq's meanings of the database URL's TLS parameters, so a URL that
//! works with `psql` works here:
//!
//! - `sslmode`: `disable` (plain TCP), `allow` and `prefer` (TLS when the server offers it; the
//!   default), `require` (TLS or no connection), `verify-ca` (and the server's certificate chains
//!   to a trusted authority), `verify-full` (and names the host connected to).
//! - `sslrootcert`: a PEM file of the authorities to trust, or `system` for the system's store.
//!   With a file, `require` checks the chain as `verify-ca` does, as libpq does. Without it,
//!   `verify-ca` and `verify-full` trust the system's store (libpq would look for
//!   `~/.postgresql/root.crt`, which a service account rarely has).
//! - `sslcert` and `sslkey`: a client certificate (PEM chain) and its key, for servers that
//!   authenticate clients by certificate.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and none of the files, so these
//! parameters are taken out of the URL here and the rest is left to tokio-postgres.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// The URL parameters handled here rather than by tokio-postgres.
const TLS_PARAMETERS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// How far a connection checks the server it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, StoreError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            // libpq tries plain TCP first with `allow`; tokio-postgres can only try TLS first.
            // Both accept either, which is what `allow` promises.
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(rejected(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// The TLS parameters found in a database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsParameters {
    pub(crate) mode: TlsMode,
    pub(crate) root_certificates: Option<RootCertificates>,
    pub(crate) client_certificate: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCertificates {
    System,
    File(PathBuf),
}

/// The connection settings of `url` and the TLS connector its parameters ask for.
pub(crate) fn connection_settings(
    url: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), StoreError> {
    let (url_without_tls, parameters) = split_tls_parameters(url)?;
    let mut config = tokio_postgres::Config::from_str(&url_without_tls)
        .map_err(|error| rejected(error.to_string()))?;
    config.ssl_mode(match parameters.mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    let connector = MakeRustlsConnect::new(client_config(&parameters)?);
    Ok((config, connector))
}

/// Take the TLS parameters out of `url` (the `postgres://` form, or libpq's `key=value` form
/// without quoted values); answers the rest of the URL and the parameters.
pub(crate) fn split_tls_parameters(url: &str) -> Result<(String, TlsParameters), StoreError> {
    let mut found: Vec<(String, String)> = Vec::new();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let key = percent_decode(key)?;
                    if TLS_PARAMETERS.contains(&key.as_str()) {
                        found.push((key, percent_decode(value)?));
                    } else {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some((key, value)) if TLS_PARAMETERS.contains(&key) => {
                    found.push((key.to_string(), value.to_string()));
                }
                _ => kept.push(token),
            }
        }
        kept.join(" ")
    };
    let mut parameters = TlsParameters {
        mode: TlsMode::Prefer,
        root_certificates: None,
        client_certificate: None,
        client_key: None,
    };
    for (key, value) in found {
        if value.is_empty() {
            return Err(rejected(format!("{key} is empty")));
        }
        match key.as_str() {
            "sslmode" => parameters.mode = TlsMode::parse(&value)?,
            "sslrootcert" if value == "system" => {
                parameters.root_certificates = Some(RootCertificates::System);
            }
            "sslrootcert" => {
                parameters.root_certificates = Some(RootCertificates::File(PathBuf::from(value)));
            }
            "sslcert" => parameters.client_certificate = Some(PathBuf::from(value)),
            "sslkey" => parameters.client_key = Some(PathBuf::from(value)),
            _ => {}
        }
    }
    if parameters.client_certificate.is_some() != parameters.client_key.is_some() {
        return Err(rejected(
            "sslcert and sslkey go together: give both or neither".to_string(),
        ));
    }
    Ok((rest, parameters))
}

fn percent_decode(text: &str) -> Result<String, StoreError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| rejected(format!("`{text}` is not UTF-8 once percent-decoded")))
}

fn rejected(message: String) -> StoreError {
    StoreError::Rejected(format!("database URL: {message}"))
}

/// The rustls settings for `parameters`.
fn client_config(parameters: &TlsParameters) -> Result<rustls::ClientConfig, StoreError> {
    // ring, named here rather than taken from a process-wide default: the store must not depend
    // on what else in the process installed one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> =
        match (parameters.mode, &parameters.root_certificates) {
            // No TLS will be used: the files are not even read.
            (TlsMode::Disable, _) => Arc::new(EncryptionOnly {
                algorithms: provider.signature_verification_algorithms,
            }),
            // libpq: with an authority file, `prefer` and `require` check the chain too.
            (TlsMode::Prefer | TlsMode::Require, None) => Arc::new(EncryptionOnly {
                algorithms: provider.signature_verification_algorithms,
            }),
            (TlsMode::VerifyFull, roots) => web_pki_verifier(roots.as_ref(), &provider)?,
            (_, roots) => Arc::new(ChainOnly {
                inner: web_pki_verifier(roots.as_ref(), &provider)?,
            }),
        };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Internal(format!("set up TLS: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&parameters.client_certificate, &parameters.client_key) {
        (Some(certificate_path), Some(key_path)) => {
            let chain = read_certificates(certificate_path, "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| {
                rejected(format!(
                    "read the sslkey file {}: {error}",
                    key_path.display()
                ))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                rejected(format!(
                    "use the client certificate {} with the key {}: {error}",
                    certificate_path.display(),
                    key_path.display()
                ))
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn web_pki_verifier(
    roots: Option<&RootCertificates>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(RootCertificates::File(path)) => {
            let (added, _ignored) =
                store.add_parsable_certificates(read_certificates(path, "sslrootcert")?);
            if added == 0 {
                return Err(rejected(format!(
                    "the sslrootcert file {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None | Some(RootCertificates::System) => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(rejected(format!(
                    "no trusted certificates were found in the system's store to check the server with ({}); name an authority file with sslrootcert=PATH",
                    if errors.is_empty() {
                        "it is empty".to_string()
                    } else {
                        errors.join("; ")
                    }
                )));
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
        .build()
        .map_err(|error| StoreError::Internal(format!("set up certificate checks: {error}")))
}

fn read_certificates(
    path: &Path,
    parameter: &str,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| {
            rejected(format!(
                "read the {parameter} file {}: {error}",
                path.display()
            ))
        })?;
    if certificates.is_empty() {
        return Err(rejected(format!(
            "the {parameter} file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

/// `prefer` and `require` without an authority: the connection is encrypted and the server's
/// handshake signature checked, but not who the certificate belongs to (libpq does the same).
#[derive(Debug)]
struct EncryptionOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check, but a certificate for another host name is accepted. The name
/// is the last thing checked, after the chain, its validity dates and its usage.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters_of(url: &str) -> (String, TlsParameters) {
        match split_tls_parameters(url) {
            Ok(split) => split,
            Err(error) => panic!("split {url}: {error}"),
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_of_a_url_and_the_rest_is_kept_as_written() {
        let (rest, parameters) = parameters_of(
            "postgres://muster:p%40ss@db:5432/muster?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            rest,
            "postgres://muster:p%40ss@db:5432/muster?application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(parameters.mode, TlsMode::VerifyFull);
        assert_eq!(
            parameters.root_certificates,
            Some(RootCertificates::File(PathBuf::from("/etc/ca.pem")))
        );

        let (rest, parameters) = parameters_of("postgresql://db/muster?sslmode=require");
        assert_eq!(rest, "postgresql://db/muster");
        assert_eq!(parameters.mode, TlsMode::Require);
        assert_eq!(parameters.root_certificates, None);

        let (rest, parameters) =
            parameters_of("host=db dbname=muster sslmode=verify-ca sslrootcert=system");
        assert_eq!(rest, "host=db dbname=muster");
        assert_eq!(parameters.mode, TlsMode::VerifyCa);
        assert_eq!(parameters.root_certificates, Some(RootCertificates::System));
    }

    #[test]
    fn without_tls_parameters_a_connection_prefers_tls_as_libpq_does() {
        let (rest, parameters) = parameters_of("postgres://db/muster");
        assert_eq!(rest, "postgres://db/muster");
        assert_eq!(parameters.mode, TlsMode::Prefer);
    }

    #[test]
    fn bad_tls_parameters_are_rejected_with_what_is_wrong() {
        for (url, expected) in [
            (
                "postgres://db/m?sslmode=verify",
                "sslmode `verify` is not one of",
            ),
            ("postgres://db/m?sslrootcert=", "sslrootcert is empty"),
            (
                "postgres://db/m?sslcert=/c.pem",
                "sslcert and sslkey go together",
            ),
            ("postgres://db/m?sslmode=%FF", "not UTF-8"),
        ] {
            match split_tls_parameters(url) {
                Err(StoreError::Rejected(message)) => assert!(
                    message.contains(expected),
                    "{url}: `{message}` lacks `{expected}`"
                ),
                other => panic!("{url}: expected a rejection, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_authority_file_is_named_in_the_error() {
        match connection_settings(
            "postgres://db/m?sslmode=verify-full&sslrootcert=/nonexistent/muster-ca.pem",
        ) {
            Err(StoreError::Rejected(message)) => {
                assert!(message.contains("/nonexistent/muster-ca.pem"), "{message}");
            }
            Err(other) => panic!("expected a rejection, got {other:?}"),
            Ok(_) => panic!("expected a rejection, got a connector"),
        }
    }
}
