//! `GET /__sim/pay/ledger`: WeChat Pay's own books, for a test to compare with the merchant's:
//! every order, refund and merchant transfer with its state as of the simulator's clock.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Shared;
use crate::pay::trade_state;

pub async fn ledger(State(state): State<Shared>) -> Response {
    let mut sim = state.lock().unwrap();
    // What is due by the clock has happened, as WeChat Pay would have done it by now (with its
    // notifications sent, or held).
    crate::refund::settle_due_in_background(&mut sim);
    crate::transfer::expire_due_in_background(&mut sim);
    let orders: Vec<_> = sim
        .pay
        .orders()
        .into_iter()
        .map(|o| {
            json!({
                "out_trade_no": o.out_trade_no, "trade_state": trade_state(&sim, o).0,
                "total": o.total, "transaction_id": o.transaction_id,
            })
        })
        .collect();
    let (refunds, transfers) = (sim.refunds.ledger(), sim.transfers.ledger());
    Json(json!({ "orders": orders, "refunds": refunds, "transfers": transfers })).into_response()
}
