#!/usr/bin/env python3
"""What many teams deploy instead: a Python Lambda importing boto3 and wechatpy, run against the
same local Runtime API as the Rust functions (tools/bench). Answers every event with a JSON 200."""
import json
import os
import urllib.request

import boto3  # noqa: F401  (the import cost is the point)
from wechatpy.crypto import WeChatWxaCrypto  # noqa: F401

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation"
dynamodb = boto3.client("dynamodb")  # built at init, as a Python handler module would

while True:
    with urllib.request.urlopen(API + "/next") as response:
        request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
        json.loads(response.read())
    body = json.dumps({"statusCode": 200, "body": json.dumps({"ok": True})}).encode()
    urllib.request.urlopen(urllib.request.Request(API + "/" + request_id + "/response", data=body, method="POST")).read()
