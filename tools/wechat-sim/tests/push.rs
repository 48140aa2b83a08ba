//! WeChat talking back: message pushes (checked here by a receiver with its own signature and
//! decryption code), subscribe messages, content security, links and risk ranks.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::NoPadding};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use common::{APP_ID, Sim};

const TOKEN: &str = "pushToken123";

/// hex(SHA-1 of the sorted, joined values), as the receiver computes it.
fn signature(values: &[&str]) -> String {
    let mut values = values.to_vec();
    values.sort();
    hex::encode(Sha1::digest(values.concat().as_bytes()))
}

/// The first `<name>`'s text in `xml`, CDATA sections joined.
fn xml_tag(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    let inner = &xml[start..end];
    if !inner.contains("<![CDATA[") {
        return Some(inner.to_owned());
    }
    Some(
        inner
            .split("<![CDATA[")
            .filter_map(|part| part.split_once("]]>").map(|(text, _)| text))
            .collect(),
    )
}

/// The first value named `name` anywhere in `json`, as text.
fn json_field(json: &Value, name: &str) -> Option<String> {
    match json {
        Value::Object(map) => map
            .get(name)
            .map(text_of)
            .or_else(|| map.values().find_map(|v| json_field(v, name))),
        Value::Array(items) => items.iter().find_map(|v| json_field(v, name)),
        _ => None,
    }
}

