//! `.keel/db.env` for a `keel` run from the checkout.
//!
//! `make up` (scripts/postgres.sh) writes the database URLs to `$KEEL_STATE_DIR/db.env`
//! (`.keel/db.env` by default) as `NAME=value` lines. When the environment names no
//! database, `keel` reads that file — `$KEEL_STATE_DIR/db.env` if `KEEL_STATE_DIR` is
//! set, else the nearest `.keel/db.env` in the current directory or its ancestors — and
//! uses its `KEEL_*` values as if they were in the environment. A flag or a variable of
//! the environment always wins; nothing is evaluated as shell.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The variables that name a database: when any is set, `db.env` is not read.
pub const DATABASE_URL_VARS: &[&str] = &["KEEL_DATABASE_URL", "KEEL_MIGRATION_DATABASE_URL"];

/// The values `db.env` adds: its `KEEL_*` variables that `env` lacks, or none when `env`
/// names a database or there is no readable `db.env` (`cwd` is where the search starts).
pub fn defaults(env: impl Fn(&str) -> Option<OsString>, cwd: &Path) -> BTreeMap<String, String> {
    if DATABASE_URL_VARS.iter().any(|name| env(name).is_some()) {
        return BTreeMap::new();
    }
    let state_dir = env("KEEL_STATE_DIR").map(|dir| cwd.join(dir));
    let Some(text) = locate(state_dir.as_deref(), cwd).and_then(|path| std::fs::read_to_string(path).ok()) else {
        return BTreeMap::new();
    };
    parse(&text).into_iter().filter(|(name, _)| env(name).is_none()).collect()
}

/// Where `db.env` is: in `state_dir` when given, else the nearest `.keel/db.env` from
/// `start` upward; `None` if there is no such file.
pub fn locate(state_dir: Option<&Path>, start: &Path) -> Option<PathBuf> {
    match state_dir {
        Some(dir) => Some(dir.join("db.env")).filter(|path| path.is_file()),
        None => start.ancestors().map(|dir| dir.join(".keel").join("db.env")).find(|path| path.is_file()),
    }
}

/// The `KEEL_*` assignments of a `db.env` text: `NAME=value` lines (a value may be
/// wrapped in one pair of quotes); blank lines, comments and other lines are skipped.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter(|(name, _)| {
            name.starts_with("KEEL_") && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(name, value)| (name.to_string(), unquote(value.trim()).to_string()))
        .collect()
}

/// `value` without one pair of surrounding single or double quotes.
fn unquote(value: &str) -> &str {
    ['"', '\'']
        .iter()
        .find_map(|quote| value.strip_prefix(*quote).and_then(|rest| rest.strip_suffix(*quote)))
        .unwrap_or(value)
}

