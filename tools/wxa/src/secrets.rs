//! `wxa secrets init app|push|pay`: writes the app, push or pay secret to Secrets Manager in the
//! shape the functions read, from files and the environment (a value is never taken from the
//! command line, where `ps` shows it), and never prints a value.
//!
//! The document is parsed with the functions' own parser (`SecretDocument::parse`) before
//! anything is written: a wrong shape is refused with the field's name, exit 2. The secret is
//! created when it does not exist, else given a new version (`PutSecretValue`); the same document
//! again writes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use wxa_shared::pay::Merchant;
use wxa_shared::pay::keys::{SigningKey, VerifyingKey, pem_to_der, serial_of_certificate};
use wxa_shared::push::AesKey;
use wxa_shared::secret_store::{AppSecrets, PushSecrets, SecretDocument};

use crate::Failure;
use crate::merchant::causes;
use crate::secret_arg::{ApiAesKey, AppPushAesKey, AppPushToken, AppSecret, PayApiv2Key, PayApiv3Key, SecretFile};

/// An operator's machine may be far from the region: more than the functions' 1 s to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Write the functions' secrets to Secrets Manager.
#[derive(Subcommand)]
pub enum Secrets {
    #[command(subcommand)]
    Init(Init),
}

/// Create a secret, or give it a new version, in the shape the functions read.
///
/// Values come from files (--NAME-file PATH, one trailing newline dropped) or from environment
/// variables, never from the command line. The document is checked with the functions' own
/// parser first: a wrong shape is refused (exit 2) and nothing is written. The whole secret is
/// replaced: give every value it should keep. Prints {"arn", "name", "version_id", "action"};
/// exit 1 when AWS refuses the call.
#[derive(Subcommand)]
pub enum Init {
    /// The app secret (APP_SECRET_ID): {"app_secret", "api_security"?}.
    App(InitApp),
    /// The push secret (PUSH_SECRET_ID): {"push_token", "push_aes_key"?}, read only by wechat-push.
    Push(InitPush),
    /// The pay secret (PAY_SECRET_ID): the merchant's WeChat Pay keys.
    Pay(InitPay),
}

#[derive(Args)]
struct Target {
    /// the secret's name (created when missing) or ARN (given a new version)
    #[arg(long, value_name = "ID", help_heading = "Secrets Manager")]
    secret_id: String,
    /// the KMS key to encrypt a new secret with [default: aws/secretsmanager]; an existing
    /// secret keeps its own
    #[arg(long, value_name = "KEY", help_heading = "Secrets Manager")]
    kms_key_id: Option<String>,
    /// the Secrets Manager endpoint: moto server's URL locally [default: $AWS_ENDPOINT_URL,
    /// else AWS's]
    #[arg(long, value_name = "URL", help_heading = "Secrets Manager")]
    endpoint_url: Option<String>,
    /// the region [default: $AWS_REGION, else the AWS profile's]
    #[arg(long, value_name = "REGION", help_heading = "Secrets Manager")]
    region: Option<String>,
}

#[derive(Args)]
pub struct InitApp {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    app_secret: SecretFile<AppSecret>,
    /// The API security mode's keys (console: 开发设置 → API 安全), all of them or none: the
    /// symmetric key comes from --api-aes-key-file or WXA_API_AES_KEY.
    #[command(flatten)]
    api_aes_key: SecretFile<ApiAesKey>,
    /// the symmetric key's SN, as the console shows it
    #[arg(long, value_name = "SN", help_heading = "API security mode")]
    api_aes_sn: Option<String>,
    /// the app's API private key (PEM file: PKCS#1 as the console downloads it, or PKCS#8)
    #[arg(long, value_name = "FILE", help_heading = "API security mode")]
    api_private_key: Option<PathBuf>,
    /// the asymmetric key's SN, as the console shows it
    #[arg(long, value_name = "SN", help_heading = "API security mode")]
    api_private_key_sn: Option<String>,
    /// WeChat's platform certificate (PEM file) with the SN the console shows for it; repeat it
    /// while WeChat rotates its key
    #[arg(long, value_name = "SN=FILE", value_parser = sn_and_file, help_heading = "API security mode")]
    api_platform_cert: Vec<(String, PathBuf)>,
}

/// `SN=FILE`.
fn sn_and_file(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((sn, file)) if !sn.is_empty() && !file.is_empty() => Ok((sn.to_owned(), PathBuf::from(file))),
        _ => Err("give the certificate as SN=FILE (the SN the console shows, then the PEM file)".into()),
    }
}

