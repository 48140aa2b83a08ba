//! The attacker with a valid session. Knowing the session key is not needed for the classic CBC
//! padding-oracle attack (CBC-R): with their own token, a user sends one ciphertext block under
//! 256 ivs that differ in their last byte; if the server's answer (status, code, message, or the
//! remote calls it makes) tells "bad padding" from "padded garbage", about 2,000 requests per
//! block let them build open data of any content under their own key — any step count, any
//! openGId, a phone number. Here the test plays that attacker with a session key it chose, so it
//! knows which ivs pad correctly, and checks that no answer tells, and that the failure budget
//! ends the session after a handful of probes.

use aes::cipher::{BlockDecrypt, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lambda_http::Request;
use serde_json::{Value, json};
use testkit::{Stack, authed_event, read};
use wxa_shared::handlers::{session, werun};
use wxa_shared::store::sessions::FAILURE_BUDGET;

/// The attacker's own session key (the simulator logs them in with it).
const KEY: [u8; 16] = *b"mallory-own-key!";

/// One probe of the attack's first step: the block `block` under an iv ending in `last`.
fn probe_body(iv: &[u8; 16], last: u8, block: &[u8; 16]) -> Value {
    let mut iv = *iv;
    iv[15] = last;
    json!({"encryptedData": STANDARD.encode(block), "iv": STANDARD.encode(iv)})
}

/// The iv last bytes under which `block` decrypts to valid PKCS#7 (the attacker's goal to find).
fn padding_ivs(iv: &[u8; 16], block: &[u8; 16]) -> Vec<u8> {
    let cipher = aes::Aes128::new(&KEY.into());
    let mut plain = (*block).into();
    cipher.decrypt_block(&mut plain);
    (0..=255u8)
        .filter(|&last| {
            let mut p: [u8; 16] = plain.into();
            for (b, i) in p.iter_mut().zip(iv.iter().take(15)) {
                *b ^= i;
            }
            p[15] ^= last;
            let pad = usize::from(p[15]);
            (1..=16).contains(&pad) && p[16 - pad..].iter().all(|&b| usize::from(b) == pad)
        })
        .collect()
}

/// What a caller observes of one answer: status, code, message, and the remote calls made.
#[derive(Debug, PartialEq)]
struct Observed {
    status: u16,
    code: Value,
    message: Value,
    aws_calls: Vec<String>,
    checksession_calls: u64,
}

async fn observe(stack: &Stack, answer: impl Future<Output = (u16, Value)>) -> Observed {
    stack.aws_calls.take();
    let before = stack.sim_calls("checksession").await;
    let (status, body) = answer.await;
    Observed {
        status,
        code: body["error"]["code"].clone(),
        message: body["error"]["message"].clone(),
        aws_calls: stack.aws_calls.take(),
        checksession_calls: stack.sim_calls("checksession").await - before,
    }
}

#[tokio::test]
async fn the_first_step_of_a_padding_oracle_attack_learns_nothing_and_ends_the_session() {
    let stack = Stack::start().await;
    let token = stack
        .log_in_as(json!({"openid": "o_mallory", "session_key": STANDARD.encode(KEY)}))
        .await;
    // The access token is warm, as in a busy container: no probe pays for fetching it.
    let (status, _) = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", &token, None))
            .await,
    );
    assert_eq!(status, 200);

    let iv = *b"0123456789abcdef";
    let block = *b"any block at all";
    let padded = padding_ivs(&iv, &block);
    assert!(
        !padded.is_empty(),
        "some iv pads correctly: that is what the attack looks for"
    );
    let unpadded: Vec<u8> = (0..=255u8).filter(|b| !padded.contains(b)).collect();
    // The probes that would tell the attacker most come first: garbage that pads correctly, then
    // garbage that does not, alternating, within the failure budget.
    let mut order: Vec<u8> = Vec::new();
    for i in 0..256 {
        if let Some(&b) = padded.get(i) {
            order.push(b);
        }
        if let Some(&b) = unpadded.get(i) {
            order.push(b);
        }
    }
    assert_eq!(order.len(), 256);

    let call = |request: Request| async { read(&werun::FUNCTION.handle(&stack.state, request).await) };
    let mut observed = Vec::new();
    for &last in &order {
        let request = authed_event("werun.json", &token, Some(&probe_body(&iv, last, &block)));
        observed.push(observe(&stack, call(request)).await);
    }

    let budget = FAILURE_BUDGET as usize;
    let within: &[Observed] = &observed[..budget];
    for (i, o) in within.iter().enumerate() {
        assert_eq!(
            (o.status, o.code.as_str()),
            (400, Some("invalid_open_data")),
            "probe {i}: {o:?}"
        );
        assert_eq!(o.message, within[0].message, "probe {i}: one message for every failure");
        assert_eq!(o.checksession_calls, 1, "probe {i}: the same WeChat calls");
        let expected: &[&str] = if i + 1 < budget {
            &["DynamoDB.GetItem", "DynamoDB.UpdateItem"]
        } else {
            &["DynamoDB.GetItem", "DynamoDB.UpdateItem", "DynamoDB.DeleteItem"]
        };
        assert_eq!(o.aws_calls, expected, "probe {i}: the same AWS calls");
    }
    assert!(
        padded.contains(&order[0]) && unpadded.contains(&order[1]),
        "a correctly padded probe and a badly padded one were both answered within the budget"
    );
    // The budget is spent: the session is gone, and every later probe hears only that.
    for (i, o) in observed[budget..].iter().enumerate() {
        assert_eq!(
            (o.status, o.code.as_str()),
            (401, Some("invalid_token")),
            "probe {}",
            budget + i
        );
        assert_eq!(o.aws_calls, ["DynamoDB.GetItem"]);
        assert_eq!(o.checksession_calls, 0);
    }
    assert!(stack.session_items().await.is_empty(), "the session was deleted");
}

