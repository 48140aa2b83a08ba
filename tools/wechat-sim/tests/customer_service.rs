//! Customer service messages: users writing (pushed to a developer's server that answers as told),
//! the reply window, replies, typing, uploaded images and hand-overs to the console's agents.

mod common;

use std::sync::{Arc, Mutex};

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use common::{APP_ID, Sim};

const TOKEN: &str = "csToken123";
const KEY: [u8; 32] = [0x5a; 32];
const SEND: &str = "/cgi-bin/message/custom/send";
const TYPING: &str = "/cgi-bin/message/custom/typing";
const HOURS_48: i64 = 48 * 3600;

/// The developer's push URL: records each body and answers with `reply`.
#[derive(Clone, Default)]
struct Dev {
    received: Arc<Mutex<Vec<String>>>,
    reply: Arc<Mutex<String>>,
}

async fn receive(State(dev): State<Dev>, body: String) -> String {
    dev.received.lock().unwrap().push(body);
    dev.reply.lock().unwrap().clone()
}

struct World {
    sim: Sim,
    dev: Dev,
    _task: tokio::task::JoinHandle<()>,
}

impl World {
    async fn new(mode: &str, format: &str) -> World {
        let sim = Sim::start().await;
        let dev = Dev::default();
        *dev.reply.lock().unwrap() = "success".into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/wx", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/wx", post(receive)).with_state(dev.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let encoding_aes_key = STANDARD.encode(KEY).trim_end_matches('=').to_owned();
        let config =
            json!({"url": url, "token": TOKEN, "encoding_aes_key": encoding_aes_key, "mode": mode, "format": format});
        assert_eq!(sim.post_status("/__sim/push/config", config).await.0, 204);
        World { sim, dev, _task: task }
    }

    fn answer_with(&self, reply: &str) {
        *self.dev.reply.lock().unwrap() = reply.to_owned();
    }

    fn received(&self) -> Vec<String> {
        self.dev.received.lock().unwrap().clone()
    }

