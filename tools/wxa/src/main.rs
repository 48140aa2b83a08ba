//! `wxa`: debug a live mini-program backend from a terminal, and drive its merchant function.
//! JSON on stdout; on failure the exact reason on stderr and a non-zero exit (2 for a usage
//! error). Every subcommand takes `--help`.

mod merchant;
mod push;
mod secret_arg;
mod secrets;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{Value, json};
use wxa_shared::clock::now_unix;
use wxa_shared::opendata;
use wxa_shared::pay::keys::{SigningKey, VerifyingKey, pem_to_der, serial_of_certificate};
use wxa_shared::pay::v2::{self, SignType};
use wxa_shared::pay::v3::{self, SignedHeaders};
use wxa_shared::random::nonce;
use wxa_shared::wechat::WechatClient;

use secret_arg::{Apiv2Key, Apiv3Key, SecretArg, SessionKey};

/// wxa: debug a live WeChat mini-program backend.
///
/// JSON on stdout; on failure the reason on stderr and a non-zero exit (2 for a usage error). A
/// secret comes from its flag, from a file (--NAME-file PATH) or from its environment variable:
/// exactly one of them.
#[derive(Parser)]
#[command(name = "wxa")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Decrypt(Decrypt),
    VerifySignature(VerifySignature),
    #[command(subcommand)]
    PaySign(PaySign),
    VerifyNotify(VerifyNotify),
    #[command(name = "jscode2session")]
    Jscode2session(Jscode2session),
    PushDecrypt(push::PushDecrypt),
    Merchant(merchant::Merchant),
    #[command(subcommand)]
    Secrets(secrets::Secrets),
}

/// Decrypt open data (encryptedData + iv) with a session_key and check its watermark.
///
/// The watermark's appid must be --appid, and the data at most --max-age-secs seconds old.
#[derive(Args)]
struct Decrypt {
    /// the appid the watermark must name
    #[arg(long, value_name = "A")]
    appid: String,
    #[command(flatten)]
    session_key: SecretArg<SessionKey>,
    /// the iv, base64
    #[arg(long, value_name = "IV")]
    iv: String,
    /// the encryptedData, base64
    #[arg(long, value_name = "D")]
    data: String,
    /// the oldest data accepted, in seconds (0: no freshness check)
    #[arg(long, value_name = "N", value_parser = whole_number, default_value_t = 0)]
    max_age_secs: u64,
}

/// Check signature = sha1(rawData + session_key), as getUserInfo signs rawData.
#[derive(Args)]
struct VerifySignature {
    #[command(flatten)]
    session_key: SecretArg<SessionKey>,
    /// rawData, as the mini-program received it
    #[arg(long, value_name = "R")]
    raw_data: String,
    /// the signature to check, hex
    #[arg(long, value_name = "S")]
    signature: String,
}

/// The wx.requestPayment parameters for a prepay_id.
#[derive(Subcommand)]
enum PaySign {
    /// paySign = RSA-SHA256 over appId\ntimeStamp\nnonceStr\npackage\n with the merchant key.
    V3(PaySignV3),
    /// paySign over appId, nonceStr, package, signType, timeStamp with the APIv2 key.
    V2(PaySignV2),
}

#[derive(Args)]
struct PaySignV3 {
    #[command(flatten)]
    payment: Payment,
    /// the merchant private key (PKCS#8 PEM file)
    #[arg(long, value_name = "FILE")]
    private_key: PathBuf,
}

#[derive(Args)]
struct PaySignV2 {
    #[command(flatten)]
    payment: Payment,
    #[command(flatten)]
    key: SecretArg<Apiv2Key>,
    /// MD5 or HMAC-SHA256
    #[arg(long, value_name = "MD5|HMAC-SHA256", value_parser = sign_type)]
    sign_type: SignType,
}

/// What both pay-sign versions sign.
#[derive(Args)]
struct Payment {
    /// the mini-program's appid
    #[arg(long, value_name = "A")]
    appid: String,
    /// the prepay_id from the order
    #[arg(long, value_name = "P")]
    prepay_id: String,
    /// timeStamp (default: now)
    #[arg(long, value_name = "T", value_parser = whole_number)]
    timestamp: Option<u64>,
    /// nonceStr (default: random)
    #[arg(long, value_name = "N")]
    nonce: Option<String>,
}