#[derive(Args)]
pub struct InitPush {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    push_token: SecretFile<AppPushToken>,
    #[command(flatten)]
    push_aes_key: SecretFile<AppPushAesKey>,
}

/// The API the functions use (their PAY_API), which says what the secret must hold.
#[derive(Clone, Copy, ValueEnum)]
enum Api {
    V3,
    V2,
}

#[derive(Args)]
pub struct InitPay {
    #[command(flatten)]
    target: Target,
    /// the merchant id (mchid)
    #[arg(long, value_name = "MCHID")]
    mchid: String,
    /// the functions' PAY_API: v3 needs the API certificate's serial, the private key, the APIv3
    /// key and a platform key; v2 the APIv2 key
    #[arg(long, value_name = "v3|v2", value_enum, default_value_t = Api::V3)]
    api: Api,
    /// the serial of the merchant API certificate (merchant_serial_no)
    #[arg(long, value_name = "SERIAL", conflicts_with = "merchant_cert")]
    serial_no: Option<String>,
    /// the merchant API certificate (apiclient_cert.pem): its serial is merchant_serial_no, and
    /// --private-key must be its key
    #[arg(long, value_name = "FILE", requires = "private_key")]
    merchant_cert: Option<PathBuf>,
    /// the merchant API private key (apiclient_key.pem, PKCS#8 PEM file)
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    #[command(flatten)]
    apiv3_key: SecretFile<PayApiv3Key>,
    #[command(flatten)]
    apiv2_key: SecretFile<PayApiv2Key>,
    /// the WeChat Pay public key (pub_key.pem, BEGIN PUBLIC KEY PEM file)
    #[arg(long, value_name = "FILE", requires = "public_key_id")]
    public_key: Option<PathBuf>,
    /// the WeChat Pay public key's id (PUB_KEY_ID_…)
    #[arg(long, value_name = "ID", requires = "public_key")]
    public_key_id: Option<String>,
    /// a platform certificate (PEM file), named by its serial; repeat it during a switch
    #[arg(long, value_name = "FILE")]
    platform_cert: Vec<PathBuf>,
}

impl Secrets {
    pub async fn run(&self) -> Result<Value, Failure> {
        match self {
            Secrets::Init(Init::App(init)) => {
                let document = init.document().map_err(Failure::Usage)?;
                init.target.write(&document).await
            }
            Secrets::Init(Init::Push(init)) => {
                let document = init.document().map_err(Failure::Usage)?;
                init.target.write(&document).await
            }
            Secrets::Init(Init::Pay(init)) => {
                let document = init.document().map_err(Failure::Usage)?;
                init.target.write(&document).await
            }
        }
    }
}

/// A PEM file's text as it is (the parser reads the block, whatever surrounds it).
fn read_pem(path: &Path) -> Result<String, String> {
    crate::read_file(path)
}

impl InitApp {
    /// The app secret's JSON, checked as the functions read it.
    fn document(&self) -> Result<String, String> {
        let mut document = Map::new();
        document.insert("app_secret".into(), self.app_secret.required()?.expose().into());
        if let Some(api_security) = self.api_security()? {
            document.insert("api_security".into(), api_security);
        }
        let text = Value::Object(document).to_string();
        <AppSecrets as SecretDocument>::parse(&text)?;
        Ok(text)
    }

    /// The `api_security` document, when any of its flags is given (then all must be).
    fn api_security(&self) -> Result<Option<Value>, String> {
        let aes_key = self.api_aes_key.value()?;
        let given = [
            ("--api-aes-key-file (or WXA_API_AES_KEY)", aes_key.is_some()),
            ("--api-aes-sn", self.api_aes_sn.is_some()),
            ("--api-private-key", self.api_private_key.is_some()),
            ("--api-private-key-sn", self.api_private_key_sn.is_some()),
            ("--api-platform-cert", !self.api_platform_cert.is_empty()),
        ];
        if given.iter().all(|(_, given)| !given) {
            return Ok(None);
        }
        let missing: Vec<&str> = given
            .iter()
            .filter(|(_, given)| !given)
            .map(|(flag, _)| *flag)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the API security mode needs all of its keys: {} missing",
                missing.join(", ")
            ));
        }
        let certificates = self
            .api_platform_cert
            .iter()
            .map(|(sn, file)| Ok(json!({"sn": sn, "certificate": read_pem(file)?})))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Some(json!({
            "aes_key": aes_key.as_ref().map(|k| k.expose()),
            "aes_sn": self.api_aes_sn,
            "private_key": self.api_private_key.as_deref().map(read_pem).transpose()?,
            "private_key_sn": self.api_private_key_sn,
            "platform_certificates": certificates,
        })))
    }
}

