//! TLS configuration for exchange links: [`TlsServerConfig`] and
//! [`TlsClientConfig`], read from PEM, and what the dispatcher makes of
//! them (rustls configurations with the `ring` provider). Also the
//! client-certificate checks of mutual TLS: a verified certificate's
//! subject common name (CN) is the link's identity, and a server with
//! named credentials accepts only the names it has.
//!
//! The connection itself (driving rustls from the poll loop) is the
//! transport's: `transport/tls.rs`.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::error::{Error, Result};

/// The crypto provider of every configuration: rustls's `ring` (no C
/// toolchain for aws-lc), chosen here rather than taken from a process
/// default that an application may have set otherwise.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: String) -> Error {
    Error::InvalidArgument(what)
}

/// The bytes of a file, or an I/O error naming it and what it was for.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("tls: cannot read the {what} {}: {e}", path.display()),
        ))
    })
}

/// Every certificate in a PEM text (other sections are skipped); at least one.
fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("tls: the {what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "tls: the {what} holds no PEM CERTIFICATE section"
        )));
    }
    Ok(certs)
}

/// The first private key in a PEM text (PKCS#8, PKCS#1 or SEC1).
fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| invalid(format!("tls: no private key in the {what}: {e}")))
}

/// A store of the CA certificates in a PEM text.
fn roots_from_pem(pem: &[u8], what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem, what)? {
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "tls: a certificate of the {what} is not usable as a CA: {e}"
            ))
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key. The key is never shown.
#[derive(Clone)]
struct CertAndKey {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl CertAndKey {
    fn from_pem(chain: &[u8], key: &[u8]) -> Result<CertAndKey> {
        Ok(CertAndKey {
            chain: certs_from_pem(chain, "certificate chain")?,
            key: Arc::new(key_from_pem(key, "private key")?),
        })
    }

    fn from_pem_files(chain: &Path, key: &Path) -> Result<CertAndKey> {
        let chain_pem = read_file(chain, "certificate chain")?;
        let key_pem = read_file(key, "private key")?;
        let with_path = |e: Error, path: &Path| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("{m} ({})", path.display()))
            }
            other => other,
        };
        Ok(CertAndKey {
            chain: certs_from_pem(&chain_pem, "certificate chain")
                .map_err(|e| with_path(e, chain))?,
            key: Arc::new(key_from_pem(&key_pem, "private key").map_err(|e| with_path(e, key))?),
        })
    }
}

/// An exchange server's TLS: its certificate chain and private key, and
/// optionally the CA that issues its clients' certificates (mutual TLS).
/// Given to [`ServerBuilder::tls`](crate::ServerBuilder::tls), and to
/// [`Exchange::reload_tls`](crate::Exchange::reload_tls) to change the
/// certificate of a running server.
///
/// ```no_run
/// use netsvc::TlsServerConfig;
/// # fn main() -> netsvc::Result<()> {
/// let tls = TlsServerConfig::from_pem_files("server.crt", "server.key")?
///     .client_ca_pem_file("clients-ca.crt")?; // mutual TLS
/// # let _ = tls; Ok(()) }
/// ```
///
/// TLS 1.3 and 1.2 are accepted (rustls's safe defaults, with the `ring`
/// provider). The private key never appears in logs or `Debug` output.
#[derive(Clone)]
pub struct TlsServerConfig {
    identity: CertAndKey,
    client_ca: Option<Arc<RootCertStore>>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("certificates", &self.identity.chain.len())
            .field("key", &"..")
            .field("client_ca", &self.client_ca.as_ref().map(|r| r.len()))
            .finish()
    }
}

impl TlsServerConfig {
    /// The server's certificate chain (PEM: its own certificate first,
    /// then any intermediates) and private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1). [`Error::InvalidArgument`] for text that holds no
    /// certificate or no key. Whether the key is the certificate's is
    /// checked when the configuration is used (`listen`, `reload_tls`).
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<TlsServerConfig> {
        Ok(TlsServerConfig {
            identity: CertAndKey::from_pem(cert_chain, key)?,
            client_ca: None,
        })
    }

