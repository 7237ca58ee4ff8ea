//! Turning untrusted container names, labels and env values into strings that are safe in an nginx
//! config. App names are *sanitized* (a container name is a name, whatever its spelling); host names
//! and ports are *validated* and rejected with a reason, because "cleaning up" a hostile host value
//! would still route traffic somewhere its author chose.

use sha2::{Digest, Sha256};

/// A DNS label is at most 63 bytes; an app name is used as one.
pub const MAX_APP_NAME_LEN: usize = 63;
/// A DNS name in presentation form (no trailing dot) is at most 253 bytes.
pub const MAX_HOST_LEN: usize = 253;
/// How many sanitized characters a truncated name keeps before its hash suffix:
/// 54 + '-' + 8 hex digits = 63.
const TRUNCATED_PREFIX_LEN: usize = 54;
const HASH_SUFFIX_HEX: usize = 8;
/// The longest value quoted back in a message: enough to recognise it, not enough to flood a log.
const MAX_QUOTED_LEN: usize = 80;

/// Why a host name or a port was rejected. The messages complete a sentence that starts with the
/// value ("host \"a;b\" contains ';' ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long; a host name has at most 253")]
    HostTooLong { len: usize },
    #[error("contains {ch:?}, which cannot appear in a host name (only a-z, 0-9, '-' and '.')")]
    BadHostChar { ch: char },
    #[error("is a wildcard; wildcard hosts are not supported, list each host name explicitly")]
    Wildcard,
    #[error("has an empty label (a dot at the start or end, or two dots in a row)")]
    EmptyLabel,
    #[error("has a label of {len} characters; a DNS label has at most 63")]
    LabelTooLong { len: usize },
    #[error("has a label that starts or ends with '-'")]
    LabelHyphen,
    #[error("is not the full name of its app followed by a valid domain")]
    NotFullName,
    #[error("is not a port number: only the digits of an integer from 1 to 65535 are accepted")]
    NotAPort,
}

/// Turns a container name or a `butler.name` label into an app name that is one DNS label:
/// lowercase `[a-z0-9-]`, no leading or trailing '-', at most 63 characters. Every other character
/// becomes '-' and runs of '-' collapse. Returns `None` when nothing usable is left (e.g. "___").
///
/// A name longer than 63 characters keeps its first 54 characters plus '-' and 8 hex digits of the
/// SHA-256 of the full sanitized name: two long names that differ anywhere stay apart, while two
/// containers with the same long name still land in the same app (instances of one app).
pub fn sanitize_app_name(raw: &str) -> Option<String> {
    let name = sanitize_full_name(raw)?;
    if name.len() <= MAX_APP_NAME_LEN {
        return Some(name);
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    // Only ASCII is left, so byte indices are char boundaries.
    let prefix = name[..TRUNCATED_PREFIX_LEN].trim_end_matches('-');
    Some(format!("{prefix}-{}", &digest[..HASH_SUFFIX_HEX]))
}

/// The sanitized name before [`sanitize_app_name`] cuts it to one DNS label: the same characters
/// (`[a-z0-9-]`, no '-' at either end, no "--"), any length. A name longer than 63 characters is
/// served under `<full name>.<domain>` beside its cut alias, so that the name a user typed works.
pub fn sanitize_full_name(raw: &str) -> Option<String> {
    let mut name = String::with_capacity(raw.len().min(256));
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (name.is_empty() || name.ends_with('-')) {
            continue;
        }
        name.push(c);
    }
    while name.ends_with('-') {
        name.pop();
    }
    (!name.is_empty()).then_some(name)
}

/// The host `<full name>.<domain>` of an app whose name was cut, validated: the one host whose
/// first label may exceed 63 characters. That label must be exactly what [`sanitize_full_name`]
/// makes of itself (so only `[a-z0-9-]`, nothing that means something to nginx) and must cut to
/// `app`, so it cannot be any other app's name; the rest must be a valid host and the whole at
/// most 253 characters. The renderer checks hosts with this again, so a hand-built route cannot
/// use the relaxed rule for anything else.
pub fn validate_full_name_host(host: &str, app: &str) -> Result<String, InvalidValue> {
    if host.len() > MAX_HOST_LEN {
        return Err(InvalidValue::HostTooLong { len: host.len() });
    }
    let (label, domain) = host.split_once('.').unwrap_or((host, ""));
    if label.len() <= MAX_APP_NAME_LEN
        || sanitize_full_name(label).as_deref() != Some(label)
        || sanitize_app_name(label).as_deref() != Some(app)
    {
        return Err(InvalidValue::NotFullName);
    }
    validate_host(domain)?;
    // Lowercase already: `sanitize_full_name` left the label unchanged and `validate_host`
    // accepted the rest only if it was lowercase too (checked below).
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(InvalidValue::NotFullName);
    }
    Ok(host.to_string())
}

