//! The local CA: a root created once per state directory (ECDSA P-256, ten years) and kept in
//! `tls/local-ca/`, which signs short-lived leaves (30 days) for hosts no public CA can
//! validate (`*.localhost`, `.test`, IP addresses, ...). Leaves are renewed once less than a
//! third of their lifetime is left, so a missed day or two of renewals never lets one expire.
//! An existing root is never replaced by the butler: browsers and `butler tls trust` trust that
//! one, and a new root would silently untrust every leaf.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::files::{FilesError, TlsDir};
use super::pair::{self, CertSummary, Chain, PairError, PemPair};
use super::policy::{self, PolicyError};
use super::secret::SecretPem;

const DAY: u64 = 86_400;
pub const ROOT_LIFETIME: Duration = Duration::from_secs(3650 * DAY);
pub const LEAF_LIFETIME: Duration = Duration::from_secs(30 * DAY);
/// Certificates start an hour before they are made, so that a client whose clock is a little
/// behind does not see a fresh one as not yet valid.
const BACKDATE: Duration = Duration::from_secs(3600);
/// X.509's upper bound for a CN (RFC 5280 ub-common-name).
const MAX_CN_LEN: usize = 64;
const ROOT_CN_PREFIX: &str = "devops-butler local CA";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error(
        "the local CA in {dir} is not usable: {source}; move {dir} away to create a new one (then run `butler tls trust` again)"
    )]
    BadRoot { dir: PathBuf, source: PairError },
    #[error(
        "{cert} is not a CA certificate; move its directory away to create a new local CA (then run `butler tls trust` again)"
    )]
    NotCa { cert: PathBuf },
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Host(#[from] PolicyError),
}

/// Why a leaf on disk must be (re)issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Missing,
    /// Unusable as it is (corrupt, mismatched, expired, not for this host, ...).
    Invalid(PairError),
    /// Signed by another root than this CA's (the CA was made anew).
    OtherCa,
    /// Less than a third of its lifetime left.
    Due {
        not_after: SystemTime,
    },
}

impl fmt::Display for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Renewal::Missing => f.write_str("there is no certificate yet"),
            Renewal::Invalid(error) => write!(f, "{error}"),
            Renewal::OtherCa => f.write_str("it was signed by an earlier local CA"),
            Renewal::Due { not_after } => write!(
                f,
                "it expires at {}, within the last third of its lifetime",
                pair::rfc3339_text(*not_after)
            ),
        }
    }
}

/// A leaf just signed: the certificate file's text (leaf, then the root) and its key.
#[derive(Debug)]
pub struct IssuedLeaf {
    pub cert_pem: String,
    pub key_pem: SecretPem,
}

