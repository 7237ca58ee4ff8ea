use std::process::ExitCode;

use clap::Parser as _;
use devops_butler::cli::{self, Cli};

fn main() -> ExitCode {
    devops_butler::memory::tune_allocator();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // --help, --version, and a bare `butler proxy`, which is best answered with the help.
        Err(error)
            if !error.use_stderr()
                || error.kind()
                    == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            error.exit()
        }
        Err(error) => {
            let words: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            eprintln!("butler: {}", cli::usage_line(&error, &words));
            return ExitCode::from(2);
        }
    };
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("butler: {error:#}");
            cli::exit_code(&error)
        }
    }
}
