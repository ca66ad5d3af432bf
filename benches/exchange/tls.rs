//! The TLS rows (issue 16): a CA and a server certificate made with rcgen
//! into a temporary directory, the roles' `--tls DIR` option (a server
//! with that certificate; a client trusting that CA), and the `handshake`
//! role of H1, which times new connections from connect to link up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netsvc::{ConnectionState, Exchange, TlsClientConfig, TlsServerConfig};

use crate::child::{child_init, fail};
use crate::cli::Args;
use crate::exchange::dispatcher;
use crate::measure::measure_calls;

/// The certificates of a run, in a directory removed on drop.
pub(crate) struct Certs(PathBuf);

impl Certs {
    pub(crate) fn dir(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA (`ca.crt`) and a certificate for 127.0.0.1 it issued
/// (`server.crt`, `server.key`).
pub(crate) fn make_certs() -> Result<Certs, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let e = |e: rcgen::Error| format!("rcgen: {e}");
    let dir = std::env::temp_dir().join(format!("netsvc-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let certs = Certs(dir);
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.distinguished_name
        .push(DnType::CommonName, "netsvc bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(e)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).map_err(e)?;
    let server_key = KeyPair::generate().map_err(e)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_cert = server.signed_by(&server_key, &issuer).map_err(e)?;
    for (name, text) in [
        ("ca.crt", ca_cert.pem()),
        ("server.crt", server_cert.pem()),
        ("server.key", server_key.serialize_pem()),
    ] {
        std::fs::write(certs.0.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(certs)
}

/// A server's TLS, from `--tls DIR`.
pub(crate) fn server_tls(a: &Args) -> Option<TlsServerConfig> {
    let dir = PathBuf::from(a.get("--tls")?);
    Some(
        TlsServerConfig::from_pem_files(dir.join("server.crt"), dir.join("server.key"))
            .unwrap_or_else(|e| fail(&format!("server TLS: {e}"))),
    )
}

/// A client's TLS, from `--tls DIR`.
pub(crate) fn client_tls(a: &Args) -> Option<TlsClientConfig> {
    let dir = PathBuf::from(a.get("--tls")?);
    Some(
        TlsClientConfig::from_ca_pem_file(dir.join("ca.crt"))
            .unwrap_or_else(|e| fail(&format!("client TLS: {e}"))),
    )
}

/// `handshake --port P [--tls DIR] --n N`: N new connections, one after
/// another, each timed from its connect to its link active (TCP, TLS with
/// a full handshake, no resumption: each has a configuration of its own,
/// and the netsvc handshake), then closed.
pub(crate) fn role_handshake(a: &Args) {
    let _cmds = child_init();
    let d = dispatcher("bench-handshake");
    let port = a.get("--port").unwrap_or_else(|| fail("needs --port"));
    let addr = format!("127.0.0.1:{port}");
    let n = a.num("--n", 500);
    measure_calls(
        n / 10,
        n,
        || {
            let mut b = Exchange::client(&d);
            if let Some(tls) = client_tls(a) {
                b = b.tls(tls);
            }
            let ex = b.connect_once(addr.as_str()).map_err(|e| e.to_string())?;
            let conns = ex.connections();
            let deadline = Instant::now() + Duration::from_secs(5);
            let up = match conns.recv_deadline(deadline) {
                Ok(ann) if ann.state() == ConnectionState::Active => Ok(()),
                Ok(ann) => Err(ann.to_string()),
                Err(_) => Err("no link within 5 s".to_owned()),
            };
            ex.close();
            up
        },
        "",
    );
    std::process::exit(0);
}
