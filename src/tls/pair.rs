//! Checking a certificate chain and its private key before anything serves them: bring-your-own
//! pairs in `tls.certs_dir` and every pair the butler writes itself. A pair is usable when the
//! certificate file is PEM whose certificates each issue the one before, the key file holds the
//! leaf's private key, the leaf is for servers, covers the host and is within its validity. A
//! refusal names the file and what is wrong; no error carries a byte of the key.

use std::fmt;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{KeyPair, PublicKeyData};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::secret::SecretPem;

/// The two files of one pair. Which is which matters for messages: a problem names its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What `butler tls list` shows of a certificate, and what health checks will compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    #[serde(serialize_with = "rfc3339")]
    pub not_before: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub not_after: SystemTime,
    /// DNS names and IP addresses of the subjectAltName extension, in its order.
    pub sans: Vec<String>,
    /// SHA-256 of the leaf's DER, as `openssl x509 -fingerprint -sha256` prints it.
    pub sha256: String,
    /// Certificates in the file, the leaf included.
    pub chain_len: usize,
}

/// What is wrong with one file of a pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("is not PEM text")]
    NotText,
    #[error("holds no PEM CERTIFICATE block")]
    NoCertificate,
    #[error("is not valid PEM: {0}")]
    BadPem(String),
    #[error("certificate {index} in it is not a valid X.509 certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error(
        "certificate {issuer} in it did not issue certificate {index}: put the server's certificate first, then each issuer in order"
    )]
    BrokenChain { index: usize, issuer: usize },
    #[error("its first certificate is not for servers: its extended key usage lacks serverAuth")]
    NotForServers,
    #[error("its first certificate has no subjectAltName, and clients ignore the subject's CN")]
    NoNames,
    #[error("its first certificate does not cover {host} (it names {names})")]
    WrongHost { host: String, names: String },
    #[error("its first certificate expired at {not_after}")]
    Expired { not_after: String },
    #[error("its first certificate is not valid before {not_before}")]
    NotYetValid { not_before: String },
    #[error("holds no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NoKey,
    #[error(
        "holds an encrypted private key; nginx needs it unencrypted (openssl pkey -in KEY -out PLAIN)"
    )]
    EncryptedKey,
    // No detail: the PEM parser's would quote the key's own bytes.
    #[error("is not valid PEM")]
    BadKeyPem,
    #[error(
        "holds a private key the butler cannot use (ECDSA P-256 or P-384, RSA of 2048 to 8192 bits, or Ed25519)"
    )]
    UnsupportedKey,
    #[error("does not hold the private key of the certificate in {cert}")]
    KeyMismatch { cert: PathBuf },
    #[error("is readable by every user (mode {mode:04o}); chmod 600 it")]
    KeyReadableByOthers { mode: u32 },
}

/// A refused pair: the file at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct PairError {
    pub file: PathBuf,
    pub problem: Problem,
}

impl PairError {
    fn new(file: &Path, problem: Problem) -> Self {
        Self {
            file: file.to_owned(),
            problem,
        }
    }
}

/// A certificate file, parsed: PEM, X.509, each certificate issued by the next.
#[derive(Debug, Clone)]
pub struct Chain {
    file: PathBuf,
    ders: Vec<CertificateDer<'static>>,
    summary: CertSummary,
    /// The leaf's subjectPublicKey bits: what a matching private key's public half must equal.
    public_key: Vec<u8>,
    for_servers: bool,
}