pub struct LocalCa {
    cert_pem: String,
    key: KeyPair,
    chain: Chain,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa")
            .field("subject", &self.chain.summary().subject)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// A new root for the machine called `hostname` (shown in its name, so that a user who
    /// trusts several butlers' roots can tell them apart).
    pub fn generate(hostname: &str, now: SystemTime) -> Result<LocalCa, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, root_common_name(hostname));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "devops-butler");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + ROOT_LIFETIME);
        let generate = |what| move |source| CaError::Generate { what, source };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("a CA key"))?;
        let cert_pem = params
            .self_signed(&key)
            .map_err(generate("the CA certificate"))?
            .pem();
        let chain = Chain::parse("root.crt".as_ref(), cert_pem.as_bytes())
            .expect("a certificate rcgen just made parses");
        Ok(LocalCa {
            cert_pem,
            key,
            chain,
        })
    }

    /// The CA of a root pair read from disk: its key must match and it must be a CA.
    pub fn from_pair(pair: &PemPair) -> Result<LocalCa, CaError> {
        let bad_root = |source| CaError::BadRoot {
            dir: pair
                .files
                .cert
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            source,
        };
        let chain = pair.chain().map_err(bad_root)?;
        let is_ca = X509Certificate::from_der(&chain.ders()[0])
            .map(|(_, cert)| cert.is_ca())
            .unwrap_or(false);
        if !is_ca {
            return Err(CaError::NotCa {
                cert: pair.files.cert.clone(),
            });
        }
        let key = pair::parse_key(&pair.files.key, &pair.key_pem).map_err(bad_root)?;
        Ok(LocalCa {
            cert_pem: pair.cert_pem.clone(),
            key,
            chain,
        })
    }

    /// The CA kept in `dir`, if there is one. Reads only.
    pub fn load(dir: &TlsDir) -> Result<Option<LocalCa>, CaError> {
        match dir.read(&dir.root_ca())? {
            Some(pair) => Ok(Some(LocalCa::from_pair(&pair)?)),
            None => Ok(None),
        }
    }

    /// The CA kept in `dir`, made and written first when there is none (under the tree's lock,
    /// so that two processes starting at once make one root, not two). `true` when it was
    /// made now. Blocking.
    pub fn load_or_create(
        dir: &TlsDir,
        hostname: &str,
        now: SystemTime,
    ) -> Result<(LocalCa, bool), CaError> {
        if let Some(ca) = LocalCa::load(dir)? {
            return Ok((ca, false));
        }
        let lock = dir.lock()?;
        dir.recover(&lock, &dir.root_ca())?;
        if let Some(ca) = LocalCa::load(dir)? {
            return Ok((ca, false));
        }
        let ca = LocalCa::generate(hostname, now)?;
        dir.write_root(&lock, &ca.cert_pem, &ca.key_pem())?;
        Ok((ca, true))
    }

    /// The root certificate in PEM: what `butler tls root` prints and trust stores take.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn summary(&self) -> &CertSummary {
        self.chain.summary()
    }

    /// Whether `chain` (already parsed, so each certificate issued by the next) runs up to this
    /// CA's root: a leaf from an earlier root does not.
    pub fn issued(&self, chain: &Chain) -> bool {
        chain.ders()[1..].contains(&self.chain.ders()[0])
    }

    fn key_pem(&self) -> SecretPem {
        SecretPem::new(self.key.serialize_pem())
    }

    /// Signs a new leaf for `host` (a DNS name or an IP address): a fresh ECDSA P-256 key,
    /// serverAuth, valid for [`LEAF_LIFETIME`] from `now`.
    pub fn issue(&self, host: &str, now: SystemTime) -> Result<IssuedLeaf, CaError> {
        let host = policy::validate_host(host)?;
        let generate = |what| move |source| CaError::Generate { what, source };
        let mut params =
            CertificateParams::new(vec![host.clone()]).map_err(generate("the leaf's names"))?;
        params.distinguished_name = DistinguishedName::new();
        if host.len() <= MAX_CN_LEN {
            params.distinguished_name.push(DnType::CommonName, &host);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + LEAF_LIFETIME);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate("a leaf key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(generate("the CA's issuer"))?;
        let leaf = params
            .signed_by(&key, &issuer)
            .map_err(generate("the leaf certificate"))?;
        Ok(IssuedLeaf {
            cert_pem: format!("{}{}", leaf.pem(), self.cert_pem),
            key_pem: SecretPem::new(key.serialize_pem()),
        })
    }

    /// Whether `host`'s leaf in `dir` must be (re)issued, and why; `None` while it serves
    /// well. Errors only for what a new leaf cannot fix (the files cannot be read).
    pub fn leaf_renewal(
        &self,
        dir: &TlsDir,
        host: &str,
        now: SystemTime,
    ) -> Result<Option<Renewal>, CaError> {
        let host = policy::validate_host(host)?;
        let pair = match dir.read(&dir.host(&host)?) {
            Ok(Some(pair)) => pair,
            Ok(None) => return Ok(Some(Renewal::Missing)),
            Err(FilesError::Pair(error)) if !unreadable(&error) => {
                return Ok(Some(Renewal::Invalid(error)));
            }
            // Half a pair: replacing it loses nothing that could serve.
            Err(FilesError::HalfPair { .. }) => return Ok(Some(Renewal::Missing)),
            Err(error) => return Err(error.into()),
        };
        let summary = match pair.check(&host, now) {
            Ok(summary) => summary,
            Err(error) if unreadable(&error) => return Err(FilesError::Pair(error).into()),
            Err(error) => return Ok(Some(Renewal::Invalid(error))),
        };
        let chain = pair.chain().map_err(FilesError::Pair)?;
        if !self.issued(&chain) {
            return Ok(Some(Renewal::OtherCa));
        }
        if pair::renewal_due(summary.not_before, summary.not_after, now) {
            return Ok(Some(Renewal::Due {
                not_after: summary.not_after,
            }));
        }
        Ok(None)
    }

    /// Makes sure `host` has a good leaf in `dir`: issues and writes one when
    /// [`leaf_renewal`](Self::leaf_renewal) says so (re-checked under the lock, so that two
    /// processes do not both renew). Returns the leaf's summary and why it was issued, if it
    /// was. Blocking.
    pub fn ensure_leaf(
        &self,
        dir: &TlsDir,
        host: &str,
        now: SystemTime,
    ) -> Result<(CertSummary, Option<Renewal>), CaError> {
        let host = policy::validate_host(host)?;
        let files = dir.host(&host)?;
        let current = |dir: &TlsDir| -> Result<CertSummary, CaError> {
            let pair = dir.read(&files)?.ok_or(FilesError::HalfPair {
                present: files.key.clone(),
                missing: files.cert.clone(),
            })?;
            Ok(pair.check(&host, now).map_err(FilesError::Pair)?)
        };
        if self.leaf_renewal(dir, &host, now)?.is_none() {
            return Ok((current(dir)?, None));
        }
        let lock = dir.lock()?;
        // Holding the lock, nothing may be left for `read` to finish (it would wait for the lock).
        dir.recover(&lock, &files)?;
        let Some(why) = self.leaf_renewal(dir, &host, now)? else {
            return Ok((current(dir)?, None));
        };
        let leaf = self.issue(&host, now)?;
        dir.write_host(&lock, &host, &leaf.cert_pem, &leaf.key_pem, now)?;
        drop(lock);
        Ok((current(dir)?, Some(why)))
    }
}

