//! How the client decides to trust a server certificate: a pinned fingerprint, trust on first
//! use (recorded in [`KnownServers`]), or no check at all (`--insecure`).

use crate::fingerprint::{sha256_fingerprint, KnownServers};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};

/// The trust policy for one connection.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Accept any certificate (`--insecure`).
    Insecure,
    /// Accept only the certificate with this fingerprint (normalised hex).
    Fingerprint(String),
    /// Trust on first use: accept and record an unknown server; afterwards accept only the
    /// recorded certificate.
    FirstUse(KnownServers),
}

/// Checks the certificate's fingerprint instead of a CA chain: the server certificate is
/// self-signed, so the fingerprint is the identity. Handshake signatures are still verified.
#[derive(Debug)]
pub(crate) struct FingerprintVerifier {
    /// `None` accepts any certificate.
    expected: Option<String>,
    /// The fingerprint the server presented, for trust on first use and error messages.
    pub(crate) seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl FingerprintVerifier {
    pub(crate) fn new(expected: Option<String>) -> Arc<Self> {
        Arc::new(FingerprintVerifier {
            expected,
            seen: Mutex::new(None),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        })
    }

    pub(crate) fn seen(&self) -> Option<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or(None)
    }
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = sha256_fingerprint(end_entity.as_ref());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint.clone());
        }
        match &self.expected {
            Some(expected) if *expected != fingerprint => Err(rustls::Error::General(format!(
                "server certificate fingerprint {fingerprint} does not match the pinned {expected}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config that uses `verifier`.
pub(crate) fn client_config(verifier: Arc<FingerprintVerifier>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The aws-lc-rs provider supports the default protocol versions; this cannot fail.
        .expect("default TLS versions are supported by aws-lc-rs")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

/// Records the fingerprint after a successful first-use connection.
pub(crate) fn remember_first_use(trust: &Trust, server: &str, verifier: &FingerprintVerifier) {
    if let (Trust::FirstUse(store), Some(seen)) = (trust, verifier.seen()) {
        if store.get(server).is_none() {
            let _ = store.remember(server, &seen);
        }
    }
}