    async fn write(&self, body: Value) -> Value {
        let (status, answer) = self.sim.post_status("/__sim/customer-service/write", body).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    async fn text(&self, openid: &str, content: &str) -> Value {
        self.write(json!({"openid": openid, "msgtype": "text", "content": content}))
            .await
    }

    async fn enter(&self, openid: &str) -> Value {
        self.write(json!({"openid": openid, "msgtype": "enter", "session_from": "order-7"}))
            .await
    }

    async fn conversation(&self, openid: &str) -> Value {
        self.sim
            .get("/__sim/customer-service/conversation", &[("openid", openid)])
            .await
    }

    async fn advance(&self, secs: i64) {
        self.sim.post("/__sim/time", json!({"advance_secs": secs})).await;
    }
}

fn reply_text(openid: &str, content: &str) -> Value {
    json!({"touser": openid, "msgtype": "text", "text": {"content": content}})
}

fn errcode(answer: &Value) -> i64 {
    answer["errcode"]
        .as_i64()
        .unwrap_or_else(|| panic!("no errcode: {answer}"))
}

fn original_id() -> String {
    wechat_sim::push::original_id(APP_ID)
}

fn transfer_xml(openid: &str, cdata: bool) -> String {
    let from = original_id();
    if cdata {
        format!(
            "<xml><ToUserName><![CDATA[{openid}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
             <CreateTime>1700000000</CreateTime><MsgType><![CDATA[transfer_customer_service]]></MsgType></xml>"
        )
    } else {
        format!(
            "<xml>\n  <ToUserName>{openid}</ToUserName>\n  <FromUserName>{from}</FromUserName>\n  \
             <CreateTime>1700000000</CreateTime>\n  <MsgType>transfer_customer_service</MsgType>\n</xml>"
        )
    }
}

fn signature(values: &[&str]) -> String {
    let mut values = values.to_vec();
    values.sort();
    hex::encode(Sha1::digest(values.concat().as_bytes()))
}

/// The developer's own encryption of a passive reply: AES-256-CBC, IV the key's first 16 bytes,
/// 16 random bytes ‖ length ‖ message ‖ app id, PKCS#7 to 32 bytes.
fn seal(message: &str) -> String {
    let mut plain = b"r4nd0m-16-bytes!".to_vec();
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(APP_ID.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.resize(plain.len() + pad, pad as u8);
    let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(&KEY, &KEY[..16]).unwrap();
    STANDARD.encode(cipher.encrypt_padded_vec_mut::<NoPadding>(&plain))
}

/// `inner` encrypted in the reply envelope of `format`, its MsgSignature forged if asked.
fn encrypted_reply(format: &str, inner: &str, forged: bool) -> String {
    let (timestamp, nonce) = ("1700000000", "1234567890");
    let encrypt = seal(inner);
    let mut msg_signature = signature(&[TOKEN, timestamp, nonce, &encrypt]);
    if forged {
        msg_signature = signature(&[&msg_signature, "forged"]);
    }
    if format == "json" {
        json!({"Encrypt": encrypt, "MsgSignature": msg_signature, "TimeStamp": 1700000000, "Nonce": nonce}).to_string()
    } else {
        format!(
            "<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{msg_signature}]]></MsgSignature>\
             <TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
    }
}

#[tokio::test]
async fn the_window_allows_five_replies_in_48_hours_and_two_in_60_seconds() {
    let world = World::new("plain", "xml").await;
    let sim = &world.sim;
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "hi")).await), 40003);

    let written = world.text("o1", "where is my tea?").await;
    assert_eq!(
        written["deliveries"],
        json!([{"status": 200, "body": "success", "attempts": 1}])
    );
    assert_eq!(
        (written["handed_over"].clone(), written["to_agent"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(written["message"]["MsgType"], "text");
    let pushed = &world.received()[0];
    assert!(
        pushed.contains("<Content><![CDATA[where is my tea?]]></Content>") && pushed.contains("<MsgId>"),
        "{pushed}"
    );
    for _ in 0..5 {
        assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "on its way")).await), 0);
    }
    let sixth = sim.call(SEND, reply_text("o1", "one more")).await;
    assert_eq!(errcode(&sixth), 45047, "{sixth}");
    assert!(
        sixth["errmsg"]
            .as_str()
            .unwrap()
            .starts_with("out of response count limit")
    );

    // Entering the chat allows 2 more; the window keeps its 48 hours.
    let entered = world.enter("o1").await;
    assert_eq!(entered["message"]["Event"], "user_enter_tempsession");
    assert_eq!(entered["message"]["SessionFrom"], "order-7");
    let window = world.conversation("o1").await["window"].clone();
    assert_eq!(
        (window["open"].clone(), window["left"].clone()),
        (json!(true), json!(2))
    );
    let until = window["until"].as_i64().unwrap();
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "a")).await), 0);
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "b")).await), 0);
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "c")).await), 45047);

    // Not cumulative: a message then an entry leave 5, not 7.
    world.text("o2", "hello").await;
    world.enter("o2").await;
    assert_eq!(world.conversation("o2").await["window"]["left"], 5);
    for _ in 0..5 {
        assert_eq!(errcode(&sim.call(SEND, reply_text("o2", "x")).await), 0);
    }
    assert_eq!(errcode(&sim.call(SEND, reply_text("o2", "x")).await), 45047);

    // Entering alone: 2 replies within 60 s.
    world.enter("o3").await;
    let window = world.conversation("o3").await["window"].clone();
    assert_eq!(window["left"], 2);
    world.advance(61).await;
    let late = sim.call(SEND, reply_text("o3", "too late")).await;
    assert_eq!(errcode(&late), 45015, "{late}");
    assert_eq!(
        world.conversation("o3").await["window"],
        json!({"open": false, "until": window["until"], "left": 0})
    );

    // 48 hours after o1's message its window is closed too.
    world.advance(HOURS_48).await;
    assert!(world.conversation("o1").await["window"]["until"].as_i64().unwrap() == until);
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "late")).await), 45015);
    world.text("o1", "still there?").await;
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "yes")).await), 0);

    let conversation = world.conversation("o1").await;
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages[0]["from"], "user");
    assert_eq!(messages[0]["content"], "where is my tea?");
    assert_eq!(messages[0]["msgid"], written["message"]["MsgId"]);
    assert_eq!(messages[1]["from"], "app");
    assert_eq!(messages[1]["content"], "on its way");
    assert_eq!(messages.last().unwrap()["content"], "yes");
}

