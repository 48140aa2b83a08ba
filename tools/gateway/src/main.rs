//! `wxa-gateway`: `template.yaml`'s HTTP API on 127.0.0.1, in front of `cargo lambda watch`
//! (`make dev` runs both). See the crate's documentation (src/lib.rs).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use wxa_gateway::routes::Routes;
use wxa_gateway::{Gateway, serve};

/// The HTTP API of template.yaml on this machine: each request on a route is invoked as the
/// API Gateway payload 2.0 event of that route, through `cargo lambda watch`'s Lambda Invoke API.
#[derive(Parser)]
#[command(name = "wxa-gateway")]
struct Args {
    /// The SAM template as JSON (`scripts/cfn_json.py template.yaml`): its HttpApi events are the routes.
    #[arg(long, value_name = "PATH")]
    template_json: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Port to listen on (`make dev`: API_PORT).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Where `cargo lambda watch` serves the Lambda Invoke API (`make dev`: LAMBDA_PORT).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9001")]
    lambda_url: String,
    /// Seconds an invocation may take before the answer is 504 (cargo-lambda compiles a changed
    /// function on its first invocation, hence the room).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    invoke_timeout: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wxa-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let in_template = |e: &dyn std::fmt::Display| format!("{}: {e}", args.template_json.display());
    let template = std::fs::read(&args.template_json).map_err(|e| in_template(&e))?;
    let template = serde_json::from_slice(&template).map_err(|e| in_template(&e))?;
    let routes = Routes::from_template(&template).map_err(|e| in_template(&e))?;
    let address = SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    println!(
        "wxa-gateway on http://{address}, invoking through {}; {} routes:",
        args.lambda_url,
        routes.len()
    );
    for route in routes.iter() {
        println!("  {:<22} -> {}", route.key(), route.function);
    }
    let gateway = Gateway {
        routes,
        lambda_url: args.lambda_url.trim_end_matches('/').to_owned(),
        invoke_timeout: Duration::from_secs(args.invoke_timeout),
    };
    serve(listener, gateway).await.map_err(|e| e.to_string())
}
