//! The `wxa` binary, run as an operator would.

use std::process::Command;

use serde_json::{Value, json};

const DOC_DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

fn wxa(args: &[&str]) -> (bool, Value, String) {
    wxa_env(args, &[])
}

/// The secrets' environment variables; cleared for every run so that an operator's exported key
/// cannot meet the one a test passes.
const SECRET_VARS: [&str; 3] = ["WXA_SESSION_KEY", "WXA_APIV2_KEY", "WXA_APIV3_KEY"];

/// Where an operator's AWS set-up would send or sign `wxa merchant`'s calls; cleared likewise.
const AWS_VARS: [&str; 7] = [
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "WXA_MERCHANT_FUNCTION",
];

fn wxa_env(args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let (status, json, stderr) = wxa_status(args, env);
    (status == Some(0), json, stderr)
}

/// The exit status, stdout as JSON (or Null) and stderr.
fn wxa_status(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxa"));
    for name in SECRET_VARS.iter().chain(&AWS_VARS) {
        command.env_remove(name);
    }
    let output = command.args(args).envs(env.iter().copied()).output().expect("wxa runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        output.status.code(),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn root(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// A file in this run's scratch folder.
fn scratch(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("wxa-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn decrypt_the_published_sample_and_refuse_stale_or_foreign_data() {
    let base = [
        "decrypt",
        "--session-key",
        "tiihtNczf5v6AKRyjwEUhQ==",
        "--iv",
        "r7BXXKkLb8qrSNn05n0qiA==",
        "--data",
        DOC_DATA,
    ];
    let (ok, json, _) = wxa(&[&base[..], &["--appid", "wx4f4bc4dec97d474b", "--max-age-secs", "0"]].concat());
    assert!(ok);
    assert_eq!(json["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
    let (ok, _, err) = wxa(&[&base[..], &["--appid", "wx4f4bc4dec97d474b", "--max-age-secs", "60"]].concat());
    assert!(!ok && err.contains("old"), "{err}");
    let (ok, _, err) = wxa(&[&base[..], &["--appid", "wx0000000000000000"]].concat());
    assert!(!ok && err.contains("another app"), "{err}");
}

#[test]
fn verify_signature() {
    let args = [
        "verify-signature",
        "--session-key",
        "tiihtNczf5v6AKRyjwEUhQ==",
        "--raw-data",
        r#"{"nickName":"Band"}"#,
    ];
    let (ok, json, _) = wxa(&[&args[..], &["--signature", "54b71917aab21b53e850dec1b03f73b0bbeb6abe"]].concat());
    assert!(ok);
    assert_eq!(json["valid"], true);
    let (ok, _, err) = wxa(&[&args[..], &["--signature", "0000"]].concat());
    assert!(!ok && err.contains("sha1"), "{err}");
}

#[test]
fn pay_sign_v2_matches_an_independent_md5() {
    // python: hashlib.md5("appId=…&nonceStr=n123&package=prepay_id=…&signType=MD5&timeStamp=1795536000&key=…")
    let (ok, json, err) = wxa(&[&PAY_SIGN_V2[..], &["--key", APIV2_KEY]].concat());
    assert!(ok, "{err}");
    assert_eq!(json["paySign"], EXPECTED_MD5);
    assert_eq!(json["package"], "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(json["timeStamp"], "1795536000");
}

const EXPECTED_MD5: &str = "47BCC9BF286964B0D904ABFE4D61A5BB";

/// pay-sign v2 for EXPECTED_MD5, but for the key.
const PAY_SIGN_V2: [&str; 12] = [
    "pay-sign",
    "v2",
    "--appid",
    "wx4f4bc4dec97d474b",
    "--prepay-id",
    "wx201410272009395522657a690389285100",
    "--sign-type",
    "MD5",
    "--timestamp",
    "1795536000",
    "--nonce",
    "n123",
];
const APIV2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

#[test]
fn pay_sign_v3_and_verify_notify_with_the_simulator_keys() {
    let key = root("tools/wechat-sim/src/platform_key.pem");
    let (ok, json, err) = wxa(&[
        "pay-sign",
        "v3",
        "--appid",
        "wx4f4bc4dec97d474b",
        "--prepay-id",
        "wx1",
        "--private-key",
        &key,
    ]);
    assert!(ok, "{err}");
    assert_eq!(json["signType"], "RSA");
    assert!(json["paySign"].as_str().unwrap().len() > 300);

    // The pay-notify event, signed by the simulator's platform key at 1795536000.
    let event: Value = serde_json::from_str(&std::fs::read_to_string(root("events/pay-notify.json")).unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("wxa-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let headers = dir.join("headers.json");
    let body = dir.join("body.json");
    std::fs::write(&headers, event["headers"].to_string()).unwrap();
    std::fs::write(&body, event["body"].as_str().unwrap()).unwrap();
    let cert = root("tools/wechat-sim/src/platform_cert.pem");
    let common = [
        "verify-notify",
        "--apiv3-key",
        "test-apiv3-key-0123456789abcdefg",
        "--headers",
        headers.to_str().unwrap(),
        "--body",
        body.to_str().unwrap(),
    ];
    // The event names the key by PUB_KEY_ID; with the certificate, the serial does not match.
    let (ok, _, err) = wxa(&[&common[..], &["--platform-cert", &cert, "--now", "1795536000"]].concat());
    assert!(!ok && err.contains("no platform key"), "{err}");
    let public = dir.join("public.pem");
    std::fs::write(&public, wechat_public_key()).unwrap();
    let by_id = [
        "--public-key",
        public.to_str().unwrap(),
        "--public-key-id",
        "PUB_KEY_ID_0114232134912410000000000000",
    ];
    let (ok, json, err) = wxa(&[&common[..], &by_id[..], &["--now", "1795536000"]].concat());
    assert!(ok, "{err}");
    assert_eq!(json["out_trade_no"], "T20261125000001");
    assert_eq!(json["amount"]["total"], 1);
    let (ok, _, err) = wxa(&[&common[..], &by_id[..]].concat());
    assert!(!ok && err.contains("away from now"), "{err}");

    // The APIv3 key from the environment, then from a file, instead of argv.
    let without_key = [&common[..1], &common[3..], &by_id[..], &["--now", "1795536000"]].concat();
    let (ok, json, err) = wxa_env(&without_key, &[("WXA_APIV3_KEY", "test-apiv3-key-0123456789abcdefg")]);
    assert!(ok, "{err}");
    assert_eq!(json["out_trade_no"], "T20261125000001");
    let key_file = scratch("apiv3-key", "test-apiv3-key-0123456789abcdefg\n");
    let (ok, json, err) = wxa(&[&without_key[..], &["--apiv3-key-file", &key_file]].concat());
    assert!(ok, "{err}");
    assert_eq!(json["out_trade_no"], "T20261125000001");
    let (ok, _, err) = wxa_env(&without_key, &[("WXA_APIV3_KEY", "test-apiv3-key-0123456789abcdefh")]);
    assert!(!ok && err.contains("does not decrypt with this APIv3 key"), "{err}");
}

/// The simulator's platform public key as `BEGIN PUBLIC KEY` (`openssl x509 -pubkey` of its certificate).
fn wechat_public_key() -> String {
    std::fs::read_to_string(root("tools/wechat-sim/src/platform_public.pem")).unwrap()
}

#[test]
fn usage_errors_are_explained() {
    let (ok, _, err) = wxa(&["decrypt", "--appid", "wx1"]);
    assert!(!ok && err.contains("--session-key is required"), "{err}");
    let (ok, _, err) = wxa(&["decrypt", "--bogus", "1"]);
    assert!(!ok && err.contains("unknown option --bogus"), "{err}");
    let (ok, _, err) = wxa(&["frobnicate"]);
    assert!(!ok && err.contains("unknown command"), "{err}");
    // A usage error exits 2, as clap's do: 1 is for a command that ran and failed.
    assert_eq!(wxa_status(&["decrypt", "--bogus", "1"], &[]).0, Some(2));
    assert_eq!(wxa_status(&["merchant"], &[]).0, Some(2));
    let output = Command::new(env!("CARGO_BIN_EXE_wxa"))
        .args(["verify-notify", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--apiv3-key"));
}

const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";

#[test]
fn the_session_key_from_a_file_or_the_environment() {
    let decrypt = [
        "decrypt",
        "--appid",
        "wx4f4bc4dec97d474b",
        "--iv",
        "r7BXXKkLb8qrSNn05n0qiA==",
        "--data",
        DOC_DATA,
    ];
    // As `echo KEY > file` writes it: the newline is not part of the key.
    let file = scratch("session-key", &format!("{SESSION_KEY}\n"));
    let (ok, json, err) = wxa(&[&decrypt[..], &["--session-key-file", &file]].concat());
    assert!(ok, "{err}");
    assert_eq!(json["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
    let (ok, json, err) = wxa_env(&decrypt, &[("WXA_SESSION_KEY", SESSION_KEY)]);
    assert!(ok, "{err}");
    assert_eq!(json["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");

    let verify = [
        "verify-signature",
        "--raw-data",
        r#"{"nickName":"Band"}"#,
        "--signature",
        "54b71917aab21b53e850dec1b03f73b0bbeb6abe",
    ];
    let (ok, json, err) = wxa_env(&verify, &[("WXA_SESSION_KEY", SESSION_KEY)]);
    assert!(ok, "{err}");
    assert_eq!(json["valid"], true);
    // The word after an option is its value, even when it starts with `-`.
    let (ok, _, err) = wxa_env(
        &["verify-signature", "--raw-data", "-x", "--signature", "-0"],
        &[("WXA_SESSION_KEY", SESSION_KEY)],
    );
    assert!(!ok && err.contains("sha1"), "{err}");
}

#[test]
fn the_apiv2_key_from_a_file_or_the_environment() {
    // A file saved on Windows ends in CRLF.
    let file = scratch("apiv2-key", &format!("{APIV2_KEY}\r\n"));
    let (ok, json, err) = wxa(&[&PAY_SIGN_V2[..], &["--key-file", &file]].concat());
    assert!(ok, "{err}");
    assert_eq!(json["paySign"], EXPECTED_MD5);
    let (ok, json, err) = wxa_env(&PAY_SIGN_V2, &[("WXA_APIV2_KEY", APIV2_KEY)]);
    assert!(ok, "{err}");
    assert_eq!(json["paySign"], EXPECTED_MD5);

    let (ok, json, err) = wxa(&PAY_SIGN_V2);
    assert!(!ok && json.is_null());
    assert!(
        err.contains("--key is required (or --key-file PATH, or WXA_APIV2_KEY in the environment)"),
        "{err}"
    );
}

#[test]
fn a_secret_from_two_sources_or_an_empty_one_is_refused() {
    let file = scratch("session-key-twice", SESSION_KEY);
    let verify = [
        "verify-signature",
        "--raw-data",
        "{}",
        "--signature",
        "0000",
        "--session-key",
        SESSION_KEY,
    ];
    let (ok, _, err) = wxa(&[&verify[..], &["--session-key-file", &file]].concat());
    assert!(!ok, "{err}");
    assert!(
        err.contains("the session_key is given more than once (--session-key, --session-key-file): give exactly one"),
        "{err}"
    );
    let (ok, _, err) = wxa_env(&verify, &[("WXA_SESSION_KEY", SESSION_KEY)]);
    assert!(
        !ok && err.contains("given more than once (--session-key, WXA_SESSION_KEY)"),
        "{err}"
    );

    // Refused before the other files are read.
    let notify = [
        "verify-notify",
        "--headers",
        "/nonexistent/headers.json",
        "--body",
        "/nonexistent/body.json",
        "--platform-cert",
        "/nonexistent/cert.pem",
    ];
    let key_file = scratch("apiv3-key-twice", "k");
    let (ok, _, err) = wxa_env(
        &[&notify[..], &["--apiv3-key-file", &key_file]].concat(),
        &[("WXA_APIV3_KEY", "k")],
    );
    assert!(
        !ok && err.contains("the APIv3 key is given more than once (--apiv3-key-file, WXA_APIV3_KEY)"),
        "{err}"
    );

    let empty = scratch("session-key-empty", "\n");
    let (ok, _, err) = wxa(&[&verify[..5], &["--session-key-file", &empty]].concat());
    assert!(
        !ok && err.contains("the session_key from ") && err.contains("is empty"),
        "{err}"
    );
    let (ok, _, err) = wxa(&[&verify[..5], &["--session-key-file", "/nonexistent/key"]].concat());
    assert!(!ok && err.contains("cannot read /nonexistent/key"), "{err}");
    let (ok, _, err) = wxa(&verify[..5]);
    assert_eq!(
        err.lines().next(),
        Some(
            "wxa verify-signature: --session-key is required (or --session-key-file PATH, or WXA_SESSION_KEY in the environment)"
        ),
    );
    assert!(!ok);
}

#[test]
fn help_names_every_source_of_a_secret() {
    let output = Command::new(env!("CARGO_BIN_EXE_wxa"))
        .args(["decrypt", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for source in ["--session-key <K>", "--session-key-file <PATH>", "WXA_SESSION_KEY"] {
        assert!(help.contains(source), "{source} in {help}");
    }
}

/// `wxa merchant ARGS`, with `--endpoint-url` when given, dummy AWS credentials and no AWS
/// config or credentials file of the operator's.
fn merchant(endpoint: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value, String) {
    let no_file = std::env::temp_dir().join("wxa-cli-no-aws-file");
    let no_file = no_file.to_str().unwrap();
    let mut all_env = vec![
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", no_file),
        ("AWS_SHARED_CREDENTIALS_FILE", no_file),
    ];
    all_env.extend_from_slice(env);
    let mut all_args = vec!["merchant"];
    all_args.extend_from_slice(args);
    if let Some(url) = endpoint {
        all_args.extend(["--endpoint-url", url]);
    }
    wxa_status(&all_args, &all_env)
}

/// `code: message (request_id ...)`, one line.
fn refused(answer: &(Option<i32>, Value, String), code: &str) {
    let (status, json, stderr) = answer;
    assert_eq!(*status, Some(1), "{stderr}");
    assert!(json.is_null(), "{json}");
    assert!(stderr.starts_with(&format!("{code}: ")), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(')') && stderr.contains(" (request_id "),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

// Multi-threaded: the stand-in serves on the runtime's workers while the test thread waits on wxa.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_commands_invoke_the_function() {
    let stack = testkit::Stack::start().await;
    stack.enable_pay().await;
    let lambda = testkit::invoke::InvokeApi::start(&stack).await;
    let run = |args: &[&str]| merchant(Some(&lambda.url), args, &[]);
    let order = [
        "--out-trade-no",
        "T20261126000001",
        "--openid",
        "o_alice",
        "--description",
        "A cup of tea",
    ];

    let (status, created, stderr) = run(&[&["create-order"], &order[..], &["--amount-total", "100"]].concat());
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(
        (&created["out_trade_no"], &created["status"], &created["amount_total"]),
        (&json!("T20261126000001"), &json!("UNPAID"), &json!(100))
    );
    // The same command again is the same order; other content under its number is refused.
    let (status, again, _) = run(&[&["create-order"], &order[..], &["--amount-total", "100"]].concat());
    assert_eq!((status, &again), (Some(0), &created));
    refused(
        &run(&[&["create-order"], &order[..], &["--amount-total", "200"]].concat()),
        "order_conflict",
    );
    let (status, got, stderr) = run(&["get-order", "--out-trade-no", "T20261126000001"]);
    assert_eq!((status, &got["status"]), (Some(0), &json!("UNPAID")), "{stderr}");

    // Every op's fields reach the function as it reads them (it refuses unknown ones as
    // invalid_command): an unpaid order is the op's own refusal.
    let unpaid = ["--out-trade-no", "T20261126000001"];
    refused(
        &run(&[
            &["refund"],
            &unpaid[..],
            &["--out-refund-no", "R1", "--amount", "1", "--reason", "r"],
        ]
        .concat()),
        "order_not_refundable",
    );
    let list = scratch(
        "shipping-list.json",
        r#"[{"tracking_no": "SF1", "express_company": "SF", "item_desc": "A cup of tea"}]"#,
    );
    let list = format!("@{list}");
    let shipping = [
        "--logistics-type",
        "1",
        "--delivery-mode",
        "1",
        "--shipping-list",
        &list,
    ];
    refused(
        &run(&[
            &["upload-shipping"],
            &unpaid[..],
            &shipping[..],
            &["--is-all-delivered"],
        ]
        .concat()),
        "order_not_paid",
    );
    refused(&run(&[&["get-shipping-state"], &unpaid[..]].concat()), "order_not_paid");
    refused(
        &run(&[
            &["notify-confirm-receive"],
            &unpaid[..],
            &["--received-time", "1795536000"],
        ]
        .concat()),
        "order_not_paid",
    );
    refused(&run(&["get-refund", "--out-refund-no", "R1"]), "refund_not_found");
    refused(&run(&["raw", r#"{"op": "drop_table"}"#]), "unknown_op");
    let (status, raw, stderr) = run(&["raw", r#"{"op": "get_order", "out_trade_no": "T20261126000001"}"#]);
    assert_eq!((status, &raw), (Some(0), &got), "{stderr}");
    let (status, closed, stderr) = run(&[&["close-order"], &unpaid[..]].concat());
    assert_eq!((status, &closed["status"]), (Some(0), &json!("CLOSED")), "{stderr}");

    // A paid order: refunded, shipped, its receipt confirmed.
    stack.paid_order("T20261126000002", "o_bob", 100, false).await;
    let paid = ["--out-trade-no", "T20261126000002"];
    let (status, refund, stderr) =
        run(&[&["refund"], &paid[..], &["--out-refund-no", "R2", "--amount", "30"]].concat());
    assert_eq!(
        (status, &refund["status"], &refund["amount"]),
        (Some(0), &json!("PROCESSING"), &json!(30)),
        "{stderr}"
    );
    let (status, refund, stderr) = run(&["get-refund", "--out-refund-no", "R2"]);
    assert_eq!((status, &refund["out_refund_no"]), (Some(0), &json!("R2")), "{stderr}");
    // WeChat knows a payment about a minute after it.
    stack.sim_post("/__sim/time", json!({"advance_secs": 61})).await;
    let (status, shipped, stderr) = run(&[&["upload-shipping"], &paid[..], &shipping[..]].concat());
    assert_eq!(
        (status, &shipped["shipping_state"]),
        (Some(0), &json!("SHIPPED")),
        "{stderr}"
    );
    let (status, state, stderr) = run(&[&["get-shipping-state"], &paid[..]].concat());
    assert_eq!((status, &state["order_state"]), (Some(0), &json!(2)), "{stderr}");
    // Received after it was shipped, by the simulator's advanced clock.
    let received = (wxa_shared::clock::now_unix() + 120).to_string();
    let confirm = [&["notify-confirm-receive"], &paid[..], &["--received-time", &received]].concat();
    let (status, notified, stderr) = run(&confirm);
    assert_eq!((status, &notified["notified"]), (Some(0), &json!(true)), "{stderr}");

    // Usage errors never reach the function.
    let (status, _, stderr) = run(&["create-order", "--out-trade-no", "T1", "--bogus"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("unknown option --bogus"), "{stderr}");
    let (status, _, stderr) = run(&[
        &["upload-shipping"],
        &paid[..],
        &shipping[..4],
        &["--shipping-list", "{}"],
    ]
    .concat());
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--shipping-list must be a JSON array"), "{stderr}");
    let (status, _, stderr) = run(&["raw", "{not json"]);
    assert!(status == Some(2) && stderr.contains("is not JSON"), "{stderr}");

    // Another function by --function-name: the scheduled reconciler gets the event as JSON too;
    // an HTTP function fails the invocation on a command, as its runtime would.
    let (status, reconciled, stderr) = run(&["raw", "{}", "--function-name", "reconciler"]);
    assert!(status == Some(0) && reconciled.is_object(), "{stderr}");
    let (status, _, stderr) = run(&["--function-name", "login", "raw", r#"{"op": "get_order"}"#]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.starts_with("Runtime.UnmarshalError: "), "{stderr}");

    // The endpoint from AWS_ENDPOINT_URL, the function's name from WXA_MERCHANT_FUNCTION.
    let env_endpoint = [("AWS_ENDPOINT_URL", lambda.url.as_str())];
    let (status, by_env, stderr) = merchant(None, &[&["get-order"], &paid[..]].concat(), &env_endpoint);
    assert_eq!(
        (status, &by_env["out_trade_no"]),
        (Some(0), &json!("T20261126000002")),
        "{stderr}"
    );
    // No answer at all: exit 2, with the reason on one line.
    let nope = [("WXA_MERCHANT_FUNCTION", "nope")];
    let (status, _, stderr) = merchant(Some(&lambda.url), &[&["get-order"], &paid[..]].concat(), &nope);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("wxa merchant get-order: cannot invoke nope: ") && stderr.contains("Function not found"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let closed_port = format!("http://127.0.0.1:{}", testkit::free_port());
    let (status, _, stderr) = merchant(Some(&closed_port), &[&["get-order"], &paid[..]].concat(), &[]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("wxa merchant get-order: cannot invoke merchant: "),
        "{stderr}"
    );
}