impl Chain {
    /// Parses the PEM text of a certificate file named `file` (for messages).
    pub fn parse(file: &Path, pem_text: &[u8]) -> Result<Chain, PairError> {
        let fail = |problem| PairError::new(file, problem);
        let ders = CertificateDer::pem_slice_iter(pem_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(Problem::BadPem(e.to_string())))?;
        if ders.is_empty() {
            return Err(fail(Problem::NoCertificate));
        }
        let mut parsed = Vec::with_capacity(ders.len());
        for (index, der) in ders.iter().enumerate() {
            let cert = X509Certificate::from_der(der)
                .map(|(_, cert)| cert)
                .map_err(|e| {
                    fail(Problem::BadCertificate {
                        index: index + 1,
                        reason: e.to_string(),
                    })
                })?;
            parsed.push(cert);
        }
        for (index, pair) in parsed.windows(2).enumerate() {
            if !issued(&pair[0], &pair[1]) {
                return Err(fail(Problem::BrokenChain {
                    index: index + 1,
                    issuer: index + 2,
                }));
            }
        }
        let leaf = &parsed[0];
        let bad = |reason: X509Error| {
            fail(Problem::BadCertificate {
                index: 1,
                reason: reason.to_string(),
            })
        };
        let sans = match leaf.subject_alternative_name().map_err(bad)? {
            Some(ext) => ext
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_string()),
                    GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        let for_servers = match leaf.extended_key_usage().map_err(bad)? {
            Some(eku) => eku.value.server_auth || eku.value.any,
            None => true,
        };
        let summary = CertSummary {
            subject: leaf.subject().to_string(),
            issuer: leaf.issuer().to_string(),
            not_before: system_time(leaf.validity().not_before),
            not_after: system_time(leaf.validity().not_after),
            sans,
            sha256: fingerprint(&ders[0]),
            chain_len: ders.len(),
        };
        let public_key = leaf.public_key().subject_public_key.data.to_vec();
        drop(parsed);
        Ok(Chain {
            file: file.to_owned(),
            ders: ders.into_iter().map(|d| d.into_owned()).collect(),
            summary,
            public_key,
            for_servers,
        })
    }

    pub fn summary(&self) -> &CertSummary {
        &self.summary
    }

    /// The certificates in file order, the leaf first.
    pub fn ders(&self) -> &[CertificateDer<'static>] {
        &self.ders
    }

    /// Refuses a key that is not the leaf's.
    pub fn check_key(&self, key_file: &Path, key: &SecretPem) -> Result<(), PairError> {
        let key_pair = parse_key(key_file, key)?;
        if key_pair.der_bytes() == self.public_key.as_slice() {
            Ok(())
        } else {
            Err(PairError::new(
                key_file,
                Problem::KeyMismatch {
                    cert: self.file.clone(),
                },
            ))
        }
    }

    /// Refuses a leaf that is not for servers or does not name `host` (a DNS name, matched
    /// case-insensitively, also by a wildcard for exactly one label; or an IP address).
    pub fn check_host(&self, host: &str) -> Result<(), PairError> {
        let fail = |problem| PairError::new(&self.file, problem);
        if !self.for_servers {
            return Err(fail(Problem::NotForServers));
        }
        if self.summary.sans.is_empty() {
            return Err(fail(Problem::NoNames));
        }
        if self.summary.sans.iter().any(|san| covers(san, host)) {
            Ok(())
        } else {
            Err(fail(Problem::WrongHost {
                host: host.to_owned(),
                names: self.summary.sans.join(", "),
            }))
        }
    }

    /// Refuses a leaf outside its validity at `now`.
    pub fn check_time(&self, now: SystemTime) -> Result<(), PairError> {
        let fail = |problem| PairError::new(&self.file, problem);
        if now > self.summary.not_after {
            return Err(fail(Problem::Expired {
                not_after: rfc3339_text(self.summary.not_after),
            }));
        }
        if now < self.summary.not_before {
            return Err(fail(Problem::NotYetValid {
                not_before: rfc3339_text(self.summary.not_before),
            }));
        }
        Ok(())
    }
}

/// A pair read from disk (or about to be written to it): the files and their PEM texts.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub files: PairFiles,
    pub cert_pem: String,
    pub key_pem: SecretPem,
}

