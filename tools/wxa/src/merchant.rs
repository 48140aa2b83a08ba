//! `wxa merchant <op>`: the back office's commands, sent to the merchant function with the AWS
//! SDK's Lambda `Invoke` (IAM `lambda:InvokeFunction`), as a back office sends them. Each
//! subcommand is one op of the function, each flag one field of its command.

use std::time::Duration;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::RequestId;
use aws_sdk_lambda::operation::invoke::{InvokeError, InvokeOutput};
use aws_sdk_lambda::primitives::Blob;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use crate::{Failure, whole_number};

/// The function's name when neither --function-name nor this variable gives one.
const FUNCTION_ENV: &str = "WXA_MERCHANT_FUNCTION";
const DEFAULT_FUNCTION: &str = "merchant";

/// How long one invocation may take: as long as the local gateway waits for one, which covers
/// `cargo lambda watch` building the function on its first call (deployed, the function's own
/// timeout ends it far sooner).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// An operator's machine may be far from the region: more than the functions' 1 s to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Drive orders, refunds, transfers, shipping, subscribe messages and links through the merchant function
/// (Lambda Invoke).
///
/// Sends {"op": ..., ...} built from the flags and prints the answer's "ok" value. An {"error"}
/// answer (or a failed invocation) is one line on stderr, `code: message (request_id ...)`, and
/// exit 1; no answer at all (AWS, the network) exits 2. Credentials and region come from the
/// usual AWS environment; the caller needs lambda:InvokeFunction on the function.
#[derive(Args)]
pub struct Merchant {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: MerchantCommand,
}

#[derive(Args)]
struct Target {
    /// the function's name or ARN; deployed, the stack's MerchantFunctionName output [default:
    /// $WXA_MERCHANT_FUNCTION, else merchant]
    #[arg(long, value_name = "NAME", global = true, help_heading = "Invocation")]
    function_name: Option<String>,
    /// the Lambda endpoint: http://127.0.0.1:9000 for `make dev` [default: $AWS_ENDPOINT_URL,
    /// else AWS's]
    #[arg(long, value_name = "URL", global = true, help_heading = "Invocation")]
    endpoint_url: Option<String>,
}

#[derive(Subcommand)]
enum MerchantCommand {
    #[command(flatten)]
    Op(Op),
    Raw(Raw),
}

/// The ops, serialized as the function reads them: `{"op": "create_order", ...fields}`; the
/// subcommand is the op's name in kebab case.
#[derive(Subcommand, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    /// Create an UNPAID order; the same command again answers the same order.
    CreateOrder(CreateOrder),
    /// The order, asked of WeChat Pay first when it is unpaid and was placed.
    GetOrder(ByOrder),
    /// Close an unpaid order, at WeChat Pay first (a payment that came meanwhile wins).
    CloseOrder(ByOrder),
    /// Refund part or all of a paid order; the same --out-refund-no again is the same refund.
    Refund(Refund),
    /// The refund, asked of WeChat Pay while it is processing.
    GetRefund(ByRefund),
    /// Pay a user from the merchant's balance (商家转账); the user confirms it in the
    /// mini-program. The same --out-bill-no with the same fields again is the same transfer.
    CreateTransfer(CreateTransfer),
    /// The transfer, asked of WeChat Pay while it is not final.
    GetTransfer(ByBill),
    /// Cancel a transfer the user has not confirmed yet.
    CancelTransfer(ByBill),
    /// Record a paid order's shipping with WeChat (upload_shipping_info).
    UploadShipping(UploadShipping),
    /// A paid order's shipping state as WeChat has it.
    GetShippingState(ByOrder),
    /// Remind the buyer to confirm receipt (notify_confirm_receive).
    NotifyConfirmReceive(NotifyConfirmReceive),
    /// Send a subscribe message, using one of the user's one-time authorisations.
    SendSubscribeMessage(SendSubscribeMessage),
    /// What the pushes recorded of a user and a template: status and one-time sends left.
    GetSubscription(GetSubscription),
    /// A URL link (https://wxaurl.cn/...) that opens a page of the released mini-program.
    GenerateUrlLink(Link),
    /// A URL scheme (weixin://dl/business/?t=...) that opens a page of the mini-program.
    GenerateScheme(Link),
    /// A short link (#小程序://...) to a page, to paste in WeChat.
    GenerateShortLink(ShortLink),
    /// WeChat's risk rank of a user (0 to 4; higher is riskier).
    UserRiskRank(UserRiskRank),
    /// A user's customer-service conversation: their messages and ours, WeChat's reply window.
    GetConversation(ByOpenid),
    /// Reply to a user who wrote to the customer service (within WeChat's window): exactly one of
    /// --text, --image, --link, --miniprogrampage.
    SendCustomerMessage(SendCustomerMessage),
    /// Show the user "typing…" (within 30 s of their message), or stop (--typing false).
    SetTyping(SetTyping),
    /// Upload an image (PNG, JPEG or GIF, at most 2 MiB) for replies; WeChat keeps it 3 days.
    UploadTempMedia(UploadTempMedia),
}

