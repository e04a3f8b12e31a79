//! The optional configuration file. A setting comes from the command line, else from its
//! `HERD_…` environment variable, else from this TOML file, else from its default (DESIGN §3).
//!
//! The file is `--config PATH` (or `HERD_CONFIG_FILE`), else `config.toml` in the config
//! directory when it exists. Tables are named after commands and keys after their long flags:
//!
//! ```toml
//! [global]                     # options every command takes
//! coordinator = "https://herd.example.org"
//!
//! [coordinator]                # herd coordinator
//! db = "sqlite:///var/lib/herd/herd.db"
//! listen = "0.0.0.0:7700"
//! auth-rate-limit = 60
//!
//! [worker.start]               # herd worker start
//! country = "DE"
//! floor-price = "1.80"
//! ```
//!
//! Settings from the file become flags only where the command line and the environment gave
//! none, so clap checks them exactly as it checks typed flags. An unknown key is an error that
//! lists the allowed ones (a typo must not be silently ignored).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::commands::Cli;

pub const FILE_NAME: &str = "config.toml";
/// Where options every command takes are set.
const GLOBAL_TABLE: &str = "global";

/// The command line with the file's settings added where nothing else set them.
pub fn with_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // A command line clap rejects (or --help) is left for the real parse to report.
    let Ok(matches) = Cli::command().try_get_matches_from(&args) else { return Ok(args) };
    let path = match matches.get_one::<PathBuf>("config") {
        Some(path) => path.clone(),
        None => {
            let default = crate::credentials::config_dir().join(FILE_NAME);
            if !default.exists() {
                return Ok(args);
            }
            default
        }
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    merge_text(args, &matches, &text, &path)
}

fn merge_text(args: Vec<OsString>, matches: &ArgMatches, text: &str, path: &Path) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
    merge(args, matches, &table, path)
}

/// For fuzzers: `text` as the settings file of `herd worker start` (any bytes; an error,
/// never a panic).
pub fn fuzz_settings(text: &str) -> Result<Vec<OsString>, String> {
    let args: Vec<OsString> = ["herd", "worker", "start"].into_iter().map(OsString::from).collect();
    let matches = Cli::command().try_get_matches_from(&args).map_err(|e| e.to_string())?;
    merge_text(args, &matches, text, Path::new("fuzz.toml"))
}

fn merge(args: Vec<OsString>, matches: &ArgMatches, table: &toml::Table, path: &Path) -> Result<Vec<OsString>, String> {
    let command = Cli::command();
    let mut added: Vec<OsString> = Vec::new();
    // The global table, checked against the top-level command's options.
    if let Some(global) = table.get(GLOBAL_TABLE) {
        let global =
            global.as_table().ok_or_else(|| format!("[{GLOBAL_TABLE}] in {} must be a table", path.display()))?;
        added.extend(flags(GLOBAL_TABLE, global, &command, matches, path)?);
    }
    // The table of the command being run: `[worker.start]` for `herd worker start`.
    let mut command_now = &command;
    let mut matches_now = matches;
    let mut table_now = Some(table);
    let mut name = String::new();
    while let Some((sub, sub_matches)) = matches_now.subcommand() {
        command_now = command_now.find_subcommand(sub).expect("clap matched it");
        matches_now = sub_matches;
        name = if name.is_empty() { sub.to_owned() } else { format!("{name}.{sub}") };
        table_now = match table_now.and_then(|t| t.get(sub)) {
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => return Err(format!("[{name}] in {} must be a table", path.display())),
            None => None,
        };
    }
    if let Some(settings) = table_now.filter(|_| !name.is_empty()) {
        // Only plain values: nested tables are other (sub)commands' settings.
        let own: toml::Table =
            settings.iter().filter(|(_, v)| !v.is_table()).map(|(k, v)| (k.clone(), v.clone())).collect();
        added.extend(flags(&name, &own, command_now, matches_now, path)?);
    }
    if added.is_empty() {
        return Ok(args);
    }
    // Before a `--`: what follows it is the user's command, not ours.
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let mut merged = args;
    merged.splice(at..at, added);
    Ok(merged)
}

/// `--key=value` flags for the table's settings that neither the command line nor the
/// environment set.
fn flags(
    table_name: &str,
    settings: &toml::Table,
    command: &clap::Command,
    matches: &ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, String> {
    let mut flags = Vec::new();
    for (key, value) in settings {
        let long = key.replace('_', "-");
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            let allowed: Vec<&str> = command
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "help" | "version" | "config"))
                .collect();
            return Err(format!(
                "unknown setting `{key}` in [{table_name}] of {}; allowed: {}",
                path.display(),
                allowed.join(", ")
            ));
        };
        let id = arg.get_id().as_str();
        if matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::Boolean(true) => {
                    flags.push(OsString::from(format!("--{long}")));
                    continue;
                }
                toml::Value::Boolean(false) => continue,
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err(format!("`{key}` in [{table_name}] of {}: expected a value or a list", path.display()))
                }
            };
            flags.push(OsString::from(format!("--{long}={text}")));
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(args: &[&str], toml: &str) -> Result<Vec<String>, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let matches = Cli::command().try_get_matches_from(&args).unwrap();
        let table: toml::Table = toml.parse().unwrap();
        let merged = merge(args, &matches, &table, Path::new("herd.toml"))?;
        Ok(merged.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn the_command_s_table_fills_what_the_command_line_left_unset() {
        let file = r#"
            [global]
            coordinator = "https://herd.example.org"
            [coordinator]
            listen = "0.0.0.0:7700"
            faucet = true
            allow_simulated = false
            genesis = ["treasury=250000000", "treasury=250000000"]
            [worker.start]
            country = "DE"
        "#;
        let args = merged(&["herd", "coordinator", "--listen", "127.0.0.1:1"], file).unwrap();
        assert_eq!(
            args,
            [
                "herd",
                "coordinator",
                "--listen",
                "127.0.0.1:1",
                "--coordinator=https://herd.example.org",
                "--faucet",
                "--genesis=treasury=250000000",
                "--genesis=treasury=250000000",
            ],
            "the typed --listen wins; false flags add nothing; lists repeat"
        );
        let worker = merged(&["herd", "worker", "start"], file).unwrap();
        assert_eq!(worker[3..], ["--coordinator=https://herd.example.org", "--country=DE"]);
    }

    #[test]
    fn settings_go_before_the_user_s_command() {
        let file = "[global]\ncoordinator = \"http://c:1\"";
        let args = merged(&["herd", "job", "run", "--cluster", "cl-x", "--", "echo", "hi"], file).unwrap();
        assert_eq!(args[5..], ["--coordinator=http://c:1", "--", "echo", "hi"]);
    }

    #[test]
    fn an_unknown_setting_is_an_error_that_lists_the_allowed_ones() {
        let error = merged(&["herd", "coordinator"], "[coordinator]\nlisen = \"0.0.0.0:1\"").unwrap_err();
        assert!(error.starts_with("unknown setting `lisen` in [coordinator] of herd.toml; allowed: "), "{error}");
        assert!(error.contains("listen") && error.contains("auth-rate-limit"), "{error}");
        let error = merged(&["herd", "coordinator"], "[global]\nvolume = 11").unwrap_err();
        assert!(error.contains("unknown setting `volume` in [global]"), "{error}");
    }
}