/// Verify a WeChat Pay v3 notification and print its decrypted resource.
///
/// The platform key is --platform-cert, or --public-key with --public-key-id.
#[derive(Args)]
#[command(group(ArgGroup::new("platform-key").args(["platform_cert", "public_key"]).required(true)))]
struct VerifyNotify {
    #[command(flatten)]
    apiv3_key: SecretArg<Apiv3Key>,
    /// the platform certificate (PEM file)
    #[arg(long, value_name = "FILE")]
    platform_cert: Option<PathBuf>,
    /// the WeChat Pay public key (BEGIN PUBLIC KEY PEM file)
    #[arg(long, value_name = "FILE", requires = "public_key_id")]
    public_key: Option<PathBuf>,
    /// the WeChat Pay public key's id (PUB_KEY_ID_…)
    #[arg(long, value_name = "ID", requires = "public_key", conflicts_with = "platform_cert")]
    public_key_id: Option<String>,
    /// the request headers, a JSON object (file)
    #[arg(long, value_name = "FILE")]
    headers: PathBuf,
    /// the raw request body (file)
    #[arg(long, value_name = "FILE")]
    body: PathBuf,
    /// the time to check the timestamp against, unix seconds (default: now)
    #[arg(long, value_name = "UNIX", value_parser = whole_number)]
    now: Option<u64>,
}

/// Exchange a wx.login code with the app secret from Secrets Manager.
///
/// Reads {"app_secret"} from --secret-id (the usual AWS environment) and prints openid and
/// unionid; the session_key stays hidden.
#[derive(Args)]
struct Jscode2session {
    /// the mini-program's appid
    #[arg(long, value_name = "A")]
    appid: String,
    /// the Secrets Manager secret holding {"app_secret"}
    #[arg(long, value_name = "S")]
    secret_id: String,
    /// the wx.login code
    #[arg(long, value_name = "C")]
    code: String,
    /// the WeChat API base URL
    #[arg(long, value_name = "URL", default_value = wxa_shared::config::DEFAULT_WECHAT_API_BASE)]
    api_base: String,
}

/// Why a command failed, which says its stderr line and exit status.
enum Failure {
    /// `wxa <command>: reason`, exit 1.
    Reason(String),
    /// The merchant function's refusal, `code: message (request_id ...)` as it is, exit 1.
    Refused(String),
    /// No answer to go by (AWS, the network, an answer outside the contract): exit 2, as for a
    /// usage error, so that exit 1 always means the function answered.
    NoAnswer(String),
    /// What was given cannot be used (a secret's shape, a file): `wxa <command>: reason`, exit 2.
    Usage(String),
}

/// clap's (and the convention's) status for a usage error.
const USAGE_ERROR: u8 = 2;
/// The merchant subcommands' status when the function gave no answer.
const NO_ANSWER: u8 = 2;

fn whole_number(value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| "must be a whole number".to_owned())
}

