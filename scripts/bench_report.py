#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the JSON the bench harness leaves in target/bench/."""
import datetime
import json
import os
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "bench")


def load(name):
    path = os.path.join(BENCH, name)
    return json.load(open(path)) if os.path.exists(path) else None


def zipped_size(path):
    out = os.path.join(BENCH, "bootstrap.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return os.path.getsize(out)


def sizes(lambda_dir):
    rows = []
    base = os.path.join(ROOT, "target", lambda_dir)
    if not os.path.isdir(base):
        return rows
    for fn in sorted(os.listdir(base)):
        path = os.path.join(base, fn, "bootstrap")
        if os.path.exists(path):
            rows.append((fn, os.path.getsize(path), zipped_size(path)))
    return rows


def main():
    cold = load("coldstart.json") or []
    decrypt = load("decrypt.json")
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.date.today()} (2-core machine; local moto server and",
        "WeChat simulator; x86_64 release builds run under a local Lambda Runtime API, `tools/bench`).",
        "Medians of the runs given. Lambda's own numbers differ (arm64, Firecracker, real network):",
        "these compare the subjects with each other on one machine, in one run.",
        "",
        "## Cold start (`cargo run -p bench --release --bin coldstart -- --runs N`)",
        "",
        "init = exec → first `GET /next`; first = first event → answer (login: Secrets Manager read,",
        "jscode2session, PutItem, all cold connections); warm = the next event. The other functions get",
        "their event files, whose token is a placeholder: their first/warm columns time the refusal path",
        "(no AWS call); pay-notify's first event reads the secret and checks the signature (stale: 401).",
        "",
        "| subject | runs | init ms | first event ms | warm event ms | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    floor = next((r for r in cold if r["subject"].startswith("hello")), None)
    python = next((r for r in cold if r["subject"].startswith("python")), None)
    for r in cold:
        lines.append(f"| {r['subject']} | {r['runs']} | {r['init_ms']:.1f} | {r['first_ms']:.1f} | "
                     f"{r['warm_ms']:.2f} | {r['peak_rss_mb']:.1f} |")
    login = next((r for r in cold if r["subject"] == "login"), None)
    if login and floor and python:
        lines += ["", f"Ratios: login init / hello init = {login['init_ms'] / floor['init_ms']:.2f}; "
                      f"python init / login init = {python['init_ms'] / login['init_ms']:.1f}; "
                      f"python RSS / login RSS = {python['peak_rss_mb'] / login['peak_rss_mb']:.1f}."]
    lines += ["", "Where init goes: `strace` shows the functions reading every file of `/etc/ssl/certs` (441 on",
              "this Debian machine) to build a TLS root store per HTTP client. Sharing one reqwest client between",
              "the WeChat and WeChat Pay clients (2 root stores instead of 3) took login's init from 13.0 to",
              "9.3 ms. With `SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt SSL_CERT_DIR=/nonexistent` (one",
              "bundle file, as Lambda's AL2023 image lays out `/etc/pki/tls/certs`), 10 runs: hello 1.6 ms,",
              "login 5.0 ms, session 4.9 ms. What is left is parsing the bundle for each of the two clients.",
              "Secrets and tokens are fetched lazily: init makes no network call."]
    if decrypt:
        lines += ["", "## Warm CPU: open-data decryption (`coldstart --decrypt`)", "",
                  "The WeChat docs' sample (AES-128-CBC, strict PKCS#7, JSON, watermark check), per call:", "",
                  "| implementation | µs per call |", "|---|---|",
                  f"| `wxa_shared::opendata::open` (release) | {decrypt['rust_opendata_open_us']:.2f} |"]
        if decrypt.get("wechatpy_decrypt_message_us"):
            lines.append(f"| wechatpy `WeChatWxaCrypto.decrypt_message` (CPython 3.11, timeit) | "
                         f"{decrypt['wechatpy_decrypt_message_us']:.2f} |")
    for title, directory in [("release (opt-level 3, thin LTO, 1 codegen unit, stripped)", "lambda"),
                             ("release-s (the same, opt-level \"s\")", "lambda-release-s")]:
        rows = sizes(directory)
        if rows:
            lines += ["", f"## Size: arm64 `bootstrap`, profile {title}", "",
                      "| function | bytes | zipped |", "|---|---|---|"]
            lines += [f"| {fn} | {size:,} | {z:,} |" for fn, size, z in rows]
    lines += ["", "## Remote calls per warm request", "",
              "Counted in the end-to-end tests (AWS SDK interceptor, simulator request log): see the table in",
              "README.md, \"Remote calls per warm request\".", ""]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
