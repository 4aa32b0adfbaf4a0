//! TLS for the uplink: builds the rustls client configuration from the settings (trust from `ca_file` or
//! the system store, an optional client certificate for mutual TLS) and turns handshake failures into a
//! sentence that names the peer and the reason. It never connects and never falls back to plain TCP: a
//! certificate that does not verify is an error, full stop.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::{
    self, pki_types::PrivateKeyDer, CertificateError, ClientConfig, RootCertStore,
};
use rumqttc::{ConnectionError, TlsError};

/// Why the TLS configuration could not be built. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("upstream {key} {path}: {source} (check the path and that sensorgate may read it)")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("upstream {key} {path}: {what}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("upstream: the system trust store has no usable certificate ({0}); set ca_file")]
    NoSystemRoots(String),
    #[error("upstream: cert_file and key_file go together (one is set, the other is not)")]
    HalfClientIdentity,
    #[error("upstream: the TLS library refused its own defaults ({0})")]
    Provider(String),
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<File>, TlsSetupError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsSetupError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
}

fn invalid(key: &'static str, path: &Path, what: impl Into<String>) -> TlsSetupError {
    TlsSetupError::Invalid {
        key,
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The rustls client configuration: roots from `ca_file` (PEM) or the system store, and a client
/// certificate chain and key (PEM) when both files are given.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in rustls_pemfile::certs(&mut open("ca_file", path)?) {
                let cert = cert.map_err(|e| invalid("ca_file", path, e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid("ca_file", path, format!("unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid("ca_file", path, "no PEM certificate in it"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = match found.errors.first() {
                    Some(error) => error.to_string(),
                    None => "none found".into(),
                };
                return Err(TlsSetupError::NoSystemRoots(why));
            }
        }
    }
    // ring, the tree's one provider (vendor/rmqtt-net is patched to it), named explicitly: a second
    // provider switched on by some crate's features would make rustls's implicit choice refuse.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Provider(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = rustls_pemfile::certs(&mut open("cert_file", cert_path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("cert_file", cert_path, e.to_string()))?;
            if chain.is_empty() {
                return Err(invalid("cert_file", cert_path, "no PEM certificate in it"));
            }
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut open("key_file", key_path)?)
                    .map_err(|e| invalid("key_file", key_path, e.to_string()))?
                    .ok_or_else(|| invalid("key_file", key_path, "no PEM private key in it"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                invalid("key_file", key_path, format!("does not fit cert_file: {e}"))
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsSetupError::HalfClientIdentity),
    };
    Ok(Arc::new(config))
}

/// One line for the operator: what went wrong connecting to `peer`, and where to look.
pub fn describe_connection_error(error: &ConnectionError, peer: &str) -> String {
    match error {
        ConnectionError::Tls(tls) => describe_tls(tls, peer),
        ConnectionError::Io(io) => describe_io(io, peer),
        ConnectionError::ConnectionRefused(code) => refused_connection(&format!("{code:?}"), peer),
        ConnectionError::NetworkTimeout => format!("{peer}: no answer within the connect timeout"),
        other => format!("{peer}: {other}"),
    }
}

/// [`describe_connection_error`] for the MQTT 5 client's errors.
pub fn describe_connection_error_v5(error: &rumqttc::v5::ConnectionError, peer: &str) -> String {
    use rumqttc::v5::ConnectionError as E;
    match error {
        E::Tls(tls) => describe_tls(tls, peer),
        E::Io(io) => describe_io(io, peer),
        E::ConnectionRefused(code) => refused_connection(&format!("{code:?}"), peer),
        E::Timeout(_) => format!("{peer}: no answer within the connect timeout"),
        other => format!("{peer}: {other}"),
    }
}

fn describe_tls(error: &TlsError, peer: &str) -> String {
    match error {
        TlsError::Io(io) => describe_io(io, peer),
        TlsError::TLS(tls) => format!("TLS with {peer} failed: {}", explain(tls)),
        other => format!("TLS with {peer} failed: {other}"),
    }
}

fn describe_io(io: &io::Error, peer: &str) -> String {
    match rustls_error(io) {
        Some(tls) => format!("TLS with {peer} failed: {}", explain(tls)),
        None => format!("{peer}: {io}"),
    }
}

fn refused_connection(code: &str, peer: &str) -> String {
    format!("{peer} refused the connection ({code}): check client_id, username and password_file")
}

fn rustls_error(io: &io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn explain(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the broker's certificate has expired".into(),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the broker's certificate is not valid yet (is the clock right?)".into(),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the broker's certificate is not signed by a trusted CA (ca_file, or the system store)"
                .into()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the broker's certificate is not valid for the host name in upstream.url".into(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the broker's certificate was refused: {other:?}")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the broker ended the handshake ({alert:?}): does it require a client certificate \
             (cert_file, key_file) it trusts?"
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let error = client_config(Some(Path::new("/nonexistent/ca.pem")), None, None).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("ca_file") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let text = client_config(Some(&path), None, None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("no PEM certificate"), "{text}");
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let error = client_config(None, Some(Path::new("/x.pem")), None).unwrap_err();
        assert!(matches!(
            error,
            TlsSetupError::HalfClientIdentity | TlsSetupError::NoSystemRoots(_)
        ));
    }

    #[test]
    fn certificate_errors_name_peer_and_reason() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        let text = describe_connection_error(&ConnectionError::Tls(TlsError::Io(io)), "b:8883");
        assert_eq!(
            text,
            "TLS with b:8883 failed: the broker's certificate has expired"
        );
    }
}
