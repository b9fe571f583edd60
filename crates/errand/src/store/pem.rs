//! PEM files for the shared stores' TLS: certificates and private keys read with an error
//! that names the file. PostgreSQL and Redis both read them here.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The bytes of the PEM file at `path` and the certificates in it.
///
/// # Errors
///
/// A message naming the file when it cannot be read, is not PEM, or holds no certificate
/// (a client library may take such a file as "no roots at all", which fails later and
/// obscurely).
pub(crate) fn certificates(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(CertificateDer::into_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown} holds no PEM certificate"));
    }
    Ok((pem, certs))
}

/// The bytes of the PEM file at `path` and the private key in it.
///
/// # Errors
///
/// A message naming the file when it cannot be read or holds no PEM private key.
pub(crate) fn private_key(path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("cannot read a PEM private key from {shown}: {e}"))?;
    Ok((pem, key))
}
