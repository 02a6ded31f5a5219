//! `coinpilot config check`: validate the configuration and print the effective values
//! (defaults, file and environment merged) with every secret masked.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::Serialize;

use super::CliError;
use crate::config::{Config, Loaded};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate and print the effective configuration (exit 2 when invalid).
    Check,
}

/// What `config check --json` prints.
#[derive(Serialize)]
struct Effective<'a> {
    file: Option<String>,
    config: &'a Config,
    secrets: BTreeMap<&'static str, String>,
}

pub fn run(cmd: ConfigCommand, loaded: Loaded, json: bool) -> Result<(), CliError> {
    match cmd {
        ConfigCommand::Check => check(&loaded, json),
    }
}

fn check(loaded: &Loaded, json: bool) -> Result<(), CliError> {
    let effective = Effective {
        file: loaded.file.as_ref().map(|p| p.display().to_string()),
        config: &loaded.config,
        secrets: loaded.secrets.masked(),
    };
    if json {
        return super::print_json(&effective);
    }
    let body = toml::to_string(&loaded.config)
        .map_err(|e| CliError::Other(format!("cannot print the configuration: {e}")))?;
    let secrets = toml::to_string(&BTreeMap::from([("secrets", &effective.secrets)]))
        .map_err(|e| CliError::Other(format!("cannot print the secrets: {e}")))?;
    println!(
        "# configuration is valid (file: {})\n# precedence: flags > COINPILOT_* environment > file > defaults\n\n{body}\n# from the environment only, masked\n{secrets}",
        effective.file.as_deref().unwrap_or("none, defaults")
    );
    Ok(())
}
