//! The `wechat-push` Lambda function: the shared crate builds its state once per container
//! ([`wxa_shared::runtime::run`]) and routes each request to [`wxa_shared::handlers::wechat_push`].

fn main() -> Result<(), wxa_shared::runtime::Error> {
    wxa_shared::runtime::run(&wxa_shared::handlers::wechat_push::FUNCTION)
}