#[tokio::test]
async fn replies_are_checked_like_wechat_checks_them() {
    let world = World::new("plain", "json").await;
    let sim = &world.sim;
    world.text("o1", "hi").await;
    let send = |body: Value| sim.call(SEND, body);
    assert_eq!(
        errcode(&send(json!({"touser": "o1", "msgtype": "voice", "voice": {}})).await),
        40008
    );
    assert_eq!(errcode(&send(json!({"touser": "o1", "msgtype": "text"})).await), 47001);
    assert_eq!(
        errcode(&send(json!({"msgtype": "text", "text": {"content": "x"}})).await),
        47001
    );
    assert_eq!(
        errcode(&send(json!({"touser": "o1", "msgtype": "text", "text": {"content": 7}})).await),
        47001
    );
    assert_eq!(errcode(&send(reply_text("o1", &"x".repeat(2049))).await), 45002);
    assert_eq!(
        errcode(&send(reply_text("o1", &"茶".repeat(682))).await),
        0,
        "2046 bytes"
    );
    let link = json!({"touser": "o1", "msgtype": "link", "link": {"title": "Tea", "description": "Fresh", "url": "https://example.com/tea"}});
    assert_eq!(errcode(&send(link.clone()).await), 47001, "no thumb_url");
    let mut link = link;
    link["link"]["thumb_url"] = json!("https://example.com/tea.png");
    assert_eq!(errcode(&send(link).await), 0);
    assert_eq!(
        errcode(&send(json!({"touser": "o1", "msgtype": "image", "image": {"media_id": "nope"}})).await),
        40007
    );
    let page = json!({"touser": "o1", "msgtype": "miniprogrampage",
                      "miniprogrampage": {"title": "Tea", "pagepath": "pages/index/index", "thumb_media_id": "nope"}});
    assert_eq!(errcode(&send(page).await), 40007);
    // Refused replies used none of the 5: 3 left after the two sent.
    assert_eq!(world.conversation("o1").await["window"]["left"], 3);

    let (status, _) = sim
        .post_status(
            "/__sim/customer-service/write",
            json!({"openid": "o1", "msgtype": "voice"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = sim
        .post_status(
            "/__sim/customer-service/write",
            json!({"openid": "o1", "msgtype": "text"}),
        )
        .await;
    assert_eq!(status, 400, "a text needs a content");
    let url = format!("{}/__sim/customer-service/conversation", sim.server.base_url());
    let unknown = sim.http.get(url).query(&[("openid", "o_never")]).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    let unconfigured = Sim::start().await;
    let (status, _) = unconfigured
        .post_status(
            "/__sim/customer-service/write",
            json!({"openid": "o1", "msgtype": "text", "content": "hi"}),
        )
        .await;
    assert_eq!(status, 409);
}

/// A multipart/form-data body with one file part named `name`; its content type and bytes.
fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----simBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"tea.png\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(sim: &Sim, media_type: &str, part: &str, bytes: &[u8]) -> Value {
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    let (content_type, body) = multipart(part, bytes);
    let url = format!("{}/cgi-bin/media/upload", sim.server.base_url());
    let response = sim
        .http
        .post(url)
        .query(&[("access_token", token.as_str()), ("type", media_type)])
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn image(openid: &str, media_id: &Value) -> Value {
    json!({"touser": openid, "msgtype": "image", "image": {"media_id": media_id}})
}

#[tokio::test]
async fn uploaded_images_are_sent_by_media_id_for_three_days() {
    let world = World::new("plain", "xml").await;
    let sim = &world.sim;
    let png = wechat_sim::png::code_image(&[("tea", "green")]);
    assert_eq!(errcode(&upload(sim, "voice", "media", &png).await), 40004);
    assert_eq!(errcode(&upload(sim, "image", "file", &png).await), 41005);
    assert_eq!(
        errcode(&upload(sim, "image", "media", b"not an image at all").await),
        40005
    );
    let mut large = png.clone();
    large.resize((2 << 20) + 1, 0);
    assert_eq!(errcode(&upload(sim, "image", "media", &large).await), 40009);
    // Past the route's body limit too: still WeChat's answer, not axum's 413.
    let mut huge = png.clone();
    huge.resize(5 << 20, 0);
    assert_eq!(errcode(&upload(sim, "image", "media", &huge).await), 40009);
    large.truncate(2 << 20);
    assert_eq!(
        errcode(&upload(sim, "image", "media", &large).await),
        0,
        "2 MiB exactly"
    );
    let url = format!("{}/cgi-bin/media/upload?type=image", sim.server.base_url());
    let no_token: Value = sim.http.post(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(errcode(&no_token), 41001);

    let uploaded = upload(sim, "image", "media", &png).await;
    assert_eq!(
        (uploaded["errcode"].clone(), uploaded["type"].clone()),
        (json!(0), json!("image"))
    );
    assert!(uploaded["created_at"].is_i64());
    let media_id = uploaded["media_id"].clone();
    world.text("o1", "a picture please").await;
    assert_eq!(errcode(&sim.call(SEND, image("o1", &media_id)).await), 0);
    assert_eq!(errcode(&sim.call(SEND, image("o1", &json!("unknown"))).await), 40007);
    let last = world.conversation("o1").await["messages"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (last["from"].clone(), last["msgtype"].clone(), last["media_id"].clone()),
        (json!("app"), json!("image"), media_id.clone())
    );

    // A user's image is pushed with a URL on the simulator and a media id that can be sent back.
    let sent = world.write(json!({"openid": "o1", "msgtype": "image"})).await;
    let message = &sent["message"];
    assert_eq!(message["MsgType"], "image");
    let pic = sim.http.get(message["PicUrl"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(pic.status(), 200);
    assert!(pic.bytes().await.unwrap().starts_with(b"\x89PNG"));
    assert_eq!(errcode(&sim.call(SEND, image("o1", &message["MediaId"])).await), 0);
    let card = world
        .write(json!({"openid": "o1", "msgtype": "miniprogrampage", "title": "Tea", "pagepath": "pages/detail/detail"}))
        .await;
    let card = &card["message"];
    assert_eq!(
        (card["AppId"].clone(), card["PagePath"].clone()),
        (json!(APP_ID), json!("pages/detail/detail"))
    );
    let back = json!({"touser": "o1", "msgtype": "miniprogrampage",
                      "miniprogrampage": {"title": "Tea", "pagepath": "pages/detail/detail", "thumb_media_id": card["ThumbMediaId"]}});
    assert_eq!(errcode(&sim.call(SEND, back).await), 0);

    // Temporary media live 3 days.
    world.advance(3 * 86_400).await;
    world.text("o1", "and again?").await;
    assert_eq!(errcode(&sim.call(SEND, image("o1", &media_id)).await), 40007);
}

#[tokio::test]
async fn a_transfer_reply_hands_the_conversation_to_the_agents() {
    let world = World::new("plain", "xml").await;
    world.answer_with(&transfer_xml("o1", true));
    let handed = world.text("o1", "I want a person").await;
    assert_eq!(
        handed["deliveries"][0]["attempts"], 1,
        "a transfer acknowledges: {handed}"
    );
    assert_eq!(
        (handed["handed_over"].clone(), handed["to_agent"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(world.received().len(), 1);

    // The next message goes to the agents, not to the developer's server.
    world.answer_with("success");
    let forwarded = world.text("o1", "hello agent").await;
    assert_eq!(
        (
            forwarded["push_id"].clone(),
            forwarded["deliveries"].clone(),
            forwarded["to_agent"].clone()
        ),
        (Value::Null, json!([]), json!(true))
    );
    assert_eq!(world.received().len(), 1);
    // Events still come to the server.
    world.enter("o1").await;
    assert_eq!(world.received().len(), 2);
    let conversation = world.conversation("o1").await;
    assert_eq!(conversation["handed_over"], true);
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages[0]["to_agent"], false);
    assert_eq!(
        (messages[1]["content"].clone(), messages[1]["to_agent"].clone()),
        (json!("hello agent"), json!(true))
    );

    // 30 minutes on, the server has the conversation again.
    world.advance(30 * 60).await;
    let back = world.text("o1", "anyone?").await;
    assert_eq!(
        (back["to_agent"].clone(), back["handed_over"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(world.received().len(), 3);

    // A transfer in answer to an event is taken but hands nothing over.
    world.answer_with(&transfer_xml("o2", false));
    let entered = world.enter("o2").await;
    assert_eq!(entered["deliveries"][0]["attempts"], 1);
    assert_eq!(entered["handed_over"], false);
    world.answer_with("success");
    assert_eq!(world.text("o2", "hi").await["to_agent"], false);

    // A reply to someone else, or garbage, is no acknowledgement: retried, nothing handed over.
    for reply in [
        transfer_xml("o_other", true),
        "<xml><MsgType>transfer</MsgType>".into(),
        "ok".into(),
    ] {
        world.answer_with(&reply);
        let refused = world.text("o3", "hello").await;
        assert_eq!(refused["deliveries"][0]["attempts"], 3, "{reply}");
        assert_eq!(refused["handed_over"], false, "{reply}");
    }
    // Other pushes keep their rules: a transfer body does not acknowledge them.
    world.answer_with(&transfer_xml("o1", true));
    let other = world
        .sim
        .post(
            "/__sim/push/send",
            json!({"message": {"FromUserName": "o1", "MsgType": "text", "Content": "x"}}),
        )
        .await;
    assert_eq!(other["deliveries"][0]["attempts"], 3, "{other}");
}

#[tokio::test]
async fn safe_mode_transfer_replies_must_be_encrypted_and_signed() {
    for format in ["xml", "json"] {
        let world = World::new("safe", format).await;
        let inner = if format == "json" {
            json!({"ToUserName": "o1", "FromUserName": original_id(), "CreateTime": 1700000000, "MsgType": "transfer_customer_service"}).to_string()
        } else {
            transfer_xml("o1", true)
        };
        // Forged: the MsgSignature does not cover the Encrypt.
        world.answer_with(&encrypted_reply(format, &inner, true));
        let forged = world.text("o1", "a person please").await;
        assert_eq!(forged["deliveries"][0]["attempts"], 3, "{format}: {forged}");
        assert_eq!(forged["handed_over"], false);
        // In the clear: not a reply in safe mode.
        world.answer_with(&inner);
        assert_eq!(
            world.text("o1", "a person please").await["deliveries"][0]["attempts"],
            3
        );

        world.answer_with(&encrypted_reply(format, &inner, false));
        let handed = world.text("o1", "a person please").await;
        assert_eq!(handed["deliveries"][0]["attempts"], 1, "{format}: {handed}");
        assert_eq!(handed["handed_over"], true, "{format}");
        assert_eq!(world.text("o1", "hello").await["to_agent"], true);
    }

    // Compat mode takes either.
    let world = World::new("compat", "xml").await;
    world.answer_with(&transfer_xml("o1", false));
    assert_eq!(world.text("o1", "hi").await["handed_over"], true);
    world.answer_with(&encrypted_reply("xml", &transfer_xml("o2", true), false));
    assert_eq!(world.text("o2", "hi").await["handed_over"], true);
}

#[tokio::test]
async fn typing_needs_a_recent_user_message_and_is_not_repeated() {
    let world = World::new("plain", "json").await;
    let sim = &world.sim;
    let typing = |command: &str| sim.call(TYPING, json!({"touser": "o1", "command": command}));
    assert_eq!(errcode(&typing("Typing").await), 40003);
    world.text("o1", "hi").await;
    assert_eq!(errcode(&typing("Typing").await), 0);
    assert_eq!(world.conversation("o1").await["typing"], true);
    assert_eq!(errcode(&typing("Typing").await), 45081);
    assert_eq!(errcode(&typing("Jump").await), 45072);
    assert_eq!(errcode(&typing("CancelTyping").await), 0);
    assert_eq!(world.conversation("o1").await["typing"], false);
    assert_eq!(errcode(&typing("Typing").await), 0);
    // A reply ends it.
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "here")).await), 0);
    assert_eq!(world.conversation("o1").await["typing"], false);
    world.advance(31).await;
    assert_eq!(errcode(&typing("Typing").await), 45080);
}

#[tokio::test]
async fn the_customer_service_apis_are_counted_take_faults_and_security_mode() {
    let world = World::new("plain", "xml").await;
    let sim = &world.sim;
    world.text("o1", "hi").await;
    for (api, path, body) in [
        ("custom_send", SEND, reply_text("o1", "x")),
        ("custom_typing", TYPING, json!({"touser": "o1", "command": "Typing"})),
    ] {
        sim.post("/__sim/faults", json!({"api": api, "errcode": -1})).await;
        assert_eq!(errcode(&sim.call(path, body.clone()).await), -1, "{api}");
        assert_eq!(errcode(&sim.call(path, body).await), 0, "{api}: one fault");
    }
    sim.post("/__sim/faults", json!({"api": "media_upload", "http_status": 502}))
        .await;
    let token = sim.stable(false).await["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/cgi-bin/media/upload", sim.server.base_url());
    let failed = sim
        .http
        .post(url)
        .query(&[("access_token", token.as_str()), ("type", "image")])
        .send();
    assert_eq!(failed.await.unwrap().status(), 502);
    let png = wechat_sim::png::code_image(&[]);
    assert_eq!(errcode(&upload(sim, "image", "media", &png).await), 0);
    let counts = &sim.get("/__sim/requests", &[]).await["counts"];
    for api in ["custom_send", "custom_typing", "media_upload"] {
        assert_eq!(counts[api], 2, "{api}: {counts}");
    }

    // In the API security mode a plain call of the send API is refused before it is processed.
    assert!(wechat_sim::api_security::SUPPORTED.contains(&SEND));
    sim.post("/__sim/api-security", json!({})).await;
    assert_eq!(errcode(&sim.call(SEND, reply_text("o1", "x")).await), 40230);
    assert_eq!(world.conversation("o1").await["window"]["left"], 4);
}
