#!/usr/bin/env python3
"""The journey of tools/bench (login -> phone -> werun) as a team would deploy it in Python:
one Lambda process (boto3 + wechatpy, .venv-bench) serving the three routes, run against the same
local Runtime API, simulator and moto server as the Rust functions.

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT APP_ID=... APP_SECRET_ID=... SESSIONS_TABLE=... \\
    WECHAT_API_BASE=https://localhost:PORT AWS_REGION=... AWS_ENDPOINT_URL_DYNAMODB=... \\
    AWS_ENDPOINT_URL_SECRETS_MANAGER=... [AWS_CA_BUNDLE=... REQUESTS_CA_BUNDLE=...] \\
        .venv-bench/bin/python scripts/bench_python_journey.py

Routes (API Gateway HTTP API v2 events, by rawPath):
  POST /login  {"code"}                  -> {"token", "openid", "expires_in"}
  POST /phone  {"code"}, Bearer token    -> the phone_info object
  POST /werun  {"encryptedData", "iv"}, Bearer token -> {"stepInfoList": [...]}
Errors answer {"error": {"code", "message"}} with a 4xx or 5xx; the traceback goes to stderr.

Sessions go to the Rust functions' table (key token_hash = hex SHA-256 of the token, as
shared/src/store/sessions.rs writes them). Tokens are "py_" + 43 base64url characters: the Rust
functions refuse any token that is not exactly 43 characters before reading the table, so they
never look these items up.

`handle(event)` is importable; the Runtime API loop runs only as a script.
"""
import base64
import hashlib
import json
import os
import secrets
import sys
import time
import traceback
import urllib.request

import boto3
import wechatpy
from wechatpy.crypto import WeChatWxaCrypto
from wechatpy.exceptions import InvalidAppIdException, WeChatClientException

APP_ID = os.environ["APP_ID"]
APP_SECRET_ID = os.environ["APP_SECRET_ID"]
SESSIONS_TABLE = os.environ["SESSIONS_TABLE"]
WECHAT_API_BASE = os.environ["WECHAT_API_BASE"].rstrip("/")
SESSION_TTL_SECS = int(os.environ.get("SESSION_TTL_SECS", str(7 * 24 * 3600)))
# botocore reads the region from AWS_DEFAULT_REGION only (Lambda sets both); the harness sets AWS_REGION.
REGION = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

# Init, as a Python handler module does it: the clients are built here, no network yet. Their
# endpoints come from AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL_SECRETS_MANAGER and their CA
# from AWS_CA_BUNDLE (botocore's own settings).
dynamodb = boto3.client("dynamodb", region_name=REGION)
secretsmanager = boto3.client("secretsmanager", region_name=REGION)

_app_secret = None  # from Secrets Manager on first use, then kept for the process's life
_wechat = None  # the WeChatClient, with wechatpy's default in-memory access token storage


