//! openapi.yaml against what the server does: schemathesis (`st run`, pinned in
//! scripts/requirements.txt) generates requests from the spec and sends them to the real gateway,
//! with template.yaml's routes, in front of the real handlers (testkit's stand-in for cargo-lambda's
//! Invoke endpoint) on moto server and the WeChat simulator. Every built-in check runs, and the
//! hooks' (scripts/schemathesis_hooks.py): a request valid by the spec is never refused for its
//! form. Settings (fixed seed, bounded cases) are in scripts/schemathesis.toml.

use std::process::Command;
use std::time::Duration;

use testkit::invoke::InvokeApi;
use testkit::{Stack, venv_bin, workspace_root};
use tokio::net::TcpListener;
use wxa_gateway::routes::Routes;
use wxa_gateway::{Gateway, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_valid_by_openapi_yaml_are_answered_as_it_says() {
    let stack = Stack::start().await;
    stack.enable_pay().await;
    let lambda = InvokeApi::start(&stack).await;
    let routes = Routes::from_template(&testkit::template()).expect("template.yaml's routes");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let api = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(serve(
        listener,
        Gateway {
            routes,
            lambda_url: lambda.url.clone(),
            invoke_timeout: Duration::from_secs(60),
        },
    ));

    let root = workspace_root();
    // Run where it can leave nothing behind in the work tree.
    let scratch = std::env::temp_dir().join(testkit::unique("schemathesis"));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let mut st = Command::new(venv_bin("st"));
    st.current_dir(&scratch)
        .env("SCHEMATHESIS_HOOKS", root.join("scripts/schemathesis_hooks.py"))
        .env("WXA_TOKEN_URL", format!("{}/__test/token", lambda.url))
        .arg("--config-file")
        .arg(root.join("scripts/schemathesis.toml"))
        .arg("run")
        .arg(root.join("openapi.yaml"))
        .args(["--url", &api])
        // Every built-in check, and the hooks' own.
        .args(["--checks", "all"])
        // A deeper or other run by hand: WXA_ST_ARGS="--seed 7 --max-examples 500".
        .args(std::env::var("WXA_ST_ARGS").unwrap_or_default().split_whitespace());
    println!("{st:?}");
    let output = tokio::task::spawn_blocking(move || st.output())
        .await
        .expect("st ran to its end")
        .expect("st starts");
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "st run failed: {}", output.status);
}
