//! `butler tls root|trust|untrust|list`: the local CA and the certificates on disk, over
//! `crate::tls`. nginx does not serve them yet; these commands are what exists of HTTPS so far.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{TlsCommand, load_config};
use crate::config::Config;
use crate::tls::files;
use crate::tls::pair::{self, CertState, CertSummary, Chain, PairFiles};
use crate::tls::trust::{self, TrustStore};
use crate::tls::{LocalCa, PemPair, TlsDir};

pub fn dispatch(
    command: TlsCommand,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        TlsCommand::Root => root(config_path, format),
        TlsCommand::Trust => trust(config_path, format),
        TlsCommand::Untrust => untrust(format),
        TlsCommand::List => list(config_path, format),
    }
}

/// The local CA of this state directory, made now when there is none.
fn local_ca(config: &Config) -> anyhow::Result<(LocalCa, PathBuf)> {
    let dir = TlsDir::new(&config.state.dir);
    let (ca, created) = LocalCa::load_or_create(&dir, &hostname(), SystemTime::now())
        .with_context(|| format!("cannot load the local CA from {}", dir.path().display()))?;
    let cert = dir.root_ca().cert;
    if created {
        eprintln!(
            "created a new local CA in {}; `sudo butler tls trust` makes this machine trust it",
            cert.parent().unwrap_or(&cert).display()
        );
    }
    Ok((ca, cert))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct RootOutput<'a> {
    file: &'a Path,
    pem: &'a str,
    #[serde(flatten)]
    certificate: &'a CertSummary,
}