impl PemPair {
    /// Reads both files. A key file that every user may read is refused: it is not secret any
    /// more, and serving it would hide that.
    pub fn read(files: &PairFiles) -> Result<PemPair, PairError> {
        let cert_pem = read_text(&files.cert)?;
        let metadata = std::fs::metadata(&files.key)
            .map_err(|e| PairError::new(&files.key, Problem::Unreadable(io_reason(&e))))?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(PairError::new(
                &files.key,
                Problem::KeyReadableByOthers { mode },
            ));
        }
        let key_pem = SecretPem::new(read_text(&files.key)?);
        Ok(PemPair {
            files: files.clone(),
            cert_pem,
            key_pem,
        })
    }

    /// The chain, with the key checked against it: what every use of a pair needs first.
    pub fn chain(&self) -> Result<Chain, PairError> {
        let chain = Chain::parse(&self.files.cert, self.cert_pem.as_bytes())?;
        chain.check_key(&self.files.key, &self.key_pem)?;
        Ok(chain)
    }

    /// Everything but time: PEM, chain order, key, server use, host. `butler tls list` uses it
    /// to tell an expired pair (still readable) from an invalid one.
    pub fn inspect(&self, host: &str) -> Result<Chain, PairError> {
        let chain = self.chain()?;
        chain.check_host(host)?;
        Ok(chain)
    }

    /// Usable for `host` at `now`: what must hold before a pair is served.
    pub fn check(&self, host: &str, now: SystemTime) -> Result<CertSummary, PairError> {
        let chain = self.inspect(host)?;
        chain.check_time(now)?;
        Ok(chain.summary)
    }
}

/// Reads the certificates of a PEM bundle (e.g. `tls.acme.ca_bundle`): at least one, each a
/// valid X.509 certificate. A bundle is a set of roots, not a chain, so their order is free.
pub fn read_bundle(file: &Path) -> Result<Vec<CertificateDer<'static>>, PairError> {
    let text = read_text(file)?;
    let fail = |problem| PairError::new(file, problem);
    let ders = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(Problem::BadPem(e.to_string())))?;
    if ders.is_empty() {
        return Err(fail(Problem::NoCertificate));
    }
    for (index, der) in ders.iter().enumerate() {
        X509Certificate::from_der(der).map_err(|e| {
            fail(Problem::BadCertificate {
                index: index + 1,
                reason: e.to_string(),
            })
        })?;
    }
    Ok(ders)
}

/// Where a certificate on disk stands, as `butler tls list` shows it (and health checks will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertState {
    Ok,
    RenewDue,
    Expired,
    Invalid,
}

