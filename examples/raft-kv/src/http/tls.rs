//! HTTPS for the HTTP API: [`HttpTls`] (the files) and [`TlsSetup`] (loaded).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quorate::tcp::TlsConfigError;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of a node's HTTPS.
#[derive(Debug, Clone)]
pub struct HttpTls {
    /// This node's HTTPS certificate chain (it must name the host of `--http-addr`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed the other nodes' HTTPS certificates: a follower relays requests to
    /// the leader over HTTPS and checks its certificate against it.
    pub ca: PathBuf,
    /// If set, a client certificate chaining to this CA authenticates admin requests.
    pub admin_client_ca: Option<PathBuf>,
}

/// [`HttpTls`] loaded: what the server accepts with, and what relays trust.
#[derive(Clone)]
pub struct TlsSetup {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// The PEM of [`HttpTls::ca`], for the relay's HTTP client.
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) client_certificates: bool,
}

fn pem_error(path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsConfigError + '_ {
    move |e| match e {
        rustls_pki_types::pem::Error::Io(source) => TlsConfigError::Io { path: path.into(), source },
        e => TlsConfigError::Pem { path: path.into(), problem: e.to_string() },
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<_, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem { path: path.into(), problem: "no CERTIFICATE in it".into() });
    }
    Ok(certs)
}

fn rustls_error(e: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError::Rustls(e.to_string())
}

impl TlsSetup {
    /// Read the files and build the server's TLS configuration.
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file that cannot be read or used.
    pub fn load(files: &HttpTls) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error(&files.key))?;
        let ca_pem =
            std::fs::read(&files.ca).map_err(|source| TlsConfigError::Io { path: files.ca.clone(), source })?;
        certs(&files.ca)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error)?;
        let config = match &files.admin_client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs(path)? {
                    roots.add(cert).map_err(rustls_error)?;
                }
                // A client without a certificate is served too (the key-value routes need
                // none); one with a certificate must present one of this CA.
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(rustls_error)?;
                builder.with_client_cert_verifier(verifier).with_single_cert(chain, key).map_err(rustls_error)?
            }
            None => builder.with_no_client_auth().with_single_cert(chain, key).map_err(rustls_error)?,
        };
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem,
            client_certificates: files.admin_client_ca.is_some(),
        })
    }
}
