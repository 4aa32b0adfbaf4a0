//! HTTPS for the status page: the rustls server configuration from `[http] tls`'s PEM files (the same
//! rustls and ring provider as the rest of the daemon), read on a blocking thread at start.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, ServerConfig};
use rumqttc::tokio_rustls::TlsAcceptor;

use super::settings::HttpTls;

fn open(key: &str, path: &Path) -> anyhow::Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| anyhow::anyhow!("[http] tls {key} {}: {e}", path.display()))
}

/// The acceptor for `tls`'s certificate chain and key.
pub fn acceptor(tls: &HttpTls) -> anyhow::Result<TlsAcceptor> {
    let (cert_path, key_path) = (&tls.cert_file, &tls.key_file);
    let chain = rustls_pemfile::certs(&mut open("cert_file", cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("[http] tls cert_file {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "[http] tls cert_file {}: no PEM certificate in it",
            cert_path.display()
        );
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut open("key_file", key_path)?)
        .map_err(|e| anyhow::anyhow!("[http] tls key_file {}: {e}", key_path.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "[http] tls key_file {}: no PEM private key in it",
                key_path.display()
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("[http] tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "[http] tls key_file {}: does not fit cert_file: {e}",
                key_path.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
