//! Which port of a container the proxy sends traffic to, and why. Pure: it reads only the snapshot
//! (labels, env, exposed and listening ports, recent logs) that discovery already collected, in the
//! order DESIGN.md gives; the reason travels with the port so users can see how it was chosen.

use std::fmt;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::docker::ContainerSnapshot;
use crate::docker::log_ports::port_from_logs;
use crate::labels::{COMMON_WEB_PORTS, ENV_VIRTUAL_PORT, LABEL_PORT};
use crate::proxy::sanitize::{self, InvalidValue};

/// How the upstream port was chosen. Serializes as `{"kind": "...", "text": "..."}` so both scripts
/// and people can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortReason {
    /// The port the declaration gave (`declared`) accepts no connection, while the container
    /// listens on `listening`: the socket is believed over the declaration (a 502 otherwise).
    DeclaredNotListening {
        declared: u16,
        declared_by: Declared,
        listening: u16,
        picked_by: ListeningPick,
    },
    /// Label `butler.port`.
    Label,
    /// Environment variable `VIRTUAL_PORT` (nginx-proxy's convention).
    VirtualPortEnv,
    /// The container exposes exactly one port.
    OnlyExposed,
    /// Several exposed ports, exactly one of them is listening.
    ExposedListening,
    /// Several exposed (or exposed and listening) ports; the first common web port among them.
    ExposedCommonWeb,
    /// No exposed ports; the container listens on exactly one.
    OnlyListening,
    /// No exposed ports; the first common web port among the listening ones.
    ListeningCommonWeb,
    /// The last port the container mentioned in its recent logs ("listening on :3000").
    LogMention,
}

/// Where a port that turned out not to be listening came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Declared {
    /// The image's or container's EXPOSE (the only one, or a common web port among several).
    Exposed,
    /// The container's recent logs.
    Logs,
}

/// Why one port among those the container listens on was taken instead of the declared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListeningPick {
    /// It is the only port the container listens on.
    Only,
    /// The first common web port among several listening ones.
    CommonWeb,
    /// Its logs name it, and it is one of several listening ones.
    Logs,
}

impl PortReason {
    pub fn kind(self) -> &'static str {
        match self {
            Self::DeclaredNotListening { .. } => "declared_not_listening",
            Self::Label => "label",
            Self::VirtualPortEnv => "virtual_port_env",
            Self::OnlyExposed => "only_exposed",
            Self::ExposedListening => "exposed_listening",
            Self::ExposedCommonWeb => "exposed_common_web",
            Self::OnlyListening => "only_listening",
            Self::ListeningCommonWeb => "listening_common_web",
            Self::LogMention => "log_mention",
        }
    }

    /// One plain sentence, no untrusted data (words and port numbers only): safe to show
    /// anywhere, including a config comment.
    pub fn text(self) -> String {
        let fixed = match self {
            Self::DeclaredNotListening {
                declared,
                declared_by,
                listening,
                picked_by,
            } => {
                let what = match declared_by {
                    Declared::Exposed => format!("exposed {declared}"),
                    Declared::Logs => format!("{declared} (named in its logs)"),
                };
                let pick = match picked_by {
                    ListeningPick::Only => format!("it listens on {listening}"),
                    ListeningPick::CommonWeb => {
                        format!("it listens on several ports and {listening} is a common web port")
                    }
                    ListeningPick::Logs => {
                        format!("it listens on several ports and its logs name {listening}")
                    }
                };
                return format!("{what} is not listening; {pick}");
            }
            Self::Label => "set by the label butler.port",
            Self::VirtualPortEnv => "set by the environment variable VIRTUAL_PORT",
            Self::OnlyExposed => "the only port the container exposes",
            Self::ExposedListening => "the only exposed port the container is listening on",
            Self::ExposedCommonWeb => "a common web port among the container's exposed ports",
            Self::OnlyListening => "the only port the container listens on (it exposes none)",
            Self::ListeningCommonWeb => {
                "a common web port among the ports the container listens on (it exposes none)"
            }
            Self::LogMention => "the last port the container mentioned in its recent logs",
        };
        fixed.to_owned()
    }

    /// Whether the port came from the container's declaration (EXPOSE or its logs) rather than
    /// from what it listens on or from the user's own setting.
    fn declared(self) -> Option<Declared> {
        match self {
            Self::OnlyExposed | Self::ExposedCommonWeb => Some(Declared::Exposed),
            Self::LogMention => Some(Declared::Logs),
            _ => None,
        }
    }
}