fn sign_type(value: &str) -> Result<SignType, String> {
    // SignType::parse reads an absent signType as MD5; on the command line it must be named.
    SignType::parse(value)
        .filter(|_| !value.is_empty())
        .ok_or_else(|| "must be MD5 or HMAC-SHA256".to_owned())
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Decrypt {
    fn run(&self) -> Result<Value, String> {
        let session_key = self.session_key.resolve()?;
        let max_age = Some(self.max_age_secs).filter(|&n| n > 0);
        let data = opendata::open::<serde_json::Map<String, Value>>(
            &session_key,
            &self.data,
            &self.iv,
            &self.appid,
            max_age,
            now_unix(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Value::Object(data))
    }
}

impl VerifySignature {
    fn run(&self) -> Result<Value, String> {
        let session_key = self.session_key.resolve()?;
        if opendata::verify_signature(&self.raw_data, &session_key, &self.signature) {
            Ok(json!({ "valid": true }))
        } else {
            Err("the signature is not sha1(rawData + session_key)".into())
        }
    }
}

impl Payment {
    /// timeStamp, nonceStr and package.
    fn request(&self) -> (String, String, String) {
        let timestamp = self.timestamp.unwrap_or_else(now_unix).to_string();
        let nonce = self.nonce.clone().unwrap_or_else(nonce);
        (timestamp, nonce, format!("prepay_id={}", self.prepay_id))
    }
}

impl PaySignV3 {
    fn run(&self) -> Result<Value, String> {
        let pem = read_file(&self.private_key)?;
        let key = SigningKey::from_pem(&pem).ok_or("--private-key is not a PKCS#8 RSA private key PEM")?;
        let (time_stamp, nonce_str, package) = self.payment.request();
        let pay_sign = v3::pay_sign(&key, &self.payment.appid, &time_stamp, &nonce_str, &package);
        Ok(
            json!({"timeStamp": time_stamp, "nonceStr": nonce_str, "package": package, "signType": "RSA", "paySign": pay_sign}),
        )
    }
}

impl PaySignV2 {
    fn run(&self) -> Result<Value, String> {
        let key = self.key.resolve()?;
        let (time_stamp, nonce_str, package) = self.payment.request();
        let pay_sign = v2::pay_sign(
            &key,
            self.sign_type,
            &self.payment.appid,
            &time_stamp,
            &nonce_str,
            &package,
        );
        Ok(
            json!({"timeStamp": time_stamp, "nonceStr": nonce_str, "package": package, "signType": self.sign_type.as_str(), "paySign": pay_sign}),
        )
    }
}

impl VerifyNotify {
    fn run(&self) -> Result<Value, String> {
        let apiv3_key = self.apiv3_key.resolve()?;
        let (id, key) = match (&self.platform_cert, &self.public_key, &self.public_key_id) {
            (Some(cert), None, None) => {
                let pem = read_file(cert)?;
                let der = pem_to_der(&pem, "CERTIFICATE").ok_or("--platform-cert is not a certificate PEM")?;
                let serial = serial_of_certificate(&der).ok_or("--platform-cert has no readable serial")?;
                (
                    serial,
                    VerifyingKey::from_pem(&pem).ok_or("--platform-cert has no readable public key")?,
                )
            }
            (None, Some(file), Some(id)) => (
                id.clone(),
                VerifyingKey::from_pem(&read_file(file)?).ok_or("--public-key is not a BEGIN PUBLIC KEY PEM")?,
            ),
            // clap's argument rules already refuse the other combinations.
            _ => return Err("give --platform-cert FILE, or --public-key FILE with --public-key-id ID".into()),
        };
        let headers: Value = serde_json::from_str(&read_file(&self.headers)?)
            .map_err(|e| format!("--headers is not a JSON object: {e}"))?;
        let header = |name: &str| {
            headers
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
        };
        let body = std::fs::read(&self.body).map_err(|e| format!("cannot read {}: {e}", self.body.display()))?;
        let signed = SignedHeaders {
            timestamp: header("Wechatpay-Timestamp"),
            nonce: header("Wechatpay-Nonce"),
            signature: header("Wechatpay-Signature"),
            serial: header("Wechatpay-Serial"),
        };
        let now = self.now.unwrap_or_else(now_unix);
        v3::verify_signed(&signed, &body, [(id.as_str(), &key)], now).map_err(|e| e.to_string())?;
        let envelope: Value = serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let r = &envelope["resource"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let plain = v3::decrypt_resource(
            &apiv3_key,
            &text(&r["nonce"]),
            &text(&r["associated_data"]),
            &text(&r["ciphertext"]),
        )
        .ok_or("the resource does not decrypt with this APIv3 key")?;
        serde_json::from_slice(&plain).map_err(|e| format!("the resource is not JSON: {e}"))
    }
}

impl Jscode2session {
    async fn run(&self) -> Result<Value, String> {
        // An operator's machine: its own CA store (a corporate proxy's CA included).
        let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::System);
        let sdk = wxa_shared::net::aws::sdk_config_from_env(&tls).await;
        let secrets = wxa_shared::secret_store::SecretCache::<wxa_shared::secret_store::AppSecrets>::new(
            aws_sdk_secretsmanager::Client::new(&sdk),
            &self.secret_id,
            std::time::Duration::ZERO,
        );
        let app = secrets.get().await.map_err(|e| e.to_string())?;
        let http = wxa_shared::net::wechat_client(&tls, std::time::Duration::from_secs(10));
        let client = WechatClient::new(&self.api_base, &self.appid, http);
        let session = client
            .jscode2session(&app.app_secret, &self.code)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "openid": session.openid, "unionid": session.unionid, "session_key": "***" }))
    }
}

impl Command {
    async fn run(&self) -> Result<Value, Failure> {
        let done = match self {
            Command::Decrypt(c) => c.run(),
            Command::VerifySignature(c) => c.run(),
            Command::PaySign(PaySign::V3(c)) => c.run(),
            Command::PaySign(PaySign::V2(c)) => c.run(),
            Command::VerifyNotify(c) => c.run(),
            Command::Jscode2session(c) => c.run().await,
            Command::PushDecrypt(c) => c.run(),
            Command::Merchant(c) => return c.run().await,
            Command::Secrets(c) => return c.run().await,
        };
        done.map_err(Failure::Reason)
    }
}