    /// [`from_pem`](Self::from_pem) with the PEM read from two files
    /// ([`Error::Io`] naming the file that cannot be read).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsServerConfig> {
        Ok(TlsServerConfig {
            identity: CertAndKey::from_pem_files(cert_chain.as_ref(), key.as_ref())?,
            client_ca: None,
        })
    }

    /// Mutual TLS: every client must present a certificate issued by one
    /// of these CAs (PEM, one or more certificates), or it is refused in
    /// the TLS handshake. The certificate's subject common name (CN) is the
    /// link's identity: see [`ServerBuilder::tls`](crate::ServerBuilder::tls).
    pub fn client_ca_pem(mut self, ca: &[u8]) -> Result<TlsServerConfig> {
        self.client_ca = Some(Arc::new(roots_from_pem(ca, "client CA")?));
        Ok(self)
    }

    /// [`client_ca_pem`](Self::client_ca_pem) with the PEM read from a file.
    pub fn client_ca_pem_file(self, ca: impl AsRef<Path>) -> Result<TlsServerConfig> {
        let path = ca.as_ref();
        let pem = read_file(path, "client CA")?;
        self.client_ca_pem(&pem).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("{m} ({})", path.display()))
            }
            other => other,
        })
    }

    /// Whether clients must present certificates.
    pub(crate) fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The rustls configuration; client certificates are checked against
    /// the CA and by `names`.
    fn build(&self, names: &Arc<NameCheck>) -> Result<Arc<rustls::ServerConfig>> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("tls: no protocol version: {e}")))?;
        let builder = match &self.client_ca {
            Some(roots) => {
                let webpki = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                    .build()
                    .map_err(|e| {
                        invalid(format!("tls: the client CA cannot verify clients: {e}"))
                    })?;
                builder.with_client_cert_verifier(Arc::new(ClientNames {
                    webpki,
                    names: names.clone(),
                }))
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(|e| {
                invalid(format!(
                    "tls: the certificate chain and private key do not make a server \
                     configuration (is the key the certificate's?): {e}"
                ))
            })?;
        Ok(Arc::new(config))
    }
}

/// Which client-certificate names a server takes: with named credentials,
/// only theirs; without, any (of at most the longest name's length).
#[derive(Debug)]
pub(crate) struct NameCheck {
    /// `None`: any name.
    pub(crate) names: Option<HashSet<String>>,
    pub(crate) max_len: usize,
}

impl NameCheck {
    /// The link identity a client certificate stands for, or why it
    /// stands for none.
    pub(crate) fn check(&self, cert: &CertificateDer<'_>) -> std::result::Result<String, String> {
        let name = common_name(cert)?;
        if name.is_empty() || name.len() > self.max_len {
            return Err(format!(
                "the client's certificate names {name:?}: a name of {} bytes (1 to {} allowed)",
                name.len(),
                self.max_len
            ));
        }
        match &self.names {
            Some(names) if !names.contains(&name) => Err(format!(
                "the client's certificate names {name:?}, and this server has no credential of \
                 that name"
            )),
            _ => Ok(name),
        }
    }
}

/// A server's TLS as the dispatcher holds it: the rustls configuration
/// that new connections are accepted with, which
/// [`Exchange::reload_tls`](crate::Exchange::reload_tls) replaces, and
/// what it needs to build another.
#[derive(Clone, Debug)]
pub(crate) struct ServerTls {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    names: Arc<NameCheck>,
}

impl ServerTls {
    pub(crate) fn new(config: &TlsServerConfig, names: NameCheck) -> Result<ServerTls> {
        let names = Arc::new(names);
        Ok(ServerTls {
            current: Arc::new(RwLock::new(config.build(&names)?)),
            names,
        })
    }

    /// The configuration a connection accepted now uses.
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// From now on, connections are accepted with `config` (those up
    /// keep the session they have).
    pub(crate) fn replace(&self, config: &TlsServerConfig) -> Result<()> {
        let built = config.build(&self.names)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = built;
        Ok(())
    }

    /// The identity of a verified client certificate.
    pub(crate) fn names(&self) -> &NameCheck {
        &self.names
    }
}

/// The client-certificate verifier of mutual TLS: the CA's (webpki)
/// verification, then the certificate's name: a name the server does not
/// take is refused in the handshake (alert `access_denied`), before the
/// client learns anything of the exchange.
#[derive(Debug)]
struct ClientNames {
    webpki: Arc<dyn ClientCertVerifier>,
    names: Arc<NameCheck>,
}