impl fmt::Display for PortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for PortReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("PortReason", 2)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("text", &self.text())?;
        s.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortChoice {
    pub port: u16,
    pub reason: PortReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// An explicit port that is not a port. Never silently replaced by a guess: the user asked for
    /// something specific and should learn that it did not work.
    #[error(
        "{what} {key}={quoted} {error}; fix it, or remove it to let the butler detect the port",
        quoted = sanitize::quote(.value)
    )]
    Invalid {
        /// "label" or "environment variable".
        what: &'static str,
        key: &'static str,
        value: String,
        error: InvalidValue,
    },
    #[error("no port to proxy to: {detail}; set the label butler.port=<port> on the container")]
    NotFound { detail: String },
}

/// Chooses the upstream port of one container.
pub fn choose_port(c: &ContainerSnapshot) -> Result<PortChoice, PortError> {
    if let Some((key, value, reason)) = explicit_port(c) {
        return sanitize::parse_port(value)
            .map(|port| PortChoice { port, reason })
            .map_err(|error| PortError::Invalid {
                what: if reason == PortReason::Label {
                    "label"
                } else {
                    "environment variable"
                },
                key,
                value: value.to_string(),
                error,
            });
    }

    let exposed = &c.exposed_ports;
    let listening = c.listening_ports.as_deref();
    let chosen = match exposed.as_slice() {
        [only] => Some((*only, PortReason::OnlyExposed)),
        [] => listening.and_then(|l| match l {
            [only] => Some((*only, PortReason::OnlyListening)),
            many => common_web_port(many).map(|p| (p, PortReason::ListeningCommonWeb)),
        }),
        several => {
            let exposed_listening: Vec<u16> = listening
                .map(|l| several.iter().copied().filter(|p| l.contains(p)).collect())
                .unwrap_or_default();
            match exposed_listening.as_slice() {
                [only] => Some((*only, PortReason::ExposedListening)),
                [] => common_web_port(several).map(|p| (p, PortReason::ExposedCommonWeb)),
                many => common_web_port(many).map(|p| (p, PortReason::ExposedCommonWeb)),
            }
        }
    };
    let logged = || port_from_logs(&c.log_tail);
    let declared = chosen.or_else(|| logged().map(|port| (port, PortReason::LogMention)));
    if let Some((port, reason)) = declared {
        return Ok(believe_the_socket(
            PortChoice { port, reason },
            listening,
            logged(),
        ));
    }
    Err(PortError::NotFound {
        detail: describe_no_port(c),
    })
}

/// A declared port nothing listens on gives a 502 for every request: when the container listens
/// on exactly one other port, or several of which a common web port or its logs pick one, that
/// one is taken. With nothing listening yet (the app is still starting) or no way to tell, the
/// declaration stands; so does it among several listening ports with nothing to choose by, and
/// the health check's `port_mismatch` then says which ones.
fn believe_the_socket(
    declared: PortChoice,
    listening: Option<&[u16]>,
    logged: Option<u16>,
) -> PortChoice {
    let (Some(declared_by), Some(listening)) = (declared.reason.declared(), listening) else {
        return declared;
    };
    if listening.is_empty() || listening.contains(&declared.port) {
        return declared;
    }
    let pick = match listening {
        [only] => Some((*only, ListeningPick::Only)),
        many => common_web_port(many)
            .map(|p| (p, ListeningPick::CommonWeb))
            .or_else(|| {
                logged
                    .filter(|p| many.contains(p))
                    .map(|p| (p, ListeningPick::Logs))
            }),
    };
    match pick {
        Some((port, picked_by)) => PortChoice {
            port,
            reason: PortReason::DeclaredNotListening {
                declared: declared.port,
                declared_by,
                listening: port,
                picked_by,
            },
        },
        None => declared,
    }
}

/// The explicit port source in effect, if any. An empty value counts as unset: compose files
/// often write `VIRTUAL_PORT=${PORT}` with the variable left empty.
fn explicit_port(c: &ContainerSnapshot) -> Option<(&'static str, &str, PortReason)> {
    if let Some(v) = c.labels.get(LABEL_PORT).filter(|v| !v.is_empty()) {
        return Some((LABEL_PORT, v, PortReason::Label));
    }
    c.env
        .get(ENV_VIRTUAL_PORT)
        .filter(|v| !v.is_empty())
        .map(|v| (ENV_VIRTUAL_PORT, v.as_str(), PortReason::VirtualPortEnv))
}

fn common_web_port(candidates: &[u16]) -> Option<u16> {
    COMMON_WEB_PORTS
        .iter()
        .copied()
        .find(|p| candidates.contains(p))
}

