//! The `pay-notify` Lambda function: state is built once per container by
//! [`wxa_shared::runtime::serve`]; each request goes to [`wxa_shared::handlers::pay_notify`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    wxa_shared::runtime::serve(wxa_shared::handlers::pay_notify::handle).await
}