/// True when `name` is already a valid app name (what [`sanitize_app_name`] produces).
pub fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_APP_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Validates one host name: DNS labels of `[a-z0-9-]` (1..=63 each, no '-' at either end) joined by
/// dots, 1..=253 characters. Upper case is accepted and lowered (DNS names are case-insensitive);
/// nothing else is changed. Returns the canonical (lowercase) form.
pub fn validate_host(raw: &str) -> Result<String, InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::Empty);
    }
    if let Some(ch) = raw.chars().find(|c| !is_host_char(*c)) {
        return Err(if ch == '*' {
            InvalidValue::Wildcard
        } else {
            InvalidValue::BadHostChar { ch }
        });
    }
    if raw.len() > MAX_HOST_LEN {
        return Err(InvalidValue::HostTooLong { len: raw.len() });
    }
    for label in raw.split('.') {
        if label.is_empty() {
            return Err(InvalidValue::EmptyLabel);
        }
        if label.len() > MAX_APP_NAME_LEN {
            return Err(InvalidValue::LabelTooLong { len: label.len() });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidValue::LabelHyphen);
        }
    }
    Ok(raw.to_ascii_lowercase())
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

/// Splits a comma-separated host list (`butler.host`, `VIRTUAL_HOST`) and validates every entry.
/// Spaces around an entry are allowed ("a.com, b.com" is how people write lists); any other
/// whitespace is not. The first bad entry rejects the whole value, with the entry named.
pub fn parse_host_list(raw: &str) -> Result<Vec<String>, (String, InvalidValue)> {
    raw.split(',')
        .map(|entry| {
            let entry = entry.trim_matches(' ');
            validate_host(entry).map_err(|e| (entry.to_string(), e))
        })
        .collect()
}

/// Parses a port: ASCII digits only, 1..=65535. No sign, no spaces, no "80/tcp".
pub fn parse_port(raw: &str) -> Result<u16, InvalidValue> {
    if raw.is_empty() || raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidValue::NotAPort);
    }
    match raw.parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(InvalidValue::NotAPort),
    }
}

