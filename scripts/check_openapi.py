#!/usr/bin/env python3
"""Checks recorded responses against openapi.yaml.

    check_openapi.py openapi.yaml responses.json

responses.json is a list of {"path", "method", "status", "content_type", "body"} (body: the JSON
value, or null for a non-JSON body). The spec must be valid OpenAPI; each response's status must be
documented for its route, its content type listed there, and a JSON body must match the schema
(error codes included: they are an enum). Exits non-zero with one line per mismatch.
"""
import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node and len(node) == 1 and node["$ref"].startswith("#/components/responses"):
        target = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def main(spec_path, records_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    validate(spec)
    with open(records_path, encoding="utf-8") as f:
        records = json.load(f)
    problems = []
    seen = set()
    for r in records:
        where = f'{r["method"]} {r["path"]} -> {r["status"]}'
        operation = spec["paths"].get(r["path"], {}).get(r["method"].lower())
        if operation is None:
            problems.append(f"{where}: the route is not in the spec")
            continue
        response = resolve(spec, operation["responses"].get(str(r["status"])))
        if response is None:
            problems.append(f"{where}: status not documented")
            continue
        seen.add((r["path"], r["method"].lower(), str(r["status"])))
        content = response.get("content")
        media = (r.get("content_type") or "").split(";")[0].strip()
        if content is None:
            if r.get("body") not in (None, ""):
                problems.append(f"{where}: a body where the spec has none")
            continue
        if media not in content:
            problems.append(f"{where}: content type {media!r} not in {sorted(content)}")
            continue
        if media == "application/json":
            schema = dict(content[media]["schema"])
            schema["components"] = spec["components"]
            errors = sorted(Draft202012Validator(schema).iter_errors(r["body"]), key=str)
            for error in errors[:3]:
                problems.append(f"{where}: {error.message} at {list(error.absolute_path)}")
    for p in problems:
        print(p)
    print(f"{len(records)} responses checked against {spec_path}: {len(problems)} mismatches, "
          f"{len(seen)} documented (route, method, status) pairs seen")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