impl InitPush {
    /// The push secret's JSON, checked as wechat-push reads it.
    fn document(&self) -> Result<String, String> {
        let mut document = Map::new();
        document.insert("push_token".into(), self.push_token.required()?.expose().into());
        if let Some(key) = self.push_aes_key.value()? {
            document.insert("push_aes_key".into(), key.expose().into());
        }
        let text = Value::Object(document).to_string();
        let parsed = <PushSecrets as SecretDocument>::parse(&text)?;
        // wechat-push decodes the key only when a push arrives: check it now, as it will.
        if let Some(key) = &parsed.push_aes_key {
            AesKey::new(key).map_err(|e| format!("push_aes_key: {e}"))?;
        }
        Ok(text)
    }
}

impl InitPay {
    /// The pay secret's JSON, checked as the functions read it.
    fn document(&self) -> Result<String, String> {
        let mut document = Map::new();
        if self.mchid.is_empty() {
            return Err("--mchid is empty".into());
        }
        document.insert("mchid".into(), self.mchid.clone().into());
        let private_key = self.private_key.as_deref().map(read_pem).transpose()?;
        let serial_no = match &self.merchant_cert {
            Some(cert) => Some(merchant_serial(cert, private_key.as_deref().unwrap_or_default())?),
            None => self.serial_no.clone(),
        };
        if let Some(serial) = serial_no {
            document.insert("merchant_serial_no".into(), serial.into());
        }
        if let Some(pem) = private_key {
            document.insert("merchant_private_key".into(), pem.into());
        }
        if let Some(key) = self.apiv3_key.value()? {
            document.insert("apiv3_key".into(), key.expose().into());
        }
        if let Some(key) = self.apiv2_key.value()? {
            document.insert("apiv2_key".into(), key.expose().into());
        }
        let mut platform_keys = Vec::new();
        if let (Some(file), Some(id)) = (&self.public_key, &self.public_key_id) {
            platform_keys.push(json!({"id": id, "public_key": read_pem(file)?}));
        }
        for file in &self.platform_cert {
            let pem = read_pem(file)?;
            let der = pem_to_der(&pem, "CERTIFICATE")
                .ok_or_else(|| format!("--platform-cert {} is not a certificate PEM", file.display()))?;
            let serial = serial_of_certificate(&der)
                .ok_or_else(|| format!("--platform-cert {} has no readable serial", file.display()))?;
            platform_keys.push(json!({"id": serial, "certificate": pem}));
        }
        if !platform_keys.is_empty() {
            document.insert("platform_keys".into(), platform_keys.into());
        }
        let text = Value::Object(document).to_string();
        let merchant = <Merchant as SecretDocument>::parse(&text)?;
        self.check_complete(&merchant)?;
        Ok(text)
    }

    /// What the functions will need under `--api`, which the parser leaves optional.
    fn check_complete(&self, merchant: &Merchant) -> Result<(), String> {
        let missing = match self.api {
            Api::V3 => [
                (
                    merchant.serial_no.is_none(),
                    "merchant_serial_no (--serial-no or --merchant-cert)",
                ),
                (merchant.signing_key.is_none(), "merchant_private_key (--private-key)"),
                (
                    merchant.apiv3_key.is_none(),
                    "apiv3_key (--apiv3-key-file or WXA_APIV3_KEY)",
                ),
                (
                    merchant.platform_keys.is_empty(),
                    "platform_keys (--public-key with --public-key-id, or --platform-cert)",
                ),
            ]
            .into_iter()
            .find_map(|(absent, field)| absent.then_some(field)),
            Api::V2 => merchant
                .apiv2_key
                .is_none()
                .then_some("apiv2_key (--apiv2-key-file or WXA_APIV2_KEY)"),
        };
        match missing {
            Some(field) => Err(format!("--api {} needs {field}", self.api.name())),
            None => Ok(()),
        }
    }
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::V3 => "v3",
            Api::V2 => "v2",
        }
    }
}

