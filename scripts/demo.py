#!/usr/bin/env python3
"""`make demo`: a mini-program's journey through the stack `make dev` runs.

The WeChat simulator plays the phone (wx.login, the getPhoneNumber button, the encrypted
getWeRunData / getShareInfo / getUserInfo results); every other call goes to the functions, as a
mini-program's wx.request would. Each step prints the request and the answer, and the script
stops with an error if an answer is not the expected one. Standard library only.
"""
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request

# The HTTP API as deployed: the gateway of `make dev` routes /login, /phone, ... like API Gateway.
API = f"http://127.0.0.1:{os.environ.get('API_PORT', '9000')}"
SIM = f"http://127.0.0.1:{os.environ.get('SIM_PORT', '9100')}"
OPENID = f"o_demo_{int(time.time())}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def http(method, url, body=None, token=None, raw=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, content_type, data = response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as error:
        status, content_type, data = error.code, error.headers.get("content-type", ""), error.read()
    if raw and not content_type.startswith("application/json"):
        return status, data
    return status, (json.loads(data) if data else None)


def sim(path, body):
    status, answer = http("POST", SIM + path, body)
    if status != 200:
        sys.exit(f"demo: simulator {path} answered {status}: {answer}")
    return answer


def step(title):
    print(f"\n\033[1m{title}\033[0m")


# The routes the demo visited: at the end, held to template.yaml's (every route is walked).
VISITED = set()


def template_routes():
    """{(METHOD, path)} of template.yaml's HttpApi events, read with scripts/cfn_json.py."""
    import subprocess
    python = os.path.join(os.environ.get("WXA_VENV", os.path.join(ROOT, ".venv")), "bin", "python")
    out = subprocess.run([python, os.path.join(ROOT, "scripts", "cfn_json.py"), os.path.join(ROOT, "template.yaml")],
                         check=True, capture_output=True, text=True)
    routes = set()
    for resource in json.loads(out.stdout)["Resources"].values():
        for event in (resource.get("Properties") or {}).get("Events", {}).values():
            if event.get("Type") == "HttpApi":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes


def merchant(op, expect=None, **fields):
    """The back office's command, by the Lambda Invoke API (the gateway passes it through)."""
    command = dict(op=op, **fields)
    status, answer = http("POST", f"{API}/2015-03-31/functions/merchant/invocations", command)
    shown = json.dumps(command, ensure_ascii=False)
    answered = json.dumps(answer, ensure_ascii=False)
    print(f"  invoke merchant {shown[:150]}\n  -> {answered[:300]}")
    if status != 200 or not isinstance(answer, dict):
        sys.exit(f"demo: the merchant function answered {status}")
    if expect:
        if answer.get("error", {}).get("code") != expect:
            sys.exit(f"demo: expected the error {expect}")
        return answer["error"]
    if "ok" not in answer:
        sys.exit("demo: expected ok")
    return answer["ok"]


def push_answer(pushed):
    """What our POST /wechat/push answered the simulator's push (WeChat retries until `success`)."""
    delivery = pushed["deliveries"][0]
    print(f"  pushed to POST /wechat/push -> {delivery['status']} {delivery['body']}")
    if delivery["status"] != 200 or delivery["body"] != "success":
        sys.exit("demo: the push was not acknowledged")
    VISITED.add(("POST", "/wechat/push"))


def call(method, route, body=None, token=None, expect=200, code=None, path=None):
    """`route` as template.yaml names it; `path` when it has parameters."""
    VISITED.add((method, route))
    route = path or route
    status, answer = http(method, API + route, body, token)
    shown = json.dumps(body, ensure_ascii=False) if body is not None else ""
    if len(shown) > 120:
        shown = shown[:117] + "..."
    answered = json.dumps(answer, ensure_ascii=False)
    if len(answered) > 240:
        answered = answered[:237] + "..."
    print(f"  {method} {route} {shown}\n  -> {status} {answered}")
    if status != expect or (code and answer["error"]["code"] != code):
        sys.exit(f"demo: expected {expect} {code or ''}, got {status}")
    return answer


