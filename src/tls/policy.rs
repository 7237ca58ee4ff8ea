//! Which certificate source a host gets: the ACME server, the local CA, or none. Pure: a function
//! of the host, the config's `tls.mode` and the container's `butler.tls` label. It also owns the
//! check that a host can be named in a certificate at all, because a name a certificate cannot
//! carry must be refused here, for that app only, before anything asks a CA for it.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::labels::LABEL_TLS;
use crate::text_enum::text_enum;

/// A DNS name in presentation form (no trailing dot) is at most 253 bytes, a label at most 63.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// The longest untrusted value quoted back in a message: enough to recognise, not to flood a log.
const MAX_QUOTED_LEN: usize = 80;

text_enum! {
    /// How hosts get certificates: `tls.mode` in the config, and the `butler.tls` label, which
    /// overrides it for one container. `auto` picks per host (see [`local_name`]).
    TlsMode { Auto => "auto", Acme => "acme", Local => "local", Off => "off" }
}

/// Where a host's certificate comes from once the mode is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    Acme,
    Local,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::Local => "local",
        }
    }
}

impl fmt::Display for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the mode that asked for ACME came from, so the error says what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeOrigin {
    Label,
    Config,
}

impl fmt::Display for ModeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModeOrigin::Label => write!(f, "label {LABEL_TLS}=acme"),
            ModeOrigin::Config => f.write_str("config tls.mode = \"acme\""),
        }
    }
}

/// Why a name never reaches an ACME server: public CAs validate a name by connecting to it over
/// the internet, and these names are not on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalName {
    /// `localhost` and `*.localhost` (RFC 6761: always this machine).
    Localhost,
    /// Under a suffix reserved for private use: `.test`, `.internal`, `.local`, `.lan`.
    Reserved(&'static str),
    /// One label, no dot: never in public DNS (and ACME servers refuse it).
    SingleLabel,
    /// An IPv4 or IPv6 address.
    IpAddress,
}

impl fmt::Display for LocalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalName::Localhost => f.write_str("names under localhost always mean this machine"),
            LocalName::Reserved(suffix) => {
                write!(f, "names under {suffix} are for private networks only")
            }
            LocalName::SingleLabel => f.write_str("a name without a dot is not in public DNS"),
            LocalName::IpAddress => f.write_str("it is an IP address"),
        }
    }
}

/// Suffixes whose names get the local CA under `auto`, besides `localhost` itself.
const LOCAL_SUFFIXES: [&str; 5] = [".localhost", ".test", ".internal", ".local", ".lan"];

/// Why a host cannot be named in a certificate. The messages complete a sentence that starts
/// with the host ("host \"a_b.com\" contains '_' ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHost {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long; a DNS name has at most 253")]
    TooLong { len: usize },
    #[error(
        "contains {ch:?}: an internationalised name must be written in punycode (xn--...), as DNS and certificates carry it"
    )]
    NotPunycode { ch: char },
    #[error("contains {ch:?}, which cannot appear in a DNS name (only a-z, 0-9, '-' and '.')")]
    BadChar { ch: char },
    #[error(
        "is a wildcard; the butler does not issue wildcard certificates (bring your own in tls.certs_dir)"
    )]
    Wildcard,
    #[error("has an empty label (a dot at the start or end, or two dots in a row)")]
    EmptyLabel,
    #[error("has a label of {len} characters; a DNS label has at most 63")]
    LabelTooLong { len: usize },
    #[error("has a label that starts or ends with '-'")]
    LabelHyphen,
    #[error("ends in an all-digit label, so it is neither a DNS name nor an IP address")]
    NumericTld,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "label {LABEL_TLS}={value} is not a TLS mode: use auto, acme, local or off (or remove the label)"
    )]
    UnknownMode { value: String },
    #[error(
        "host {host:?} cannot get an ACME certificate ({origin}): {why}, and an ACME server must \
         reach a name from the internet to validate it; use {LABEL_TLS}=local or auto"
    )]
    AcmeForLocalName {
        host: String,
        origin: ModeOrigin,
        why: LocalName,
    },
    #[error("host {host} {reason}")]
    InvalidHost { host: String, reason: InvalidHost },
}

/// Parses a `butler.tls` label value. Strict: exactly one of the four words, as a typo must not
/// silently pick a certificate source its author did not mean.
pub fn parse_label(value: &str) -> Result<TlsMode, PolicyError> {
    value.parse().map_err(|_| PolicyError::UnknownMode {
        value: quote(value),
    })
}

