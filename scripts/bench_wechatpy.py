#!/usr/bin/env python3
"""wechatpy on the very payloads `cargo bench --bench warm` timed (target/bench/opendata-payloads.json):
`decrypt` is WeChatWxaCrypto(key, iv, appid).decrypt_message(encryptedData); `handler` is what a
Python Lambda handler does per warm request besides the session read: json.loads of the API
Gateway event and of its body, decrypt, the same answer as our function, json.dumps of the
response. Prints JSON: µs per call, best of 5 timeit repeats."""
import datetime
import hashlib
import json
import os
import platform
import sys
import timeit

from wechatpy.crypto import WeChatWxaCrypto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = json.load(open(os.path.join(ROOT, "target", "bench", "opendata-payloads.json")))
APP_ID, SESSION_KEY, OPENID = spec["app_id"], spec["session_key"], "o_bench_user"
PROFILE = ["nickName", "avatarUrl", "gender", "city", "province", "country", "language", "unionId", "openId"]
CHINA = datetime.timezone(datetime.timedelta(hours=8))


def answer(function, body):
    data = WeChatWxaCrypto(SESSION_KEY, body["iv"], APP_ID).decrypt_message(body["encryptedData"])
    if function == "decrypt-phone":
        return {k: data[k] for k in ("phoneNumber", "purePhoneNumber", "countryCode")}
    if function == "werun":
        days = sorted(({"date": datetime.datetime.fromtimestamp(d["timestamp"], CHINA).strftime("%Y-%m-%d"),
                        "timestamp": d["timestamp"], "step": d["step"]} for d in data["stepInfoList"]),
                      key=lambda d: d["timestamp"])
        return {"days": days, "total": sum(d["step"] for d in days)}
    if function == "share-info":
        return {"openGId": data["openGId"]}
    if function == "user-info":
        expected = hashlib.sha1((body["rawData"] + SESSION_KEY).encode()).hexdigest()
        assert expected == body["signature"] and data["openId"] == OPENID
        return {k: data[k] for k in PROFILE if k in data}
    raise ValueError(function)


def handler(function, event_text):
    event = json.loads(event_text)
    result = answer(function, json.loads(event["body"]))
    return json.dumps({"statusCode": 200, "headers": {"content-type": "application/json"},
                       "body": json.dumps(result), "isBase64Encoded": False})


def per_call_us(fn, number):
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


out = {"python": f"{platform.python_implementation()} {platform.python_version()}", "functions": {}}
for p in spec["payloads"]:
    function, event, body = p["function"], p["event"], p["body"]
    crypto = WeChatWxaCrypto(SESSION_KEY, body["iv"], APP_ID)
    out["functions"][function] = {
        "decrypt_us": per_call_us(lambda: crypto.decrypt_message(body["encryptedData"]), 5000),
        "handler_us": per_call_us(lambda: handler(function, event), 5000),
    }
json.dump(out, sys.stdout)
print()