/// Quotes an untrusted value for a message: Debug-escaped (a newline shows as `\n`) and cut short.
pub fn quote(raw: &str) -> String {
    if raw.chars().count() <= MAX_QUOTED_LEN {
        format!("{raw:?}")
    } else {
        let cut: String = raw.chars().take(MAX_QUOTED_LEN).collect();
        format!("{cut:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_app_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("web", Some("web")),
            ("My_App", Some("my-app")),
            ("shop.v2", Some("shop-v2")),
            ("a__b--c..d", Some("a-b-c-d")),
            ("-lead-and-trail-", Some("lead-and-trail")),
            ("__x__", Some("x")),
            ("café", Some("caf")),
            ("x\"; } server {", Some("x-server")),
            ("123", Some("123")),
            ("", None),
            ("___", None),
            ("ééé", None),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize_app_name(raw).as_deref(), *want, "input {raw:?}");
        }
    }

    #[test]
    fn a_full_name_host_is_only_the_long_name_of_its_own_app() {
        let full = format!("shop-{}", "x".repeat(75));
        let app = sanitize_app_name(&full).unwrap();
        let host = format!("{full}.localhost");
        assert_eq!(validate_full_name_host(&host, &app), Ok(host.clone()));
        let other = sanitize_app_name(&format!("blog-{}", "x".repeat(75))).unwrap();
        let refused = [
            (host.clone(), other.as_str()),               // another app's
            ("shop.localhost".to_string(), "shop"),       // short: the normal rule
            (format!("{full}x.localhost"), app.as_str()), // cuts to another alias
            (format!("{}.localhost", full.to_uppercase()), app.as_str()),
            (format!("{full}-.localhost"), app.as_str()),
            (format!("{full};.localhost"), app.as_str()),
            (format!("{full}.local host"), app.as_str()),
            (format!("{}.localhost", "a".repeat(250)), app.as_str()), // over 253
        ];
        for (host, app) in refused {
            assert!(
                validate_full_name_host(&host, app).is_err(),
                "{host} for {app}"
            );
        }
    }

    #[test]
    fn long_names_are_truncated_with_a_stable_hash() {
        let long_a = "a".repeat(100);
        let name = sanitize_app_name(&long_a).unwrap();
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"a".repeat(54)));
        assert!(is_app_name(&name), "{name}");
        // Stable: same input, same name (instances of one app group together).
        assert_eq!(sanitize_app_name(&long_a).unwrap(), name);
        // Two long names sharing their first 54 characters do not collide.
        let long_b = format!("{}b", "a".repeat(99));
        assert_ne!(sanitize_app_name(&long_b).unwrap(), name);
        // A name of exactly 63 characters is kept as is.
        let exact = "b".repeat(63);
        assert_eq!(sanitize_app_name(&exact).unwrap(), exact);
        // A '-' at the cut point is not left dangling before the hash.
        let dash_at_cut = format!("{}-{}", "c".repeat(53), "d".repeat(40));
        let cut = sanitize_app_name(&dash_at_cut).unwrap();
        assert!(!cut.contains("--"), "{cut}");
        assert!(is_app_name(&cut), "{cut}");
    }

    #[test]
    fn recognises_app_names() {
        let cases = [
            ("web", true),
            ("a-b", true),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a.b", false),
            ("", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_app_name(name), want, "{name:?}");
        }
        assert!(!is_app_name(&"a".repeat(64)));
    }

    #[test]
    fn validates_hosts() {
        let ok: &[(&str, &str)] = &[
            ("shop.localhost", "shop.localhost"),
            ("Shop.Example.COM", "shop.example.com"),
            ("a", "a"),
            ("x-1.y-2.z", "x-1.y-2.z"),
            ("10.0.0.1", "10.0.0.1"),
        ];
        for (raw, want) in ok {
            assert_eq!(validate_host(raw).as_deref(), Ok(*want), "input {raw:?}");
        }
        let label63 = "a".repeat(63);
        assert!(validate_host(&format!("{label63}.com")).is_ok());

        let bad: &[(&str, InvalidValue)] = &[
            ("", InvalidValue::Empty),
            ("a\"b", InvalidValue::BadHostChar { ch: '"' }),
            ("a'b", InvalidValue::BadHostChar { ch: '\'' }),
            ("a;b", InvalidValue::BadHostChar { ch: ';' }),
            ("a{b", InvalidValue::BadHostChar { ch: '{' }),
            ("a}b", InvalidValue::BadHostChar { ch: '}' }),
            ("a b", InvalidValue::BadHostChar { ch: ' ' }),
            ("a\nb", InvalidValue::BadHostChar { ch: '\n' }),
            ("$host", InvalidValue::BadHostChar { ch: '$' }),
            ("a_b.com", InvalidValue::BadHostChar { ch: '_' }),
            ("a/b", InvalidValue::BadHostChar { ch: '/' }),
            ("a:80", InvalidValue::BadHostChar { ch: ':' }),
            (
                "ex\u{e4}mple.com",
                InvalidValue::BadHostChar { ch: '\u{e4}' },
            ),
            ("*.example.com", InvalidValue::Wildcard),
            (
                "x.com; } server { listen 80; server_name evil",
                InvalidValue::BadHostChar { ch: ';' },
            ),
            (".a.com", InvalidValue::EmptyLabel),
            ("a..com", InvalidValue::EmptyLabel),
            ("a.com.", InvalidValue::EmptyLabel),
            ("-a.com", InvalidValue::LabelHyphen),
            ("a-.com", InvalidValue::LabelHyphen),
        ];
        for (raw, want) in bad {
            assert_eq!(validate_host(raw).as_ref(), Err(want), "input {raw:?}");
        }
        assert_eq!(
            validate_host(&format!("{}.com", "a".repeat(64))),
            Err(InvalidValue::LabelTooLong { len: 64 })
        );
        let too_long = vec!["abcdefghi"; 26].join("."); // 26*9 + 25 = 259
        assert_eq!(
            validate_host(&too_long),
            Err(InvalidValue::HostTooLong { len: 259 })
        );
        let max = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
        assert_eq!(max.len(), 253);
        assert!(validate_host(&max).is_ok());
    }

    #[test]
    fn parses_host_lists() {
        assert_eq!(
            parse_host_list("a.com,b.com"),
            Ok(vec!["a.com".into(), "b.com".into()])
        );
        assert_eq!(
            parse_host_list("a.com, B.com "),
            Ok(vec!["a.com".into(), "b.com".into()])
        );
        assert_eq!(
            parse_host_list("a.com,"),
            Err((String::new(), InvalidValue::Empty))
        );
        assert_eq!(
            parse_host_list("a.com,\nb.com"),
            Err(("\nb.com".into(), InvalidValue::BadHostChar { ch: '\n' }))
        );
        assert_eq!(
            parse_host_list("ok.com,x.com;}"),
            Err(("x.com;}".into(), InvalidValue::BadHostChar { ch: ';' }))
        );
    }

    #[test]
    fn parses_ports() {
        let cases: &[(&str, Option<u16>)] = &[
            ("80", Some(80)),
            ("1", Some(1)),
            ("65535", Some(65535)),
            ("08080", Some(8080)),
            ("0", None),
            ("65536", None),
            ("99999", None),
            ("123456", None),
            ("-80", None),
            ("+80", None),
            (" 80", None),
            ("80 ", None),
            ("80/tcp", None),
            ("8o", None),
            ("80;", None),
            ("", None),
            ("1e3", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_port(raw).ok(), *want, "input {raw:?}");
        }
    }

    #[test]
    fn quotes_untrusted_values_on_one_line() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(200);
        let q = quote(&long);
        assert!(q.ends_with("..."), "{q}");
        assert!(q.len() < 100, "{q}");
    }
}
