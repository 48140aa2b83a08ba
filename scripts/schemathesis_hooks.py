"""schemathesis hooks for `st run openapi.yaml` against the local gateway
(tools/gateway/tests/schemathesis.rs sets SCHEMATHESIS_HOOKS to this file).

- Auth: every case gets a fresh login token from WXA_TOKEN_URL (the test stand-in's
  `POST /__test/token`). One token would not last the run: open data that does not check out
  costs its session, and after 5 failures the session is revoked; POST /logout ends it at once.
- The check `refused_for_an_unstated_constraint`: a request schemathesis generated as valid
  (positive) must not be refused for its form. The syntactic refusals below say the request
  broke a rule of its shape, so openapi.yaml must state that rule; the semantic ones
  (invalid_login_code, invalid_open_data, order_not_found, ...) depend on WeChat or stored
  state, which no schema can state.
"""

import os

import requests
import schemathesis

TOKEN_URL = os.environ["WXA_TOKEN_URL"]

# Error codes that refuse a request for its form, not its meaning.
SYNTACTIC = {
    "invalid_request",
    "invalid_json",
    "missing_body",
    "malformed_encrypted_data",
    "unsupported_media_type",
    "body_too_large",
}


@schemathesis.auth(refresh_interval=None)
class FreshToken:
    """A new session per case: no case sees another's revoked or logged-out token."""

    def get(self, case, context):
        answer = requests.post(TOKEN_URL, timeout=30)
        answer.raise_for_status()
        return answer.json()["token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def error_code(response):
    """`error.code` of the API's JSON error body, if the response is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


@schemathesis.check
def refused_for_an_unstated_constraint(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    code = error_code(response)
    if 400 <= response.status_code < 500 and code in SYNTACTIC:
        message = response.json()["error"].get("message", "")
        raise AssertionError(
            f"refused for a constraint openapi.yaml does not state: "
            f"{response.status_code} {code}: {message}"
        )
    return None
