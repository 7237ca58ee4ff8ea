//! Key material in memory: a PEM text that never prints, never serializes and is wiped when
//! dropped. Every private key the butler holds is one, so a `{:?}` in a log line or an error
//! cannot leak it.

use std::fmt;

use zeroize::Zeroizing;

/// A private key in PEM. No `Display`, no `Serialize`; `Debug` shows only that it is a key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text, for writing it to its file or parsing it; never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let secret = SecretPem::new("-----BEGIN PRIVATE KEY-----\nMIGH\n".into());
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(
            !shown.contains("MIGH") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(secret.expose().contains("MIGH"));
    }
}
