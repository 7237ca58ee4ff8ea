//! `butler generate man|completions`: the man pages and shell completions the packages ship, made
//! from the clap definition in `cli/mod.rs` so that they cannot drift from the real CLI. Hidden from
//! help: it is a build step of `packaging/build.sh`, not something an operator runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::{Cli, GenerateCommand};

pub fn dispatch(command: GenerateCommand) -> anyhow::Result<ExitCode> {
    match command {
        GenerateCommand::Man { dir } => {
            create_dir(&dir)?;
            // butler.1 plus one page per visible subcommand (butler-services-start.1, ...).
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
        GenerateCommand::Completions { shell, dir } => {
            create_dir(&dir)?;
            let path = completions(shell, &dir)?;
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the completion script for `shell` into `dir` under the name that shell looks for
/// (`butler.bash`, `_butler`, `butler.fish`); returns its path.
fn completions(shell: Shell, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut command = visible_command();
    let name = command.get_name().to_owned();
    clap_complete::generate_to(shell, &mut command, name, dir).with_context(|| {
        format!(
            "cannot write the {shell} completions into {}",
            dir.display()
        )
    })
}

/// The CLI without its hidden subcommands: clap_complete offers hidden ones too (clap_mangen skips
/// them), and clap cannot remove a subcommand, so the top level is rebuilt around the visible ones.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut command = clap::Command::new(full.get_name().to_owned())
        .propagate_version(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(version) = full.get_version() {
        command = command.version(version.to_owned());
    }
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    command
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {} (choose a directory you can write to)",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_command_and_not_the_hidden_one() {
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("man");
        dispatch(GenerateCommand::Man { dir: man.clone() }).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(&man)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pages.sort();
        for page in [
            "butler.1",
            "butler-services-start.1",
            "butler-config-check.1",
        ] {
            assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
        }
        assert!(
            !pages.iter().any(|p| p.contains("generate")),
            "the hidden generate command got a page: {pages:?}"
        );
        let main = std::fs::read_to_string(man.join("butler.1")).unwrap();
        assert!(main.contains(".TH butler 1"), "roff: {main:.200}");
        assert!(main.contains("services"), "{main}");
    }

    #[test]
    fn completions_name_the_subcommands_in_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        for (shell, file) in [
            (Shell::Bash, "butler.bash"),
            (Shell::Zsh, "_butler"),
            (Shell::Fish, "butler.fish"),
        ] {
            let path = completions(shell, dir.path()).unwrap();
            assert_eq!(path, dir.path().join(file));
            let script = std::fs::read_to_string(&path).unwrap();
            assert!(
                script.contains("proxy-update") && !script.contains("generate"),
                "{shell}: {script:.200}"
            );
        }
    }
}
