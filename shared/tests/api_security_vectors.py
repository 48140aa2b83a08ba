"""WeChat's API security mode written independently of our Rust code, with Python's
`cryptography`, from WeChat's guide (服务端 API 签名指南): the test (api_security.rs) checks that
what our code sends opens here and that what this sends opens in our code.

  python api_security_vectors.py keys           -> the console's keys (private key PKCS#1, as
                                                   the console downloads it) and WeChat's side
  python api_security_vectors.py open-request   <- {keys, url, appid, timestamp, body, signature}
                                                -> the request's plaintext JSON
  python api_security_vectors.py seal-answer    <- {keys, url, appid, timestamp, plaintext}
                                                -> {body, signature}
"""

import base64
import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
b64 = lambda b: base64.b64encode(b).decode()


def keys():
    app = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wechat = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "independent platform certificate")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(wechat.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(wechat, hashes.SHA256())
    )
    pem = lambda key, fmt: key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    return {
        "document": {
            "aes_key": b64(os.urandom(32)),
            "aes_sn": os.urandom(16).hex(),
            "private_key": pem(app, serialization.PrivateFormat.TraditionalOpenSSL),
            "private_key_sn": os.urandom(16).hex(),
            "platform_certificates": [
                {"sn": os.urandom(16).hex(), "certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}
            ],
        },
        "wechat_private_key": pem(wechat, serialization.PrivateFormat.PKCS8),
    }


def signed(url, appid, timestamp, body):
    return f"{url}\n{appid}\n{timestamp}\n".encode() + body


def open_request(req):
    doc = req["keys"]["document"]
    app = serialization.load_pem_private_key(doc["private_key"].encode(), None)
    body = req["body"].encode()
    app.public_key().verify(
        base64.b64decode(req["signature"]), signed(req["url"], req["appid"], req["timestamp"], body), PSS, hashes.SHA256()
    )
    sealed = json.loads(body)
    aad = f"{req['url']}|{req['appid']}|{req['timestamp']}|{doc['aes_sn']}".encode()
    iv = base64.b64decode(sealed["iv"])
    assert len(iv) == 12, "the IV is 12 bytes"
    data = base64.b64decode(sealed["data"]) + base64.b64decode(sealed["authtag"])
    return json.loads(AESGCM(base64.b64decode(doc["aes_key"])).decrypt(iv, data, aad))


def seal_answer(req):
    doc = req["keys"]["document"]
    wechat = serialization.load_pem_private_key(req["keys"]["wechat_private_key"].encode(), None)
    aad = f"{req['url']}|{req['appid']}|{req['timestamp']}|{doc['aes_sn']}".encode()
    iv = os.urandom(12)
    sealed = AESGCM(base64.b64decode(doc["aes_key"])).encrypt(iv, req["plaintext"].encode(), aad)
    body = json.dumps({"iv": b64(iv), "data": b64(sealed[:-16]), "authtag": b64(sealed[-16:])}).encode()
    signature = wechat.sign(signed(req["url"], req["appid"], req["timestamp"], body), PSS, hashes.SHA256())
    return {"body": body.decode(), "signature": b64(signature)}


if __name__ == "__main__":
    command = sys.argv[1]
    request = json.load(sys.stdin) if command != "keys" else None
    answer = {"keys": keys, "open-request": open_request, "seal-answer": seal_answer}[command]
    print(json.dumps(answer() if request is None else answer(request)))