impl ClientCertVerifier for ClientNames {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        match self.names.check(end_entity) {
            Ok(_) => Ok(verified),
            Err(why) => {
                log::info!("netsvc: client certificate refused: {why}");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }
}

/// An exchange client's TLS: the CAs it trusts to issue its server's
/// certificate, the name that certificate must be valid for, and
/// optionally its own certificate (for a server that requires mutual TLS).
/// Given to [`ClientBuilder::tls`](crate::ClientBuilder::tls).
///
/// ```no_run
/// use netsvc::TlsClientConfig;
/// # fn main() -> netsvc::Result<()> {
/// let tls = TlsClientConfig::from_ca_pem_file("ca.crt")?
///     .server_name("exchange.example.com")?
///     .client_certificate_pem_files("alice.crt", "alice.key")?;
/// # let _ = tls; Ok(()) }
/// ```
///
/// The private key never appears in logs or `Debug` output.
#[derive(Clone)]
pub struct TlsClientConfig {
    roots: Arc<RootCertStore>,
    server_name: Option<ServerName<'static>>,
    identity: Option<CertAndKey>,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl TlsClientConfig {
    /// Trusts the CAs of this PEM text (one or more certificates) to issue
    /// the server's certificate, and no others (not the system's roots: an
    /// exchange's certificates usually come from a CA of its own).
    pub fn from_ca_pem(ca: &[u8]) -> Result<TlsClientConfig> {
        Ok(TlsClientConfig {
            roots: Arc::new(roots_from_pem(ca, "CA")?),
            server_name: None,
            identity: None,
        })
    }

    /// [`from_ca_pem`](Self::from_ca_pem) with the PEM read from a file.
    pub fn from_ca_pem_file(ca: impl AsRef<Path>) -> Result<TlsClientConfig> {
        let path = ca.as_ref();
        let pem = read_file(path, "CA")?;
        Self::from_ca_pem(&pem).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("{m} ({})", path.display()))
            }
            other => other,
        })
    }

    /// The name the server's certificate must be valid for: a DNS name
    /// (`exchange.example.com`) or an IP address. Without it, the IP
    /// address connected to is checked (the certificate must then name it
    /// as an IP subject alternative name). [`Error::InvalidArgument`] for
    /// text that is neither.
    pub fn server_name(mut self, name: &str) -> Result<TlsClientConfig> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| invalid(format!("tls: {name:?} is not a server name: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// This client's own certificate chain and private key (PEM), shown to
    /// a server that requires mutual TLS; its subject common name (CN) is
    /// then the client's identity at that server.
    pub fn client_certificate_pem(
        mut self,
        cert_chain: &[u8],
        key: &[u8],
    ) -> Result<TlsClientConfig> {
        self.identity = Some(CertAndKey::from_pem(cert_chain, key)?);
        Ok(self)
    }

    /// [`client_certificate_pem`](Self::client_certificate_pem) with the
    /// PEM read from two files.
    pub fn client_certificate_pem_files(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsClientConfig> {
        self.identity = Some(CertAndKey::from_pem_files(
            cert_chain.as_ref(),
            key.as_ref(),
        )?);
        Ok(self)
    }

    /// The rustls configuration, and the server name if one was given.
    pub(crate) fn build(&self) -> Result<ClientTls> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("tls: no protocol version: {e}")))?
            .with_root_certificates(self.roots.clone());
        let config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| {
                    invalid(format!(
                        "tls: the client certificate and key do not go together: {e}"
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        })
    }
}

/// A client's TLS as the dispatcher holds it.
#[derive(Clone, Debug)]
pub(crate) struct ClientTls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// The name to verify; `None`: the address connected to.
    pub(crate) server_name: Option<ServerName<'static>>,
}

