//! The `qrcode` Lambda function: state is built once per container by
//! [`wxa_shared::runtime::serve`]; each request goes to [`wxa_shared::handlers::qrcode`].

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    wxa_shared::runtime::serve(wxa_shared::handlers::qrcode::handle).await
}