impl CertState {
    /// The state of a certificate that passed every check but time.
    pub fn at(summary: &CertSummary, now: SystemTime) -> CertState {
        if now > summary.not_after {
            CertState::Expired
        } else if renewal_due(summary.not_before, summary.not_after, now) {
            CertState::RenewDue
        } else {
            CertState::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Ok => "ok",
            CertState::RenewDue => "renew-due",
            CertState::Expired => "expired",
            CertState::Invalid => "invalid",
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whole days from `now` to `not_after`, negative once it has passed.
pub fn days_left(not_after: SystemTime, now: SystemTime) -> i64 {
    let day = 86_400;
    match not_after.duration_since(now) {
        Ok(left) => (left.as_secs() / day) as i64,
        Err(past) => -(past.duration().as_secs().div_ceil(day) as i64),
    }
}

/// Renewal is due once less than a third of the certificate's lifetime is left (Let's Encrypt's
/// advice; for a 90-day certificate that is the last 30 days, for the local CA's 30-day leaves
/// the last 10), and past expiry.
pub fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    match not_after.duration_since(now) {
        Ok(left) => left < lifetime / 3,
        Err(_) => true,
    }
}

/// Parses a PEM private key into a key pair. PKCS#8 (`PRIVATE KEY`) as it comes; SEC1
/// (`EC PRIVATE KEY`, what `openssl ecparam -genkey` and acme.sh write) and PKCS#1
/// (`RSA PRIVATE KEY`) wrapped into PKCS#8 first, since the crypto backend reads only that.
pub(crate) fn parse_key(file: &Path, key: &SecretPem) -> Result<KeyPair, PairError> {
    let fail = |problem| PairError::new(file, problem);
    let der = match PrivateKeyDer::from_pem_slice(key.expose().as_bytes()) {
        Ok(der) => der,
        Err(pem::Error::NoItemsFound) if key.expose().contains("ENCRYPTED PRIVATE KEY") => {
            return Err(fail(Problem::EncryptedKey));
        }
        Err(pem::Error::NoItemsFound) => return Err(fail(Problem::NoKey)),
        Err(_) => return Err(fail(Problem::BadKeyPem)),
    };
    let candidates: Vec<Zeroizing<Vec<u8>>> = match &der {
        PrivateKeyDer::Pkcs8(pkcs8) => vec![Zeroizing::new(pkcs8.secret_pkcs8_der().to_vec())],
        PrivateKeyDer::Sec1(sec1) => [P256, P384]
            .iter()
            .map(|curve| pkcs8(&[EC_PUBLIC_KEY, curve].concat(), sec1.secret_sec1_der()))
            .collect(),
        PrivateKeyDer::Pkcs1(pkcs1) => vec![pkcs8(RSA_ENCRYPTION, pkcs1.secret_pkcs1_der())],
        _ => Vec::new(),
    };
    candidates
        .iter()
        .find_map(|der| KeyPair::try_from(&PrivatePkcs8KeyDer::from(der.as_slice())).ok())
        .ok_or_else(|| fail(Problem::UnsupportedKey))
}

// DER of the algorithm identifiers a PKCS#8 wrapper needs (RFC 5480, RFC 8017).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// `PrivateKeyInfo ::= SEQUENCE { version 0, AlgorithmIdentifier, OCTET STRING key }`.
fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
    body.extend_from_slice(&der(0x30, algorithm));
    body.extend_from_slice(&der(0x04, private_key));
    der(0x30, &body)
}

fn der(tag: u8, content: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(content.len() + 6));
    out.push(tag);
    if content.len() < 0x80 {
        out.push(content.len() as u8);
    } else {
        let len = content.len().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `parent` issued `child`: its signature verifies with the parent's key. Where the crypto
/// backend cannot check the signature's algorithm, the names must match instead.
fn issued(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    match child.verify_signature(Some(parent.public_key())) {
        Ok(()) => true,
        Err(X509Error::SignatureUnsupportedAlgorithm) => {
            child.issuer().as_raw() == parent.subject().as_raw()
        }
        Err(_) => false,
    }
}

/// Whether one SAN entry covers `host`: equal ignoring case, or `*.rest` for one label before
/// `rest` (never the bare `rest`, never two labels), or the same IP address.
fn covers(san: &str, host: &str) -> bool {
    if let (Ok(a), Ok(b)) = (san.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    if san.eq_ignore_ascii_case(host) {
        return true;
    }
    match (san.strip_prefix("*."), host.split_once('.')) {
        (Some(rest), Some((first, host_rest))) => {
            !rest.is_empty() && !first.is_empty() && rest.eq_ignore_ascii_case(host_rest)
        }
        _ => false,
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn system_time(time: ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// RFC 3339 in seconds; a time before 1970 (which certificates may carry) shows as the epoch.
pub fn rfc3339_text(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH)).to_string()
}

fn rfc3339<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_text(*time))
}

fn read_text(file: &Path) -> Result<String, PairError> {
    let bytes = std::fs::read(file)
        .map_err(|e| PairError::new(file, Problem::Unreadable(io_reason(&e))))?;
    String::from_utf8(bytes).map_err(|_| PairError::new(file, Problem::NotText))
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::NotFound => "it does not exist".into(),
        ErrorKind::PermissionDenied => {
            "permission denied (run as root or as the butler user)".into()
        }
        _ => error.to_string(),
    }
}

impl fmt::Display for PairFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {}", self.cert.display(), self.key.display())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    };
    use time::OffsetDateTime;

    const DAY: Duration = Duration::from_secs(86_400);

