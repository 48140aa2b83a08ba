//! The Lambda entry point every function's `main` calls.

use lambda_http::{Body, Error, Request, Response, service_fn};

use crate::AppState;

/// What each function's `main` calls. Lambda hands a container one event at a time, so a
/// single-threaded runtime serves it: no worker threads to spawn (nor cgroup limits to read to
/// size them) at every cold start.
pub fn run<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, Request) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(handler))
}

/// Sets up logging (JSON when the function's log format is JSON), builds the [`AppState`] once
/// for the container, and serves `handler` until the runtime stops the process.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, Request) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::tracing::init_default_subscriber();
    let state: &'static AppState = Box::leak(Box::new(AppState::from_env().await?));
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handler(state, req).await)
    }))
    .await
}
