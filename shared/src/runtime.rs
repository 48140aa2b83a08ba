//! The Lambda entry point every function's `main` calls.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

use crate::AppState;

/// Sets up logging (JSON when the function's log format is JSON), builds the [`AppState`] once
/// for the container, and serves `handler` until the runtime stops the process.
pub async fn serve<F, Fut>(handler: F) -> Result<(), Error>
where
    F: Fn(&'static AppState, Request) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::tracing::init_default_subscriber();
    let state: &'static AppState = Box::leak(Box::new(AppState::from_env().await?));
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(handler(state, req).await)
    }))
    .await
}