#[derive(Args, Serialize)]
struct ByOpenid {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
}

#[derive(Args)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("reply").required(true).multiple(false))]
struct SendCustomerMessage {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// a text reply
    #[arg(long, group = "reply", value_name = "TEXT")]
    text: Option<String>,
    /// an image reply: a media_id from upload-temp-media
    #[arg(long, group = "reply", value_name = "MEDIA_ID")]
    image: Option<String>,
    /// a link card: {"title", "description", "url", "thumb_url"}, or @FILE holding it
    #[arg(long, group = "reply", value_name = "JSON|@FILE", value_parser = json_object)]
    link: Option<Value>,
    /// a mini-program card: {"title", "pagepath", "thumb_media_id"}, or @FILE holding it
    #[arg(long, group = "reply", value_name = "JSON|@FILE", value_parser = json_object)]
    miniprogrampage: Option<Value>,
}

/// As the function reads it: WeChat's shape, `{openid, msgtype, <msgtype>: {...}}`.
impl Serialize for SendCustomerMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (msgtype, content) = match (&self.text, &self.image, &self.link, &self.miniprogrampage) {
            (Some(text), ..) => ("text", serde_json::json!({ "content": text })),
            (_, Some(media_id), ..) => ("image", serde_json::json!({ "media_id": media_id })),
            (_, _, Some(link), _) => ("link", link.clone()),
            (_, _, _, Some(page)) => ("miniprogrampage", page.clone()),
            // clap requires one of them.
            _ => {
                return Err(serde::ser::Error::custom(
                    "one of --text, --image, --link, --miniprogrampage",
                ));
            }
        };
        let mut command = serde_json::json!({ "openid": self.openid, "msgtype": msgtype });
        command[msgtype] = content;
        command.as_object().expect("an object").serialize(serializer)
    }
}

#[derive(Args, Serialize)]
struct SetTyping {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// true shows "typing…", false stops it
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    typing: bool,
}

#[derive(Args, Serialize)]
struct UploadTempMedia {
    /// the image file (PNG, JPEG or GIF, at most 2 MiB)
    #[arg(long = "file", value_name = "FILE", value_parser = file_base64)]
    content_base64: String,
    /// the name WeChat is told [default: image.<its type>]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
}

