use std::process::ExitCode;

use clap::Parser as _;
use devops_butler::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("butler: {error:#}");
            cli::exit_code(&error)
        }
    }
}