/// Where `host`'s certificate comes from: `None` when TLS is off for it. The label, when present,
/// overrides `config_mode`. A mode of `off` asks nothing of the host, so an app served over HTTP
/// only never gets a TLS error; every other mode validates it first.
pub fn certificate_source(
    host: &str,
    config_mode: TlsMode,
    label: Option<&str>,
) -> Result<Option<CertSource>, PolicyError> {
    let (mode, origin) = match label {
        Some(value) => (parse_label(value)?, ModeOrigin::Label),
        None => (config_mode, ModeOrigin::Config),
    };
    if mode == TlsMode::Off {
        return Ok(None);
    }
    let host = validate_host(host)?;
    let local = local_name(&host);
    Ok(Some(match (mode, local) {
        (TlsMode::Local, _) | (TlsMode::Auto, Some(_)) => CertSource::Local,
        (TlsMode::Auto, None) | (TlsMode::Acme, None) => CertSource::Acme,
        (TlsMode::Acme, Some(why)) => {
            return Err(PolicyError::AcmeForLocalName { host, origin, why });
        }
        (TlsMode::Off, _) => unreachable!("handled above"),
    }))
}

/// Why `host` (already valid, lower case) cannot be validated by a public ACME server, or `None`
/// for a name that can.
pub fn local_name(host: &str) -> Option<LocalName> {
    if host.parse::<IpAddr>().is_ok() {
        return Some(LocalName::IpAddress);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(LocalName::Localhost);
    }
    if let Some(suffix) = LOCAL_SUFFIXES
        .iter()
        .find(|s| host.ends_with(*s) || host == &s[1..])
    {
        return Some(LocalName::Reserved(suffix));
    }
    (!host.contains('.')).then_some(LocalName::SingleLabel)
}

/// Checks that `raw` can be named in a certificate and returns its canonical form: an IP address
/// as `IpAddr` prints it, a DNS name in lower case (DNS is case-insensitive; file names and SAN
/// comparisons want one spelling). A DNS name is labels of `[a-z0-9-]` (1..=63 each, no '-' at
/// either end) joined by dots, at most 253 characters, not ending in an all-digit label.
pub fn validate_host(raw: &str) -> Result<String, PolicyError> {
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    check_dns_name(raw)
        .map(|()| raw.to_ascii_lowercase())
        .map_err(|reason| PolicyError::InvalidHost {
            host: quote(raw),
            reason,
        })
}

/// The label rules are `proxy::sanitize::validate_host`'s too, which cannot be used here (`tls`
/// sits below `proxy`) and accepts what a certificate cannot carry (an all-digit last label);
/// sanitize could call this one once the two agree.
fn check_dns_name(name: &str) -> Result<(), InvalidHost> {
    if name.is_empty() {
        return Err(InvalidHost::Empty);
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        return Err(match ch {
            '*' => InvalidHost::Wildcard,
            ch if !ch.is_ascii() => InvalidHost::NotPunycode { ch },
            ch => InvalidHost::BadChar { ch },
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidHost::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(InvalidHost::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(InvalidHost::LabelTooLong { len: label.len() });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidHost::LabelHyphen);
        }
    }
    // "10.0.0.300" is no IP address; a name that looks like a mistyped one is refused rather than
    // sent to a DNS resolver or an ACME server.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(InvalidHost::NumericTld);
    }
    Ok(())
}

