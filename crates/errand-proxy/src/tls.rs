//! TLS, with rustls on the `ring` provider, TLS 1.2 and 1.3 only:
//!
//! - a listener's certificate ([`Certificates`], the public listener's and the admin
//!   listener's), read from PEM files and read again without a restart when the files change
//!   or on `SIGHUP`; a connection keeps the certificate it was made with, and a bad new file
//!   is logged while the old certificate stays;
//! - the client side of an `https://` upstream ([`upstream_config`]): the system's roots or a
//!   private CA, an optional client certificate, and a loudly named way to skip verification;
//! - the client side of the admin verbs ([`admin_client_config`]) for an `https://` admin
//!   listener.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::settings::UpstreamSection;

/// The one crypto provider of every TLS configuration here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The certificates in the PEM file at `path`; `what` names the setting in errors.
fn read_certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what}: {} is not PEM: {e}", path.display()))?;
    if certificates.is_empty() {
        bail!("{what}: {} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// The private key in the PEM file at `path`; `what` names the setting in errors.
fn read_key(path: &Path, what: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("{what}: no PEM private key in {}: {e}", path.display()))
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path, flags: [&str; 2]) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(cert, flags[0])?;
    let private = read_key(key, flags[1])?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "{}: {} is not the key of the certificate in {} ({e})",
            flags[1],
            key.display(),
            cert.display()
        )
    })
}

/// A listener's certificate, from two PEM files, as rustls asks for it on each handshake.
#[derive(Debug)]
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    /// The flags that name the two files, in errors.
    flags: [&'static str; 2],
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when they were read.
    stamp: [Option<SystemTime>; 2],
}

/// The flags of the public listener's certificate and key.
pub(crate) const LISTENER_FLAGS: [&str; 2] = ["--tls-cert", "--tls-key"];

/// The flags of the admin listener's certificate and key.
pub(crate) const ADMIN_FLAGS: [&str; 2] = ["--admin-tls-cert", "--admin-tls-key"];

impl Certificates {
    /// Reads the certificate chain at `cert` and its key at `key`, the files of `flags`.
    ///
    /// # Errors
    ///
    /// A message naming the flag and file at fault: unreadable, not PEM, no certificate or
    /// key, or a key that does not match the certificate.
    pub(crate) fn load(
        cert: PathBuf,
        key: PathBuf,
        flags: [&'static str; 2],
    ) -> anyhow::Result<Self> {
        let stamp = stamps(&cert, &key);
        let loaded = certified_key(&cert, &key, flags)?;
        Ok(Self {
            cert,
            key,
            flags,
            current: RwLock::new(Loaded {
                key: Arc::new(loaded),
                stamp,
            }),
        })
    }

    /// Reads the files again if they changed since they were read (or always, when
    /// `forced`); on an error the certificate in use stays. Whether a new one is in use.
    pub(crate) fn reload(&self, forced: bool) -> bool {
        let stamp = stamps(&self.cert, &self.key);
        let seen = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stamp;
        if !forced && stamp == seen {
            return false;
        }
        match certified_key(&self.cert, &self.key, self.flags) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded {
                    key: Arc::new(key),
                    stamp,
                };
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Remember the stamp, so a bad file is reported once, not on every check.
                self.current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stamp = stamp;
                tracing::error!(error = %format!("{e:#}"), "TLS certificate not reloaded; the previous one stays in use");
                false
            }
        }
    }

    /// Reloads on `SIGHUP`, and when the files change (looked at every `every`), until
    /// `shutdown`.
    pub(crate) fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => { self.reload(false); }
                    _ = hangup => { self.reload(true); }
                }
            }
        });
    }

    /// An acceptor for the listener: ALPN `h2` and `http/1.1`, this certificate (as reloaded).
    ///
    /// # Errors
    ///
    /// Only if rustls refuses the protocol versions (it does not, for 1.2 and 1.3).
    pub(crate) fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .context("TLS: protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current.key))
    }
}

fn stamps(cert: &Path, key: &Path) -> [Option<SystemTime>; 2] {
    [cert, key].map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

/// The client configuration for an `https://` upstream, from `[upstream]`: the system's
/// roots, or only those of `ca_file`; a client certificate when `cert_file` and `key_file`
/// are set; no verification at all under `danger_accept_invalid_certs` (logged loudly).
/// ALPN is set by the connector.
///
/// # Errors
///
/// A message naming the setting at fault: an unreadable or empty file, a certificate and key
/// that do not match, a client key without its certificate, or no roots at all.
pub(crate) fn upstream_config(section: &UpstreamSection) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS: protocol versions")?;
    let builder = if section.danger_accept_invalid_certs {
        tracing::warn!(
            "[upstream] danger_accept_invalid_certs = true: the upstream's certificate is NOT \
             verified; anyone on the path can read and change what errand fetches and stores"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider().signature_verification_algorithms,
            )))
    } else {
        builder.with_root_certificates(roots(section.ca_file.as_deref(), UPSTREAM_ROOTS)?)
    };
    let config = match (&section.cert_file, &section.key_file) {
        (Some(cert), Some(key)) => {
            let what = ["[upstream] cert_file", "[upstream] key_file"];
            let chain = read_certificates(cert, what[0])?;
            let key = read_key(key, what[1])?;
            builder.with_client_auth_cert(chain, key).with_context(|| {
                format!("{} and {}: not a certificate and its key", what[0], what[1])
            })?
        }
        // Half a pair is refused by `settings::check_upstream`.
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// A client configuration for an `http://` upstream, which never makes a TLS connection:
/// no roots, so nothing could be verified with it.
///
/// # Errors
///
/// Only if rustls refuses the protocol versions (it does not, for 1.2 and 1.3).
pub(crate) fn unused_client_config() -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS: protocol versions")?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The client configuration of the admin verbs for an `https://` admin listener: the
/// system's roots, or only those of `ca_file` (`--admin-ca-file`).
///
/// # Errors
///
/// A message naming `--admin-ca-file` when it cannot be used, or saying that no roots were
/// found.
pub(crate) fn admin_client_config(ca_file: Option<&Path>) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS: protocol versions")?
        .with_root_certificates(roots(ca_file, ADMIN_ROOTS)?)
        .with_no_client_auth())
}

/// Who needs roots, for [`roots`]'s errors: the setting of a CA file, and what to say when
/// the system has none.
struct RootsFor {
    ca_setting: &'static str,
    none_found: &'static str,
}

const UPSTREAM_ROOTS: RootsFor = RootsFor {
    ca_setting: "[upstream] ca_file",
    none_found: "--upstream: an https:// upstream needs root certificates, and none were found \
                 on this system; install the CA certificates package or set [upstream] ca_file",
};

const ADMIN_ROOTS: RootsFor = RootsFor {
    ca_setting: "--admin-ca-file",
    none_found: "--admin: an https:// admin listener needs root certificates, and none were \
                 found on this system; give --admin-ca-file",
};

/// The roots a server's certificate is checked against: those of `ca_file` only, or the
/// system's.
fn roots(ca_file: Option<&Path>, what: RootsFor) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        for certificate in read_certificates(path, what.ca_setting)? {
            roots.add(certificate).with_context(|| {
                format!(
                    "{}: {} holds a certificate rustls cannot use",
                    what.ca_setting,
                    path.display()
                )
            })?;
        }
        return Ok(roots);
    }
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a system root certificate could not be read");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        bail!("{}", what.none_found);
    }
    Ok(roots)
}

/// Accepts any certificate (`danger_accept_invalid_certs`); the handshake's signatures are
/// still checked, so the connection is at least made with the key the server showed.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