// ----- the subject's common name -----

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// The attribute type commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject common name (CN) of a certificate: exactly one, as a
/// UTF8String, PrintableString or IA5String; otherwise why not.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> std::result::Result<String, String> {
    let bad = || "the client's certificate cannot be read for its subject".to_owned();
    let (_, certificate, _) = der(cert.as_ref())
        .filter(|(t, _, _)| *t == SEQUENCE)
        .ok_or_else(bad)?;
    let (_, tbs, _) = der(certificate)
        .filter(|(t, _, _)| *t == SEQUENCE)
        .ok_or_else(bad)?;
    let mut rest = tbs;
    // version [0] (optional), serialNumber, signature, issuer, validity,
    // then the subject.
    let (tag, _, after) = der(rest).ok_or_else(bad)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        let (_, _, after) = der(rest).ok_or_else(bad)?;
        rest = after;
    }
    let (tag, subject, _) = der(rest).ok_or_else(bad)?;
    if tag != SEQUENCE {
        return Err(bad());
    }
    let mut names = Vec::new();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, set, after) = der(rdns).ok_or_else(bad)?;
        if tag != SET {
            return Err(bad());
        }
        rdns = after;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, after) = der(atvs).ok_or_else(bad)?;
            if tag != SEQUENCE {
                return Err(bad());
            }
            atvs = after;
            let (tag, oid, value) = der(atv).ok_or_else(bad)?;
            if tag != OID || oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = der(value).ok_or_else(bad)?;
            match tag {
                // UTF8String, PrintableString, IA5String
                0x0c | 0x13 | 0x16 => match std::str::from_utf8(text) {
                    Ok(s) => names.push(s.to_owned()),
                    Err(_) => return Err(bad()),
                },
                _ => {
                    return Err(
                        "the client's certificate has its common name (CN) in a string type \
                         other than UTF8String, PrintableString or IA5String"
                            .to_owned(),
                    )
                }
            }
        }
    }
    match names.len() {
        1 => Ok(names.remove(0)),
        0 => Err("the client's certificate has no subject common name (CN) to name it".to_owned()),
        n => Err(format!(
            "the client's certificate has {n} subject common names (CN): which one names it is unclear"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with these subject attributes.
    fn cert(attrs: &[(rcgen::DnType, &str)]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        for (ty, value) in attrs {
            dn.push(ty.clone(), *value);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        use rcgen::DnType;
        let c = cert(&[
            (DnType::OrganizationName, "Plant"),
            (DnType::CommonName, "calc-host"),
            (DnType::CountryName, "FI"),
        ]);
        assert_eq!(common_name(&c).unwrap(), "calc-host");
        let none = cert(&[(DnType::OrganizationName, "Plant")]);
        assert!(common_name(&none)
            .unwrap_err()
            .contains("no subject common name"));
        let names = NameCheck {
            names: Some(["calc-host".to_owned()].into_iter().collect()),
            max_len: 255,
        };
        assert_eq!(names.check(&c).unwrap(), "calc-host");
        let other = cert(&[(DnType::CommonName, "mallory")]);
        assert!(names.check(&other).unwrap_err().contains("\"mallory\""));
        let short = NameCheck {
            names: None,
            max_len: 4,
        };
        assert!(short.check(&c).unwrap_err().contains("9 bytes"));
    }

    #[test]
    fn a_malformed_certificate_is_an_error_never_a_panic() {
        let c = cert(&[(rcgen::DnType::CommonName, "alice")]);
        let der = c.as_ref();
        for len in 0..der.len() {
            let cut = CertificateDer::from(der[..len].to_vec());
            let _ = common_name(&cut);
        }
        for i in 0..der.len().min(400) {
            let mut bent = der.to_vec();
            bent[i] ^= 0xff;
            let _ = common_name(&CertificateDer::from(bent));
        }
        assert!(common_name(&CertificateDer::from(vec![
            0x30, 0x84, 0xff, 0xff, 0xff, 0xff
        ]))
        .is_err());
    }

    #[test]
    fn pem_without_certificates_or_keys_is_refused_with_what_is_missing() {
        match TlsServerConfig::from_pem(b"not pem", b"") {
            Err(Error::InvalidArgument(e)) => assert!(e.contains("certificate chain"), "{e}"),
            other => panic!("{other:?}"),
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        match TlsServerConfig::from_pem(pem.as_bytes(), pem.as_bytes()) {
            Err(Error::InvalidArgument(e)) => assert!(e.contains("private key"), "{e}"),
            other => panic!("{other:?}"),
        }
        let ok = TlsServerConfig::from_pem(pem.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let shown = format!("{ok:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        match TlsClientConfig::from_ca_pem(pem.as_bytes())
            .unwrap()
            .server_name("not a name!")
        {
            Err(Error::InvalidArgument(e)) => assert!(e.contains("server name"), "{e}"),
            other => panic!("{other:?}"),
        }
        match TlsServerConfig::from_pem_files("/nonexistent/a.crt", "/nonexistent/a.key") {
            Err(Error::Io(e)) => assert!(e.to_string().contains("/nonexistent/a.crt"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