/// A file's bytes as base64, the way a Lambda payload (JSON) carries them.
fn file_base64(path: &str) -> Result<String, String> {
    use base64::Engine;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[derive(Args, Serialize)]
struct SendSubscribeMessage {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// the subscribe template's id
    #[arg(long, value_name = "ID")]
    template_id: String,
    /// the template's fields, {"thing1": {"value": "..."}, ...}, or @FILE holding them
    #[arg(long, value_name = "JSON|@FILE", value_parser = json_object)]
    data: Value,
    /// the page the message opens (pages/index/index?a=1)
    #[arg(long, value_name = "PAGE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    /// which version the message opens: developer, trial or formal
    #[arg(long, value_name = "STATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<String>,
    /// zh_CN, en_US, zh_HK or zh_TW
    #[arg(long, value_name = "LANG")]
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<String>,
}

#[derive(Args, Serialize)]
struct GetSubscription {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// the subscribe template's id
    #[arg(long, value_name = "ID")]
    template_id: String,
}

#[derive(Args, Serialize)]
struct Link {
    /// the page (pages/index/index, no leading /) [default: the home page]
    #[arg(long, value_name = "PAGE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// the page's query (a=1&b=2)
    #[arg(long, value_name = "QUERY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    /// release, trial or develop [default: release]
    #[arg(long, value_name = "VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    env_version: Option<String>,
    /// days the link works, 1 to 30 [default: 30]
    #[arg(long, value_name = "DAYS", value_parser = whole_number)]
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_days: Option<u64>,
}

#[derive(Args, Serialize)]
struct ShortLink {
    /// the page with its query (pages/index/index?a=1)
    #[arg(long, value_name = "PAGE")]
    page_url: String,
    /// the title shown with the link (at most 64 characters)
    #[arg(long, value_name = "TEXT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    page_title: Option<String>,
    /// a permanent link (the quota for them is small) rather than one of 30 days
    #[arg(long)]
    #[serde(skip_serializing_if = "unset")]
    is_permanent: bool,
}

#[derive(Args, Serialize)]
struct UserRiskRank {
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// 0 sign-up, 1 cheating (marketing activities), 2 user-generated content
    #[arg(long, value_name = "0-2", value_parser = whole_number)]
    scene: u64,
    /// the user's IP address
    #[arg(long, value_name = "IP")]
    client_ip: String,
    /// the user's mobile number
    #[arg(long, value_name = "NUMBER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    mobile_no: Option<String>,
    /// the user's email address
    #[arg(long, value_name = "EMAIL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    email_address: Option<String>,
}

#[derive(Args, Serialize)]
struct CreateOrder {
    /// the order's number: 6 to 32 of [0-9A-Za-z_-|*]
    #[arg(long, value_name = "NO")]
    out_trade_no: String,
    /// the buyer's openid: only they can pay the order
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// what is bought, as the buyer sees it (1 to 127 characters)
    #[arg(long, value_name = "TEXT")]
    description: String,
    /// the amount, in fen
    #[arg(long, value_name = "FEN", value_parser = whole_number)]
    amount_total: u64,
    /// text WeChat Pay hands back with the payment (at most 128 characters)
    #[arg(long, value_name = "TEXT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    attach: Option<String>,
    /// when the order stops being payable, RFC 3339 (2026-11-26T12:00:00+08:00)
    #[arg(long, value_name = "TIME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    time_expire: Option<String>,
}

#[derive(Args, Serialize)]
struct ByOrder {
    /// the order's number
    #[arg(long, value_name = "NO")]
    out_trade_no: String,
}

#[derive(Args, Serialize)]
struct Refund {
    /// the paid order's number
    #[arg(long, value_name = "NO")]
    out_trade_no: String,
    /// the refund's own number: 1 to 64 of [0-9A-Za-z_-|*@]
    #[arg(long, value_name = "NO")]
    out_refund_no: String,
    /// the amount to refund, in fen
    #[arg(long, value_name = "FEN", value_parser = whole_number)]
    amount: u64,
    /// why, as the buyer sees it (at most 80 characters)
    #[arg(long, value_name = "TEXT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Args, Serialize)]
struct CreateTransfer {
    /// the transfer's own number: 5 to 32 of [0-9A-Za-z]
    #[arg(long, value_name = "NO")]
    out_bill_no: String,
    /// the user's openid
    #[arg(long, value_name = "OPENID")]
    openid: String,
    /// the amount, in fen
    #[arg(long, value_name = "FEN", value_parser = whole_number)]
    amount: u64,
    /// WeChat Pay's transfer_scene_id (1000 cash marketing, 1005 commission, ...)
    #[arg(long, value_name = "ID")]
    scene_id: String,
    /// what the user sees (at most 32 characters)
    #[arg(long, value_name = "TEXT")]
    remark: String,
    /// the scene's report, [{"info_type": "...", "info_content": "..."}], or @FILE holding it
    #[arg(long, value_name = "JSON|@FILE", value_parser = json_array)]
    report_infos: Value,
    /// the user's real name (required from 200000 fen); sealed for WeChat Pay by the function
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
}

#[derive(Args, Serialize)]
struct ByBill {
    /// the transfer's number
    #[arg(long, value_name = "NO")]
    out_bill_no: String,
}

#[derive(Args, Serialize)]
struct ByRefund {
    /// the refund's number
    #[arg(long, value_name = "NO")]
    out_refund_no: String,
}

#[derive(Args, Serialize)]
struct UploadShipping {
    /// the paid order's number
    #[arg(long, value_name = "NO")]
    out_trade_no: String,
    /// 1 express, 2 same-city delivery, 3 virtual goods, 4 user pickup
    #[arg(long, value_name = "1-4", value_parser = whole_number)]
    logistics_type: u64,
    /// 1 unified, 2 split
    #[arg(long, value_name = "1|2", value_parser = whole_number)]
    delivery_mode: u64,
    /// a JSON array of {tracking_no, express_company, item_desc, contact?}, or @FILE holding one
    #[arg(long, value_name = "JSON|@FILE", value_parser = json_array)]
    shipping_list: Value,
    /// every item of the order has been shipped (a split delivery's last parcel)
    #[arg(long)]
    #[serde(skip_serializing_if = "unset")]
    is_all_delivered: bool,
}

#[derive(Args, Serialize)]
struct NotifyConfirmReceive {
    /// the paid order's number
    #[arg(long, value_name = "NO")]
    out_trade_no: String,
    /// when the buyer received it, unix seconds [default: now]
    #[arg(long, value_name = "UNIX", value_parser = whole_number)]
    #[serde(skip_serializing_if = "Option::is_none")]
    received_time: Option<u64>,
}

/// Send a command as given, e.g. '{"op": "get_order", "out_trade_no": "T1"}'.
#[derive(Args)]
struct Raw {
    /// the command: JSON, or @FILE holding it
    #[arg(value_name = "JSON|@FILE", value_parser = json_text)]
    command: String,
}

/// An absent flag: the field is left out of the command, as the function's default.
fn unset(flag: &bool) -> bool {
    !flag
}

/// JSON given inline or, after `@`, in a file (JSON text never starts with `@`).
fn json_arg(arg: &str) -> Result<(String, Value), String> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
        None => arg.to_owned(),
    };
    let value = serde_json::from_str(&text).map_err(|e| format!("is not JSON: {e}"))?;
    Ok((text, value))
}

