//! The `user-info` Lambda function: state is built once per container by
//! [`wxa_shared::runtime::run`]; each request goes to [`wxa_shared::handlers::user_info`].

fn main() -> Result<(), lambda_http::Error> {
    wxa_shared::runtime::run(wxa_shared::handlers::user_info::handle)
}