/// `butler tls root`: the root's PEM on stdout, so that `butler tls root > ca.crt` works.
fn root(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let (ca, file) = local_ca(&config)?;
    match format {
        OutputFormat::Json => output::print_json(&RootOutput {
            file: &file,
            pem: ca.cert_pem(),
            certificate: ca.summary(),
        })?,
        OutputFormat::Text => print!("{}", ca.cert_pem()),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct TrustOutput<'a> {
    anchor: &'a Path,
    tool: String,
    /// For `trust`: the root installed; for `untrust`: whether there was one to remove.
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<bool>,
}

/// `butler tls trust`: the root into the system trust store (made first when there is none).
fn trust(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    trust::require_root("trust")?;
    let store = TrustStore::detect(std::env::var_os("PATH").as_deref())?;
    let (ca, _) = local_ca(&config)?;
    store.install(ca.cert_pem())?;
    match format {
        OutputFormat::Json => output::print_json(&TrustOutput {
            anchor: &store.anchor,
            tool: store.tool(),
            sha256: Some(&ca.summary().sha256),
            removed: None,
        })?,
        OutputFormat::Text => println!(
            "trusted {}: installed {} and ran {}",
            ca.summary().subject,
            store.anchor.display(),
            store.tool()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `butler tls untrust`: the root out of the system trust store. Needs no config: the anchor's
/// place is the system's, not the state directory's.
fn untrust(format: OutputFormat) -> anyhow::Result<ExitCode> {
    trust::require_root("untrust")?;
    let store = TrustStore::detect(std::env::var_os("PATH").as_deref())?;
    let removed = store.remove()?;
    match format {
        OutputFormat::Json => output::print_json(&TrustOutput {
            anchor: &store.anchor,
            tool: store.tool(),
            sha256: None,
            removed: Some(removed),
        })?,
        OutputFormat::Text if removed => println!(
            "removed {} and ran {}",
            store.anchor.display(),
            store.tool()
        ),
        OutputFormat::Text => println!(
            "{} was not installed; ran {} anyway",
            store.anchor.display(),
            store.tool()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a listed certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Source {
    /// The local CA's root itself.
    LocalCaRoot,
    /// A leaf the local CA signed, in `tls/certs`.
    LocalCa,
    /// The operator's own, in `tls.certs_dir`.
    CertsDir,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::LocalCaRoot => "local-ca-root",
            Source::LocalCa => "local-ca",
            Source::CertsDir => "certs-dir",
        }
    }
}

/// One row of `butler tls list`.
#[derive(Debug, Serialize)]
struct Listed {
    /// `None` for the root.
    host: Option<String>,
    source: Source,
    cert_file: PathBuf,
    key_file: PathBuf,
    state: CertState,
    /// Why it is invalid or due, in words; `None` when it is ok.
    reason: Option<String>,
    days_left: Option<i64>,
    certificate: Option<CertSummary>,
}

impl Listed {
    fn new(host: Option<String>, source: Source, files: &PairFiles) -> Self {
        Listed {
            host,
            source,
            cert_file: files.cert.clone(),
            key_file: files.key.clone(),
            state: CertState::Invalid,
            reason: None,
            days_left: None,
            certificate: None,
        }
    }

    /// Unusable, with why. The certificate is still shown when its file parses (a pair whose
    /// key does not match, or that names another host, still has dates worth seeing).
    fn invalid(mut self, reason: String, now: SystemTime) -> Self {
        self.state = CertState::Invalid;
        self.reason = Some(reason);
        let chain = std::fs::read(&self.cert_file)
            .ok()
            .and_then(|text| Chain::parse(&self.cert_file, &text).ok());
        if let Some(chain) = chain {
            self.days_left = Some(pair::days_left(chain.summary().not_after, now));
            self.certificate = Some(chain.summary().clone());
        }
        self
    }

    /// Judged by time: ok, renew-due or expired.
    fn judged(mut self, summary: CertSummary, now: SystemTime) -> Self {
        self.state = CertState::at(&summary, now);
        self.reason = match self.state {
            CertState::Expired => Some(format!(
                "expired at {}",
                pair::rfc3339_text(summary.not_after)
            )),
            CertState::RenewDue => Some("less than a third of its lifetime left".into()),
            _ => None,
        };
        self.days_left = Some(pair::days_left(summary.not_after, now));
        self.certificate = Some(summary);
        self
    }
}

/// `butler tls list`: every certificate on disk and how it stands. A report: exit 0 whenever the
/// directories could be read, whatever the certificates' states.
fn list(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let dir = TlsDir::new(&config.state.dir);
    let now = SystemTime::now();
    let mut rows = Vec::new();

    let root_files = dir.root_ca();
    let ca = match dir.read(&root_files) {
        Ok(None) => None,
        Ok(Some(pair)) => {
            let row = Listed::new(None, Source::LocalCaRoot, &root_files);
            match LocalCa::from_pair(&pair) {
                Ok(ca) => {
                    rows.push(row.judged(ca.summary().clone(), now));
                    Some(ca)
                }
                Err(error) => {
                    rows.push(row.invalid(error.to_string(), now));
                    None
                }
            }
        }
        Err(error) => {
            rows.push(
                Listed::new(None, Source::LocalCaRoot, &root_files).invalid(error.to_string(), now),
            );
            None
        }
    };

    for (host, files) in listed_pairs(&dir.certs_dir())? {
        let row = Listed::new(Some(host.clone()), Source::LocalCa, &files);
        rows.push(match inspect(&dir, &files, &host) {
            Err(reason) => row.invalid(reason, now),
            Ok(chain) => {
                let from_this_ca = ca.as_ref().is_some_and(|ca| ca.issued(&chain));
                let row = row.judged(chain.summary().clone(), now);
                if from_this_ca || row.state == CertState::Expired {
                    row
                } else {
                    Listed {
                        state: CertState::RenewDue,
                        reason: Some("signed by another root than the local CA's".into()),
                        ..row
                    }
                }
            }
        });
    }

    if let Some(certs_dir) = &config.tls.certs_dir {
        if !certs_dir.exists() {
            eprintln!(
                "tls.certs_dir {} does not exist (yet): no certificates of your own are listed",
                certs_dir.display()
            );
        }
        for (host, files) in listed_pairs(certs_dir)? {
            let row = Listed::new(Some(host.clone()), Source::CertsDir, &files);
            rows.push(match read_and_inspect(&files, &host) {
                Ok(chain) => row.judged(chain.summary().clone(), now),
                Err(reason) => row.invalid(reason, now),
            });
        }
    }

    match format {
        OutputFormat::Json => output::print_json(&rows)?,
        OutputFormat::Text if rows.is_empty() => println!(
            "no certificates on disk (`butler tls root` creates the local CA; tls.certs_dir {})",
            match &config.tls.certs_dir {
                Some(dir) => format!("is {}", dir.display()),
                None => "is not set".into(),
            }
        ),
        OutputFormat::Text => println!("{}", list_table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

fn listed_pairs(dir: &Path) -> anyhow::Result<Vec<(String, PairFiles)>> {
    files::list_pairs(dir).with_context(|| format!("cannot list {}", dir.display()))
}

/// A pair in the butler's own tree (a crash's leftovers finished first).
fn inspect(dir: &TlsDir, files: &PairFiles, host: &str) -> Result<Chain, String> {
    match dir.read(files) {
        Ok(Some(pair)) => inspect_pair(&pair, host),
        Ok(None) => Err("the files disappeared while listing".into()),
        Err(error) => Err(error.to_string()),
    }
}

fn read_and_inspect(files: &PairFiles, host: &str) -> Result<Chain, String> {
    let pair = PemPair::read(files).map_err(|e| e.to_string())?;
    inspect_pair(&pair, host)
}

/// Everything but time, so that an expired pair still shows its dates.
fn inspect_pair(pair: &PemPair, host: &str) -> Result<Chain, String> {
    let host = crate::tls::policy::validate_host(host).map_err(|e| e.to_string())?;
    pair.inspect(&host).map_err(|e| e.to_string())
}

fn list_table(rows: &[Listed]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let summary = row.certificate.as_ref();
            vec![
                row.host.clone().unwrap_or_else(|| "(root)".into()),
                row.source.as_str().into(),
                summary.map_or("-".into(), |s| s.issuer.clone()),
                summary.map_or("-".into(), |s| pair::rfc3339_text(s.not_after)),
                row.days_left.map_or("-".into(), |d| d.to_string()),
                row.state.to_string(),
                row.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &[
            "HOST",
            "SOURCE",
            "ISSUER",
            "NOT AFTER",
            "DAYS LEFT",
            "STATE",
            "REASON",
        ],
        &cells,
    )
}