fn json_object(arg: &str) -> Result<Value, String> {
    match json_arg(arg)? {
        (_, object @ Value::Object(_)) => Ok(object),
        _ => Err("must be a JSON object".to_owned()),
    }
}

fn json_array(arg: &str) -> Result<Value, String> {
    match json_arg(arg)? {
        (_, list @ Value::Array(_)) => Ok(list),
        _ => Err("must be a JSON array of items".to_owned()),
    }
}

/// The text itself, checked as JSON: Lambda takes no other payload.
fn json_text(arg: &str) -> Result<String, String> {
    json_arg(arg).map(|(text, _)| text)
}

impl Merchant {
    pub async fn run(&self) -> Result<Value, Failure> {
        let payload = match &self.command {
            MerchantCommand::Op(op) => serde_json::to_vec(op).map_err(|e| Failure::Reason(e.to_string()))?,
            MerchantCommand::Raw(raw) => raw.command.clone().into_bytes(),
        };
        let name = self.target.function_name();
        let output = self
            .target
            .client()
            .await
            .invoke()
            .function_name(&name)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| not_invoked(&name, &e))?;
        answer(&name, &output)
    }
}

impl Target {
    fn function_name(&self) -> String {
        self.function_name
            .clone()
            .or_else(|| std::env::var(FUNCTION_ENV).ok().filter(|name| !name.is_empty()))
            .unwrap_or_else(|| DEFAULT_FUNCTION.to_owned())
    }

