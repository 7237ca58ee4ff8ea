use std::process::ExitCode;

use clap::Parser as _;
use devops_butler::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    devops_butler::memory::tune_allocator();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // --help and --version (exit 0), and a bare `butler proxy`, which is best answered with
        // the help but is still a usage mistake (exit 2). Printed by clap, coded by `Exit`.
        Err(error)
            if !error.use_stderr()
                || error.kind()
                    == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // A closed stdout (`butler --help | head -0`) is not worth a second error.
            let _ = error.print();
            let exit = if error.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            return exit.into();
        }
        Err(error) => {
            let words: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            eprintln!("butler: {}", cli::usage_line(&error, &words));
            return Exit::Usage.into();
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