/// The merchant API certificate's serial, once the private key is known to be its key.
fn merchant_serial(cert: &Path, private_key: &str) -> Result<String, String> {
    let pem = read_pem(cert)?;
    let shown = cert.display();
    let der =
        pem_to_der(&pem, "CERTIFICATE").ok_or_else(|| format!("--merchant-cert {shown} is not a certificate PEM"))?;
    let serial =
        serial_of_certificate(&der).ok_or_else(|| format!("--merchant-cert {shown} has no readable serial"))?;
    let public =
        VerifyingKey::from_pem(&pem).ok_or_else(|| format!("--merchant-cert {shown} has no readable public key"))?;
    let signer = SigningKey::from_pem(private_key).ok_or("merchant_private_key is not a PKCS#8 RSA private key PEM")?;
    let probe = b"wxa secrets init pay: does the key match the certificate?";
    if !public.verify(probe, &signer.sign(probe)) {
        return Err(format!(
            "merchant_private_key is not the key of --merchant-cert {shown} (serial {serial})"
        ));
    }
    Ok(serial)
}

impl Target {
    async fn client(&self) -> aws_sdk_secretsmanager::Client {
        // An operator's machine: its own CA store (a corporate proxy's CA included), and AWS's
        // usual chains (environment, then profile files) for credentials and region.
        let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::System);
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = wxa_shared::net::aws::load_sdk_config(loader, &tls).await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        // Retries stay on: the SDK sends the same ClientRequestToken again, which Secrets Manager
        // reads as the same write.
        let mut config = aws_sdk_secretsmanager::config::Builder::from(&sdk).timeout_config(timeouts);
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        aws_sdk_secretsmanager::Client::from_conf(config.build())
    }

    /// Creates the secret, or puts `document` as its new current version.
    async fn write(&self, document: &str) -> Result<Value, Failure> {
        let client = self.client().await;
        let id = &self.secret_id;
        // A name can be created; an ARN names a secret that exists.
        if !id.starts_with("arn:") {
            let created = client
                .create_secret()
                .name(id)
                .secret_string(document)
                .set_kms_key_id(self.kms_key_id.clone())
                .send()
                .await;
            match created {
                Ok(out) => return Ok(written(out.arn(), out.name(), out.version_id(), "created")),
                Err(e) if code(&e) == Some("ResourceExistsException") => {}
                Err(e) => return Err(Failure::Reason(format!("cannot create secret {id}: {}", why(&e)))),
            }
        }
        if self.kms_key_id.is_some() {
            eprintln!("note: secret {id} exists: it keeps its KMS key (--kms-key-id applies to a new secret)");
        }
        // Best effort (it needs secretsmanager:GetSecretValue, which a writer may not have):
        // the same document again writes nothing, and fields the new one drops are named.
        let current = client.get_secret_value().secret_id(id).send().await.ok();
        let current_document = current
            .as_ref()
            .and_then(|c| c.secret_string())
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let new_document: Value = serde_json::from_str(document).expect("built as JSON");
        if let (Some(current), Some(old)) = (&current, &current_document)
            && *old == new_document
        {
            return Ok(written(
                current.arn(),
                current.name(),
                current.version_id(),
                "unchanged",
            ));
        }
        let put = client
            .put_secret_value()
            .secret_id(id)
            .secret_string(document)
            .send()
            .await
            .map_err(|e| Failure::Reason(format!("cannot update secret {id}: {}", why(&e))))?;
        if let (Some(Value::Object(old)), Value::Object(new)) = (&current_document, &new_document) {
            let dropped: Vec<&str> = old
                .keys()
                .filter(|field| !new.contains_key(*field))
                .map(String::as_str)
                .collect();
            if !dropped.is_empty() {
                eprintln!(
                    "note: the previous version of {id} also had {}, which this one does not",
                    dropped.join(", ")
                );
            }
        }
        Ok(written(put.arn(), put.name(), put.version_id(), "updated"))
    }
}

/// What was written: names and the version, never a value.
fn written(arn: Option<&str>, name: Option<&str>, version_id: Option<&str>, action: &str) -> Value {
    json!({"arn": arn, "name": name, "version_id": version_id, "action": action})
}

fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<&str> {
    error.as_service_error().and_then(ProvideErrorMetadata::code)
}

/// Why AWS refused the call (`Code: message`), or why it could not be made, on one line.
fn why<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(error: &SdkError<E, R>) -> String {
    match error.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(message)) => crate::merchant::one_line(&format!("{code}: {message}")),
            (Some(code), None) => code.to_owned(),
            _ => causes(error),
        },
        None => causes(error),
    }
}
