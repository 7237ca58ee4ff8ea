//! `butler config check|show`.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::{ConfigCommand, OutputFormat, load_config, output};

pub fn dispatch(
    command: ConfigCommand,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { path } => {
            let path = path.or(config_path);
            let shown = path
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_PATH.into());
            let config = load_config(path)?;
            match format {
                OutputFormat::Json => {
                    output::print_json(&json!({"path": shown, "valid": true, "config": config}))?
                }
                OutputFormat::Text => println!("{}: valid", shown.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Show => {
            let config = load_config(config_path)?;
            match format {
                OutputFormat::Json => output::print_json(&config)?,
                OutputFormat::Text => print!("{}", toml::to_string_pretty(&config)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
