//! Test certificates, made with rcgen: a CA, server certificates (for
//! `localhost` and 127.0.0.1) and client certificates (by common name),
//! valid or expired; and files for the examples.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A certificate authority that issues certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// Its own certificate, PEM.
    pub pem: String,
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn issue(&self, mut params: CertificateParams, cn: &str, expired: bool) -> Pem {
        params.distinguished_name = dn(cn);
        if expired {
            params.not_before = date_time_ymd(2001, 1, 1);
            params.not_after = date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Pem {
        self.server_for(&["localhost", "127.0.0.1"], false)
    }

    /// A server certificate for these names (DNS names or IP addresses).
    pub fn server_for(&self, names: &[&str], expired: bool) -> Pem {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, "netsvc test server", expired)
    }

    /// A client certificate whose subject common name is `cn`.
    pub fn client(&self, cn: &str) -> Pem {
        self.client_with(cn, false)
    }

    /// A client certificate, expired if `expired`.
    pub fn client_with(&self, cn: &str, expired: bool) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, cn, expired)
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netsvc-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        TempDir(dir)
    }

    /// Writes `text` to the file `name` in it; its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a temporary file");
        path_str(&path)
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temporary path").to_owned()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