    pub(crate) fn now() -> SystemTime {
        // Whole seconds: certificates carry no fractions.
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A test CA: a root that signs leaves for the tests' hosts.
    pub(crate) struct TestCa {
        pub(crate) params: CertificateParams,
        pub(crate) key: KeyPair,
        pub(crate) pem: String,
    }

    pub(crate) fn test_ca(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = OffsetDateTime::from(now() - 365 * DAY);
        params.not_after = OffsetDateTime::from(now() + 365 * DAY);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    pub(crate) struct Leaf {
        pub(crate) sans: Vec<String>,
        pub(crate) not_before: SystemTime,
        pub(crate) not_after: SystemTime,
        pub(crate) eku: Vec<ExtendedKeyUsagePurpose>,
    }

    impl Default for Leaf {
        fn default() -> Self {
            Leaf {
                sans: vec!["shop.example.com".into()],
                not_before: now() - DAY,
                not_after: now() + 60 * DAY,
                eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            }
        }
    }

    /// Signs a leaf; returns (leaf PEM, its key PEM).
    pub(crate) fn sign(ca: &TestCa, leaf: Leaf) -> (String, SecretPem) {
        let mut params = CertificateParams::new(leaf.sans).unwrap();
        params.not_before = OffsetDateTime::from(leaf.not_before);
        params.not_after = OffsetDateTime::from(leaf.not_after);
        params.extended_key_usages = leaf.eku;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), SecretPem::new(key.serialize_pem()))
    }

    fn pair(cert_pem: String, key_pem: SecretPem) -> PemPair {
        PemPair {
            files: PairFiles {
                cert: "/certs/shop.example.com.crt".into(),
                key: "/certs/shop.example.com.key".into(),
            },
            cert_pem,
            key_pem,
        }
    }

    fn problem(result: Result<CertSummary, PairError>) -> (PathBuf, Problem) {
        let error = result.unwrap_err();
        (error.file, error.problem)
    }