/// Quotes an untrusted value for a message: Debug-escaped (a newline shows as `\n`), cut short.
fn quote(raw: &str) -> String {
    let cut: String = raw.chars().take(MAX_QUOTED_LEN).collect();
    if cut.len() < raw.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use CertSource::{Acme, Local};

    #[test]
    fn auto_gives_local_names_the_local_ca_and_every_other_name_acme() {
        let cases = [
            ("localhost", Some(Local)),
            ("shop.localhost", Some(Local)),
            ("a.b.localhost", Some(Local)),
            ("shop.test", Some(Local)),
            ("shop.internal", Some(Local)),
            ("printer.local", Some(Local)),
            ("nas.lan", Some(Local)),
            ("test", Some(Local)),
            ("myapp", Some(Local)),
            ("127.0.0.1", Some(Local)),
            ("::1", Some(Local)),
            ("2001:db8::5", Some(Local)),
            ("shop.example.com", Some(Acme)),
            ("Shop.Example.COM", Some(Acme)),
            ("localhost.example.com", Some(Acme)),
            ("shop.testing", Some(Acme)),
            ("mylan.com", Some(Acme)),
            ("xn--bcher-kva.example", Some(Acme)),
        ];
        for (host, want) in cases {
            assert_eq!(
                certificate_source(host, TlsMode::Auto, None),
                Ok(want),
                "{host}"
            );
        }
    }

    #[test]
    fn the_label_overrides_the_config_mode() {
        let cases = [
            (
                "shop.localhost",
                TlsMode::Off,
                Some("local"),
                Ok(Some(Local)),
            ),
            ("shop.localhost", TlsMode::Auto, Some("off"), Ok(None)),
            (
                "shop.example.com",
                TlsMode::Off,
                Some("acme"),
                Ok(Some(Acme)),
            ),
            (
                "shop.example.com",
                TlsMode::Acme,
                Some("local"),
                Ok(Some(Local)),
            ),
            (
                "shop.example.com",
                TlsMode::Local,
                Some("auto"),
                Ok(Some(Acme)),
            ),
            ("shop.example.com", TlsMode::Local, None, Ok(Some(Local))),
            ("shop.example.com", TlsMode::Acme, None, Ok(Some(Acme))),
            ("shop.example.com", TlsMode::Off, None, Ok(None)),
        ];
        for (host, mode, label, want) in cases {
            assert_eq!(
                certificate_source(host, mode, label),
                want,
                "{host} {mode} {label:?}"
            );
        }
    }

    #[test]
    fn off_never_judges_the_host() {
        // An app served over HTTP only gets no TLS error, whatever its hosts are.
        assert_eq!(certificate_source("a_b", TlsMode::Off, None), Ok(None));
        assert_eq!(
            certificate_source("*.x.com", TlsMode::Auto, Some("off")),
            Ok(None)
        );
    }

    #[test]
    fn unknown_label_values_are_refused_strictly_with_the_valid_ones() {
        for value in ["ACME", " acme", "acme ", "letsencrypt", "", "on", "true"] {
            let error = certificate_source("shop.example.com", TlsMode::Auto, Some(value))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("butler.tls=") && error.contains("auto, acme, local or off"),
                "{value:?}: {error}"
            );
            assert!(error.contains(&format!("{value:?}")), "{error}");
        }
        let long = "x".repeat(500) + "\nrest";
        let error = parse_label(&long).unwrap_err().to_string();
        assert!(
            !error.contains('\n') && error.len() < 250 && error.contains("..."),
            "{error}"
        );
    }

    #[test]
    fn acme_for_a_local_name_says_why_it_cannot_work_and_where_acme_came_from() {
        let cases = [
            (
                "shop.localhost",
                Some("acme"),
                &["label butler.tls=acme", "this machine"][..],
            ),
            (
                "shop.test",
                None,
                &["tls.mode = \"acme\"", "under .test"][..],
            ),
            ("db.internal", Some("acme"), &["under .internal"][..]),
            ("10.0.0.7", Some("acme"), &["IP address"][..]),
            ("intranet", None, &["without a dot"][..]),
        ];
        for (host, label, wanted) in cases {
            let error = certificate_source(host, TlsMode::Acme, label)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(host) && error.contains("reach") && error.contains("internet"),
                "{error}"
            );
            for want in wanted {
                assert!(error.contains(want), "{host}: {error:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn hosts_that_a_certificate_cannot_name_are_refused_with_the_reason() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghi"; 26].join(".");
        let cases: Vec<(&str, &str)> = vec![
            ("", "is empty"),
            (&long_name, "at most 253"),
            ("bücher.example", "punycode"),
            ("日本.jp", "punycode"),
            ("a_b.example.com", "'_'"),
            ("a b.example.com", "' '"),
            ("shop.example.com\n", "'\\n'"),
            ("shop/../x", "'/'"),
            ("*.example.com", "wildcard"),
            ("example.com.", "empty label"),
            (".example.com", "empty label"),
            ("a..example.com", "empty label"),
            (&long_label, "at most 63"),
            ("-shop.example.com", "'-'"),
            ("shop-.example.com", "'-'"),
            ("10.0.0.300", "all-digit"),
            ("1.2.3", "all-digit"),
        ];
        for (host, want) in cases {
            for mode in [TlsMode::Auto, TlsMode::Acme, TlsMode::Local] {
                let error = certificate_source(host, mode, None).unwrap_err();
                assert!(
                    matches!(error, PolicyError::InvalidHost { .. }),
                    "{host:?}: {error:?}"
                );
                let text = error.to_string();
                assert!(text.contains(want), "{host:?}: {text:?} lacks {want:?}");
                assert!(!text.contains('\n'), "{text:?}");
            }
        }
    }

    #[test]
    fn valid_hosts_come_back_canonical() {
        assert_eq!(
            validate_host("Shop.Example.COM").unwrap(),
            "shop.example.com"
        );
        assert_eq!(
            validate_host("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(validate_host("0:0:0:0:0:0:0:1").unwrap(), "::1");
        assert_eq!(validate_host("a1.b2").unwrap(), "a1.b2");
        assert_eq!(validate_host(&"a".repeat(63)).unwrap(), "a".repeat(63));
        let longest = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.len(), 253);
        assert_eq!(validate_host(&longest).unwrap(), longest);
    }

    #[test]
    fn modes_parse_from_their_words_only() {
        for mode in TlsMode::ALL {
            assert_eq!(mode.as_str().parse::<TlsMode>(), Ok(*mode));
        }
        let error = "Auto".parse::<TlsMode>().unwrap_err();
        assert!(
            error.contains("tls mode") && error.contains("auto, acme, local, off"),
            "{error}"
        );
    }
}