/// `command` whose arguments (in every subcommand) read from an environment variable in
/// `values` default to its value there. The default stays out of `--help` (it is secret).
pub fn apply(command: clap::Command, values: &BTreeMap<String, String>) -> clap::Command {
    if values.is_empty() {
        return command;
    }
    command
        .mut_args(|arg| match arg.get_env().and_then(|name| name.to_str()).and_then(|name| values.get(name)) {
            Some(value) => arg.default_value(value.clone()).hide_default_value(true).required(false),
            None => arg,
        })
        .mut_subcommands(|sub| apply(sub, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("keel-db-env-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }

        fn write_db_env(&self, dir: &str, text: &str) -> PathBuf {
            let dir = self.0.join(dir);
            std::fs::create_dir_all(&dir).expect("dir");
            std::fs::write(dir.join("db.env"), text).expect("write db.env");
            dir.join("db.env")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const DB_ENV: &str = "# Written by scripts/postgres.sh. Secret: never commit or share.\n\
        KEEL_DATABASE_URL=postgres://keel_app:a1@127.0.0.1:5432/keel\n\
        KEEL_MIGRATION_DATABASE_URL=postgres://keel_owner:b2@127.0.0.1:5432/keel\n";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: BTreeMap<String, OsString> = pairs.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        move |name| pairs.get(name).cloned()
    }

    #[test]
    fn parse_keeps_keel_assignments_and_skips_the_rest() {
        let text = "# comment\n\n  KEEL_A=one=two  \nPATH=/bin\nkeel_b=x\nKEEL_C=\"quoted\"\nKEEL_D='single'\nnot an assignment\nKEEL_E=$(rm -rf /)\n";
        let parsed = parse(text);
        let expected: BTreeMap<String, String> =
            [("KEEL_A", "one=two"), ("KEEL_C", "quoted"), ("KEEL_D", "single"), ("KEEL_E", "$(rm -rf /)")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn the_nearest_keel_db_env_upward_is_found() {
        let tmp = TempDir::new();
        let file = tmp.write_db_env(".keel", DB_ENV);
        let deep = tmp.0.join("a/b");
        std::fs::create_dir_all(&deep).expect("dir");
        assert_eq!(locate(None, &deep), Some(file.clone()));
        assert_eq!(locate(None, &tmp.0), Some(file));
        let nearer = tmp.write_db_env("a/.keel", DB_ENV);
        assert_eq!(locate(None, &deep), Some(nearer));
    }

    #[test]
    fn the_state_dir_is_the_only_place_looked_at_when_set() {
        let tmp = TempDir::new();
        tmp.write_db_env(".keel", DB_ENV);
        let state = tmp.write_db_env("state", DB_ENV);
        assert_eq!(locate(Some(&tmp.0.join("state")), &tmp.0), Some(state));
        assert_eq!(locate(Some(&tmp.0.join("elsewhere")), &tmp.0), None);
    }

    #[test]
    fn defaults_fill_what_the_environment_lacks_only_when_it_names_no_database() {
        let tmp = TempDir::new();
        tmp.write_db_env(".keel", DB_ENV);
        let all = defaults(env_of(&[]), &tmp.0);
        assert_eq!(all.len(), 2);
        assert_eq!(all["KEEL_MIGRATION_DATABASE_URL"], "postgres://keel_owner:b2@127.0.0.1:5432/keel");
        // A database named in the environment: db.env is not read at all.
        assert!(defaults(env_of(&[("KEEL_DATABASE_URL", "postgres://elsewhere")]), &tmp.0).is_empty());
        assert!(defaults(env_of(&[("KEEL_MIGRATION_DATABASE_URL", "postgres://elsewhere")]), &tmp.0).is_empty());
        // KEEL_STATE_DIR (relative to the current directory) points at the file.
        tmp.write_db_env("state", "KEEL_DATABASE_URL=postgres://state\n");
        let from_state = defaults(env_of(&[("KEEL_STATE_DIR", "state")]), &tmp.0);
        assert_eq!(from_state.get("KEEL_DATABASE_URL").map(String::as_str), Some("postgres://state"));
        assert!(defaults(env_of(&[("KEEL_STATE_DIR", "missing")]), &tmp.0).is_empty());
        // No file: nothing.
        let empty = TempDir::new();
        assert!(defaults(env_of(&[("KEEL_STATE_DIR", ".")]), &empty.0).is_empty());
    }

    #[test]
    fn applied_values_act_as_the_environment_and_flags_still_win() {
        let command = || {
            clap::Command::new("t").subcommand(
                clap::Command::new("sub")
                    .arg(clap::Arg::new("url").long("url").env("KEEL_CLI_DB_ENV_TEST_URL").required(true))
                    .arg(clap::Arg::new("other").long("other").env("KEEL_CLI_DB_ENV_TEST_OTHER")),
            )
        };
        let values: BTreeMap<String, String> =
            [("KEEL_CLI_DB_ENV_TEST_URL".to_string(), "postgres://from-file".to_string())].into();
        let url = |args: &[&str]| {
            let matches = apply(command(), &values).try_get_matches_from(args).expect("parses");
            let (_, sub) = matches.subcommand().expect("subcommand");
            (sub.get_one::<String>("url").cloned(), sub.get_one::<String>("other").cloned())
        };
        assert_eq!(url(&["t", "sub"]), (Some("postgres://from-file".into()), None));
        assert_eq!(url(&["t", "sub", "--url", "postgres://flag"]), (Some("postgres://flag".into()), None));
        assert!(command().try_get_matches_from(["t", "sub"]).is_err(), "without db.env the flag is required");
        let help = apply(command(), &values).find_subcommand_mut("sub").expect("sub").render_long_help().to_string();
        assert!(!help.contains("from-file"), "the value stays out of --help: {help}");
    }
}