#[tokio::test]
async fn all_256_probes_get_one_answer_with_the_same_remote_calls() {
    // Without the budget in the way (the session object in hand, past its deletion), every iv
    // of the attack's first step — the ones that pad and the ones that do not — is answered
    // alike.
    let stack = Stack::start().await;
    let token = stack
        .log_in_as(json!({"openid": "o_mallory", "session_key": STANDARD.encode(KEY)}))
        .await;
    let state = stack.state_for(&werun::FUNCTION);
    let session = state
        .authenticate(&authed_event("werun.json", &token, None))
        .await
        .unwrap();
    state.sessions().unwrap().revoke(&session).await.unwrap();
    state.wechat().unwrap().tokens().unwrap().get().await.unwrap();

    let iv = *b"fedcba9876543210";
    let block = *b"another block!!!";
    let padded = padding_ivs(&iv, &block);
    let mut observed = Vec::new();
    for last in 0..=255u8 {
        let request = authed_event("werun.json", &token, Some(&probe_body(&iv, last, &block)));
        let answer = async {
            match werun::werun(&state, &session, &request).await {
                Ok(response) => read(&response),
                Err(error) => read(&error.into_response("probe")),
            }
        };
        observed.push((last, observe(&stack, answer).await));
    }
    let (_, first) = &observed[0];
    assert_eq!((first.status, first.code.as_str()), (400, Some("invalid_open_data")));
    for (last, o) in &observed {
        assert_eq!(o, first, "iv last byte {last} (pads: {})", padded.contains(last));
    }
}

#[tokio::test]
async fn a_forged_rawdata_signature_costs_the_session_like_a_bad_decryption() {
    let stack = Stack::start().await;
    let token = stack
        .log_in_as(json!({"openid": "o_mallory", "session_key": STANDARD.encode(KEY)}))
        .await;
    let handler = &wxa_shared::handlers::user_info::FUNCTION;
    let (data, iv) = stack
        .seal("o_mallory", json!({"openId": "o_mallory", "nickName": "M"}))
        .await;
    for attempt in 0..FAILURE_BUDGET {
        let body = json!({"rawData": "{}", "signature": format!("{attempt:040}"), "encryptedData": data, "iv": iv});
        let (status, answer) = read(
            &handler
                .handle(&stack.state, authed_event("user-info.json", &token, Some(&body)))
                .await,
        );
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_open_data")),
            "{answer}"
        );
    }
    let (status, _) = read(
        &session::FUNCTION
            .handle(&stack.state, authed_event("session.json", &token, None))
            .await,
    );
    assert_eq!(status, 401, "the budget is spent");
}