def main():
    try:
        before = http("GET", f"{SIM}/__sim/requests")[1]["counts"]
        urllib.request.urlopen(f"{API}/", timeout=5)
    except urllib.error.HTTPError:
        pass
    except OSError:
        sys.exit("demo: the stack is not running: start it with 'make dev' in another terminal")

    # An earlier demo moved the simulator's clock ahead (payments settle "a minute later"): set it
    # back to this machine's time, or open data sealed now would carry a watermark from the future.
    ahead = sim("/__sim/time", {"advance_secs": 0})["now"] - int(time.time())
    if ahead > 0:
        sim("/__sim/time", {"advance_secs": -ahead})

    step(f"1. wx.login on the phone: the simulator mints a code for {OPENID}")
    code = sim("/__sim/login", {"openid": OPENID})["code"]
    print(f"  code: {code}")

    step("2. POST /login: the server exchanges the code (jscode2session) and keeps the session_key")
    token = call("POST", "/login", {"code": code})["token"]

    step("3. GET /session: is the stored session_key still the one WeChat holds?")
    assert call("GET", "/session", token=token)["valid"] is True

    step("4. getPhoneNumber button: its code goes to POST /phone (getuserphonenumber)")
    phone_code = sim("/__sim/phone-code", {"openid": OPENID, "phoneNumber": "13800138000"})["code"]
    call("POST", "/phone", {"code": phone_code}, token)

    step("5. getWeRunData: the encrypted steps go to POST /werun")
    today = int(time.time()) // 86400 * 86400 - 8 * 3600
    steps = [{"timestamp": today - 86400 * i, "step": 6000 + 37 * i} for i in range(30)]
    sealed = sim("/__sim/encrypt", {"openid": OPENID, "data": {"stepInfoList": steps}})
    werun = call("POST", "/werun", sealed, token)
    print(f"  {len(werun['days'])} days, {werun['days'][0]['date']} .. {werun['days'][-1]['date']}, total {werun['total']}")

    step("6. getShareInfo: the encrypted share ticket info goes to POST /share-info")
    call("POST", "/share-info", sim("/__sim/encrypt", {"openid": OPENID, "data": {"openGId": "G_demo_group"}}), token)

    step("6b. Data that does not check out (another iv): one answer, whatever failed; it costs the session one of 5")
    tampered = dict(sim("/__sim/encrypt", {"openid": OPENID, "data": {"openGId": "G_demo_group"}}), iv="AAAAAAAAAAAAAAAAAAAAAA==")
    call("POST", "/share-info", tampered, token, expect=400, code="invalid_open_data")

    step("7. getUserInfo: rawData signed with sha1(rawData + session_key), profile encrypted -> POST /user-info")
    profile = {"openId": OPENID, "nickName": "Demo", "gender": 0, "language": "zh_CN", "city": "", "province": "",
               "country": "CN", "avatarUrl": "https://thirdwx.qlogo.cn/demo/132"}
    session_key = http("GET", f"{SIM}/__sim/user?openid={OPENID}")[1]["session_key"]  # the phone knows it, we don't
    raw = json.dumps({"nickName": "Demo", "gender": 0}, separators=(",", ":"))
    body = dict(sim("/__sim/encrypt", {"openid": OPENID, "data": profile}),
                rawData=raw, signature=hashlib.sha1((raw + session_key).encode()).hexdigest())
    call("POST", "/user-info", body, token)

    step("8. A mini-program code for a share page: POST /qrcode returns the image")
    body = {"scene": f"inviter={OPENID[-10:]}", "page": "pages/share/share", "width": 430}
    VISITED.add(("POST", "/qrcode"))
    status, image = http("POST", f"{API}/qrcode", body, token, raw=True)
    if status != 200 or not isinstance(image, bytes) or not image.startswith(b"\x89PNG"):
        sys.exit(f"demo: expected a PNG, got {status}: {image!r:.200}")
    os.makedirs(".dev", exist_ok=True)
    with open(".dev/qrcode.png", "wb") as f:
        f.write(image)
    print(f"  POST /qrcode {json.dumps(body)}\n  -> 200 image/png, {len(image)} bytes, saved to .dev/qrcode.png")

    step("9. wx.addCard needs a server-signed cardExt: POST /card/sign")
    signed = call("POST", "/card/sign", {"card_id": "pFS7Fjg8kV1IdDz01r4SQwMkuCKc", "bind_openid": True}, token)
    verdict = sim("/__sim/verify-card-ext", {"card_id": signed["cardId"], "cardExt": signed["cardExt"]})
    print(f"  the simulator, checking it as wx.addCard would: {verdict}")
    assert verdict["valid"] is True

    step("10. The same login code again is refused: a code works once")
    call("POST", "/login", {"code": code}, expect=400, code="invalid_login_code")

    step("11. The user runs wx.login on another device: the stored session_key is no longer current")
    sim("/__sim/login", {"openid": OPENID})
    call("POST", "/werun", sim("/__sim/encrypt", {"openid": OPENID, "data": {"stepInfoList": steps}}), token,
         expect=401, code="session_key_expired")
    print("  the server revoked that session: its key can decrypt nothing the phone sends now")
    call("GET", "/session", token=token, expect=401, code="invalid_token")

    step("12. The client logs in again (wx.login, POST /login); POST /session/reset then rotates a current key")
    token = call("POST", "/login", {"code": sim("/__sim/login", {"openid": OPENID})["code"]})["token"]
    call("POST", "/session/reset", token=token)
    assert call("GET", "/session", token=token)["valid"] is True
    call("POST", "/share-info", sim("/__sim/encrypt", {"openid": OPENID, "data": {"openGId": "G_demo_group"}}), token)

    step("13. The merchant's back office creates an order (invoking the merchant function); the amount never comes from the phone")
    out_trade_no = f"T{int(time.time())}{OPENID[-4:]}"
    order = merchant("create_order", out_trade_no=out_trade_no, openid=OPENID, description="A cup of tea",
                     amount_total=100)
    assert order["status"] == "UNPAID"
    again = merchant("create_order", out_trade_no=out_trade_no, openid=OPENID, description="A cup of tea",
                     amount_total=100)
    print(f"  the same command again is the same order (idempotent): {again == order}")
    merchant("create_order", out_trade_no=out_trade_no, openid=OPENID, description="Two cups",
             amount_total=200, expect="order_conflict")

    step("14. POST /pay/sign: the server places the order with WeChat Pay and signs wx.requestPayment's parameters")
    params = call("POST", "/pay/sign", {"out_trade_no": out_trade_no}, token)
    prepay_id = params["package"].split("=", 1)[1]

    step("15. The user pays; WeChat Pay notifies POST /pay/notify (signed, encrypted); the order is PAID")
    done = sim("/__sim/pay/complete", {"prepay_id": prepay_id})
    print(f"  notification deliveries: {done['deliveries']}")
    if done["deliveries"][0]["status"] == 204:
        VISITED.add(("POST", "/pay/notify"))
    page = call("GET", "/pay/orders/{out_trade_no}", token=token, path=f"/pay/orders/{out_trade_no}")
    assert page["status"] == "PAID"
    forged = sim("/__sim/pay/complete", {"prepay_id": prepay_id, "mode": "tampered"})
    print(f"  a tampered copy of the notification: {forged['deliveries'][0]['status']} {forged['deliveries'][0]['body']}")
    call("POST", "/pay/sign", {"out_trade_no": out_trade_no}, token, expect=409, code="order_already_paid")

    step("15b. The back office uploads shipping info (WeChat holds the money until then)")
    sim("/__sim/time", {"advance_secs": 61})  # WeChat knows a payment about a minute after it
    shipped = merchant("upload_shipping", out_trade_no=out_trade_no, logistics_type=1, delivery_mode=1,
                       shipping_list=[{"tracking_no": "SF1234567890", "express_company": "SF",
                                       "item_desc": "A cup of tea", "contact": {"receiver_contact": "138****0000"}}])
    assert shipped["shipping_state"] == "SHIPPED"
    print(f"  WeChat's view: {merchant('get_shipping_state', out_trade_no=out_trade_no)['order_state']} (2 = shipped)")

    step("15c. A partial refund (30 of 100 fen): reserved, applied for, then notified by WeChat Pay")
    refund = merchant("refund", out_trade_no=out_trade_no, out_refund_no=f"R{out_trade_no}", amount=30,
                      reason="a smaller cup")
    assert refund["status"] in ("PROCESSING", "SUCCESS")
    merchant("refund", out_trade_no=out_trade_no, out_refund_no=f"R2{out_trade_no}", amount=71,
             expect="refund_exceeds_paid")
    settled = sim("/__sim/time", {"advance_secs": 61})
    print(f"  WeChat Pay settles it and notifies: {settled.get('refunds_settled')}")
    refund = merchant("get_refund", out_refund_no=f"R{out_trade_no}")
    assert refund["status"] == "SUCCESS", refund
    page = call("GET", "/pay/orders/{out_trade_no}", token=token, path=f"/pay/orders/{out_trade_no}")
    assert page["refunded_total"] == 30

    step("15c2. A merchant transfer to the user's wallet: the back office creates it, the user confirms in the mini-program")
    out_bill_no = f"B{int(time.time())}{OPENID[-4:]}"
    bill = merchant("create_transfer", out_bill_no=out_bill_no, openid=OPENID, amount=500, scene_id="1000",
                    remark="新会员开通有礼",
                    report_infos=[{"info_type": "活动名称", "info_content": "新会员有礼"},
                                  {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}])
    assert bill["state"] == "WAIT_USER_CONFIRM", bill
    again = merchant("create_transfer", out_bill_no=out_bill_no, openid=OPENID, amount=500, scene_id="1000",
                     remark="新会员开通有礼",
                     report_infos=[{"info_type": "活动名称", "info_content": "新会员有礼"},
                                   {"info_type": "奖励说明", "info_content": "注册会员抽奖一等奖"}])
    print(f"  the same command again is the same bill (idempotent): {again['transfer_bill_no'] == bill['transfer_bill_no']}")
    confirm = call("POST", "/transfers/{out_bill_no}/confirm", token=token, path=f"/transfers/{out_bill_no}/confirm")
    print(f"  wx.requestMerchantTransfer({json.dumps(confirm)})")
    confirmed = sim("/__sim/pay/transfer/confirm", {"package": confirm["package"], "openid": OPENID})
    print(f"  the user confirms; WeChat Pay notifies: {confirmed.get('deliveries')}")
    bill = merchant("get_transfer", out_bill_no=out_bill_no)
    assert bill["state"] == "SUCCESS", bill
    call("POST", "/transfers/{out_bill_no}/confirm", token=token, path=f"/transfers/{out_bill_no}/confirm",
         expect=409, code="transfer_already_confirmed")

    step("15d. WeChat settles the order and tells us by message push (safe mode: signed, encrypted)")
    order = merchant("get_order", out_trade_no=out_trade_no)
    event = {"FromUserName": "o_wechat_order_manager", "MsgType": "event",
             "Event": "trade_manage_order_settlement", "merchant_trade_no": out_trade_no,
             "transaction_id": order["transaction_id"], "settlement_time": int(time.time())}
    pushed = sim("/__sim/push/send", {"message": event})
    push_answer(pushed)
    order = merchant("get_order", out_trade_no=out_trade_no)
    assert order.get("settled_at") and order["shipping_state"] == "CONFIRMED", order

    step("15e. Message push: the console's URL check, GET /wechat/push, echoes echostr only when signed")
    checked = sim("/__sim/push/verify-url", {})
    print(f"  the console's check: {checked['status']} echoed={checked['echoed']}")
    assert checked["echoed"], checked
    VISITED.add(("GET", "/wechat/push"))
    forged = sim("/__sim/push/verify-url", {"tamper": "signature"})
    print(f"  a forged check: {forged['status']} {forged['body']}")
    assert forged["status"] == 401

    step("15f. The user accepts a subscribe popup; WeChat pushes the event; one message may be sent, once")
    popup = sim("/__sim/subscribe/popup", {"openid": OPENID, "template_ids": ["tpl_order_shipped"], "accept": True})
    push_answer(popup["push"])
    record = merchant("get_subscription", openid=OPENID, template_id="tpl_order_shipped")
    assert record["remaining"] == 1, record
    merchant("send_subscribe_message", openid=OPENID, template_id="tpl_order_shipped",
             data={"thing1": {"value": "A cup of tea"}, "character_string2": {"value": "SF1234567890"}})
    merchant("send_subscribe_message", openid=OPENID, template_id="tpl_order_shipped",
             data={"thing1": {"value": "A cup of tea"}}, expect="no_subscription_left")
    tampered = sim("/__sim/push/send", {"message": {"FromUserName": OPENID, "MsgType": "event",
                                                     "Event": "subscribe_msg_popup_event"}, "tamper": "padding"})
    print(f"  a push with bad padding (signed): {tampered['deliveries'][0]['status']} {tampered['deliveries'][0]['body']}")
    assert tampered["deliveries"][0]["status"] == 401

    step("15g. Links into the mini-program for the back office: URL link and short link")
    merchant("generate_url_link", path="pages/index/index", query=f"order={out_trade_no}", expire_days=7)
    merchant("generate_short_link", page_url=f"pages/index/index?order={out_trade_no}", page_title="Your tea")

    step("15h. Content security with the caller's openid: a text check, and an image checked asynchronously")
    assert call("POST", "/content/check", {"content": "一起去喝茶吗？", "scene": 2}, token)["suggest"] == "pass"
    assert call("POST", "/content/check", {"content": "buy sim-porn here", "scene": 2}, token)["suggest"] == "risky"
    trace_id = call("POST", "/content/check-media", {"media_url": "https://cdn.example.com/sim-porn.jpg",
                                                     "media_type": 2, "scene": 1}, token)["trace_id"]
    assert call("GET", "/content/check-media/{trace_id}", token=token, path=f"/content/check-media/{trace_id}")["status"] == "pending"
    delivered = sim("/__sim/media-check/deliver", {"trace_id": trace_id})
    push_answer(delivered["push"])
    verdict = call("GET", "/content/check-media/{trace_id}", token=token, path=f"/content/check-media/{trace_id}")
    assert verdict["status"] == "done" and verdict["suggest"] == "risky", verdict

    step("15i. Customer service: the user writes; WeChat pushes it; it is recorded; the back office replies")
    written = sim("/__sim/customer-service/write", {"openid": OPENID, "msgtype": "text",
                                                     "content": "Is my tea on its way?"})
    push_answer(written)
    conversation = merchant("get_conversation", openid=OPENID)
    last = conversation["messages"][-1]
    assert last["from"] == "user" and last["content"] == "Is my tea on its way?", conversation
    print(f"  recorded; WeChat's window: {conversation['window']['left']} replies until {conversation['window']['until']}")
    merchant("set_typing", openid=OPENID, typing=True)
    merchant("send_customer_message", openid=OPENID, msgtype="text", text={"content": "Yes: SF1234567890."})
    theirs = http("GET", f"{SIM}/__sim/customer-service/conversation?openid={OPENID}")[1]
    reply = theirs["messages"][-1]
    print(f"  the user's chat (WeChat's side) ends with: {json.dumps(reply, ensure_ascii=False)[:160]}")
    assert reply["from"] == "app", theirs

    step("16. Without a token: 401")
    call("GET", "/session", expect=401, code="missing_token")

    step("17. POST /logout: the session is deleted; the token stops working at once")
    call("POST", "/logout", token=token, expect=204)
    call("GET", "/session", token=token, expect=401, code="invalid_token")

    step("18. Calls the server made to WeChat during the demo (simulator's log)")
    after = http("GET", f"{SIM}/__sim/requests")[1]["counts"]
    made = {api: n - before.get(api, 0) for api, n in after.items() if n > before.get(api, 0)}
    print("  " + json.dumps(made, sort_keys=True))
    # Nine functions call token-protected APIs, each in its own process: they share one access
    # token and one card ticket through the tokens table (a stack that ran the demo before
    # already holds both).
    tokens, tickets = made.get("stable_token", 0), made.get("getticket", 0)
    print(f"  stable_token calls: {tokens}, getticket calls: {tickets}")
    if tokens > 1 or tickets > 1 or (not before.get("stable_token") and tokens != 1):
        sys.exit("demo: the functions did not share one access token and one card ticket")
    mode = http("GET", f"{SIM}/__sim/api-security")[1]
    if mode["on"]:
        # WeChat's API security mode (make dev turns it on): the APIs that support it were called
        # signed and encrypted, and WeChat refused none of those calls.
        print(f"  API security mode: {mode['verified']} calls signed, encrypted and verified; {mode['refused']} refused")
        if mode["refused"] or not mode["verified"]:
            sys.exit("demo: calls in API security mode were refused, or none was made in it")
    missed = sorted(template_routes() - VISITED)
    if missed:
        sys.exit(f"demo: template.yaml routes the demo never walked: {missed}")
    print(f"\ndemo: every step behaved as expected; all {len(VISITED)} routes of template.yaml walked")


if __name__ == "__main__":
    main()
