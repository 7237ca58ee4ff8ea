//! The command line: clap definitions and dispatch. Each command family lives in its own file and
//! is a thin front over the library; exit codes mean 0 ok, 1 failed or degraded, 2 usage or config.

mod config;
mod deploy;
mod generate;
mod health;
mod output;
mod proxy;
mod run;
mod services;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::OutputFormat;

use crate::systemd::units::{ButlerUnit, Worker};

#[derive(Debug, Parser)]
#[command(
    name = "butler",
    version,
    about = "Routes every Docker container through a validated, self-healing nginx proxy",
    propagate_version = true
)]
pub struct Cli {
    /// Config file [default: /etc/butler/butler.toml].
    #[arg(long, global = true, env = "BUTLER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every worker in one foreground process (hosts without systemd, development).
    Run {
        /// Run only these workers (comma-separated), e.g. `health-monitor,recovery`.
        #[arg(long, value_delimiter = ',', value_name = "WORKER")]
        only: Vec<Worker>,
    },
    /// Run one worker: the process behind its systemd unit.
    Worker {
        /// dynamic-proxy, health-monitor, recovery or dashboard.
        worker: Worker,
    },
    /// Check or show the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Reconcile the proxy once now: containers → routes → validated nginx config (exit 1 if refused).
    ProxyUpdate,
    /// Watch the engine and print a line whenever the routes change (read-only).
    ProxyMonitor,
    /// Routes, config history and rollback.
    Proxy {
        #[command(subcommand)]
        command: ProxyCommand,
    },
    /// Check every app, the network, the proxy, the host and the butler's units now (exit 0
    /// healthy, 1 degraded or critical).
    Health,
    /// Services, proxy, apps, open incidents, recovery success rates and what to do.
    Status,
    /// Incidents the health-monitor recorded, newest first, with filters.
    Incidents(health::IncidentsArgs),
    /// Probe every route through the proxy, name the cause of each 502/503/504, fix what can be
    /// fixed, probe again (exit 1 while a route still fails).
    #[command(name = "fix-502")]
    Fix502 {
        /// Only diagnose and say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deploy an app from an image, a Dockerfile directory or a git repository with zero downtime:
    /// new instances serve only once healthy (exit 0 deployed, 1 failed and the previous revision
    /// keeps serving, 2 bad usage).
    Deploy(deploy::DeployArgs),
    /// Every deploy and rollback, newest first.
    Deployments(deploy::DeploymentsArgs),
    /// Redeploy an app's previous revision the same zero-downtime way (exit codes as `deploy`).
    Rollback(deploy::RollbackArgs),
    /// The local CA and the certificates on disk (nginx does not serve TLS yet).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Control the butler's systemd units over D-Bus.
    Services {
        /// Talk to the calling user's service manager instead of the system's.
        #[arg(long, global = true)]
        user: bool,
        #[command(subcommand)]
        command: ServicesCommand,
    },
    /// Write the man pages or shell completions (a packaging build step).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// butler.1 and one page per subcommand, into DIR.
    Man { dir: PathBuf },
    /// The completion script for SHELL, into DIR (butler.bash, _butler, butler.fish).
    Completions {
        shell: clap_complete::Shell,
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file without starting anything (exit 2 when it is bad).
    Check {
        /// The file to check [default: --config, BUTLER_CONFIG or /etc/butler/butler.toml].
        path: Option<PathBuf>,
    },
    /// Print the effective configuration, defaults included.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Apps, hosts, upstream servers and the chosen port with its reason.
    Routes,
    /// Applied (and refused) config versions, newest first.
    History {
        /// How many versions to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Re-apply an earlier config version (default: the one before the newest) and pin it.
    Rollback {
        /// The version to restore, as `butler proxy history` lists it. Its id is not `version`:
        /// that is `--version`'s, and clap panics on the clash when the command is parsed.
        #[arg(id = "config_version", value_name = "VERSION")]
        version: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Print the local CA's root certificate (PEM), creating the CA if there is none yet.
    Root,
    /// Install the local CA's root into the system trust store (root only).
    Trust,
    /// Remove the local CA's root from the system trust store (root only).
    Untrust,
    /// Every certificate on disk (local CA, tls.certs_dir): issuer, expiry, days left, state.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// Every butler unit: state, main PID, uptime, restarts, memory, watchdog.
    List,
    /// Start a unit and wait for the result.
    Start { name: ButlerUnit },
    /// Stop a unit and wait for the result.
    Stop { name: ButlerUnit },
    /// Restart a unit and wait for the result.
    Restart { name: ButlerUnit },
    /// A unit's properties and its recent journal lines.
    Status {
        name: ButlerUnit,
        /// Journal lines to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// A unit's journal.
    Logs {
        name: ButlerUnit,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
}

/// Runs the parsed command. Errors reaching `main` are printed as one line and mapped by
/// [`exit_code`].
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone();
    match cli.command {
        Command::Run { only } => run::all(config_path, only),
        Command::Worker { worker } => run::one(worker, config_path),
        Command::Config { command } => config::dispatch(command, config_path, cli.output),
        Command::ProxyUpdate => proxy::update(config_path, cli.output),
        Command::ProxyMonitor => proxy::monitor(config_path, cli.output),
        Command::Proxy { command } => proxy::dispatch(command, config_path, cli.output),
        Command::Services { user, command } => services::dispatch(command, user, cli.output),
        Command::Tls { command } => tls::dispatch(command, config_path, cli.output),
        Command::Health => health::health(config_path, cli.output),
        Command::Status => health::status(config_path, cli.output),
        Command::Incidents(args) => health::incidents(args, config_path, cli.output),
        Command::Fix502 { dry_run } => health::fix502(dry_run, config_path, cli.output),
        Command::Generate { command } => generate::dispatch(command),
        Command::Deploy(args) => deploy::deploy(args, config_path, cli.output),
        Command::Deployments(args) => deploy::deployments(args, config_path, cli.output),
        Command::Rollback(args) => deploy::rollback(args, config_path, cli.output),
    }
}

/// The exit-code contract, the one place every command's code comes from (README, "Exit codes").
/// Commands return 0 or 1 for what they found (`ExitCode::SUCCESS`/`FAILURE`, `Exit::Ok`/`Failed`);
/// a 2 only ever comes from `Exit::Usage`: clap's mistakes in `main`, and errors sorted by
/// [`Exit::of`] (which `main` applies to every error a command returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked, and what it judges (health, routes, a job) is fine.
    Ok,
    /// 1: the command ran, but something is degraded, failed or unreachable (engine, bus, store).
    Failed,
    /// 2: what the user typed or wrote is wrong: a flag, a name, an id, the config or DOCKER_HOST.
    /// Running the same command again cannot help until that is changed.
    Usage,
}

impl Exit {
    /// `Usage` when any cause in the chain is something the user must fix in what they typed or
    /// wrote, `Failed` for everything else (engine, bus, store, I/O).
    pub fn of(error: &anyhow::Error) -> Exit {
        if error.chain().any(is_usage) {
            Exit::Usage
        } else {
            Exit::Failed
        }
    }

    /// The same sorting for one library error that a command reports itself (deploy's refusals).
    pub fn of_cause(cause: &(dyn std::error::Error + 'static)) -> Exit {
        if is_usage(cause) {
            Exit::Usage
        } else {
            Exit::Failed
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
        })
    }
}

/// The error kinds that are usage errors. One list, so that a new kind is classified here and
/// not by a literal `2` in some command.
fn is_usage(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.is::<crate::config::ConfigError>()
        || cause.is::<crate::systemd::units::UnknownService>()
        || cause.is::<health::UnknownIncident>()
        || cause.is::<proxy::UnknownVersion>()
        || cause
            .downcast_ref::<crate::deploy::DeployError>()
            .is_some_and(crate::deploy::DeployError::is_usage)
        // A bad DOCKER_HOST is configuration too; an unreachable engine is not.
        || cause.downcast_ref::<crate::docker::client::ClientError>().is_some_and(|e| {
            matches!(e, crate::docker::client::ClientError::UnsupportedHost { .. })
        })
}

/// The code of an error that reached `main`: see [`Exit::of`].
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    Exit::of(error).into()
}

/// A command-line mistake as one line, as every other error is printed: clap's message with its
/// tip or valid values, and which `--help` to read (the subcommands named in `args`), without the
/// blank lines and the usage block clap prints. `--help` and `--version` are not mistakes: print
/// those with `clap::Error::exit`.
pub fn usage_line(error: &clap::Error, args: &[String]) -> String {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let mut path = vec!["butler".to_owned()];
    for arg in args.iter().skip(1).filter(|a| !a.starts_with('-')) {
        let Some(sub) = command.find_subcommand(arg).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    let text = error.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{}; see `{} --help`", parts.join("; "), path.join(" "))
}

/// The multi-threaded runtime every command shares; two threads are plenty for an agent whose work
/// is waiting on sockets.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub(crate) fn load_config(
    path: Option<PathBuf>,
) -> Result<crate::config::Config, crate::config::ConfigError> {
    match path {
        Some(path) => crate::config::Config::load(&path, true),
        None => crate::config::Config::load(crate::config::DEFAULT_PATH.as_ref(), false),
    }
}

/// Opens the store the workers write, for the commands that read it or record into it.
fn open_store(config: &crate::config::Config) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context as _;
    crate::store::Store::open(&config.state.dir).with_context(|| {
        format!(
            "cannot open the butler's store in {} (state.dir); run as root or as the butler user",
            config.state.dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn usage_errors_are_told_from_failures_through_any_context() {
        use anyhow::Context as _;
        let config = crate::config::ConfigError::Invalid {
            path: "/etc/butler/butler.toml".into(),
            key: "proxy.http_port",
            reason: "must be between 1 and 65535".into(),
        };
        let cases: Vec<(anyhow::Error, Exit)> = vec![
            (anyhow::Error::new(config).context("starting"), Exit::Usage),
            (
                anyhow::Error::new(proxy::UnknownVersion::Missing(7)),
                Exit::Usage,
            ),
            (health::UnknownIncident(3).into(), Exit::Usage),
            (
                crate::docker::client::ClientError::UnsupportedHost {
                    host: "ssh://x".into(),
                }
                .into(),
                Exit::Usage,
            ),
            (
                Err::<(), _>(std::io::Error::other("disk full"))
                    .context("cannot write")
                    .unwrap_err(),
                Exit::Failed,
            ),
            (
                anyhow::anyhow!("systemd did not finish the job"),
                Exit::Failed,
            ),
        ];
        for (error, exit) in cases {
            assert_eq!(Exit::of(&error), exit, "{error:#}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rollback_takes_an_optional_version() {
        for (argv, expected) in [
            (&["butler", "proxy", "rollback", "7"][..], Some(7)),
            (&["butler", "proxy", "rollback"][..], None),
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert!(
                matches!(
                    cli.command,
                    Command::Proxy { command: ProxyCommand::Rollback { version } } if version == expected
                ),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let before =
            Cli::try_parse_from(["butler", "--output", "json", "services", "list"]).unwrap();
        let after = Cli::try_parse_from([
            "butler", "services", "list", "--config", "/x.toml", "--output", "json", "--user",
        ])
        .unwrap();
        assert_eq!(before.output, OutputFormat::Json);
        assert_eq!(after.output, OutputFormat::Json);
        assert_eq!(after.config, Some(PathBuf::from("/x.toml")));
        assert!(matches!(
            after.command,
            Command::Services { user: true, .. }
        ));
    }

    #[test]
    fn bad_names_are_usage_errors_that_list_valid_names() {
        let error = Cli::try_parse_from(["butler", "services", "start", "nginx"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(
            text.contains("unknown service 'nginx'") && text.contains("health-monitor"),
            "{text}"
        );
        let error = Cli::try_parse_from(["butler", "worker", "proxy"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn usage_mistakes_are_one_line_that_names_the_help_to_read() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["butler", "incidents", "--state", "urgent"],
                &[
                    "invalid value 'urgent' for '--state <STATE>'",
                    "unknown incident state \"urgent\"",
                    "open, recovering, resolved, escalated",
                    "see `butler incidents --help`",
                ],
            ),
            (
                &["butler", "--output", "yaml", "health"],
                &[
                    "'yaml'",
                    "[possible values: text, json]",
                    "see `butler health --help`",
                ],
            ),
            (
                &["butler", "fix-502", "--dry"],
                &[
                    "unexpected argument '--dry'",
                    "tip: a similar argument exists: '--dry-run'",
                    "see `butler fix-502 --help`",
                ],
            ),
            (
                &["butler", "proxy", "history", "-n", "x"],
                &["'x'", "see `butler proxy history --help`"],
            ),
        ];
        for (argv, wanted) in cases {
            let error = Cli::try_parse_from(*argv).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{argv:?}");
            let args: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
            let line = usage_line(&error, &args);
            assert!(!line.contains('\n') && !line.starts_with("error"), "{line}");
            for want in *wanted {
                assert!(line.contains(want), "{argv:?}: {line:?} lacks {want:?}");
            }
        }
    }
}