class WeChatClient(wechatpy.WeChatClient):
    """wechatpy's client with every URL on WECHAT_API_BASE instead of https://api.weixin.qq.com.

    wechatpy builds URLs from the client's API_BASE_URL (cgi-bin calls), from each API group's own
    API_BASE_URL (client.wxa: https://api.weixin.qq.com/) and, for the access token, from a URL
    written into fetch_access_token; all three are moved. HTTPS is verified against
    REQUESTS_CA_BUNDLE (requests' environment settings)."""

    API_BASE_URL = WECHAT_API_BASE + "/cgi-bin/"

    def __init__(self, appid, secret, **kwargs):
        super().__init__(appid, secret, **kwargs)
        self.wxa.API_BASE_URL = WECHAT_API_BASE + "/"

    def fetch_access_token(self):
        # wechatpy 1.8.18's own fetch, only moved: GET /cgi-bin/token?grant_type=client_credential
        # (not /cgi-bin/stable_token), kept in the client's MemoryStorage. So every cold process
        # fetches a token of its own, and each fetch invalidates the one fetched before it.
        return self._fetch_access_token(
            url=WECHAT_API_BASE + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def app_secret():
    global _app_secret
    if _app_secret is None:
        value = secretsmanager.get_secret_value(SecretId=APP_SECRET_ID)["SecretString"]
        _app_secret = json.loads(value)["app_secret"]
    return _app_secret


def wechat():
    global _wechat
    if _wechat is None:
        _wechat = WeChatClient(APP_ID, app_secret(), timeout=10)
    return _wechat


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def json_body(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        value = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_request", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", "the body is not a JSON object")
    return value


def string_field(body, name):
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_request", f"{name} is missing")
    return value


def session(event):
    """The live session of the bearer token (one consistent GetItem), or a 401."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    auth = headers.get("authorization", "")
    token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
    if not token.startswith("py_"):
        raise ApiError(401, "invalid_token", "the login token is unknown or expired: log in again")
    item = dynamodb.get_item(
        TableName=SESSIONS_TABLE, Key={"token_hash": {"S": token_hash(token)}}, ConsistentRead=True
    ).get("Item")
    if item is None or int(item["expires_at"]["N"]) <= time.time():
        raise ApiError(401, "invalid_token", "the login token is unknown or expired: log in again")
    return item


def wechat_call(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except WeChatClientException as e:
        if e.errcode in (40029, 40163):  # invalid code, code been used
            raise ApiError(400, "invalid_code", f"WeChat refused the code: {e.errcode} {e.errmsg}") from e
        raise ApiError(502, "wechat_error", f"WeChat answered {e.errcode} {e.errmsg}") from e


def login(event):
    code = string_field(json_body(event), "code")
    # code_to_session: GET /sns/jscode2session. wechatpy 1.8.18 adds an access_token parameter
    # to every call, so on a client without a token it first fetches one (fetch_access_token).
    result = wechat_call(wechat().wxa.code_to_session, code)
    token = "py_" + secrets.token_urlsafe(32)
    now = int(time.time())
    item = {
        "token_hash": {"S": token_hash(token)},
        "openid": {"S": result["openid"]},
        "session_key": {"S": result["session_key"]},
        "created_at": {"N": str(now)},
        "expires_at": {"N": str(now + SESSION_TTL_SECS)},
    }
    if result.get("unionid"):
        item["unionid"] = {"S": result["unionid"]}
    dynamodb.put_item(TableName=SESSIONS_TABLE, Item=item)
    return 200, {"token": token, "openid": result["openid"], "expires_in": SESSION_TTL_SECS}


def phone(event):
    code = string_field(json_body(event), "code")
    session(event)
    client = wechat()
    # wechatpy 1.8.18 has no method for it: a plain client.post on the wxa base, with the
    # client's access token (fetched first on a cold client).
    result = wechat_call(
        client.post, "wxa/business/getuserphonenumber", api_base_url=client.wxa.API_BASE_URL, data={"code": code}
    )
    return 200, result["phone_info"]


def werun(event):
    body = json_body(event)
    encrypted, iv = string_field(body, "encryptedData"), string_field(body, "iv")
    item = session(event)
    try:
        data = WeChatWxaCrypto(item["session_key"]["S"], iv, APP_ID).decrypt_message(encrypted)
    except (ValueError, KeyError, InvalidAppIdException) as e:  # bad base64, padding, JSON, watermark
        raise ApiError(400, "invalid_data", f"the data does not decrypt: {type(e).__name__}") from e
    return 200, {"stepInfoList": data["stepInfoList"]}


ROUTES = {("POST", "/login"): login, ("POST", "/phone"): phone, ("POST", "/werun"): werun}


def handle(event):
    """An API Gateway HTTP API (payload 2.0) event -> its proxy response."""
    try:
        method = event.get("requestContext", {}).get("http", {}).get("method", "POST")
        route = ROUTES.get((method, event.get("rawPath")))
        if route is None:
            raise ApiError(404, "not_found", f"no route {method} {event.get('rawPath')}")
        status, body = route(event)
    except ApiError as e:
        if e.status >= 500 or e.__cause__ is not None:
            traceback.print_exc(file=sys.stderr)
        status, body = e.status, {"error": {"code": e.code, "message": e.message}}
    except Exception as e:  # a real failure: a 500 the harness sees, the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        # Only the exception's type: requests' messages quote the URL, and wechatpy puts the app
        # secret in the cgi-bin/token and jscode2session query strings.
        status, body = 500, {"error": {"code": "internal_error", "message": type(e).__name__}}
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def main():
    api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation"
    while True:
        with urllib.request.urlopen(api + "/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(response.read())
        body = json.dumps(handle(event)).encode()
        urllib.request.urlopen(urllib.request.Request(api + "/" + request_id + "/response", data=body, method="POST")).read()


if __name__ == "__main__":
    main()