fn describe_no_port(c: &ContainerSnapshot) -> String {
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let exposed = match c.exposed_ports.as_slice() {
        [] => "it exposes no port".to_string(),
        ports => format!(
            "it exposes {} and none is a common web port ({})",
            list(ports),
            list(&COMMON_WEB_PORTS)
        ),
    };
    let listening = match c.listening_ports.as_deref() {
        None => "its listening ports could not be read".to_string(),
        Some([]) => "it listens on no TCP port".to_string(),
        Some(ports) => format!("it listens on {}", list(ports)),
    };
    format!("{exposed}, {listening}, and its recent logs name no port")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(
        labels: &[(&str, &str)],
        env: &[(&str, &str)],
        exposed: &[u16],
        listening: Option<&[u16]>,
        logs: &str,
    ) -> ContainerSnapshot {
        ContainerSnapshot {
            id: "c1".into(),
            name: "app".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exposed_ports: exposed.to_vec(),
            listening_ports: listening.map(<[u16]>::to_vec),
            log_tail: logs.into(),
            running: true,
            ..Default::default()
        }
    }

    fn not_listening(
        declared: u16,
        declared_by: Declared,
        listening: u16,
        picked_by: ListeningPick,
    ) -> PortReason {
        PortReason::DeclaredNotListening {
            declared,
            declared_by,
            listening,
            picked_by,
        }
    }

    #[test]
    fn chooses_ports_in_the_documented_order() {
        use ListeningPick::{CommonWeb, Only};
        use PortReason::*;
        let lbl = [("butler.port", "9000")];
        let env = [("VIRTUAL_PORT", "9100")];
        type Case = (&'static str, ContainerSnapshot, Option<(u16, PortReason)>);
        let cases: &[Case] = &[
            (
                "label beats everything",
                snap(&lbl, &env, &[80], Some(&[80]), ""),
                Some((9000, Label)),
            ),
            (
                "env when no label",
                snap(&[], &env, &[80], Some(&[80]), ""),
                Some((9100, VirtualPortEnv)),
            ),
            (
                "empty label is unset",
                snap(&[("butler.port", "")], &env, &[], None, ""),
                Some((9100, VirtualPortEnv)),
            ),
            (
                "empty env is unset",
                snap(&[], &[("VIRTUAL_PORT", "")], &[81], None, ""),
                Some((81, OnlyExposed)),
            ),
            (
                "only exposed",
                snap(&[], &[], &[5432], None, ""),
                Some((5432, OnlyExposed)),
            ),
            (
                "only exposed but another listens: the socket wins",
                snap(&[], &[], &[8080], Some(&[9100]), ""),
                Some((9100, not_listening(8080, Declared::Exposed, 9100, Only))),
            ),
            (
                "only exposed, nothing listens yet: the declaration stands",
                snap(&[], &[], &[8080], Some(&[]), ""),
                Some((8080, OnlyExposed)),
            ),
            (
                "only exposed, listening unknown: the declaration stands",
                snap(&[], &[], &[8080], None, ""),
                Some((8080, OnlyExposed)),
            ),
            (
                "only exposed and listening among others",
                snap(&[], &[], &[8080], Some(&[8080, 9100]), ""),
                Some((8080, OnlyExposed)),
            ),
            (
                "only exposed not listening, several listen, one a web port",
                snap(&[], &[], &[8081], Some(&[3000, 9100]), ""),
                Some((
                    3000,
                    not_listening(8081, Declared::Exposed, 3000, CommonWeb),
                )),
            ),
            (
                "only exposed not listening, several listen, logs pick one",
                snap(&[], &[], &[8081], Some(&[9100, 9200]), "listening on :9200"),
                Some((
                    9200,
                    not_listening(8081, Declared::Exposed, 9200, ListeningPick::Logs),
                )),
            ),
            (
                "only exposed not listening, several listen, nothing to choose by",
                snap(&[], &[], &[8081], Some(&[9100, 9200]), "listening on :7000"),
                Some((8081, OnlyExposed)),
            ),
            (
                "several exposed, none listening, one other port listens",
                snap(&[], &[], &[443, 8080], Some(&[9100]), ""),
                Some((9100, not_listening(8080, Declared::Exposed, 9100, Only))),
            ),
            (
                "a logged port that does not listen yields to the socket",
                snap(&[], &[], &[9000, 9001], Some(&[9500]), "listening on :9001"),
                Some((9500, not_listening(9001, Declared::Logs, 9500, Only))),
            ),
            (
                "the label is the user's word even when nothing listens on it",
                snap(&[("butler.port", "8080")], &[], &[8080], Some(&[9100]), ""),
                Some((8080, Label)),
            ),
            (
                "VIRTUAL_PORT is the user's word too",
                snap(&[], &[("VIRTUAL_PORT", "8080")], &[], Some(&[9100]), ""),
                Some((8080, VirtualPortEnv)),
            ),
            (
                "exposed listening among several",
                snap(&[], &[], &[80, 9000], Some(&[9000]), ""),
                Some((9000, ExposedListening)),
            ),
            (
                "several exposed, unknown listening, web port",
                snap(&[], &[], &[443, 3000, 8080], None, ""),
                Some((8080, ExposedCommonWeb)),
            ),
            (
                "several exposed, none listening, web port",
                snap(&[], &[], &[443, 5000], Some(&[]), ""),
                Some((5000, ExposedCommonWeb)),
            ),
            (
                "several exposed and listening, web port",
                snap(&[], &[], &[3000, 8000, 9000], Some(&[3000, 8000, 9000]), ""),
                Some((3000, ExposedCommonWeb)),
            ),
            (
                "web port order 80 first",
                snap(&[], &[], &[8000, 80], None, ""),
                Some((80, ExposedCommonWeb)),
            ),
            (
                "several exposed, no web port, falls to logs",
                snap(&[], &[], &[9000, 9001], None, "listening on :9001"),
                Some((9001, LogMention)),
            ),
            (
                "no exposed, only listening",
                snap(&[], &[], &[], Some(&[7000]), ""),
                Some((7000, OnlyListening)),
            ),
            (
                "no exposed, web among listening",
                snap(&[], &[], &[], Some(&[22, 8080, 9000]), ""),
                Some((8080, ListeningCommonWeb)),
            ),
            (
                "no exposed, listening no web, logs",
                snap(&[], &[], &[], Some(&[22, 9000]), "Listening on port 9000"),
                Some((9000, LogMention)),
            ),
            (
                "nothing but logs",
                snap(&[], &[], &[], None, "server started\nhttp://0.0.0.0:5000"),
                Some((5000, LogMention)),
            ),
            ("nothing at all", snap(&[], &[], &[], None, "hello"), None),
            (
                "listening empty, no logs",
                snap(&[], &[], &[], Some(&[]), ""),
                None,
            ),
            (
                "several exposed, no web port, no logs",
                snap(&[], &[], &[9000, 9001], Some(&[]), ""),
                None,
            ),
        ];
        for (name, c, want) in cases {
            let got = choose_port(c).ok().map(|p| (p.port, p.reason));
            assert_eq!(got, *want, "case: {name}");
        }
    }

    #[test]
    fn an_invalid_explicit_port_is_an_error_not_a_fallback() {
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(Pairs, Pairs, &str)] = &[
            (&[("butler.port", "http")], &[], "butler.port"),
            (&[("butler.port", "0")], &[], "butler.port"),
            (&[("butler.port", "70000")], &[], "butler.port"),
            (&[("butler.port", "80; }")], &[], "butler.port"),
            (&[], &[("VIRTUAL_PORT", "80,81")], "VIRTUAL_PORT"),
            (&[], &[("VIRTUAL_PORT", "-1")], "VIRTUAL_PORT"),
        ];
        for (labels, env, key) in cases {
            let c = snap(labels, env, &[80], Some(&[80]), "");
            match choose_port(&c) {
                Err(PortError::Invalid { key: k, .. }) => assert_eq!(k, *key),
                other => panic!("{labels:?} {env:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn no_port_says_what_was_seen() {
        let c = snap(&[], &[], &[9000, 9001], None, "");
        let err = choose_port(&c).unwrap_err().to_string();
        assert!(err.contains("9000, 9001"), "{err}");
        assert!(err.contains("could not be read"), "{err}");
        assert!(err.contains("butler.port"), "{err}");
    }

    #[test]
    fn reasons_serialize_with_kind_and_text() {
        let json = serde_json::to_value(PortReason::OnlyExposed).unwrap();
        assert_eq!(json["kind"], "only_exposed");
        assert_eq!(json["text"], "the only port the container exposes");
    }

    #[test]
    fn a_port_taken_over_the_declaration_says_why() {
        let reason = not_listening(8080, Declared::Exposed, 9100, ListeningPick::Only);
        assert_eq!(
            reason.text(),
            "exposed 8080 is not listening; it listens on 9100"
        );
        assert_eq!(reason.kind(), "declared_not_listening");
        let logged = not_listening(3000, Declared::Logs, 8080, ListeningPick::CommonWeb);
        assert_eq!(
            logged.text(),
            "3000 (named in its logs) is not listening; it listens on several ports and 8080 is \
             a common web port"
        );
    }
}