fn unreadable(error: &PairError) -> bool {
    matches!(error.problem, pair::Problem::Unreadable(_))
}

/// `devops-butler local CA (<hostname>)`, with the host name cut so the CN stays within 64
/// characters and printable.
fn root_common_name(hostname: &str) -> String {
    let room = MAX_CN_LEN - ROOT_CN_PREFIX.len() - " ()".len();
    let host: String = hostname
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(room)
        .collect();
    if host.is_empty() {
        ROOT_CN_PREFIX.to_owned()
    } else {
        format!("{ROOT_CN_PREFIX} ({host})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    use x509_parser::extensions::ParsedExtension;

    use crate::tls::pair::tests::{Leaf, now, sign, test_ca};

    const DAY: Duration = Duration::from_secs(super::DAY);

    fn parse(pem_text: &str, index: usize) -> Vec<u8> {
        Chain::parse("x.crt".as_ref(), pem_text.as_bytes())
            .unwrap()
            .ders()[index]
            .to_vec()
    }

    #[test]
    fn the_root_is_a_p256_ca_for_ten_years_that_signs_only_leaves() {
        let ca = LocalCa::generate("build-host", now()).unwrap();
        let der = parse(ca.cert_pem(), 0);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "CN=devops-butler local CA (build-host), O=devops-butler"
        );
        assert_eq!(cert.subject(), cert.issuer());
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && !usage.digital_signature());
        assert_eq!(
            cert.public_key()
                .algorithm
                .parameters
                .as_ref()
                .unwrap()
                .as_oid()
                .unwrap()
                .to_id_string(),
            "1.2.840.10045.3.1.7",
            "P-256"
        );
        let summary = ca.summary();
        assert_eq!(summary.not_after, now() + ROOT_LIFETIME);
        assert!(summary.not_before < now());
        assert!(format!("{ca:?}").contains("build-host"));
    }

    #[test]
    fn long_or_odd_host_names_keep_the_cn_within_64_printable_characters() {
        let name = root_common_name(&"h".repeat(100));
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("devops-butler local CA (hhh") && name.ends_with(')'));
        assert_eq!(root_common_name("a b\nc"), "devops-butler local CA (abc)");
        assert_eq!(root_common_name(""), "devops-butler local CA");
    }

    #[test]
    fn leaves_are_30_day_server_certificates_for_one_name_signed_by_the_root() {
        let ca = LocalCa::generate("h", now()).unwrap();
        for (host, san) in [
            ("Shop.localhost", "shop.localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
        ] {
            let leaf = ca.issue(host, now()).unwrap();
            let pair = PemPair {
                files: crate::tls::PairFiles {
                    cert: "leaf.crt".into(),
                    key: "leaf.key".into(),
                },
                cert_pem: leaf.cert_pem.clone(),
                key_pem: leaf.key_pem,
            };
            let summary = pair.check(san, now()).unwrap();
            assert_eq!(summary.sans, [san]);
            assert_eq!(summary.chain_len, 2);
            assert_eq!(summary.issuer, ca.summary().subject);
            assert_eq!(summary.not_after, now() + LEAF_LIFETIME);
            assert!(pair.check(san, now() + LEAF_LIFETIME + DAY).is_err());
            let der = parse(&leaf.cert_pem, 0);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(!cert.is_ca());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth);
            assert!(cert.iter_extensions().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )));
            // The file's second certificate is the root itself.
            assert_eq!(parse(&leaf.cert_pem, 1), parse(ca.cert_pem(), 0));
        }
        let error = ca.issue("a_b.localhost", now()).unwrap_err().to_string();
        assert!(error.contains("'_'"), "{error}");
    }

    #[test]
    fn the_root_is_made_once_and_loaded_after() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        assert!(LocalCa::load(&dir).unwrap().is_none());
        let (first, created) = LocalCa::load_or_create(&dir, "h", now()).unwrap();
        assert!(created);
        let (second, created) = LocalCa::load_or_create(&dir, "other", now()).unwrap();
        assert!(!created);
        assert_eq!(first.cert_pem(), second.cert_pem());
        let files = dir.root_ca();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(files.key.parent().unwrap()), 0o700);
        // The loaded CA signs leaves the first one's root verifies.
        let leaf = second.issue("shop.localhost", now()).unwrap();
        assert_eq!(parse(&leaf.cert_pem, 1), parse(first.cert_pem(), 0));
    }

    #[test]
    fn a_broken_root_is_refused_and_never_replaced() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        LocalCa::load_or_create(&dir, "h", now()).unwrap();
        let files = dir.root_ca();
        let other = test_ca("Other");
        let cases = [
            (
                None,
                Some(other.key.serialize_pem()),
                "root.key: does not hold the private key",
            ),
            (
                Some("garbage".to_owned()),
                None,
                "root.crt: holds no PEM CERTIFICATE",
            ),
        ];
        for (cert, key, want) in cases {
            let (cert_before, key_before) = (
                std::fs::read_to_string(&files.cert).unwrap(),
                std::fs::read_to_string(&files.key).unwrap(),
            );
            if let Some(text) = &cert {
                std::fs::write(&files.cert, text).unwrap();
            }
            if let Some(text) = &key {
                std::fs::write(&files.key, text).unwrap();
            }
            let written = (
                std::fs::read_to_string(&files.cert).unwrap(),
                std::fs::read_to_string(&files.key).unwrap(),
            );
            let error = LocalCa::load_or_create(&dir, "h", now())
                .unwrap_err()
                .to_string();
            assert!(error.contains(want) && error.contains("move"), "{error}");
            assert!(!error.contains("BEGIN"), "{error}");
            // Nothing was overwritten: the operator decides what to do with the old CA.
            assert_eq!(
                (
                    std::fs::read_to_string(&files.cert).unwrap(),
                    std::fs::read_to_string(&files.key).unwrap()
                ),
                written
            );
            std::fs::write(&files.cert, cert_before).unwrap();
            std::fs::write(&files.key, key_before).unwrap();
        }
        // A leaf in the CA's place is not a CA.
        let (leaf, key) = sign(&other, Leaf::default());
        std::fs::write(&files.cert, leaf).unwrap();
        std::fs::write(&files.key, key.expose()).unwrap();
        let error = LocalCa::load_or_create(&dir, "h", now())
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not a CA certificate"), "{error}");
    }

    #[test]
    fn a_leaf_is_issued_when_missing_then_kept_until_its_last_third_or_a_problem() {
        let state = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(state.path());
        let (ca, _) = LocalCa::load_or_create(&dir, "h", now()).unwrap();
        let host = "shop.localhost";
        assert_eq!(
            ca.leaf_renewal(&dir, host, now()).unwrap(),
            Some(Renewal::Missing)
        );

        let (first, why) = ca.ensure_leaf(&dir, host, now()).unwrap();
        assert_eq!(why, Some(Renewal::Missing));
        let (again, why) = ca.ensure_leaf(&dir, host, now() + DAY).unwrap();
        assert_eq!((again.sha256.as_str(), why), (first.sha256.as_str(), None));
        assert_eq!(ca.leaf_renewal(&dir, host, now() + 19 * DAY).unwrap(), None);
        let due = ca.leaf_renewal(&dir, host, now() + 21 * DAY).unwrap();
        assert!(matches!(due, Some(Renewal::Due { .. })), "{due:?}");
        assert!(due.unwrap().to_string().contains("last third"));

        let (renewed, why) = ca.ensure_leaf(&dir, host, now() + 21 * DAY).unwrap();
        assert!(matches!(why, Some(Renewal::Due { .. })));
        assert_ne!(renewed.sha256, first.sha256);
        assert_eq!(renewed.not_after, now() + 21 * DAY + LEAF_LIFETIME);

        // A corrupt key is replaced; a leaf of another CA is replaced.
        let files = dir.host(host).unwrap();
        std::fs::write(&files.key, "junk").unwrap();
        let why = ca.leaf_renewal(&dir, host, now() + 21 * DAY).unwrap();
        assert!(
            matches!(&why, Some(Renewal::Invalid(e)) if e.file == files.key),
            "{why:?}"
        );
        let other = LocalCa::generate("h", now()).unwrap();
        let leaf = other.issue(host, now()).unwrap();
        let lock = dir.lock().unwrap();
        dir.write_host(&lock, host, &leaf.cert_pem, &leaf.key_pem, now())
            .unwrap();
        drop(lock);
        assert_eq!(
            ca.leaf_renewal(&dir, host, now()).unwrap(),
            Some(Renewal::OtherCa)
        );
        let (_, why) = ca.ensure_leaf(&dir, host, now()).unwrap();
        assert_eq!(why, Some(Renewal::OtherCa));
        assert_eq!(ca.leaf_renewal(&dir, host, now()).unwrap(), None);
    }
}