    #[test]
    fn a_good_pair_is_summarised() {
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(
            &ca,
            Leaf {
                sans: vec!["shop.example.com".into(), "10.0.0.5".into()],
                ..Leaf::default()
            },
        );
        let summary = pair(format!("{leaf}{}", ca.pem), key)
            .check("shop.example.com", now())
            .unwrap();
        assert_eq!(summary.issuer, "CN=Test Root");
        assert_eq!(summary.sans, ["shop.example.com", "10.0.0.5"]);
        assert_eq!(summary.chain_len, 2);
        assert_eq!(summary.not_after, now() + 60 * DAY);
        assert_eq!(summary.sha256.len(), 32 * 3 - 1);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["not_after"], rfc3339_text(now() + 60 * DAY));
        assert!(json["not_after"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn hosts_match_exactly_by_one_label_wildcards_and_by_ip() {
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(
            &ca,
            Leaf {
                sans: vec!["*.example.com".into(), "Exact.Test".into(), "::1".into()],
                ..Leaf::default()
            },
        );
        let pair = pair(leaf, key);
        for host in [
            "shop.example.com",
            "SHOP.example.com",
            "exact.test",
            "::1",
            "0:0::1",
        ] {
            assert!(pair.check(host, now()).is_ok(), "{host}");
        }
        for host in [
            "example.com",
            "a.b.example.com",
            "shop.example.org",
            "test",
            "::2",
        ] {
            let (file, problem) = problem(pair.check(host, now()));
            assert_eq!(file, pair.files.cert);
            assert!(
                matches!(&problem, Problem::WrongHost { names, .. } if names.contains("*.example.com")),
                "{host}: {problem:?}"
            );
        }
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let ca = test_ca("Test Root");
        let (leaf, _) = sign(&ca, Leaf::default());
        let (_, other_key) = sign(&ca, Leaf::default());
        let error = pair(leaf, other_key.clone())
            .check("shop.example.com", now())
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("/certs/shop.example.com.key: does not hold the private key")
                && text.contains("/certs/shop.example.com.crt"),
            "{text}"
        );
        assert!(!text.contains(other_key.expose().lines().nth(1).unwrap()));
    }

    #[test]
    fn times_outside_the_validity_are_refused_and_renewal_is_due_in_the_last_third() {
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(
            &ca,
            Leaf {
                not_before: now() - 90 * DAY,
                not_after: now() - DAY,
                ..Leaf::default()
            },
        );
        let expired = pair(leaf, key);
        let (_, p) = problem(expired.check("shop.example.com", now()));
        assert!(matches!(p, Problem::Expired { .. }), "{p:?}");
        // Still readable: `tls list` can show when it expired.
        assert!(expired.inspect("shop.example.com").is_ok());

        let (leaf, key) = sign(
            &ca,
            Leaf {
                not_before: now() + DAY,
                not_after: now() + 90 * DAY,
                ..Leaf::default()
            },
        );
        let (_, p) = problem(pair(leaf, key).check("shop.example.com", now()));
        assert!(matches!(p, Problem::NotYetValid { .. }), "{p:?}");

        let start = now();
        let end = start + 90 * DAY;
        assert!(!renewal_due(start, end, start));
        assert!(!renewal_due(start, end, start + 59 * DAY));
        assert!(renewal_due(start, end, start + 61 * DAY));
        assert!(renewal_due(start, end, end + DAY));
    }

    #[test]
    fn a_chain_in_the_wrong_order_or_with_a_stranger_is_refused() {
        let ca = test_ca("Test Root");
        let stranger = test_ca("Other Root");
        let (leaf, key) = sign(&ca, Leaf::default());
        let cases = [
            (format!("{}{leaf}", ca.pem), 1, 2),
            (format!("{leaf}{}", stranger.pem), 1, 2),
            (format!("{leaf}{}{}", ca.pem, stranger.pem), 2, 3),
        ];
        for (text, index, issuer) in cases {
            let (file, p) = problem(pair(text, key.clone()).check("shop.example.com", now()));
            assert_eq!(file, PathBuf::from("/certs/shop.example.com.crt"));
            assert_eq!(p, Problem::BrokenChain { index, issuer });
            assert!(p.to_string().contains("put the server's certificate first"));
        }
    }

    #[test]
    fn leaves_not_for_servers_or_without_names_are_refused() {
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(
            &ca,
            Leaf {
                eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
                ..Leaf::default()
            },
        );
        let (_, p) = problem(pair(leaf, key).check("shop.example.com", now()));
        assert_eq!(p, Problem::NotForServers);
        let (leaf, key) = sign(
            &ca,
            Leaf {
                sans: vec![],
                ..Leaf::default()
            },
        );
        let (_, p) = problem(pair(leaf, key).check("shop.example.com", now()));
        assert_eq!(p, Problem::NoNames);
    }

    #[test]
    fn files_that_are_not_pem_certificates_or_keys_say_what_they_are() {
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(&ca, Leaf::default());
        let garbage_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        type Check = fn(&Problem) -> bool;
        let cert_cases: [(String, Check); 4] = [
            ("hello".into(), |p| *p == Problem::NoCertificate),
            (key.expose().to_owned(), |p| *p == Problem::NoCertificate),
            (garbage_der.into(), |p| {
                matches!(p, Problem::BadCertificate { index: 1, .. })
            }),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into(),
                |p| matches!(p, Problem::BadPem(_)),
            ),
        ];
        for (text, check) in cert_cases {
            let (file, p) =
                problem(pair(text.clone(), key.clone()).check("shop.example.com", now()));
            assert_eq!(file, PathBuf::from("/certs/shop.example.com.crt"), "{text}");
            assert!(check(&p), "{text}: {p:?}");
        }
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let secret_line = "c2VjcmV0IGtleSBieXRlcw";
        let key_cases = [
            (leaf.clone(), Problem::NoKey),
            (encrypted.to_owned(), Problem::EncryptedKey),
            (
                format!("-----BEGIN PRIVATE KEY-----\n{secret_line}!\n-----END PRIVATE KEY-----\n"),
                Problem::BadKeyPem,
            ),
            (
                format!(
                    "-----BEGIN PRIVATE KEY-----\n{secret_line}==\n-----END PRIVATE KEY-----\n"
                ),
                Problem::UnsupportedKey,
            ),
        ];
        for (text, want) in key_cases {
            let error = pair(leaf.clone(), SecretPem::new(text.clone()))
                .check("shop.example.com", now())
                .unwrap_err();
            assert_eq!(error.file, PathBuf::from("/certs/shop.example.com.key"));
            assert_eq!(error.problem, want, "{text}");
            // Nothing of the key's text reaches a message.
            let shown = format!("{error} {error:?}");
            assert!(
                !shown.contains(secret_line) && !shown.contains("MIIB"),
                "{shown}"
            );
        }
    }