    async fn client(&self) -> aws_sdk_lambda::Client {
        // An operator's machine: its own CA store (a corporate proxy's CA included).
        let tls = wxa_shared::net::tls_config(wxa_shared::net::TlsRoots::System);
        let sdk = wxa_shared::net::aws::sdk_config_from_env(&tls).await;
        // The functions' SDK timeouts suit DynamoDB, not a command that waits on WeChat Pay.
        let timeouts = aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(INVOKE_TIMEOUT)
            .operation_timeout(INVOKE_TIMEOUT)
            .build();
        // Sent once: a lost answer may hide a command that ran, and not every op is idempotent
        // (a second upload_shipping spends the order's one re-shipment). The operator decides.
        let mut config = aws_sdk_lambda::config::Builder::from(&sdk)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled());
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        aws_sdk_lambda::Client::from_conf(config.build())
    }
}

/// The `ok` value of the function's answer, or why there is none.
fn answer(name: &str, output: &InvokeOutput) -> Result<Value, Failure> {
    let payload = output.payload().map(Blob::as_ref).unwrap_or_default();
    let answer: Value = serde_json::from_slice(payload).map_err(|_| {
        let text = String::from_utf8_lossy(payload);
        Failure::NoAnswer(format!("{name} answered something other than JSON: {}", shown(&text)))
    })?;
    // Lambda flags a failed invocation with X-Amz-Function-Error; its payload says why.
    if output.function_error().is_some() || answer.get("errorType").is_some() {
        return Err(failed_invocation(&answer, output.request_id()));
    }
    match (answer.get("ok"), answer.get("error")) {
        (Some(ok), None) => Ok(ok.clone()),
        (None, Some(error)) => {
            let code = error["code"].as_str().unwrap_or("error");
            let message = error["message"].as_str().unwrap_or_default();
            let id = error["request_id"].as_str().filter(|id| !id.is_empty());
            let id = id.or(output.request_id()).unwrap_or("unknown");
            Err(Failure::Refused(one_line(&format!(
                "{code}: {message} (request_id {id})"
            ))))
        }
        _ => Err(Failure::NoAnswer(format!(
            "{name} answered neither {{\"ok\"}} nor {{\"error\"}}: {}",
            shown(&answer.to_string())
        ))),
    }
}

/// An invocation that failed in the function (a crash, Lambda's timeout, an event its runtime
/// could not read), from Lambda's error document `{"errorType", "errorMessage"}`.
fn failed_invocation(document: &Value, request_id: Option<&str>) -> Failure {
    let kind = document["errorType"].as_str().unwrap_or("Unhandled");
    let message = document["errorMessage"].as_str().unwrap_or("the invocation failed");
    let id = request_id.unwrap_or("unknown");
    Failure::Refused(one_line(&format!("{kind}: {message} (request_id {id})")))
}

/// Why `Invoke` itself failed: the network, or AWS refusing the call (an unknown function, no
/// permission, throttling), as `code: message`.
fn not_invoked(name: &str, error: &SdkError<InvokeError>) -> Failure {
    let (Some(service), Some(raw)) = (error.as_service_error(), error.raw_response()) else {
        return Failure::NoAnswer(format!("cannot invoke {name}: {}", causes(error)));
    };
    let body = raw.body().bytes().unwrap_or_default();
    let document: Value = serde_json::from_slice(body).unwrap_or_default();
    // cargo lambda watch answers a failed invocation with a 500 and the error document
    // (Lambda itself with a 200 and X-Amz-Function-Error): the function ran all the same.
    if document.get("errorType").is_some() {
        return failed_invocation(&document, raw.headers().get("x-amzn-requestid"));
    }
    let status = raw.status().as_u16();
    let why = match (service.code(), service.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => format!("{code} (HTTP {status})"),
        (None, Some(message)) => format!("HTTP {status}: {message}"),
        (None, None) => format!("HTTP {status}: {}", String::from_utf8_lossy(body)),
    };
    Failure::NoAnswer(format!("cannot invoke {name}: {}", shown(&why)))
}

/// An error and its sources on one line (the SDK's own Display says only "service error").
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text = format!("{text}: {cause}");
        }
        source = source.and_then(std::error::Error::source);
    }
    one_line(&text)
}

pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text from elsewhere (an HTML error page, say), on one line and cut short.
fn shown(text: &str) -> String {
    const MAX: usize = 300;
    let line = one_line(text);
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        merchant: Merchant,
    }

    fn command(args: &[&str]) -> Value {
        let cli = Cli::try_parse_from([&["merchant"], args].concat()).unwrap_or_else(|e| panic!("{e}"));
        match cli.merchant.command {
            MerchantCommand::Op(op) => serde_json::to_value(op).unwrap(),
            MerchantCommand::Raw(raw) => serde_json::from_str(&raw.command).unwrap(),
        }
    }

    #[test]
    fn the_subcommands_are_the_functions_ops() {
        let ops: Vec<&str> = wxa_shared::handlers::merchant::FUNCTION
            .ops()
            .iter()
            .map(|op| op.name)
            .collect();
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().replace('-', "_"))
            .filter(|name| name != "raw")
            .collect();
        assert_eq!(subcommands, ops);
    }

    #[test]
    fn customer_service_flags_become_the_commands_fields() {
        assert_eq!(
            command(&["send-customer-message", "--openid", "o_x", "--text", "hello"]),
            json!({"op": "send_customer_message", "openid": "o_x", "msgtype": "text", "text": {"content": "hello"}})
        );
        assert_eq!(
            command(&["send-customer-message", "--openid", "o_x", "--image", "m1"]),
            json!({"op": "send_customer_message", "openid": "o_x", "msgtype": "image", "image": {"media_id": "m1"}})
        );
        assert!(
            Cli::try_parse_from([
                "merchant",
                "send-customer-message",
                "--openid",
                "o_x",
                "--text",
                "a",
                "--image",
                "m"
            ])
            .is_err(),
            "one reply at a time"
        );
        assert_eq!(
            command(&["set-typing", "--openid", "o_x", "--typing", "false"]),
            json!({"op": "set_typing", "openid": "o_x", "typing": false})
        );
        let dir = std::env::temp_dir().join(format!("wxa-upload-{}", std::process::id()));
        std::fs::write(&dir, b"GIF89a").unwrap();
        assert_eq!(
            command(&["upload-temp-media", "--file", dir.to_str().unwrap()]),
            json!({"op": "upload_temp_media", "content_base64": "R0lGODlh"})
        );
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn message_and_link_flags_become_the_commands_fields() {
        assert_eq!(
            command(&[
                "send-subscribe-message",
                "--openid",
                "o_x",
                "--template-id",
                "tpl_1",
                "--data",
                r#"{"thing1": {"value": "tea"}}"#,
                "--page",
                "pages/order/order?id=1",
            ]),
            json!({"op": "send_subscribe_message", "openid": "o_x", "template_id": "tpl_1",
                   "data": {"thing1": {"value": "tea"}}, "page": "pages/order/order?id=1"})
        );
        assert!(
            Cli::try_parse_from([
                "merchant",
                "send-subscribe-message",
                "--openid",
                "o",
                "--template-id",
                "t",
                "--data",
                "[1]"
            ])
            .is_err(),
            "data must be an object"
        );
        assert_eq!(
            command(&["get-subscription", "--openid", "o_x", "--template-id", "tpl_1"]),
            json!({"op": "get_subscription", "openid": "o_x", "template_id": "tpl_1"})
        );
        for op in ["generate-url-link", "generate-scheme"] {
            assert_eq!(
                command(&[op, "--path", "pages/index/index", "--expire-days", "7"]),
                json!({"op": op.replace('-', "_"), "path": "pages/index/index", "expire_days": 7})
            );
        }
        assert_eq!(
            command(&[
                "generate-short-link",
                "--page-url",
                "pages/index/index?a=1",
                "--is-permanent"
            ]),
            json!({"op": "generate_short_link", "page_url": "pages/index/index?a=1", "is_permanent": true})
        );
        assert_eq!(
            command(&[
                "user-risk-rank",
                "--openid",
                "o_x",
                "--scene",
                "0",
                "--client-ip",
                "203.0.113.7"
            ]),
            json!({"op": "user_risk_rank", "openid": "o_x", "scene": 0, "client_ip": "203.0.113.7"})
        );
    }

    #[test]
    fn flags_become_the_commands_fields() {
        let base = ["--out-trade-no", "T100001"];
        let order = [
            "--openid",
            "o_x",
            "--description",
            "A cup of tea",
            "--amount-total",
            "100",
        ];
        assert_eq!(
            command(&[&["create-order"], &base[..], &order[..]].concat()),
            json!({"op": "create_order", "out_trade_no": "T100001", "openid": "o_x",
                   "description": "A cup of tea", "amount_total": 100})
        );
        let optional = ["--attach", "a", "--time-expire", "2026-11-26T12:00:00+08:00"];
        let full = command(&[&["create-order"], &base[..], &order[..], &optional[..]].concat());
        assert_eq!(
            (&full["attach"], &full["time_expire"]),
            (&json!("a"), &json!("2026-11-26T12:00:00+08:00"))
        );
        for op in ["get-order", "close-order", "get-shipping-state"] {
            assert_eq!(
                command(&[&[op], &base[..]].concat()),
                json!({"op": op.replace('-', "_"), "out_trade_no": "T100001"})
            );
        }
        assert_eq!(
            command(&[
                "refund",
                "--out-trade-no",
                "T1",
                "--out-refund-no",
                "R1",
                "--amount",
                "5",
                "--reason",
                "late"
            ]),
            json!({"op": "refund", "out_trade_no": "T1", "out_refund_no": "R1", "amount": 5, "reason": "late"})
        );
        assert_eq!(
            command(&["get-refund", "--out-refund-no", "R1"]),
            json!({"op": "get_refund", "out_refund_no": "R1"})
        );
        let infos = r#"[{"info_type": "活动名称", "info_content": "新会员有礼"}]"#;
        let transfer = [
            "create-transfer",
            "--out-bill-no",
            "B100001",
            "--openid",
            "o_x",
            "--amount",
            "500",
            "--scene-id",
            "1000",
            "--remark",
            "新会员开通有礼",
            "--report-infos",
            infos,
        ];
        assert_eq!(
            command(&transfer),
            json!({"op": "create_transfer", "out_bill_no": "B100001", "openid": "o_x", "amount": 500,
                   "scene_id": "1000", "remark": "新会员开通有礼",
                   "report_infos": [{"info_type": "活动名称", "info_content": "新会员有礼"}]})
        );
        let named = command(&[&transfer[..], &["--user-name", "张三"]].concat());
        assert_eq!(named["user_name"], "张三");
        for op in ["get-transfer", "cancel-transfer"] {
            assert_eq!(
                command(&[op, "--out-bill-no", "B100001"]),
                json!({"op": op.replace('-', "_"), "out_bill_no": "B100001"})
            );
        }
        let list = r#"[{"tracking_no": "SF1", "express_company": "SF", "item_desc": "Tea"}]"#;
        let shipping = [
            "upload-shipping",
            "--out-trade-no",
            "T1",
            "--logistics-type",
            "1",
            "--delivery-mode",
            "1",
        ];
        assert_eq!(
            command(&[&shipping[..], &["--shipping-list", list]].concat()),
            json!({"op": "upload_shipping", "out_trade_no": "T1", "logistics_type": 1, "delivery_mode": 1,
                   "shipping_list": [{"tracking_no": "SF1", "express_company": "SF", "item_desc": "Tea"}]})
        );
        let all = command(&[&shipping[..], &["--shipping-list", list, "--is-all-delivered"]].concat());
        assert_eq!(all["is_all_delivered"], true);
        assert_eq!(
            command(&[
                "notify-confirm-receive",
                "--out-trade-no",
                "T1",
                "--received-time",
                "1795536000"
            ]),
            json!({"op": "notify_confirm_receive", "out_trade_no": "T1", "received_time": 1795536000u64})
        );
        assert_eq!(command(&["raw", r#"{"op": "x"}"#]), json!({"op": "x"}));
    }

    #[test]
    fn json_flags_are_checked() {
        assert!(json_array("[]").is_ok());
        assert_eq!(json_array("{}").unwrap_err(), "must be a JSON array of items");
        assert!(json_array("[").unwrap_err().starts_with("is not JSON"));
        assert!(
            json_array("@/nonexistent/list.json")
                .unwrap_err()
                .starts_with("cannot read /nonexistent/list.json")
        );
        assert_eq!(json_text(r#" {"op": "x"} "#).unwrap(), r#" {"op": "x"} "#);
    }

    fn output(payload: &str, function_error: Option<&str>) -> InvokeOutput {
        InvokeOutput::builder()
            .status_code(200)
            .payload(Blob::new(payload))
            .set_function_error(function_error.map(str::to_owned))
            .build()
    }

    fn refused(result: Result<Value, Failure>) -> String {
        match result {
            Err(Failure::Refused(line)) => line,
            _ => panic!("not a refusal"),
        }
    }

    /// `Invoke` answered with an error status.
    fn call_failed(status: u16, body: &str, code: Option<&str>, message: Option<&str>) -> Failure {
        use aws_sdk_lambda::config::http::HttpResponse;
        use aws_sdk_lambda::error::ErrorMetadata;
        let mut metadata = ErrorMetadata::builder();
        if let Some(code) = code {
            metadata = metadata.code(code);
        }
        if let Some(message) = message {
            metadata = metadata.message(message);
        }
        let raw = HttpResponse::new(
            status.try_into().unwrap(),
            aws_sdk_lambda::primitives::SdkBody::from(body),
        );
        not_invoked(
            "merchant",
            &SdkError::service_error(InvokeError::generic(metadata.build()), raw),
        )
    }

    #[test]
    fn answers_are_read_by_the_contract() {
        assert_eq!(
            answer("m", &output(r#"{"ok": {"a": 1}}"#, None)).ok(),
            Some(json!({"a": 1}))
        );
        let error = r#"{"error": {"code": "order_conflict", "message": "another order", "request_id": "r-1"}}"#;
        assert_eq!(
            refused(answer("m", &output(error, None))),
            "order_conflict: another order (request_id r-1)"
        );
        let crashed = r#"{"errorType": "Runtime.ExitError", "errorMessage": "exit\nstatus 101"}"#;
        assert_eq!(
            refused(answer("m", &output(crashed, Some("Unhandled")))),
            "Runtime.ExitError: exit status 101 (request_id unknown)"
        );
        // cargo lambda may leave the header out: the document alone says so.
        assert!(refused(answer("m", &output(crashed, None))).starts_with("Runtime.ExitError"));
        let long_page = format!("<html>{}</html>", "x".repeat(1000));
        for odd in [&long_page[..], "{}", r#"{"ok": 1, "error": 2}"#] {
            assert!(
                matches!(answer("m", &output(odd, None)), Err(Failure::NoAnswer(_))),
                "{odd}"
            );
        }
    }

    #[test]
    fn a_failed_call_says_why_on_one_line() {
        // cargo lambda watch: a failed invocation is a 500 with Lambda's error document.
        let document = r#"{"errorType": "&DeserializeError", "errorMessage": "failed to deserialize\n"}"#;
        match call_failed(500, document, None, Some("failed to deserialize")) {
            Failure::Refused(line) => assert_eq!(line, "&DeserializeError: failed to deserialize (request_id unknown)"),
            _ => panic!("the function ran: a refusal"),
        }
        let not_found = call_failed(
            404,
            r#"{"Type": "User", "Message": "Function not found: arn"}"#,
            Some("ResourceNotFoundException"),
            Some("Function not found: arn"),
        );
        let denied = call_failed(403, "", Some("AccessDeniedException"), None);
        let page = call_failed(502, &format!("<html>\n{}</html>", "x".repeat(1000)), None, None);
        let reasons: Vec<String> = [not_found, denied, page]
            .into_iter()
            .map(|failure| match failure {
                Failure::NoAnswer(reason) => reason,
                _ => panic!("AWS refused the call: no answer"),
            })
            .collect();
        assert_eq!(
            reasons[0],
            "cannot invoke merchant: ResourceNotFoundException: Function not found: arn"
        );
        assert_eq!(reasons[1], "cannot invoke merchant: AccessDeniedException (HTTP 403)");
        assert!(reasons[2].starts_with("cannot invoke merchant: HTTP 502: <html> xxx") && reasons[2].ends_with('…'));
        assert!(reasons[2].chars().count() < 350, "{}", reasons[2]);
    }
}
