//! Secret options that need not appear on the command line, where `ps` shows them to every user
//! of the machine. Each secret has three sources, and exactly one of them must be given:
//! `--NAME VALUE`, `--NAME-file PATH` (one trailing newline dropped) or an environment variable.
//!
//! A new secret is one line in `secrets!` and a `#[command(flatten)] field: SecretArg<Name>` in
//! its command; [`SecretArg::resolve`] then gives its value.
//!
//! A secret that is stored rather than used (`wxa secrets init`) is never taken from the command
//! line at all: a line in `file_secrets!` and a [`SecretFile<Name>`] field, with two sources,
//! `--NAME-file PATH` or the environment variable; [`SecretFile::value`] gives its value.

use std::ffi::OsString;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgGroup, ArgMatches, Args, Command, FromArgMatches};
use wxa_shared::redacted::Secret;

/// One secret's names; its file flag is always `--FLAG-file`.
pub trait SecretName {
    const FLAG: &'static str;
    const FILE_FLAG: &'static str;
    const ENV: &'static str;
    const VALUE_NAME: &'static str;
    /// What it is, in messages.
    const WHAT: &'static str;
}

/// Declares each secret, and the lookup by flag that parse errors use to name all its sources.
macro_rules! secrets {
    ($($(#[$doc:meta])* $name:ident: $flag:literal, $env:literal, $value_name:literal, $what:literal;)*) => {
        $(
            $(#[$doc])*
            pub enum $name {}

            impl SecretName for $name {
                const FLAG: &'static str = $flag;
                const FILE_FLAG: &'static str = concat!($flag, "-file");
                const ENV: &'static str = $env;
                const VALUE_NAME: &'static str = $value_name;
                const WHAT: &'static str = $what;
            }
        )*

        /// The message for a missing secret, given its flag (`--session-key`); `None` for any other flag.
        fn missing_on_argv(flag: &str) -> Option<String> {
            match flag.strip_prefix("--")? {
                $($flag => Some(missing::<$name>()),)*
                _ => None,
            }
        }
    };
}

/// One secret that never comes from the command line: its file flag (`--FLAG-file`) and variable.
pub trait FileSecretName {
    /// The flag a value is refused on, with a pointer to the two sources.
    const FLAG: &'static str;
    const FILE_FLAG: &'static str;
    const ENV: &'static str;
    /// What it is, in messages.
    const WHAT: &'static str;
    /// Whether the command needs it.
    const REQUIRED: bool;
}

/// Declares each secret that is only read from a file or the environment.
macro_rules! file_secrets {
    ($($(#[$doc:meta])* $name:ident: $flag:literal, $env:literal, $what:literal, $required:literal;)*) => {
        $(
            $(#[$doc])*
            pub enum $name {}

            impl FileSecretName for $name {
                const FLAG: &'static str = $flag;
                const FILE_FLAG: &'static str = concat!($flag, "-file");
                const ENV: &'static str = $env;
                const WHAT: &'static str = $what;
                const REQUIRED: bool = $required;
            }
        )*

        /// The message for a missing secret, given its file flag (`--app-secret-file`).
        fn missing_from_file(flag: &str) -> Option<String> {
            let flag = flag.strip_prefix("--")?;
            $(
                if flag == <$name as FileSecretName>::FILE_FLAG {
                    return Some(missing_file::<$name>());
                }
            )*
            None
        }
    };
}

/// The message for a missing secret, given its flag as clap's usage names it (`--session-key`,
/// `--app-secret-file`); `None` for any other flag.
pub fn missing_by_flag(flag: &str) -> Option<String> {
    missing_on_argv(flag).or_else(|| missing_from_file(flag))
}

secrets! {
    /// A user's session_key (decrypt, verify-signature).
    SessionKey: "session-key", "WXA_SESSION_KEY", "K", "the session_key";
    /// The merchant's APIv2 key (pay-sign v2).
    Apiv2Key: "key", "WXA_APIV2_KEY", "K", "the APIv2 key";
    /// The merchant's APIv3 key (verify-notify).
    Apiv3Key: "apiv3-key", "WXA_APIV3_KEY", "K", "the APIv3 key";
    /// The message-push Token (push-decrypt).
    PushToken: "token", "WXA_PUSH_TOKEN", "T", "the push Token";
    /// The message-push EncodingAESKey (push-decrypt).
    PushAesKey: "aes-key", "WXA_PUSH_AES_KEY", "K", "the EncodingAESKey";
}

file_secrets! {
    /// The mini-program's AppSecret (secrets init app).
    AppSecret: "app-secret", "WXA_APP_SECRET", "the app secret", true;
    /// The API security mode's symmetric key (secrets init app).
    ApiAesKey: "api-aes-key", "WXA_API_AES_KEY", "the API security symmetric key", false;
    /// The message-push Token (secrets init push).
    AppPushToken: "push-token", "WXA_PUSH_TOKEN", "the push Token", true;
    /// The message-push EncodingAESKey (secrets init push).
    AppPushAesKey: "push-aes-key", "WXA_PUSH_AES_KEY", "the EncodingAESKey", false;
    /// The merchant's APIv3 key (secrets init pay).
    PayApiv3Key: "apiv3-key", "WXA_APIV3_KEY", "the APIv3 key", false;
    /// The merchant's APIv2 key (secrets init pay).
    PayApiv2Key: "apiv2-key", "WXA_APIV2_KEY", "the APIv2 key", false;
}

fn missing<N: SecretName>() -> String {
    format!(
        "--{} is required (or --{} PATH, or {} in the environment)",
        N::FLAG,
        N::FILE_FLAG,
        N::ENV
    )
}

fn missing_file<N: FileSecretName>() -> String {
    format!("--{} PATH is required (or {} in the environment)", N::FILE_FLAG, N::ENV)
}

/// Where a secret's value was given.
enum Source<'a> {
    Argv(&'a str),
    File(&'a Path),
    Env(OsString),
}

/// The value from the one source given, `None` when none is. Two sources are refused rather than
/// ranked: a forgotten export must not silently win over, or lose to, what the operator typed.
fn one_source(what: &str, given: Vec<(String, Source<'_>)>) -> Result<Option<Secret>, String> {
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(name, _)| name.as_str()).collect();
        return Err(format!(
            "{what} is given more than once ({}): give exactly one",
            names.join(", ")
        ));
    }
    let Some((name, source)) = given.into_iter().next() else {
        return Ok(None);
    };
    let (value, source) = match source {
        Source::Argv(value) => (value.to_owned(), name),
        Source::File(path) => (read_secret_file(path)?, path.display().to_string()),
        Source::Env(value) => (value.into_string().map_err(|_| format!("{name} is not UTF-8"))?, name),
    };
    if value.is_empty() {
        return Err(format!("{what} from {source} is empty"));
    }
    Ok(Some(Secret::new(value)))
}

/// The secret's sources as parsed; the environment is read by [`SecretArg::resolve`].
pub struct SecretArg<N> {
    value: Option<String>,
    file: Option<PathBuf>,
    name: PhantomData<N>,
}

impl<N: SecretName> SecretArg<N> {
    /// The value from the one source given (see [`one_source`]).
    pub fn resolve(&self) -> Result<Secret, String> {
        let given = [
            self.value
                .as_deref()
                .map(|value| (format!("--{}", N::FLAG), Source::Argv(value))),
            self.file
                .as_deref()
                .map(|path| (format!("--{}", N::FILE_FLAG), Source::File(path))),
            std::env::var_os(N::ENV).map(|value| (N::ENV.to_owned(), Source::Env(value))),
        ];
        one_source(N::WHAT, given.into_iter().flatten().collect())?.ok_or_else(missing::<N>)
    }
}

/// The file's text less one trailing newline, which `echo` and editors add.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let line = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok(line.to_owned())
}

impl<N: SecretName> FromArgMatches for SecretArg<N> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            value: matches.get_one::<String>(N::FLAG).cloned(),
            file: matches.get_one::<PathBuf>(N::FILE_FLAG).cloned(),
            name: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<N: SecretName> Args for SecretArg<N> {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(Arg::new(N::FLAG).long(N::FLAG).value_name(N::VALUE_NAME).help(format!(
            "{} (visible in ps: prefer --{} PATH or the environment variable {})",
            N::WHAT,
            N::FILE_FLAG,
            N::ENV
        )))
        .arg(
            Arg::new(N::FILE_FLAG)
                .long(N::FILE_FLAG)
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help(format!("read {} from PATH (one trailing newline dropped)", N::WHAT)),
        )
        // Named after the variable, which no argument id can be. Required on the command line
        // only when the variable is unset; more than one source is refused by `resolve`.
        .group(
            ArgGroup::new(N::ENV)
                .args([N::FLAG, N::FILE_FLAG])
                .multiple(true)
                .required(std::env::var_os(N::ENV).is_none()),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// A secret read from `--NAME-file PATH` or its environment variable, never from the command line.
pub struct SecretFile<N> {
    file: Option<PathBuf>,
    name: PhantomData<N>,
}

impl<N: FileSecretName> SecretFile<N> {
    /// The value from the one source given, `None` when neither is (see [`one_source`]).
    pub fn value(&self) -> Result<Option<Secret>, String> {
        let given = [
            self.file
                .as_deref()
                .map(|path| (format!("--{}", N::FILE_FLAG), Source::File(path))),
            std::env::var_os(N::ENV).map(|value| (N::ENV.to_owned(), Source::Env(value))),
        ];
        one_source(N::WHAT, given.into_iter().flatten().collect())
    }

    /// The value, which must be given.
    pub fn required(&self) -> Result<Secret, String> {
        self.value()?.ok_or_else(missing_file::<N>)
    }
}

impl<N: FileSecretName> FromArgMatches for SecretFile<N> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            file: matches.get_one::<PathBuf>(N::FILE_FLAG).cloned(),
            name: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<N: FileSecretName> Args for SecretFile<N> {
    fn augment_args(cmd: Command) -> Command {
        let optional = if N::REQUIRED { "" } else { " (optional)" };
        cmd.arg(
            Arg::new(N::FILE_FLAG)
                .long(N::FILE_FLAG)
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                // Required on the command line only when the variable is unset; both are
                // refused by `value`.
                .required(N::REQUIRED && std::env::var_os(N::ENV).is_none())
                .help(format!(
                    "{}{optional}: read from PATH (one trailing newline dropped) or from ${}; never \
                     taken on the command line",
                    N::WHAT,
                    N::ENV
                )),
        )
        // `--app-secret VALUE` is refused with the way to give it instead, not as an unknown option.
        .arg(
            Arg::new(N::FLAG)
                .long(N::FLAG)
                .hide(true)
                .value_parser(|_: &str| -> Result<String, String> {
                    Err(format!(
                        "is not taken on the command line, where ps shows it: use --{} PATH or {}",
                        N::FILE_FLAG,
                        N::ENV
                    ))
                }),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
