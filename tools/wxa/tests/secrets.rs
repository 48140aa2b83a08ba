//! `wxa secrets init app|pay`, run as an operator would against moto server, and read back with
//! the functions' own reader (`SecretCache`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wxa_shared::pay::Merchant;
use wxa_shared::pay::keys::VerifyingKey;
use wxa_shared::secret_store::{AppSecrets, PushSecrets, SecretCache};

/// Cleared for every run: an operator's exported secret or AWS set-up must not meet the test's.
const CLEARED: [&str; 14] = [
    "WXA_APP_SECRET",
    "WXA_API_AES_KEY",
    "WXA_PUSH_TOKEN",
    "WXA_PUSH_AES_KEY",
    "WXA_APIV3_KEY",
    "WXA_APIV2_KEY",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

const PUSH_TOKEN: &str = "initPushToken2026";
const PUSH_AES_KEY: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";
const APIV3_KEY: &str = "init-apiv3-key-0123456789abcdefg";
const APIV2_KEY: &str = "init-apiv2-key-0123456789abcdefg";
const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114232134912410000000000000";
/// The serial of tools/wechat-sim/src/platform_cert.pem.
const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one line printed on success.
    fn written(&self) -> Value {
        assert_eq!(self.status, Some(0), "{}", self.stderr);
        assert_eq!(self.stdout.lines().count(), 1, "{}", self.stdout);
        serde_json::from_str(&self.stdout).expect("JSON on stdout")
    }

    /// A refusal: the exit status, nothing on stdout, and the reason on stderr's first line.
    fn refused(&self, status: i32, reason: &str) {
        assert_eq!(self.status, Some(status), "{}", self.stderr);
        assert!(self.stdout.is_empty(), "{}", self.stdout);
        let first = self.stderr.lines().next().unwrap_or_default();
        assert!(first.contains(reason), "{reason} in {}", self.stderr);
    }

    /// Neither output holds any of `values`.
    fn shows_none_of(&self, values: &[&str]) {
        for value in values {
            assert!(
                !self.stdout.contains(value) && !self.stderr.contains(value),
                "a value was printed: {}{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// `wxa secrets init KIND --secret-id ID ARGS` against the shared moto server, with dummy
/// credentials and `env` as the only secrets' variables.
fn init(kind: &str, secret_id: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    init_at(&testkit::moto().endpoint, kind, secret_id, args, env)
}

fn init_at(endpoint: &str, kind: &str, secret_id: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let no_file = std::env::temp_dir().join("wxa-secrets-no-aws-file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxa"));
    for name in CLEARED {
        command.env_remove(name);
    }
    let output = command
        .args(["secrets", "init", kind, "--secret-id", secret_id])
        .args(["--endpoint-url", endpoint, "--region", "us-east-1"])
        .args(args)
        .envs([("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")])
        .env("AWS_CONFIG_FILE", &no_file)
        .env("AWS_SHARED_CREDENTIALS_FILE", &no_file)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("wxa runs");
    Run {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A file in this run's scratch folder.
fn scratch(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("wxa-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

fn root(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn secretsmanager() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&testkit::sdk_config(&testkit::moto().endpoint).await)
}

/// The secret as the functions read it, uncached.
async fn read_back<T: wxa_shared::secret_store::SecretDocument>(id: &str) -> std::sync::Arc<T> {
    SecretCache::<T>::new(secretsmanager().await, id, Duration::ZERO)
        .get()
        .await
        .expect("the secret parses as the functions read it")
}

/// The current version's id, or `None` when the secret does not exist.
async fn current_version(id: &str) -> Option<String> {
    let read = secretsmanager().await.get_secret_value().secret_id(id).send().await;
    read.ok().map(|out| out.version_id().unwrap().to_owned())
}

fn expose(secret: Option<&wxa_shared::redacted::Secret>) -> Option<&str> {
    secret.map(|s| s.expose())
}

#[tokio::test]
async fn init_app_from_the_environment_and_files_then_rotate() {
    let id = testkit::unique("wxa-init-app");
    let first_secret = "first-app-secret-0123456789abcdef";
    let env = [("WXA_APP_SECRET", first_secret)];
    let run = init("app", &id, &[], &env);
    let created = run.written();
    run.shows_none_of(&[first_secret]);
    assert_eq!(
        (&created["action"], &created["name"]),
        (&"created".into(), &id.as_str().into())
    );
    let first_version = created["version_id"].as_str().unwrap().to_owned();
    assert!(
        created["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:secretsmanager:us-east-1:")
    );
    let app = read_back::<AppSecrets>(&id).await;
    assert_eq!(app.app_secret.expose(), first_secret);

    // The same document again writes no new version.
    let again = init("app", &id, &[], &env).written();
    assert_eq!(
        (&again["action"], &again["version_id"]),
        (&"unchanged".into(), &first_version.as_str().into())
    );

    // A function holding the first secret, as a warm container would.
    let warm = SecretCache::<AppSecrets>::new(secretsmanager().await, &id, Duration::from_secs(300));
    let held = warm.get().await.unwrap();

    // Rotation: the new app secret from a file saved on Windows.
    let second_secret = "second-app-secret-0123456789abcd";
    let secret_file = scratch("app-secret", &format!("{second_secret}\r\n"));
    let run = init("app", &id, &["--app-secret-file", &secret_file], &[]);
    let updated = run.written();
    run.shows_none_of(&[first_secret, second_secret]);
    assert_eq!(updated["action"], "updated");
    assert_eq!(updated["arn"], created["arn"]);
    assert_ne!(updated["version_id"].as_str(), Some(first_version.as_str()));
    assert_eq!(current_version(&id).await.as_deref(), updated["version_id"].as_str());
    let app = read_back::<AppSecrets>(&id).await;
    assert_eq!(app.app_secret.expose(), second_secret);
    // The warm container still holds the first until its TTL, or at once when WeChat refuses it.
    assert_eq!(warm.get().await.unwrap().app_secret.expose(), first_secret);
    let fresh = warm.refresh_after_rejection(&held).await.unwrap().expect("rotated");
    assert_eq!(fresh.app_secret.expose(), second_secret);
}

#[tokio::test]
async fn init_push_writes_the_push_secret_wechat_push_reads() {
    let id = testkit::unique("wxa-init-push");
    let aes_key_file = scratch("push-aes-key", &format!("{PUSH_AES_KEY}\n"));
    let run = init(
        "push",
        &id,
        &["--push-aes-key-file", &aes_key_file],
        &[("WXA_PUSH_TOKEN", PUSH_TOKEN)],
    );
    assert_eq!(run.written()["action"], "created");
    run.shows_none_of(&[PUSH_TOKEN, PUSH_AES_KEY]);
    let push = read_back::<PushSecrets>(&id).await;
    assert_eq!(push.push_token.expose(), PUSH_TOKEN);
    assert_eq!(
        expose(push.push_aes_key.as_ref()),
        Some(PUSH_AES_KEY),
        "the file's newline dropped"
    );
    // The whole secret is replaced: a value left out is gone, and stderr says which.
    let run = init("push", &id, &[], &[("WXA_PUSH_TOKEN", PUSH_TOKEN)]);
    assert_eq!(run.written()["action"], "updated");
    assert!(
        run.stderr.contains("also had push_aes_key, which this one does not"),
        "{}",
        run.stderr
    );
    run.shows_none_of(&[PUSH_TOKEN, PUSH_AES_KEY]);
    assert!(read_back::<PushSecrets>(&id).await.push_aes_key.is_none());
}

#[tokio::test]
async fn wrong_shapes_are_refused_and_nothing_is_written() {
    let id = testkit::unique("wxa-init-refused");
    let secret = "refused-app-secret-0123456789abc";
    let with_token = [("WXA_PUSH_TOKEN", PUSH_TOKEN)];
    let short_key = &PUSH_AES_KEY[..42];
    let short_key_file = scratch("short-aes-key", short_key);
    let run = init("push", &id, &["--push-aes-key-file", &short_key_file], &with_token);
    run.refused(
        2,
        "wxa secrets init push: push_aes_key: the EncodingAESKey must be 43 characters, it is 42",
    );
    run.shows_none_of(&[PUSH_TOKEN, short_key]);
    assert_eq!(current_version(&id).await, None, "nothing written");

    let not_base64 = format!("{}!", &PUSH_AES_KEY[..42]);
    let run = init(
        "push",
        &id,
        &[],
        &[&with_token[..], &[("WXA_PUSH_AES_KEY", &not_base64)]].concat(),
    );
    run.refused(2, "push_aes_key: the EncodingAESKey is not base64");
    run.shows_none_of(&[PUSH_TOKEN, &not_base64]);
    let run = init("push", &id, &[], &[("WXA_PUSH_AES_KEY", PUSH_AES_KEY)]);
    run.refused(
        2,
        "wxa secrets init push: --push-token-file PATH is required (or WXA_PUSH_TOKEN in the environment)",
    );

    let run = init("app", &id, &[], &[]);
    run.refused(
        2,
        "wxa secrets init app: --app-secret-file PATH is required (or WXA_APP_SECRET in the environment)",
    );
    let empty = scratch("empty-app-secret", "\n");
    init("app", &id, &["--app-secret-file", &empty], &[]).refused(2, "the app secret from ");
    let file = scratch("app-secret-twice", secret);
    let run = init("app", &id, &["--app-secret-file", &file], &[("WXA_APP_SECRET", secret)]);
    run.refused(
        2,
        "the app secret is given more than once (--app-secret-file, WXA_APP_SECRET): give exactly one",
    );
    // A value on the command line is refused with the way to give it instead, and not repeated.
    let run = init("app", &id, &["--app-secret", secret], &[]);
    run.refused(
        2,
        "--app-secret is not taken on the command line, where ps shows it: use --app-secret-file PATH or WXA_APP_SECRET",
    );
    run.shows_none_of(&[secret]);
    assert_eq!(current_version(&id).await, None, "nothing written");

    // An existing secret keeps its version when the new document is refused.
    let version = init("push", &id, &[], &with_token).written()["version_id"].clone();
    init("push", &id, &["--push-aes-key-file", &short_key_file], &with_token).refused(2, "push_aes_key");
    assert_eq!(current_version(&id).await.as_deref(), version.as_str());

    // The pay secret: a private key that is not PEM, a short APIv3 key, a missing part.
    let pay_id = testkit::unique("wxa-init-pay-refused");
    let not_pem = scratch("not-a-key.pem", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n");
    let public = root("tools/wechat-sim/src/platform_public.pem");
    let v3 = [
        "--mchid",
        testkit::MCHID,
        "--serial-no",
        testkit::MERCHANT_SERIAL,
        "--public-key",
        &public,
        "--public-key-id",
        PUBLIC_KEY_ID,
    ];
    let run = init(
        "pay",
        &pay_id,
        &[&v3[..], &["--private-key", &not_pem]].concat(),
        &[("WXA_APIV3_KEY", APIV3_KEY)],
    );
    run.refused(
        2,
        "wxa secrets init pay: merchant_private_key is not a PKCS#8 RSA private key PEM",
    );
    run.shows_none_of(&[APIV3_KEY, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]);
    let (key_file, _) = merchant_key();
    let with_key = [&v3[..], &["--private-key", &key_file]].concat();
    let short_apiv3 = &APIV3_KEY[..31];
    let run = init("pay", &pay_id, &with_key, &[("WXA_APIV3_KEY", short_apiv3)]);
    run.refused(2, "apiv3_key must be 32 characters");
    run.shows_none_of(&[short_apiv3]);
    init("pay", &pay_id, &with_key, &[]).refused(2, "--api v3 needs apiv3_key (--apiv3-key-file or WXA_APIV3_KEY)");
    init("pay", &pay_id, &with_key[..4], &[("WXA_APIV3_KEY", APIV3_KEY)])
        .refused(2, "--api v3 needs merchant_private_key (--private-key)");
    init("pay", &pay_id, &["--mchid", testkit::MCHID, "--api", "v2"], &[])
        .refused(2, "--api v2 needs apiv2_key (--apiv2-key-file or WXA_APIV2_KEY)");
    let not_a_cert = scratch("not-a-cert.pem", &std::fs::read_to_string(&public).unwrap());
    init(
        "pay",
        &pay_id,
        &[&with_key[..], &["--platform-cert", &not_a_cert]].concat(),
        &[("WXA_APIV3_KEY", APIV3_KEY)],
    )
    .refused(2, "is not a certificate PEM");
    // The merchant certificate must be the private key's.
    let run = init(
        "pay",
        &pay_id,
        &[
            "--mchid",
            testkit::MCHID,
            "--merchant-cert",
            &root("tools/wechat-sim/src/platform_cert.pem"),
            "--private-key",
            &key_file,
            "--public-key",
            &public,
            "--public-key-id",
            PUBLIC_KEY_ID,
        ],
        &[("WXA_APIV3_KEY", APIV3_KEY)],
    );
    run.refused(
        2,
        &format!(
            "merchant_private_key is not the key of --merchant-cert {}",
            root("tools/wechat-sim/src/platform_cert.pem")
        ),
    );
    assert_eq!(current_version(&pay_id).await, None, "nothing written");
}

/// A merchant key pair made as testkit makes one: the PEM file's path and the public key (SPKI DER).
fn merchant_key() -> (String, Vec<u8>) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
    let private: Pkcs8V1Der = pair.as_der().expect("PKCS#8");
    let public: PublicKeyX509Der = pair.public_key().as_der().expect("SPKI");
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pem = wechat_sim::pay::to_pem("PRIVATE KEY", private.as_ref());
    (
        scratch(&format!("apiclient_key-{n}.pem"), &pem),
        public.as_ref().to_vec(),
    )
}

#[tokio::test]
async fn init_pay_parses_as_the_merchant_the_functions_read() {
    let id = testkit::unique("wxa-init-pay");
    let (key_file, public_der) = merchant_key();
    let key_pem = std::fs::read_to_string(&key_file).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    let apiv2_file = scratch("apiv2-key", &format!("{APIV2_KEY}\n"));
    let public = root("tools/wechat-sim/src/platform_public.pem");
    let cert = root("tools/wechat-sim/src/platform_cert.pem");
    let args = [
        "--mchid",
        testkit::MCHID,
        "--serial-no",
        testkit::MERCHANT_SERIAL,
        "--private-key",
        &key_file,
        "--apiv2-key-file",
        &apiv2_file,
        "--public-key",
        &public,
        "--public-key-id",
        PUBLIC_KEY_ID,
        "--platform-cert",
        &cert,
    ];
    let run = init("pay", &id, &args, &[("WXA_APIV3_KEY", APIV3_KEY)]);
    let created = run.written();
    run.shows_none_of(&[APIV3_KEY, APIV2_KEY, &key_line]);
    assert_eq!(created["action"], "created");

    let merchant = read_back::<Merchant>(&id).await;
    assert_eq!(merchant.mchid, testkit::MCHID);
    assert_eq!(merchant.serial_no.as_deref(), Some(testkit::MERCHANT_SERIAL));
    assert_eq!(expose(merchant.apiv3_key.as_ref()), Some(APIV3_KEY));
    assert_eq!(expose(merchant.apiv2_key.as_ref()), Some(APIV2_KEY));
    let signed = merchant.signing_key.as_ref().expect("the private key").sign(b"message");
    assert!(VerifyingKey::from_spki_der(public_der).verify(b"message", &signed));
    let ids: Vec<&str> = merchant.platform_keys().map(|(id, _)| id).collect();
    assert_eq!(ids, [PUBLIC_KEY_ID, CERT_SERIAL]);
    // The shape scripts/local_aws.py writes for the dev stack.
    let raw = secretsmanager()
        .await
        .get_secret_value()
        .secret_id(&id)
        .send()
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(raw.secret_string().unwrap()).unwrap();
    let mut fields: Vec<&str> = raw.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "apiv2_key",
            "apiv3_key",
            "mchid",
            "merchant_private_key",
            "merchant_serial_no",
            "platform_keys"
        ]
    );
    assert_eq!(raw["merchant_private_key"], key_pem.as_str());
    assert_eq!(
        raw["platform_keys"][0]["public_key"],
        std::fs::read_to_string(&public).unwrap()
    );
    assert_eq!(
        raw["platform_keys"][1]["certificate"],
        std::fs::read_to_string(&cert).unwrap()
    );

    // Renewal by ARN: a new API certificate and its key (the serial read from the certificate),
    // the APIv3 key from a file. The KMS key is the secret's own: said, not changed.
    let arn = created["arn"].as_str().unwrap();
    let apiv3_file = scratch("apiv3-key", &format!("{APIV3_KEY}\n"));
    let run = init(
        "pay",
        arn,
        &[
            "--mchid",
            testkit::MCHID,
            "--merchant-cert",
            &cert,
            "--private-key",
            &root("tools/wechat-sim/src/platform_key.pem"),
            "--apiv3-key-file",
            &apiv3_file,
            "--public-key",
            &public,
            "--public-key-id",
            PUBLIC_KEY_ID,
            "--kms-key-id",
            "alias/wxa",
        ],
        &[],
    );
    let renewed = run.written();
    assert_eq!(
        (&renewed["action"], &renewed["arn"]),
        (&"updated".into(), &created["arn"])
    );
    assert!(run.stderr.contains("keeps its KMS key"), "{}", run.stderr);
    assert!(run.stderr.contains("also had apiv2_key"), "{}", run.stderr);
    run.shows_none_of(&[APIV3_KEY, APIV2_KEY]);
    let merchant = read_back::<Merchant>(&id).await;
    assert_eq!(merchant.serial_no.as_deref(), Some(CERT_SERIAL));
    assert!(merchant.apiv2_key.is_none());

    // An APIv2 merchant: its key alone, on a new secret with its own KMS key.
    let v2_id = testkit::unique("wxa-init-pay-v2");
    let run = init(
        "pay",
        &v2_id,
        &["--mchid", testkit::MCHID, "--api", "v2", "--kms-key-id", "alias/wxa"],
        &[("WXA_APIV2_KEY", APIV2_KEY)],
    );
    assert_eq!(run.written()["action"], "created");
    let merchant = read_back::<Merchant>(&v2_id).await;
    assert_eq!(expose(merchant.apiv2_key.as_ref()), Some(APIV2_KEY));
    assert!(merchant.signing_key.is_none() && merchant.platform_keys.is_empty());
}

#[tokio::test]
async fn aws_refusing_the_write_exits_1_with_its_reason() {
    let env = [("WXA_APP_SECRET", "never-written-0123456789abcdef01")];
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wxa-nope-AbCdEf";
    let run = init("app", arn, &[], &env);
    run.refused(
        1,
        &format!("wxa secrets init app: cannot update secret {arn}: ResourceNotFoundException"),
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    run.shows_none_of(&[env[0].1]);
    let closed = format!("http://127.0.0.1:{}", testkit::free_port());
    let run = init_at(&closed, "app", "wxa-nowhere", &[], &env);
    run.refused(1, "wxa secrets init app: cannot create secret wxa-nowhere: ");
}

#[tokio::test]
async fn init_app_with_the_api_security_keys_checks_them_as_the_functions_read_them() {
    let id = testkit::unique("wxa-init-app-api");
    let secret = "api-app-secret-0123456789abcdef";
    let aes_key = "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY=";
    let key_file = scratch("api-aes-key", &format!("{aes_key}\n"));
    let private_key = root("tools/wechat-sim/src/platform_key.pem");
    let cert = format!("wx-sn-1={}", root("tools/wechat-sim/src/platform_cert.pem"));
    let env = [("WXA_APP_SECRET", secret)];
    let all = [
        "--api-aes-key-file",
        key_file.as_str(),
        "--api-aes-sn",
        "fa05fe1e5bcc79b81ad5ad4b58acf787",
        "--api-private-key",
        private_key.as_str(),
        "--api-private-key-sn",
        "97845f6ed842ea860df6fdf65941ff56",
        "--api-platform-cert",
        cert.as_str(),
    ];
    // One key short: refused, naming what is missing, nothing written.
    let run = init("app", &id, &all[2..], &env);
    run.refused(
        2,
        "the API security mode needs all of its keys: --api-aes-key-file (or WXA_API_AES_KEY) missing",
    );
    run.shows_none_of(&[secret]);
    assert_eq!(current_version(&id).await, None);
    // A symmetric key that is not AES256's 32 bytes: refused by the functions' own parser.
    let short = scratch("api-aes-key-short", "c2hvcnQ=");
    let mut args = all.to_vec();
    args[1] = &short;
    let run = init("app", &id, &args, &env);
    run.refused(2, "api_security.aes_key is 5 bytes");
    run.shows_none_of(&[secret, "c2hvcnQ="]);
    // A certificate without its SN.
    let mut args = all.to_vec();
    let bare = root("tools/wechat-sim/src/platform_cert.pem");
    args[9] = &bare;
    init("app", &id, &args, &env).refused(2, "SN=FILE");
    // All of them: written, and read back with the mode's keys parsed.
    let run = init("app", &id, &all, &env);
    run.written();
    run.shows_none_of(&[secret, aes_key, "PRIVATE KEY"]);
    let read = read_back::<AppSecrets>(&id).await;
    assert_eq!(read.app_secret.expose(), secret);
    assert!(read.api_security_keys.is_some());
    let doc = read.api_security.as_ref().unwrap();
    assert_eq!(doc.platform_certificates[0].sn, "wx-sn-1");
    assert_eq!(doc.aes_key.expose(), aes_key, "one trailing newline dropped");
}
