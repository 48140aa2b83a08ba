//! Secret options that need not appear on the command line, where `ps` shows them to every user
//! of the machine. Each secret has three sources, and exactly one of them must be given:
//! `--NAME VALUE`, `--NAME-file PATH` (one trailing newline dropped) or an environment variable.
//!
//! A new secret is one line in `secrets!` and a `#[command(flatten)] field: SecretArg<Name>` in
//! its command; [`SecretArg::resolve`] then gives its value.

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
        pub fn missing_by_flag(flag: &str) -> Option<String> {
            match flag.strip_prefix("--")? {
                $($flag => Some(missing::<$name>()),)*
                _ => None,
            }
        }
    };
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

fn missing<N: SecretName>() -> String {
    format!(
        "--{} is required (or --{} PATH, or {} in the environment)",
        N::FLAG,
        N::FILE_FLAG,
        N::ENV
    )
}

/// The secret's sources as parsed; the environment is read by [`SecretArg::resolve`].
pub struct SecretArg<N> {
    value: Option<String>,
    file: Option<PathBuf>,
    name: PhantomData<N>,
}

impl<N: SecretName> SecretArg<N> {
    /// The value from the one source given. Two sources are refused rather than ranked: a
    /// forgotten export must not silently win over, or lose to, what the operator typed.
    pub fn resolve(&self) -> Result<Secret, String> {
        let env = std::env::var_os(N::ENV);
        let given: Vec<String> = [
            self.value.as_ref().map(|_| format!("--{}", N::FLAG)),
            self.file.as_ref().map(|_| format!("--{}", N::FILE_FLAG)),
            env.as_ref().map(|_| N::ENV.to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(format!(
                "{} is given more than once ({}): give exactly one",
                N::WHAT,
                given.join(", ")
            ));
        }
        let (value, source) = match (&self.value, &self.file, env) {
            (Some(value), _, _) => (value.clone(), format!("--{}", N::FLAG)),
            (_, Some(path), _) => (read_secret_file(path)?, path.display().to_string()),
            (_, _, Some(value)) => (from_env::<N>(value)?, N::ENV.to_owned()),
            (None, None, None) => return Err(missing::<N>()),
        };
        if value.is_empty() {
            return Err(format!("{} from {source} is empty", N::WHAT));
        }
        Ok(Secret::new(value))
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

fn from_env<N: SecretName>(value: OsString) -> Result<String, String> {
    value.into_string().map_err(|_| format!("{} is not UTF-8", N::ENV))
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
