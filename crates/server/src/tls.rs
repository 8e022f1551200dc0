//! The API's TLS identity: the certificate given by `--api-cert/--api-key`, or a self-signed one
//! generated on first start and kept in the state dir so its fingerprint never changes.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// A loaded certificate chain and key.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex SHA-256 of the leaf certificate (DER), no colons.
    pub fingerprint: String,
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Loads a PEM certificate chain and private key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsIdentity> {
    let cert_pem = read_pem(cert)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        anyhow::bail!("{}: no certificate found (expected PEM)", cert.display());
    };
    let fingerprint = hex::encode(Sha256::digest(leaf.as_ref()));
    let key_pem = read_pem(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", key.display()))?
        .ok_or_else(|| anyhow::anyhow!("{}: no private key found (expected PEM)", key.display()))?;
    Ok(TlsIdentity {
        chain,
        key: key_der,
        fingerprint,
    })
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Loads the self-signed identity from `state_dir/tls`, creating it on first start.
pub fn load_or_create_self_signed(
    state_dir: &Path,
    host_name: &str,
) -> anyhow::Result<TlsIdentity> {
    let dir = state_dir.join("tls");
    let cert = dir.join("api-cert.pem");
    let key = dir.join("api-key.pem");
    if !cert.exists() || !key.exists() {
        crate::state::ensure_private_dir(&dir)?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !host_name.is_empty() && !names.iter().any(|n| n == host_name) {
            names.push(host_name.to_string());
        }
        let generated = rcgen::generate_simple_self_signed(names)?;
        // Key first: a crash between the two writes leaves no certificate without its key.
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&cert);
        write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
        write_private(&cert, generated.cert.pem().as_bytes())?;
        tracing::info!(path = %cert.display(), "generated a self-signed API certificate");
    }
    load(&cert, &key)
}

/// A rustls server config for the identity (HTTP/1.1).
pub fn server_config(identity: &TlsIdentity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
