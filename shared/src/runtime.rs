//! The Lambda entry point every function's `main` calls.

pub use lambda_http::Error;
use lambda_http::{Request, service_fn};

use crate::AppState;
use crate::function::{Entry, Function};
use lambda_http::LambdaEvent;

/// What each function's `main` calls. Lambda hands a container one event at a time, so a
/// single-threaded runtime serves it: no worker threads to spawn (nor cgroup limits to read to
/// size them) at every cold start.
pub fn run(function: &'static Function) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(function))
}

/// Sets up logging (JSON when the function's log format is JSON), builds the [`AppState`] of the
/// function's parts once for the container, and serves its routes until the runtime stops the
/// process.
pub async fn serve(function: &'static Function) -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    // CloudWatch Logs extracts the metrics (EMF) from the function's stdout.
    crate::metrics::to_stdout();
    let state: &'static AppState = Box::leak(Box::new(AppState::from_env(function.parts).await?));
    if state.config.connect_at_init {
        crate::at_init::prepare(state, function.at_init, crate::at_init::BUDGET).await;
    }
    match function.entry {
        Entry::Routes(_) => {
            lambda_http::run(service_fn(move |req: Request| async move {
                Ok::<_, Error>(function.handle(state, req).await)
            }))
            .await
        }
        // Invoked with a JSON command, or by a schedule: plain JSON events, no HTTP.
        Entry::Ops(_) | Entry::Scheduled(_) => {
            lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
                Ok::<_, Error>(function.invoke(state, event.payload, &event.context).await)
            }))
            .await
        }
    }
}
