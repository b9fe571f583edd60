//! TLS to the database, set by the URL as libpq reads it: `sslmode`, `sslrootcert`, `sslcert`
//! and `sslkey`.
//!
//! | `sslmode` | encrypted | the server's certificate |
//! |---|---|---|
//! | `disable` | never | not asked for |
//! | `prefer` (the default) | when the server offers it | not checked, unless a root certificate is given or found |
//! | `require` | always | not checked, unless a root certificate is given or found |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root, and names the host connected to |
//!
//! The trusted roots are `sslrootcert`: a PEM file, or `system` for this machine's own store.
//! Without it, `~/.postgresql/root.crt` is read when it exists, as libpq does; `verify-ca` and
//! `verify-full` refuse to start without either. `prefer` and `require` check the chain (as
//! `verify-ca`) whenever roots are there. `sslcert` and `sslkey` (PEM files) present a client
//! certificate to a server that asks for one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, pem, redact};

/// How the connection is encrypted and the server's certificate checked (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    fn wire(self) -> SslMode {
        match self {
            Self::Disable => SslMode::Disable,
            Self::Prefer => SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => SslMode::Require,
        }
    }
}

/// A database URL read for connecting: the driver's settings and the TLS connector.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) mode: Mode,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The URL's TLS parameters, taken out of its query string.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    mode: Option<String>,
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Splits the TLS parameters off `url`'s query string; the rest of the URL is returned as it
/// was written. A URL in `key=value` form (no `://`) is returned whole.
fn split(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) else {
        return Ok((url.to_owned(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|_| format!("{name} is not valid UTF-8 once decoded"))
        };
        let slot = match name {
            "sslmode" => &mut params.mode,
            "sslrootcert" => &mut params.root,
            "sslcert" => &mut params.cert,
            "sslkey" => &mut params.key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(decoded()?);
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// Reads `url` for connecting: its driver settings and its TLS. The error names what is wrong
/// (the URL shown without its password).
///
/// # Errors
///
/// [`StoreError::Unsuitable`] naming the URL's fault: an unknown `sslmode`, a certificate
/// file that cannot be read or holds no certificate, a URL the driver cannot parse.
pub(super) fn target(url: &str) -> Result<Target, StoreError> {
    let shown = redact(url);
    let fail = |e: String| StoreError::unsuitable(format!("{shown}: {e}"));
    let (rest, params) = split(url).map_err(fail)?;
    let mode = params
        .mode
        .as_deref()
        .map(Mode::parse)
        .transpose()
        .map_err(fail)?
        .unwrap_or(Mode::Prefer);
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
        StoreError::unsuitable_because(format!("{shown} is not a valid PostgreSQL URL: {e}"), e)
    })?;
    // A key=value string's own sslmode (disable, prefer, require) stands.
    if params.mode.is_some() {
        config.ssl_mode(mode.wire());
    }
    let tls = client_config(mode, &params).map_err(fail)?;
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
        mode,
    })
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`.
fn default_root() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"))
}

/// The trusted roots: `sslrootcert`'s, or the default file's when it exists. `None`: no roots
/// (the certificate goes unchecked, where the mode allows it).
fn roots(mode: Mode, given: Option<&str>) -> Result<Option<RootCertStore>, String> {
    let path = match given {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system: this machine's trusted roots hold no usable \
                     certificate"
                        .into(),
                );
            }
            return Ok(Some(roots));
        }
        Some(path) => PathBuf::from(path),
        None => match default_root().filter(|p| p.exists()) {
            Some(path) => path,
            None if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                return Err(format!(
                    "sslmode={} needs trusted roots: set sslrootcert to a PEM file of the \
                     server's certificate authority, or sslrootcert=system for this machine's \
                     own; {} does not exist",
                    if mode == Mode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    },
                    default_root().map_or_else(
                        || "~/.postgresql/root.crt".to_owned(),
                        |p| p.display().to_string()
                    )
                ));
            }
            None => return Ok(None),
        },
    };
    let (_, certs) = pem::certificates(&path).map_err(|e| format!("sslrootcert: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert: {}: {e}", path.display()))?;
    }
    Ok(Some(roots))
}

/// The rustls client settings for `mode`, on the `ring` provider.
fn client_config(mode: Mode, params: &TlsParams) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let roots = if mode == Mode::Disable {
        None
    } else {
        roots(mode, params.root.as_deref())?
    };
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
            if mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
        None => Arc::new(Unchecked(provider)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&params.cert, &params.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let (_, certs) =
                pem::certificates(Path::new(cert)).map_err(|e| format!("sslcert: {e}"))?;
            let (_, key) = pem::private_key(Path::new(key)).map_err(|e| format!("sslkey: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("sslcert and sslkey: {e}"))
        }
        (Some(_), None) => Err("sslcert is set without sslkey".into()),
        (None, Some(_)) => Err("sslkey is set without sslcert".into()),
    }
}

/// Encrypts without checking who signed the server's certificate (`prefer` and `require`
/// without roots, as libpq does); the handshake's signatures are still verified.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain against the roots but not the host name (`verify-ca`).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is checked before the name: a name error means the chain held.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `text` (an error and its causes), with what a TLS alert from the server means when it
/// refused this client's certificate: the alert alone names a TLS message, not the setting
/// to look at.
pub(super) fn explain_alert(text: String) -> String {
    const REFUSED: [&str; 7] = [
        "UnknownCA",
        "BadCertificate",
        "UnsupportedCertificate",
        "CertificateRevoked",
        "CertificateExpired",
        "CertificateUnknown",
        "AccessDenied",
    ];
    let Some((_, alert)) = text.split_once("received fatal alert: ") else {
        return text;
    };
    let alert: String = alert
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let hint = if alert == "CertificateRequired" {
        "the server asks for a client certificate: set sslcert and sslkey"
    } else if REFUSED.contains(&alert.as_str()) {
        "the server refused the client certificate (sslcert): its CA does not vouch for it, \
         or it has expired"
    } else {
        return text;
    };
    format!("{text} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, params) = split(
            "postgres://u:p@db.example:5432/app?application_name=errand&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20file.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/app?application_name=errand&connect_timeout=3"
        );
        assert_eq!(params.mode.as_deref(), Some("verify-full"));
        assert_eq!(params.root.as_deref(), Some("/etc/ca file.pem"));
        let (rest, params) = split("postgres://db/app?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://db/app");
        assert_eq!(params.mode.as_deref(), Some("disable"));
        let (rest, params) = split("host=db sslmode=require").unwrap();
        assert_eq!(rest, "host=db sslmode=require");
        assert_eq!(params, TlsParams::default());
    }

    #[test]
    fn the_mode_reaches_the_driver() {
        let wire = |url: &str| target(url).map(|t| (t.mode, t.config.get_ssl_mode()));
        assert_eq!(
            wire("postgres://db/app").unwrap(),
            (Mode::Prefer, SslMode::Prefer)
        );
        assert_eq!(
            wire("postgres://db/app?sslmode=disable").unwrap(),
            (Mode::Disable, SslMode::Disable)
        );
        assert_eq!(
            wire("postgres://db/app?sslmode=require").unwrap(),
            (Mode::Require, SslMode::Require)
        );
        assert_eq!(
            wire("postgres://db/app?sslmode=verify-full&sslrootcert=system").unwrap(),
            (Mode::VerifyFull, SslMode::Require)
        );
    }

    #[test]
    fn bad_tls_settings_are_named() {
        let err = |url: &str| target(url).unwrap_err().to_string();
        let e = err("postgres://u:secret@db/app?sslmode=allow");
        assert!(e.contains("sslmode=allow is not one of"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = err("postgres://db/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        assert!(
            e.contains("sslrootcert: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let e = err("postgres://db/app?sslmode=require&sslcert=/nonexistent/c.pem");
        assert!(e.contains("sslcert is set without sslkey"), "{e}");
        let e = err("postgres://db/app?sslmode=require&sslkey=/nonexistent/k.pem");
        assert!(e.contains("sslkey is set without sslcert"), "{e}");
        let empty = std::env::temp_dir().join(format!("errand-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = err(&format!(
            "postgres://db/app?sslmode=verify-full&sslrootcert={}",
            empty.display()
        ));
        std::fs::remove_file(&empty).unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn a_refused_client_certificate_is_explained() {
        let e = explain_alert(
            "pool: error communicating with the server: received fatal alert: UnknownCA".into(),
        );
        assert!(e.ends_with("(the server refused the client certificate (sslcert): its CA does not vouch for it, or it has expired)"), "{e}");
        let e = explain_alert("received fatal alert: CertificateRequired".into());
        assert!(e.contains("set sslcert and sslkey"), "{e}");
        let other = "received fatal alert: HandshakeFailure".to_owned();
        assert_eq!(explain_alert(other.clone()), other);
        assert_eq!(explain_alert("timed out".into()), "timed out");
    }
}
