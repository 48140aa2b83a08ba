//! The `reconciler` Lambda function: run on a schedule; the shared crate builds its state once per
//! container ([`wxa_shared::runtime::run`]) and runs [`wxa_shared::handlers::reconciler`].

fn main() -> Result<(), wxa_shared::runtime::Error> {
    wxa_shared::runtime::run(&wxa_shared::handlers::reconciler::FUNCTION)
}
