//! TLS for the site proxy, on the one rustls (aws-lc-rs) the whole binary uses: server
//! configs with certificates chosen by SNI, ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3,
//! resumption by tickets and by session ID, optional client certificates; and certificates
//! that reload when their files change, keeping the old pair when a new one is broken.
//!
//! A certificate is chosen for a server name by asking webpki whether the certificate is
//! valid for it (its subject alternative names, wildcards included), so the operator lists
//! files, never names; the first pair is the default for clients that send no name or one no
//! certificate holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// A TLS setup problem; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(file: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        file: file.to_path_buf(),
        message: message.to_string(),
    }
}

/// Certificate and key pairs, loaded; the first is the default.
#[derive(Debug)]
pub struct Certificates {
    keys: Vec<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads each (chain, key) pair of PEM files and checks that the key matches.
    pub fn load(pairs: &[(PathBuf, PathBuf)]) -> Result<Certificates, TlsError> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut keys = Vec::new();
        for (cert, key) in pairs {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(cert, e))?;
            if chain.is_empty() {
                return Err(file_error(cert, "no certificate in the file"));
            }
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
            let certified = CertifiedKey::from_der(chain, private, &provider)
                .map_err(|e| file_error(key, format!("does not fit {}: {e}", cert.display())))?;
            keys.push(Arc::new(certified));
        }
        Ok(Certificates { keys })
    }

    /// The pair for `name`: the first whose certificate is valid for it, else the default.
    fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let wanted = name.and_then(|n| ServerName::try_from(n.to_string()).ok());
        if let Some(wanted) = wanted {
            for k in &self.keys {
                let Some(der) = k.cert.first() else { continue };
                let valid = webpki::EndEntityCert::try_from(der)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&wanted).is_ok());
                if valid {
                    return Some(k.clone());
                }
            }
        }
        self.keys.first().cloned()
    }
}

/// Chooses certificates by SNI from the current set; reloading swaps the set whole.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<Certificates>,
    /// Names already matched in the current set, so a handshake parses no certificate.
    chosen: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

/// Names remembered by a resolver at most.
const CHOSEN_LIMIT: usize = 4096;

impl Resolver {
    pub fn new(certs: Certificates) -> Resolver {
        Resolver {
            current: ArcSwap::from_pointee(certs),
            chosen: Mutex::new(HashMap::new()),
        }
    }

    /// Serves `certs` from the next handshake on.
    pub fn replace(&self, certs: Certificates) {
        self.current.store(Arc::new(certs));
        self.chosen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        if let Some(n) = &name {
            let chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = chosen.get(n) {
                return Some(k.clone());
            }
        }
        let key = self.current.load().for_name(name.as_deref())?;
        if let Some(n) = name {
            let mut chosen = self.chosen.lock().unwrap_or_else(|p| p.into_inner());
            if chosen.len() >= CHOSEN_LIMIT {
                chosen.clear();
            }
            chosen.insert(n, key.clone());
        }
        Some(key)
    }
}

impl From<Certificates> for Arc<Resolver> {
    fn from(certs: Certificates) -> Self {
        Arc::new(Resolver::new(certs))
    }
}

/// Resumed sessions kept per listener (TLS 1.2 session IDs; TLS 1.3 uses tickets).
const SESSION_CACHE: usize = 20_000;

/// A server config: certificates from `resolver`, ALPN h2 then http/1.1, resumption unless the
/// caller turns it off (every connection then makes a full handshake), and client
/// certificates required when `client_ca` is given.
pub fn server_config(
    resolver: Arc<Resolver>,
    client_ca: Option<&Path>,
    resumption: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
                roots
                    .add(cert.map_err(|e| file_error(ca, e))?)
                    .map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if resumption {
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// A client config for HTTPS to servers: verified against `ca_file` (PEM), or the system's
/// trust store; or, when `verify` is false, not verified at all (the handshake's signatures
/// still are).
pub fn client_config(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match (verify, ca_file) {
        (false, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
        (true, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
                roots
                    .add(cert.map_err(|e| file_error(ca, e))?)
                    .map_err(|e| file_error(ca, e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (true, None) => builder.with_platform_verifier()?.with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any server certificate (a pool that says `verify = false`); checks the
/// handshake's signatures as usual.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The modification times of files, to notice a change.
pub fn stamps(files: &[&Path]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}