    #[test]
    fn sec1_and_pkcs1_keys_as_openssl_writes_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (Debian's openssl package) runs");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ]);
        run(&[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "ec384.key",
        ]);
        run(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
        for (name, header) in [
            ("ec.key", "BEGIN EC PRIVATE KEY"),
            ("ec384.key", "BEGIN EC PRIVATE KEY"),
            ("rsa.key", "BEGIN RSA PRIVATE KEY"),
        ] {
            let path = dir.path().join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(header), "{name}: {text}");
            run(&[
                "req",
                "-x509",
                "-new",
                "-key",
                name,
                "-subj",
                "/CN=shop.example.com",
                "-addext",
                "subjectAltName=DNS:shop.example.com",
                "-days",
                "2",
                "-out",
                "cert.pem",
            ]);
            let cert = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
            let pair = PemPair {
                files: PairFiles {
                    cert: dir.path().join("cert.pem"),
                    key: path.clone(),
                },
                cert_pem: cert,
                key_pem: SecretPem::new(text),
            };
            pair.check("shop.example.com", SystemTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // A key of the other kind does not match.
            let other = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
            let mismatched = PemPair {
                key_pem: SecretPem::new(other.serialize_pem()),
                ..pair
            };
            let error = mismatched
                .check("shop.example.com", SystemTime::now())
                .unwrap_err();
            assert!(
                matches!(error.problem, Problem::KeyMismatch { .. }),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn reading_files_refuses_missing_files_and_keys_anyone_can_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = test_ca("Test Root");
        let (leaf, key) = sign(&ca, Leaf::default());
        let files = PairFiles {
            cert: dir.path().join("shop.example.com.crt"),
            key: dir.path().join("shop.example.com.key"),
        };
        let error = PemPair::read(&files).unwrap_err();
        assert_eq!(error.file, files.cert);
        assert!(error.to_string().contains("does not exist"), "{error}");
        std::fs::write(&files.cert, &leaf).unwrap();
        std::fs::write(&files.key, key.expose()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = PemPair::read(&files).unwrap_err();
        assert_eq!(error.problem, Problem::KeyReadableByOthers { mode: 0o644 });
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let read = PemPair::read(&files).unwrap();
        assert!(read.check("shop.example.com", now()).is_ok());
        // Nothing lost: reading changed neither file.
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), leaf);
        assert_eq!(std::fs::read_to_string(&files.key).unwrap(), key.expose());
    }

    #[test]
    fn a_bundle_needs_at_least_one_valid_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        let a = test_ca("A");
        let b = test_ca("B");
        std::fs::write(&path, format!("{}{}", a.pem, b.pem)).unwrap();
        assert_eq!(read_bundle(&path).unwrap().len(), 2);
        std::fs::write(&path, "not pem").unwrap();
        let error = read_bundle(&path).unwrap_err().to_string();
        assert!(
            error.contains("bundle.pem") && error.contains("no PEM CERTIFICATE"),
            "{error}"
        );
        let missing = dir.path().join("absent.pem");
        let error = read_bundle(&missing).unwrap_err().to_string();
        assert!(error.contains("absent.pem: cannot read it"), "{error}");
    }
}