/// The command tree, parsing as the hand-written parser before clap did: the word after an option
/// is always its value (a key or a nonce may start with `-`), and a repeated option's last value wins.
fn cli_command() -> clap::Command {
    fn as_before(cmd: clap::Command) -> clap::Command {
        // A switch (`--is-all-delivered`) has no value to start with `-`.
        let hyphen_values = |arg: clap::Arg| {
            let takes_values = arg.get_action().takes_values();
            arg.allow_hyphen_values(takes_values)
        };
        cmd.args_override_self(true)
            .mut_args(hyphen_values)
            .mut_subcommands(as_before)
    }
    let mut cmd = as_before(Cli::command());
    cmd.build();
    cmd
}

/// The (sub)command the arguments name, for the `wxa decrypt:` prefix and the usage line.
fn invoked<'a>(root: &'a clap::Command, args: &[OsString]) -> &'a clap::Command {
    let mut cmd = root;
    for arg in args.iter().skip(1) {
        match arg.to_str().and_then(|name| cmd.find_subcommand(name)) {
            Some(sub) => cmd = sub,
            None => break,
        }
    }
    cmd
}

/// `--session-key` of `--session-key <K>` or of a group `<--session-key <K>|--session-key-file <PATH>>`.
fn flag(usage: &str) -> &str {
    let usage = usage.trim_start_matches('<');
    usage.split([' ', '|', '>']).next().unwrap_or(usage)
}

/// One line per missing argument; a secret's line names all of its sources.
fn required(usage: &str) -> String {
    let flags: Vec<&str> = usage.split('|').map(flag).collect();
    secret_arg::missing_by_flag(flags[0]).unwrap_or_else(|| format!("{} is required", flags.join(" or ")))
}

/// Why clap refused the arguments, in the words the old hand-written parser used.
fn reasons(e: &clap::Error) -> Vec<String> {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => vec![s.as_str()],
        Some(ContextValue::Strings(v)) => v.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let invalid = context(ContextKind::InvalidArg);
    let reason = match (e.kind(), invalid.first()) {
        (ErrorKind::MissingRequiredArgument, Some(_)) => return invalid.iter().map(|u| required(u)).collect(),
        (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with('-') => format!("unknown option {arg}"),
        (ErrorKind::UnknownArgument, Some(arg)) => format!("unexpected argument {arg:?}"),
        (ErrorKind::InvalidSubcommand, _) => match context(ContextKind::InvalidSubcommand).first() {
            Some(name) => format!("unknown command {name:?}"),
            None => clap_reason(e),
        },
        (ErrorKind::ArgumentConflict, Some(arg)) => {
            let prior: Vec<&str> = context(ContextKind::PriorArg).into_iter().map(flag).collect();
            format!("{} cannot be used with {}", flag(arg), prior.join(" or "))
        }
        (ErrorKind::ValueValidation, Some(arg)) => match std::error::Error::source(e) {
            Some(why) => format!("{} {why}", flag(arg)),
            None => clap_reason(e),
        },
        _ => clap_reason(e),
    };
    vec![reason]
}

/// clap's own message, without its `error: ` prefix and the usage that follows.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    first.trim_start_matches("error: ").trim_end().to_owned()
}

/// Help as clap renders it; a usage error as `wxa <command>: <reason>` lines, then the usage.
fn parse_failure(e: &clap::Error, root: &clap::Command, args: &[OsString]) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(USAGE_ERROR)
        } else {
            ExitCode::SUCCESS
        };
    }
    let cmd = invoked(root, args);
    let name = cmd.get_bin_name().unwrap_or("wxa");
    for reason in reasons(e) {
        eprintln!("{name}: {reason}");
    }
    eprintln!(
        "\n{}\n\nFor more information, try '{name} --help'.",
        cmd.clone().render_usage()
    );
    ExitCode::from(USAGE_ERROR)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let root = cli_command();
    let parsed = root
        .clone()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return parse_failure(&e, &root, &args),
    };
    let name = invoked(&root, &args).get_bin_name().unwrap_or("wxa");
    match cli.command.run().await {
        Ok(value) => {
            match value {
                // push-decrypt's message, XML or JSON as it was sent.
                Value::String(text) => println!("{text}"),
                value => println!("{value}"),
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Reason(reason)) => {
            eprintln!("{name}: {reason}");
            ExitCode::FAILURE
        }
        Err(Failure::Refused(line)) => {
            eprintln!("{line}");
            ExitCode::FAILURE
        }
        Err(Failure::NoAnswer(reason)) => {
            eprintln!("{name}: {reason}");
            ExitCode::from(NO_ANSWER)
        }
        Err(Failure::Usage(reason)) => {
            eprintln!("{name}: {reason}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_tree_passes_clap_checks() {
        // `build` runs clap's debug assertions over every subcommand and argument.
        super::cli_command();
    }
}
