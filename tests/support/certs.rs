//! Test helper: the one throw-away PKI of the tests (rcgen): a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, an expired server certificate and an unrelated CA, written as PEM
//! files.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files of a test PKI: a CA, a server certificate for 127.0.0.1/localhost, a client certificate,
/// an expired server certificate from the same CA, and a second, unrelated CA.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    pub wrong_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).expect("self-signed CA"), key)
}

fn leaf(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, ca, ca_key).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Certs {
    /// Writes a fresh PKI into `dir`.
    pub fn generate(dir: &Path) -> Certs {
        let (ca_cert, ca_key) = ca("sensorgate test CA");
        let (wrong_cert, _wrong_key) = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &ca_cert,
            &ca_key,
            "broker",
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        );
        let (client_cert, client_key) = leaf(
            &ca_cert,
            &ca_key,
            "gateway",
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        );
        let (expired_cert, expired_key) = leaf(
            &ca_cert,
            &ca_key,
            "old broker",
            ExtendedKeyUsagePurpose::ServerAuth,
            true,
        );
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).expect("write PEM");
            path
        };
        Certs {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            expired_cert: write("expired.pem", &expired_cert),
            expired_key: write("expired.key", &expired_key),
            wrong_ca: write("wrong-ca.pem", &wrong_cert.pem()),
        }
    }
}

/// PEM texts and the files the broker reads, for tests that give a client the PEM text itself.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// A fresh [`Certs`] in a temporary directory, with the PEM texts a client needs.
pub fn make_pki() -> TestPki {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Certs::generate(dir.path());
    let read = |path: &PathBuf| std::fs::read_to_string(path).expect("read PEM");
    TestPki {
        ca_pem: read(&certs.ca),
        client_cert_pem: read(&certs.client_cert),
        client_key_pem: read(&certs.client_key),
        server_cert_file: certs.server_cert,
        server_key_file: certs.server_key,
        ca_file: certs.ca,
        dir,
    }
}
