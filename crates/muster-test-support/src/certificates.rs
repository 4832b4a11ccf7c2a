//! Certificates for TLS tests: a private certificate authority made fresh for each test, and
//! server certificates it signs, written as PEM files the way an operator would hand them over.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that exists only for one test.
pub struct TestCertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM text.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

/// Where [`IssuedCertificate::write_to`] put the two files.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl TestCertificateAuthority {
    /// A new authority whose certificate names itself `common_name`.
    pub fn new(common_name: &str) -> anyhow::Result<TestCertificateAuthority> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .context("describe the test certificate authority")?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generate the authority's key")?;
        let issuer = CertifiedIssuer::self_signed(params, key)
            .context("sign the test certificate authority")?;
        Ok(TestCertificateAuthority { issuer })
    }

    /// The authority's certificate: what a client is told to trust.
    pub fn certificate_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Write the authority's certificate to `path`.
    pub fn write_certificate(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.certificate_pem())
            .with_context(|| format!("write the authority's certificate to {}", path.display()))
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this authority.
    pub fn issue_server_certificate(&self, names: &[&str]) -> anyhow::Result<IssuedCertificate> {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_string())
                .collect::<Vec<_>>(),
        )
        .context("describe a server certificate")?;
        let mut distinguished_name = DistinguishedName::new();
        distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.distinguished_name = distinguished_name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("generate a server key")?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .context("sign a server certificate")?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate naming `common_name` (for PostgreSQL's `cert` login, the role).
    pub fn issue_client_certificate(&self, common_name: &str) -> anyhow::Result<IssuedCertificate> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .context("describe a client certificate")?;
        let mut distinguished_name = DistinguishedName::new();
        distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name = distinguished_name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().context("generate a client key")?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .context("sign a client certificate")?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }
}

impl IssuedCertificate {
    /// Write `<stem>.crt` and `<stem>.key` into `directory`; the key readable by its owner only
    /// (PostgreSQL refuses a key others can read).
    pub fn write_to(&self, directory: &Path, stem: &str) -> anyhow::Result<CertificateFiles> {
        use std::os::unix::fs::PermissionsExt;
        let certificate = directory.join(format!("{stem}.crt"));
        let private_key = directory.join(format!("{stem}.key"));
        std::fs::write(&certificate, &self.certificate_pem)
            .with_context(|| format!("write {}", certificate.display()))?;
        std::fs::write(&private_key, &self.private_key_pem)
            .with_context(|| format!("write {}", private_key.display()))?;
        std::fs::set_permissions(&private_key, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restrict {}", private_key.display()))?;
        Ok(CertificateFiles {
            certificate,
            private_key,
        })
    }
}
