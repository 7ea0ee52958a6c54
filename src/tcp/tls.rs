//! [`TlsConfig`]: mutual TLS between the nodes of a cluster, and how a certificate says which
//! node it speaks for (documented on [`TlsConfig`], this module being private).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The DNS name a node's certificate must carry: `node-<node_id>.<cluster_id>`.
pub fn node_name(cluster_id: &str, node_id: impl fmt::Display) -> String {
    format!("node-{node_id}.{cluster_id}")
}

/// Why a [`TlsConfig`] could not be built, or a certificate does not fit its node.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind needed, or a malformed one.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the certificates or key (e.g. a key that does not match the
    /// certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
    /// The node's own certificate does not carry the name its node id and cluster id require.
    #[error("this node's certificate is not valid for {name:?} (cluster {cluster_id:?}, node {node_id}): {reason}")]
    WrongIdentity {
        /// The cluster id.
        cluster_id: String,
        /// The node id.
        node_id: String,
        /// The name required.
        name: String,
        /// Why it is not valid.
        reason: String,
    },
}

/// The certificates of one node: the cluster's CA, the node's certificate chain and key.
/// Cheap to clone.
///
/// # Identities
///
/// Every node has a certificate signed by the cluster's CA whose subject alternative names
/// include the DNS name [`node_name(cluster_id, node_id)`](node_name), e.g. `node-3.payments`
/// for node 3 of cluster `payments`. The certificate is used both to serve and to call, so if
/// it has an extended key usage extension that must allow both `serverAuth` and `clientAuth`.
///
/// - A **client** connecting to node 3 accepts only a server certificate that chains to the
///   CA and names `node-3.<cluster>`: the address book (the membership) may point at the wrong
///   host, but no host without node 3's key can pass for it.
/// - A **server** accepts only a client certificate that chains to the CA (the TLS handshake
///   fails otherwise, before any Raft message is read). The client's hello then says which
///   node it is; the server refuses it unless the certificate names that node of this cluster.
///   From then on the server knows which member the connection speaks for.
///
/// The server does not refuse a node the membership does not name (yet): a lagging node learns
/// of new members from the new members themselves. What keeps strangers out is the CA: sign
/// certificates only for the nodes of the cluster.
///
/// Only TLS 1.3 is offered, with rustls' ring provider.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    cert: CertificateDer<'static>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Rustls(e.to_string())
}

impl TlsConfig {
    /// A configuration from DER: the CA certificates to trust, this node's certificate chain
    /// (its own certificate first) and its private key.
    ///
    /// # Errors
    /// [`TlsConfigError::Rustls`] if rustls refuses them.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsConfigError> {
        let cert = cert_chain.first().cloned().ok_or_else(|| rustls_error("the certificate chain is empty"))?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(rustls_error)?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(rustls_error)?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert_chain.clone(), key.clone_key())
            .map_err(rustls_error)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(cert_chain, key)
            .map_err(rustls_error)?;
        Ok(Self { client: Arc::new(client), server: Arc::new(server), cert })
    }

    /// A configuration from PEM files: `ca` (one or more CA certificates), `cert` (this node's
    /// certificate, then any intermediates) and `key` (its private key: PKCS#8, PKCS#1 or
    /// SEC1).
    ///
    /// # Errors
    /// [`TlsConfigError`] naming the file that cannot be read or parsed, or rustls' refusal.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
            let pem_error = |e: rustls_pki_types::pem::Error| match e {
                rustls_pki_types::pem::Error::Io(source) => TlsConfigError::Io { path: path.into(), source },
                e => TlsConfigError::Pem { path: path.into(), problem: e.to_string() },
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(pem_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_error)?;
            if certs.is_empty() {
                return Err(TlsConfigError::Pem { path: path.into(), problem: "no CERTIFICATE in it".into() });
            }
            Ok(certs)
        };
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(source) => TlsConfigError::Io { path: key.into(), source },
            e => TlsConfigError::Pem { path: key.into(), problem: e.to_string() },
        })?;
        Self::new(certs(ca)?, certs(cert)?, key)
    }

    /// Check that this node's own certificate names node `node_id` of cluster `cluster_id`:
    /// the transport does it when it starts, so a certificate made for another node fails at
    /// once instead of at every peer.
    ///
    /// # Errors
    /// [`TlsConfigError::WrongIdentity`] if it does not.
    pub fn check_identity(&self, cluster_id: &str, node_id: impl fmt::Display) -> Result<(), TlsConfigError> {
        let name = node_name(cluster_id, &node_id);
        names_node(&self.cert, &name).map_err(|reason| TlsConfigError::WrongIdentity {
            cluster_id: cluster_id.to_string(),
            node_id: node_id.to_string(),
            name,
            reason,
        })
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

/// The server name a client checks when it connects to `node_id`.
pub(crate) fn server_name(cluster_id: &str, node_id: impl fmt::Display) -> Result<ServerName<'static>, String> {
    let name = node_name(cluster_id, node_id);
    ServerName::try_from(name.clone()).map_err(|e| format!("{name:?} is not a valid DNS name: {e}"))
}

/// Whether `cert` (whose chain the TLS handshake has already verified) carries `name`.
pub(crate) fn names_node(cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?} is not a valid DNS name: {e}"))?;
    let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    cert.verify_is_valid_for_subject_name(&server_name)
        .map_err(|e| format!("the certificate does not name {name:?}: {e}"))
}
