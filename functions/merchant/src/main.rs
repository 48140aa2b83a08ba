//! The `merchant` Lambda function: invoked by the merchant's back office (Lambda Invoke, IAM) with
//! a JSON command; the shared crate builds its state once per container ([`wxa_shared::runtime::run`])
//! and runs each command of [`wxa_shared::handlers::merchant`].

fn main() -> Result<(), wxa_shared::runtime::Error> {
    wxa_shared::runtime::run(&wxa_shared::handlers::merchant::FUNCTION)
}