fn text_of(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// One push as the receiver saw it, and what it made of it: the message's text, or why it refused it.
#[derive(Clone, Debug)]
struct Received {
    query: HashMap<String, String>,
    body: String,
    verdict: Result<String, String>,
}

impl Received {
    /// A field of the (decrypted) message, in either format.
    fn field(&self, name: &str) -> Option<String> {
        let message = self.verdict.as_ref().ok()?;
        match serde_json::from_str::<Value>(message) {
            Ok(json) => json_field(&json, name),
            Err(_) => xml_tag(message, name),
        }
    }
}

/// The developer's push endpoint as a careful server writes it: signatures, freshness, replays,
/// strict decryption; answers `success`, or 401 with the reason. The next `fail_next` good pushes
/// are answered 500.
#[derive(Clone)]
struct Receiver {
    key: Option<[u8; 32]>,
    received: Arc<Mutex<Vec<Received>>>,
    accepted: Arc<Mutex<HashSet<(String, String)>>>,
    fail_next: Arc<AtomicU32>,
}

impl Receiver {
    fn check(&self, query: &HashMap<String, String>, body: &str) -> Result<String, String> {
        let param = |k: &str| query.get(k).cloned().unwrap_or_default();
        let (timestamp, nonce) = (param("timestamp"), param("nonce"));
        if param("signature") != signature(&[TOKEN, &timestamp, &nonce]) {
            return Err("signature".into());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        if (now - timestamp.parse::<i64>().unwrap_or(0)).abs() > 300 {
            return Err("stale".into());
        }
        if self
            .accepted
            .lock()
            .unwrap()
            .contains(&(timestamp.clone(), nonce.clone()))
        {
            return Err("replayed".into());
        }
        if param("encrypt_type") != "aes" {
            return Ok(body.to_owned());
        }
        let encrypt = match serde_json::from_str::<Value>(body) {
            Ok(json) => json["Encrypt"].as_str().map(str::to_owned),
            Err(_) => xml_tag(body, "Encrypt"),
        }
        .ok_or("no Encrypt")?;
        if param("msg_signature") != signature(&[TOKEN, &timestamp, &nonce, &encrypt]) {
            return Err("msg_signature".into());
        }
        self.decrypt(&encrypt)
    }

    /// AES-256-CBC with the key's first 16 bytes as IV; PKCS#7 over 32-byte blocks, strictly.
    fn decrypt(&self, encrypt: &str) -> Result<String, String> {
        let key = self.key.ok_or("no key")?;
        let sealed = STANDARD.decode(encrypt).map_err(|_| "base64")?;
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
            .unwrap()
            .decrypt_padded_vec_mut::<NoPadding>(&sealed)
            .map_err(|_| "blocks")?;
        let pad = usize::from(*plain.last().ok_or("empty")?);
        if !(1..=32).contains(&pad)
            || pad > plain.len()
            || plain[plain.len() - pad..].iter().any(|b| usize::from(*b) != pad)
        {
            return Err("padding".into());
        }
        let plain = &plain[..plain.len() - pad];
        let len = u32::from_be_bytes(plain.get(16..20).ok_or("short")?.try_into().unwrap()) as usize;
        let message = plain.get(20..20 + len).ok_or("length")?;
        if &plain[20 + len..] != APP_ID.as_bytes() {
            return Err("appid".into());
        }
        String::from_utf8(message.to_vec()).map_err(|_| "utf-8".into())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The pushes of `event` received so far, waiting (a bounded while) for the first.
    async fn events(&self, event: &str) -> Vec<Received> {
        for _ in 0..500 {
            let found: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.field("Event").as_deref() == Some(event))
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {event} push came");
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> (StatusCode, String) {
    let verdict = receiver.check(&query, &body);
    receiver.received.lock().unwrap().push(Received {
        query: query.clone(),
        body,
        verdict: verdict.clone(),
    });
    match verdict {
        Err(reason) => (StatusCode::UNAUTHORIZED, reason),
        Ok(_)
            if receiver
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            (StatusCode::INTERNAL_SERVER_ERROR, "busy".into())
        }
        Ok(_) => {
            let seen = (query["timestamp"].clone(), query["nonce"].clone());
            receiver.accepted.lock().unwrap().insert(seen);
            (StatusCode::OK, "success".into())
        }
    }
}

/// The console's URL check: echo `echostr` when the signature is right.
async fn verify(Query(query): Query<HashMap<String, String>>) -> (StatusCode, String) {
    let param = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    if param("signature") == signature(&[TOKEN, param("timestamp"), param("nonce")]) {
        (StatusCode::OK, param("echostr").to_owned())
    } else {
        (StatusCode::UNAUTHORIZED, "bad signature".into())
    }
}

/// A simulator pushing to a receiver, in `mode` and `format`.
struct World {
    sim: Sim,
    receiver: Receiver,
    _task: tokio::task::JoinHandle<()>,
}

impl World {
    async fn new(mode: &str, format: &str) -> World {
        let sim = Sim::start().await;
        let key_bytes: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let encoding_aes_key = STANDARD.encode(key_bytes).trim_end_matches('=').to_owned();
        let receiver = Receiver {
            key: Some(key_bytes),
            received: Arc::default(),
            accepted: Arc::default(),
            fail_next: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/wx", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/wx", get(verify).post(receive))
            .with_state(receiver.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let config =
            json!({"url": url, "token": TOKEN, "encoding_aes_key": encoding_aes_key, "mode": mode, "format": format});
        assert_eq!(sim.post_status("/__sim/push/config", config).await.0, 204);
        World {
            sim,
            receiver,
            _task: task,
        }
    }

    async fn send(&self, body: Value) -> Value {
        let (status, answer) = self.sim.post_status("/__sim/push/send", body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// A user who has just opened the mini program.
    async fn user(&self, openid: &str) {
        self.sim.code(openid).await;
    }
}

fn text_message(content: &str) -> Value {
    json!({"message": {"FromUserName": "o_user", "MsgType": "text", "Content": content}})
}

#[tokio::test]
async fn the_url_check_echoes_only_a_correctly_signed_request() {
    let world = World::new("plain", "xml").await;
    let good = world.sim.post("/__sim/push/verify-url", json!({})).await;
    assert_eq!(good["echoed"], true, "{good}");
    let forged = world
        .sim
        .post("/__sim/push/verify-url", json!({"tamper": "signature"}))
        .await;
    assert_eq!(
        (forged["echoed"].clone(), forged["status"].clone()),
        (json!(false), json!(401))
    );
}

#[tokio::test]
async fn pushes_verify_in_every_mode_and_format() {
    for mode in ["plain", "compat", "safe"] {
        for format in ["xml", "json"] {
            let world = World::new(mode, format).await;
            // Long enough for paddings above 16 bytes in some copies, odd characters for the encoders.
            let content = "a cup of tea ]]> <b>&amp; 中文";
            let answer = world.send(text_message(content)).await;
            assert_eq!(
                answer["deliveries"],
                json!([{"status": 200, "body": "success", "attempts": 1}]),
                "{mode} {format}"
            );
            let received = world.receiver.received();
            assert_eq!(received.len(), 1);
            let push = &received[0];
            assert_eq!(push.verdict.as_ref().err(), None, "{mode} {format}");
            assert_eq!(push.field("Content").as_deref(), Some(content), "{mode} {format}");
            assert_eq!(push.field("MsgId"), Some(text_of(&answer["message"]["MsgId"])));
            assert!(push.field("ToUserName").unwrap().starts_with("gh_"));
            let encrypted = mode != "plain";
            assert_eq!(push.query.contains_key("encrypt_type"), encrypted, "{mode} {format}");
            // Safe mode sends nothing in the clear but the addressee; compat sends both.
            assert_eq!(push.body.contains("o_user"), mode != "safe", "{mode} {format}");
            assert_eq!(push.body.contains("Encrypt"), encrypted, "{mode} {format}");
            let content_type = if format == "xml" { "<xml>" } else { "{" };
            assert!(push.body.starts_with(content_type), "{}", push.body);
        }
    }
}

#[tokio::test]
async fn forged_and_stale_pushes_are_sent_once_and_refused() {
    let world = World::new("safe", "xml").await;
    for (forgery, reason) in [
        (json!({"tamper": "signature"}), "signature"),
        (json!({"tamper": "body"}), "msg_signature"),
        (json!({"tamper": "appid"}), "appid"),
        (json!({"tamper": "padding"}), "padding"),
        (json!({"timestamp_offset_secs": -600}), "stale"),
        (json!({"timestamp_offset_secs": 600}), "stale"),
    ] {
        let mut body = text_message("hello");
        body.as_object_mut()
            .unwrap()
            .extend(forgery.as_object().unwrap().clone());
        let answer = world.send(body).await;
        assert_eq!(
            answer["deliveries"],
            json!([{"status": 401, "body": reason, "attempts": 1}]),
            "{forgery}"
        );
    }

    // Plain mode signs no body: a changed body passes (which is why safe mode exists).
    let plain = World::new("plain", "json").await;
    let answer = plain
        .send(json!({"message": {"FromUserName": "o_user", "MsgType": "text", "Content": "x"}, "tamper": "body"}))
        .await;
    assert_eq!(answer["deliveries"][0]["status"], 200);
    assert!(
        plain.receiver.received()[0]
            .field("FromUserName")
            .unwrap()
            .starts_with("o_forged_")
    );
    let (status, _) = plain
        .sim
        .post_status(
            "/__sim/push/send",
            json!({"message": {"MsgType": "text"}, "tamper": "padding"}),
        )
        .await;
    assert_eq!(status, 400, "padding needs encryption");
}

#[tokio::test]
async fn unacknowledged_pushes_are_retried_and_copies_share_their_ids() {
    let world = World::new("compat", "json").await;
    world.receiver.fail_next.store(2, Ordering::SeqCst);
    let answer = world.send(text_message("retry me")).await;
    assert_eq!(
        answer["deliveries"],
        json!([{"status": 200, "body": "success", "attempts": 3}])
    );
    world.receiver.fail_next.store(3, Ordering::SeqCst);
    let answer = world.send(text_message("give up")).await;
    assert_eq!(
        answer["deliveries"],
        json!([{"status": 500, "body": "busy", "attempts": 3}])
    );

    let world = World::new("safe", "xml").await;
    let answer = world
        .send(json!({"message": {"FromUserName": "o_user", "MsgType": "text", "Content": "twice"}, "copies": 3}))
        .await;
    assert_eq!(answer["deliveries"].as_array().unwrap().len(), 3);
    let received = world.receiver.received();
    assert_eq!(received.len(), 3);
    let ids: HashSet<_> = received
        .iter()
        .map(|r| (r.field("MsgId").unwrap(), r.field("CreateTime").unwrap()))
        .collect();
    assert_eq!(ids.len(), 1, "the same message each time");
    let nonces: HashSet<_> = received.iter().map(|r| r.query["nonce"].clone()).collect();
    assert_eq!(nonces.len(), 3, "each copy signed anew");
}

#[tokio::test]
async fn a_replay_is_the_earlier_request_byte_for_byte() {
    let world = World::new("safe", "json").await;
    let first = world.send(text_message("once")).await;
    assert_eq!(first["deliveries"][0]["status"], 200);
    let replay = world.send(json!({"replay_of": first["push_id"]})).await;
    assert_eq!(
        replay["deliveries"],
        json!([{"status": 401, "body": "replayed", "attempts": 1}])
    );
    let received = world.receiver.received();
    assert_eq!(
        (&received[0].query, &received[0].body),
        (&received[1].query, &received[1].body)
    );
    let sent = world.sim.get("/__sim/push/sent", &[]).await;
    assert_eq!(sent["pushes"].as_array().unwrap().len(), 2);
    let (status, _) = world
        .sim
        .post_status("/__sim/push/send", json!({"replay_of": "nope"}))
        .await;
    assert_eq!(status, 404);
}

fn subscribe_message(openid: &str, template_id: &str) -> Value {
    json!({
        "touser": openid, "template_id": template_id, "page": "pages/detail/detail?id=7",
        "data": {"thing1": {"value": "一杯奶茶"}, "amount2": {"value": "¥12.50"}, "time3": {"value": "2026年11月26日 12:00"}},
        "miniprogram_state": "formal", "lang": "zh_CN",
    })
}

#[tokio::test]
async fn each_accepted_popup_allows_one_subscribe_message() {
    let world = World::new("safe", "json").await;
    world.user("o1").await;
    let sim = &world.sim;
    let send = |body: Value| sim.call("/cgi-bin/message/subscribe/send", body);
    assert_eq!(
        send(subscribe_message("o1", "tpl_order_shipped")).await["errcode"],
        43101
    );

    let popup = json!({"openid": "o1", "template_ids": ["tpl_order_shipped", "tpl_refund_done"], "accept": true});
    let answer = world.sim.post("/__sim/subscribe/popup", popup).await;
    assert_eq!(
        answer["subscriptions"],
        json!({"tpl_order_shipped": 1, "tpl_refund_done": 1})
    );
    assert_eq!(answer["push"]["deliveries"][0]["status"], 200);
    let popup_event = &world.receiver.events("subscribe_msg_popup_event").await[0];
    assert_eq!(popup_event.field("FromUserName").as_deref(), Some("o1"));
    assert_eq!(popup_event.field("SubscribeStatusString").as_deref(), Some("accept"));
    let message: Value = serde_json::from_str(popup_event.verdict.as_ref().unwrap()).unwrap();
    assert_eq!(message["List"].as_array().unwrap().len(), 2, "{message}");

    let sent = send(subscribe_message("o1", "tpl_order_shipped")).await;
    assert_eq!(sent["errcode"], 0, "{sent}");
    let msgid = sent["msgid"].as_u64().unwrap();
    assert_eq!(
        send(subscribe_message("o1", "tpl_order_shipped")).await["errcode"],
        43101,
        "one send per acceptance"
    );
    let sent_event = &world.receiver.events("subscribe_msg_sent_event").await[0];
    assert_eq!(sent_event.field("MsgID"), Some(msgid.to_string()));
    assert_eq!(sent_event.field("ErrorStatus").as_deref(), Some("success"));

    // A refusal allows nothing; turning a template off in the settings takes back what was left.
    let refused = json!({"openid": "o1", "template_ids": ["tpl_order_paid"], "accept": false});
    world.sim.post("/__sim/subscribe/popup", refused).await;
    assert_eq!(send(subscribe_message("o1", "tpl_order_paid")).await["errcode"], 43101);
    let off = json!({"openid": "o1", "template_ids": ["tpl_refund_done"]});
    assert_eq!(
        world.sim.post("/__sim/subscribe/change", off).await["subscriptions"]["tpl_refund_done"],
        0
    );
    assert_eq!(world.receiver.events("subscribe_msg_change_event").await.len(), 1);
    assert_eq!(send(subscribe_message("o1", "tpl_refund_done")).await["errcode"], 43101);
}

#[tokio::test]
async fn subscribe_messages_are_checked_like_wechat_checks_them() {
    let sim = Sim::start().await;
    sim.code("o1").await;
    let registered = sim
        .post("/__sim/subscribe/templates", json!({"template_ids": ["tpl_custom"]}))
        .await;
    assert!(
        registered["template_ids"]
            .as_array()
            .unwrap()
            .contains(&json!("tpl_custom"))
    );
    let popup = json!({"openid": "o1", "template_ids": ["tpl_custom"], "accept": true});
    assert_eq!(
        sim.post("/__sim/subscribe/popup", popup).await["push"],
        Value::Null,
        "no push URL"
    );
    let (status, _) = sim
        .post_status(
            "/__sim/subscribe/popup",
            json!({"openid": "o1", "template_ids": ["tpl_nope"], "accept": true}),
        )
        .await;
    assert_eq!(status, 400);

    let send = |body: Value| sim.call("/cgi-bin/message/subscribe/send", body);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = subscribe_message("o1", "tpl_custom");
        change(&mut body);
        body
    };
    assert_eq!(
        send(with(&|b| b["touser"] = json!("o_stranger"))).await["errcode"],
        40003
    );
    assert_eq!(
        send(with(&|b| b["template_id"] = json!("tpl_nope"))).await["errcode"],
        40037
    );
    let empty = send(with(&|b| b["data"]["thing1"]["value"] = json!(""))).await;
    assert_eq!(empty["errcode"], 47003);
    assert!(
        empty["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("argument invalid! data.thing1.value is empty")
    );
    let long = send(with(&|b| b["data"]["thing1"]["value"] = json!("x".repeat(21)))).await;
    assert!(
        long["errmsg"].as_str().unwrap().contains("data.thing1.value invalid"),
        "{long}"
    );
    assert_eq!(send(with(&|b| b["data"] = json!({}))).await["errcode"], 47003);
    assert_eq!(
        send(with(&|b| b["page"] = json!("pages/nope/nope"))).await["errcode"],
        41030
    );
    let trial = send(with(&|b| {
        b["page"] = json!("pages/new/new");
        b["miniprogram_state"] = json!("trial");
    }))
    .await;
    assert_eq!(
        trial["errcode"], 0,
        "only the released version's pages are checked: {trial}"
    );
}

fn sec_check(openid: &str, content: &str, scene: u64) -> Value {
    json!({"content": content, "version": 2, "openid": openid, "scene": scene})
}

#[tokio::test]
async fn texts_are_judged_by_the_word_list() {
    let sim = Sim::start().await;
    sim.code("o1").await;
    let check = |body: Value| sim.call("/wxa/msg_sec_check", body);
    let pass = check(sec_check("o1", "a lovely cup of tea", 2)).await;
    assert_eq!(
        (pass["errcode"].clone(), pass["result"].clone()),
        (json!(0), json!({"suggest": "pass", "label": 100}))
    );
    let trace_id = pass["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.split('-').map(str::len).collect::<Vec<_>>(), [8, 8, 8]);
    let risky = check(sec_check("o1", "特3456书yuuo莞6543李zxcz蒜7782法fgnv级", 1)).await;
    assert_eq!(risky["result"], json!({"suggest": "risky", "label": 20001}));
    let keyword = &risky["detail"].as_array().unwrap()[1];
    assert_eq!(
        (keyword["strategy"].clone(), keyword["label"].clone()),
        (json!("keyword"), json!(20001))
    );
    let review = check(json!({"content": "hi", "version": 2, "openid": "o1", "scene": 3, "title": "SIM-ADVERT"})).await;
    assert_eq!(review["result"], json!({"suggest": "review", "label": 10001}));

    assert_eq!(check(sec_check("o1", "hi", 5)).await["errcode"], 40129);
    assert_eq!(check(sec_check("o_stranger", "hi", 1)).await["errcode"], 40003);
    assert_eq!(check(sec_check("o1", &"长".repeat(2501), 1)).await["errcode"], 47001);
    assert_eq!(check(sec_check("o1", &"长".repeat(2500), 1)).await["errcode"], 0);
    assert_eq!(
        check(json!({"content": "sim-crime"})).await["errcode"],
        87014,
        "version 1"
    );
    assert_eq!(
        check(json!({"content": "fine"})).await,
        json!({"errcode": 0, "errmsg": "ok"})
    );
    sim.post("/__sim/time", json!({"advance_secs": 2 * 3600 + 1})).await;
    assert_eq!(
        check(sec_check("o1", "hi", 1)).await["errcode"],
        61010,
        "not seen for 2 hours"
    );
}

#[tokio::test]
async fn media_verdicts_are_pushed_later() {
    let world = World::new("compat", "json").await;
    world.user("o1").await;
    let sim = &world.sim;
    let check = |url: &str, media_type: u64| {
        let body = json!({"media_url": url, "media_type": media_type, "version": 2, "openid": "o1", "scene": 2});
        sim.call("/wxa/media_check_async", body)
    };
    assert_eq!(check("https://cdn.example.com/a.png", 3).await["errcode"], 40004);
    let risky = check("https://cdn.example.com/sim-porn.png", 2).await;
    let trace_id = risky["trace_id"].as_str().unwrap().to_owned();
    assert!(world.receiver.received().is_empty(), "nothing pushed yet");

    let delivered = world
        .sim
        .post(
            "/__sim/media-check/deliver",
            json!({"trace_id": trace_id, "label_as_string": true}),
        )
        .await;
    assert_eq!(delivered["result"], json!({"suggest": "risky", "label": "20002"}));
    let push = &world.receiver.events("wxa_media_check").await[0];
    let message: Value = serde_json::from_str(push.verdict.as_ref().unwrap()).unwrap();
    assert_eq!(message["trace_id"], trace_id.as_str());
    assert_eq!(message["appid"], APP_ID);
    assert_eq!(message["result"], json!({"suggest": "risky", "label": "20002"}));
    assert_eq!(message["detail"][0]["strategy"], "content_model");

    let calm = check("https://cdn.example.com/tea.mp3", 1).await;
    let moved = world.sim.post("/__sim/time", json!({"advance_secs": 61})).await;
    let due = &moved["media_checks_delivered"];
    assert_eq!(due.as_array().unwrap().len(), 1, "{moved}");
    assert_eq!(
        (due[0]["trace_id"].clone(), due[0]["result"].clone()),
        (calm["trace_id"].clone(), json!({"suggest": "pass", "label": 100}))
    );
    let (status, _) = world
        .sim
        .post_status("/__sim/media-check/deliver", json!({"trace_id": "nope"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn links_open_released_pages_within_thirty_days_and_quotas() {
    let sim = Sim::start().await;
    let scheme = |body: Value| sim.call("/wxa/generatescheme", body);
    let urllink = |body: Value| sim.call("/wxa/generate_urllink", body);
    let short = |body: Value| sim.call("/wxa/genwxashortlink", body);
    let target = json!({"path": "pages/detail/detail", "query": "id=7", "env_version": "release"});
    let ok = scheme(json!({"jump_wxa": target, "is_expire": true, "expire_type": 1, "expire_interval": 30})).await;
    assert!(
        ok["openlink"].as_str().unwrap().starts_with("weixin://dl/business/?t="),
        "{ok}"
    );
    let ok = urllink(json!({"path": "pages/detail/detail", "expire_type": 1, "expire_interval": 7})).await;
    assert!(
        ok["url_link"].as_str().unwrap().starts_with("https://wxaurl.cn/"),
        "{ok}"
    );
    let ok = short(json!({"page_url": "pages/detail/detail?id=7", "page_title": "tea"})).await;
    assert!(ok["link"].as_str().unwrap().starts_with("#小程序://"), "{ok}");

    let errcode = |answer: Value| answer["errcode"].clone();
    assert_eq!(
        errcode(scheme(json!({"jump_wxa": {"path": "pages/nope/nope"}})).await),
        40165
    );
    assert_eq!(errcode(scheme(json!({"jump_wxa": {"query": "a=<b>"}})).await), 40212);
    assert_eq!(
        errcode(scheme(json!({"jump_wxa": {"env_version": "beta"}})).await),
        85402
    );
    assert_eq!(
        errcode(scheme(json!({"is_expire": true, "expire_type": 1, "expire_interval": 31})).await),
        85401
    );
    assert_eq!(
        errcode(urllink(json!({"is_expire": true, "expire_type": 0})).await),
        85401
    );
    assert_eq!(errcode(short(json!({"page_url": "pages/nope/nope"})).await), 40066);
    assert_eq!(
        errcode(short(json!({"page_url": "pages/index/index", "page_title": "sim-porn"})).await),
        40225
    );

    // Schemes and URL links share a daily quota that starts again the next day.
    let quota = sim.post("/__sim/links", json!({"daily_limit": 3})).await;
    assert_eq!(quota["daily_used"], 2);
    assert_eq!(errcode(urllink(json!({})).await), 0);
    assert_eq!(errcode(scheme(json!({})).await), 44993);
    sim.post("/__sim/time", json!({"advance_secs": 86_400})).await;
    assert_eq!(errcode(scheme(json!({})).await), 0);

    sim.post(
        "/__sim/links",
        json!({"permanent_limit": 0, "shortlink_daily_limit": 1}),
    )
    .await;
    let permanent = json!({"page_url": "pages/index/index", "is_permanent": true});
    assert_eq!(errcode(short(permanent).await), 85400);
    assert_eq!(errcode(short(json!({"page_url": "pages/index/index"})).await), 0);
    assert_eq!(errcode(short(json!({"page_url": "pages/index/index"})).await), 45009);

    sim.post("/__sim/links", json!({"released": false})).await;
    assert_eq!(errcode(scheme(json!({})).await), 85079);
    assert_eq!(errcode(urllink(json!({})).await), 85079);
}

#[tokio::test]
async fn risk_ranks_are_fixed_per_user_unless_set() {
    let sim = Sim::start().await;
    sim.code("o1").await;
    let rank = |body: Value| sim.call("/wxa/getuserriskrank", body);
    let ask = |openid: &str, scene: u64| json!({"appid": APP_ID, "openid": openid, "scene": scene, "client_ip": "203.0.113.7"});
    let first = rank(ask("o1", 0)).await;
    assert_eq!(first["errcode"], 0, "{first}");
    let natural = first["risk_rank"].as_u64().unwrap();
    assert!(natural <= 4);
    assert!(first["unoin_id"].is_u64());
    assert_eq!(rank(ask("o1", 1)).await["risk_rank"], natural);
    assert_eq!(
        sim.post("/__sim/risk", json!({"openid": "o1", "risk_rank": 4})).await["risk_rank"],
        4
    );
    assert_eq!(rank(ask("o1", 2)).await["risk_rank"], 4);
    assert_eq!(
        sim.post("/__sim/risk", json!({"openid": "o1", "risk_rank": null}))
            .await["risk_rank"],
        natural
    );

    assert_eq!(rank(ask("o1", 3)).await["errcode"], 40129);
    assert_eq!(rank(ask("o_stranger", 0)).await["errcode"], 40003);
    let other_app = json!({"appid": "wx0000000000000000", "openid": "o1", "scene": 0, "client_ip": "203.0.113.7"});
    assert_eq!(rank(other_app).await["errcode"], 43104);
    assert_eq!(
        rank(json!({"appid": APP_ID, "openid": "o1", "scene": 0})).await["errcode"],
        47001
    );
}

#[tokio::test]
async fn the_new_apis_are_counted_and_take_faults() {
    let sim = Sim::start().await;
    let apis = [
        ("subscribe_send", "/cgi-bin/message/subscribe/send"),
        ("msg_sec_check", "/wxa/msg_sec_check"),
        ("media_check_async", "/wxa/media_check_async"),
        ("generatescheme", "/wxa/generatescheme"),
        ("generate_urllink", "/wxa/generate_urllink"),
        ("genwxashortlink", "/wxa/genwxashortlink"),
        ("getuserriskrank", "/wxa/getuserriskrank"),
    ];
    for (api, path) in apis {
        sim.post("/__sim/faults", json!({"api": api, "errcode": -1})).await;
        assert_eq!(sim.call(path, json!({})).await["errcode"], -1, "{api}");
        assert_ne!(sim.call(path, json!({})).await["errcode"], -1, "{api}: one fault");
    }
    let counts = &sim.get("/__sim/requests", &[]).await["counts"];
    for (api, _) in apis {
        assert_eq!(counts[api], 2, "{api}");
    }
    let url = format!("{}/wxa/msg_sec_check", sim.server.base_url());
    let stale = sim.http.post(url).query(&[("access_token", "stale")]).body("{}").send();
    assert_eq!(stale.await.unwrap().json::<Value>().await.unwrap()["errcode"], 40001);
}
