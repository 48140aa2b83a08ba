#!/usr/bin/env python3
"""Writes BENCHMARKS.md from what `make bench` leaves in target/bench/ and target/criterion/, then
appends the hand-written analysis of scripts/bench_notes.md."""
import datetime
import glob
import json
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target", "bench")
# The functions are the folders of functions/ (which a test holds to template.yaml's list).
FUNCTIONS = sorted(os.listdir(os.path.join(ROOT, "functions")))


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
    for fn in FUNCTIONS:
        path = os.path.join(ROOT, "target", lambda_dir, fn, "bootstrap")
        if os.path.exists(path):
            rows.append((fn, os.path.getsize(path), zipped_size(path)))
    return rows


def criterion():
    """{benchmark id: median ns} from criterion's output."""
    results = {}
    for path in glob.glob(os.path.join(ROOT, "target", "criterion", "**", "new", "benchmark.json"), recursive=True):
        bench = json.load(open(path))
        estimates = json.load(open(os.path.join(os.path.dirname(path), "estimates.json")))
        results[bench["full_id"]] = estimates["median"]["point_estimate"]
    return results


def cold_start(lines):
    cold = load("coldstart.json") or []
    if not cold:
        return
    floor = next((r for r in cold if r["subject"].startswith("hello")), None)
    python = next((r for r in cold if r["subject"].startswith("python")), None)
    lines += [
        "## Cold start (`target/release/coldstart --runs N`)",
        "",
        "init = exec → first `GET /next`; first = first event → answer (login: Secrets Manager read,",
        "jscode2session, PutItem, all cold connections); warm = the next event. The other functions get",
        "their event files, whose token is a placeholder: their first/warm columns time the refusal path",
        "(no AWS call); pay-notify's first event reads the secret and checks the signature (stale: 401).",
        "Real warm requests are in \"Throughput\" below.",
        "",
        "| subject | runs | init ms | init / floor | python init / init | first event ms | warm event ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in cold:
        vs_floor = f"{r['init_ms'] / floor['init_ms']:.2f}" if floor else ""
        vs_python = f"{python['init_ms'] / r['init_ms']:.0f}×" if python else ""
        lines.append(f"| {r['subject']} | {r['runs']} | {r['init_ms']:.2f} | {vs_floor} | {vs_python} | "
                     f"{r['first_ms']:.1f} | {r['warm_ms']:.2f} | {r['peak_rss_mb']:.1f} |")
    lines.append("")


def warm_cpu(lines):
    results = criterion()
    wechatpy = load("wechatpy.json")
    if not results:
        return
    lines += [
        "## Warm CPU (`cargo bench -p wxa-shared --bench warm`, criterion medians; wechatpy: `scripts/bench_wechatpy.py`)",
        "",
        "Same payloads on both sides (`target/bench/opendata-payloads.json`). Rust handler = API Gateway",
        "event JSON → lambda_http request → the function's work after the session read (body parse,",
        "AES-128-CBC, strict PKCS#7, JSON, watermark, answer) → API Gateway response JSON. Rust",
        "for_session = that work alone. wechatpy decrypt = `WeChatWxaCrypto.decrypt_message`; wechatpy",
        "handler = json.loads(event), json.loads(body), decrypt, the same answer, json.dumps(response).",
        "",
        "| function | Rust handler µs | of which lambda_http event parse µs | Rust for_session µs | wechatpy decrypt µs | wechatpy handler µs | handler vs handler | handler vs wechatpy decrypt |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fn in ["decrypt-phone", "werun", "share-info", "user-info"]:
        handler = results.get(f"handler/{fn}")
        own = results.get(f"for_session/{fn}")
        parse = results.get(f"event_parse/{fn}")
        if handler is None:
            continue
        py = (wechatpy or {}).get("functions", {}).get(fn, {})
        py_dec, py_handler = py.get("decrypt_us"), py.get("handler_us")
        lines.append(
            f"| {fn} | {handler / 1000:.2f} | " + (f"{parse / 1000:.2f}" if parse else "") + f" | {own / 1000:.2f} | "
            + (f"{py_dec:.2f}" if py_dec else "") + " | " + (f"{py_handler:.2f}" if py_handler else "") + " | "
            + (f"{py_handler * 1000 / handler:.1f}×" if py_handler else "") + " | "
            + (f"{py_dec * 1000 / handler:.1f}×" if py_dec else "") + " |")
    if wechatpy:
        lines += ["", f"Python: {wechatpy['python']}, wechatpy with `cryptography` (OpenSSL)."]
    lines += ["", "| primitive | ns per call |", "|---|---|"]
    for name in sorted(k for k in results if k.startswith("crypto/")):
        lines.append(f"| {name.removeprefix('crypto/')} | {results[name]:,.0f} |")
    lines.append("")


def throughput(lines):
    data = load("throughput.json")
    if not data:
        return
    results = criterion()
    stages = data["stages"]
    rows = {r["subject"]: r for r in data["instances"]}
    lines += [
        "## Throughput of one warm instance (`target/release/coldstart --throughput N`)",
        "",
        "Events back to back through the local Runtime API (one at a time, as Lambda sends them to one",
        "instance), real sessions and payloads, against moto and the simulator on this machine.",
        "",
        "| function | events | requests/s | p50 ms | p99 ms | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["instances"]:
        lines.append(f"| {r['subject']} | {r['events']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['peak_rss_mb']:.1f} |")
    hop = rows.get("hello", {}).get("p50_ms", 0)
    remote = {
        "session": [("DynamoDB GetItem", stages["dynamodb_get_item_ms"]),
                    ("checksession", stages.get("wechat_checksession_ms", 0))],
        "werun": [("DynamoDB GetItem", stages["dynamodb_get_item_ms"])],
        "decrypt-phone": [("DynamoDB GetItem", stages["dynamodb_get_item_ms"])],
        "login": [("jscode2session", stages["wechat_jscode2session_ms"]),
                  ("DynamoDB PutItem", stages["dynamodb_put_item_ms"])],
    }
    lines += [
        "",
        "Where a request's time goes (p50): the Runtime API hop is hello's p50; the remote calls are",
        "timed alone from the harness, right after, with the same clients (medians of 200); own CPU is",
        "criterion's `for_session/*` (session and login: not benchmarked alone; their own work is a",
        "token hash and a JSON answer, see the primitives). Hop + remote calls match the p50 within",
        "this VM's run-to-run noise (about ±0.3 ms): the functions wait, they do not compute.",
        "",
        "| function | p50 ms | runtime hop ms | remote calls ms | own CPU ms | own CPU share |",
        "|---|---|---|---|---|---|",
    ]
    for fn, calls in remote.items():
        if fn not in rows:
            continue
        total = rows[fn]["p50_ms"]
        cpu = results.get(f"for_session/{fn}")
        cpu_ms = cpu / 1e6 if cpu else 0.0
        names = " + ".join(f"{name} {ms:.2f}" for name, ms in calls)
        share = f"{cpu_ms / total:.1%}" if cpu else ""
        lines.append(f"| {fn} | {total:.2f} | {hop:.2f} | {names} | "
                     + (f"{cpu_ms:.4f}" if cpu else "n/a") + f" | {share} |")
    lines.append("")


def size(lines):
    rows = sizes("lambda")
    if not rows:
        return
    lines += ["## Size: arm64 `bootstrap` (`make build`, profile release)", "",
              "| function | bytes | zipped |", "|---|---|---|"]
    lines += [f"| {fn} | {size:,} | {z:,} |" for fn, size, z in rows]
    lines.append("")
    study = load("profiles.json")
    if study:
        lines += ["### Release profile study (login, arm64; `make bench-profiles`, codegen-units 1, stripped)", "",
                  "| profile settings | bytes | zipped | build s (from scratch) |", "|---|---|---|---|"]
        login = next((r for r in rows if r[0] == "login"), None)
        if login:
            lines.append(f"| opt-level=3 lto=thin (the release profile, above) | {login[1]:,} | {login[2]:,} | |")
        for r in study:
            lines.append(f"| {r['settings']} | {r['bytes']:,} | {r['zipped']:,} | {r.get('build_secs', '')} |")
        lines.append("")


def jitter(lines):
    rows = load("jitter.json")
    if not rows:
        return
    lines += ["## aws-lc's first random bytes (`scripts/bench_jitter.sh`, tools/jitter-probe, median of 20 processes)", "",
              "| aws-lc-sys build | first random bytes µs | next µs | whole process ms |", "|---|---|---|---|"]
    for r in rows:
        label = {"jitter": "with CPU-jitter entropy (aws-lc's default)",
                 "no-jitter": "`AWS_LC_SYS_NO_JITTER_ENTROPY=1` (this repo's builds)"}[r["build"]]
        lines.append(f"| {label} | {r['first_random_us']:,.1f} | {r['next_random_us']:.2f} | {r['process_ms']:.2f} |")
    lines.append("")


def fleet(lines):
    report = load("fleet.json")
    if not report:
        return
    n = report["instances"]
    base = report["baseline_own_token"]
    release = " --release" if report.get("build") == "release" else ""
    lines += [f"## One token for a fleet of {n:,} containers (`FLEET_INSTANCES={n} cargo test{release} -p wxa-shared --test fleet`)", "",
              f"{n:,} application states in one process ({report.get('build', 'release')} build), each with its own AWS and WeChat",
              "clients, all calling WeChat at once against moto and the simulator. moto is one Python process that",
              "serves the fleet's AWS calls one after another, so the latencies below are mostly its queue: they grow",
              "with the number of AWS calls the fleet makes (1,000 `GetSecretValue` before; those plus 1.6-2.8",
              "DynamoDB calls per container now), not with anything DynamoDB would make a container wait for. In",
              "production a cold container trades one `stable_token` round trip to WeChat for one `GetItem` in its region.", "",
              "| case | `stable_token` calls | `getticket` calls | DynamoDB calls per instance, mean / max | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|",
              f"| before: each container fetches its own token (secret + `stable_token`) | {base['stable_token_calls']:,} | | 0 / 0 | {base['p50_ms']:.1f} | {base['p99_ms']:.1f} |"]
    for p in report["phases"]:
        lines.append(f"| {p['phase']} | {p['stable_token_calls']} | {p['getticket_calls']} | "
                     f"{p['dynamodb_calls_per_instance_mean']:.2f} / {p['dynamodb_calls_per_instance_max']} | "
                     f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} |")
    alone = report.get("one_cold_container_alone")
    if alone:
        lines += ["", "One cold container at a time (20 each, no queue at moto), its token: "
                  f"from the shared item (secret + `GetItem`) p50 {alone['shared_item_p50_ms']:.2f} ms / p99 {alone['shared_item_p99_ms']:.2f} ms; "
                  f"its own (secret + `stable_token`) p50 {alone['own_token_p50_ms']:.2f} ms / p99 {alone['own_token_p99_ms']:.2f} ms "
                  "(locally every round trip is about 0: in production the first adds an in-region DynamoDB read, the second a round trip to WeChat)."]
    lines.append("")


def ledger(lines, provenance=None):
    report = load("ledger.json")
    if not report:
        return
    n = report["schedules"]
    lines += [f"## The ledger under faults: {n:,} random schedules (`make soak`: `LEDGER_SCHEDULES={n} cargo test --release -p wxa-shared --test ledger`)", ""]
    if provenance:
        lines += [provenance, ""]
    lines += [
              "Random schedules of orders, payments, closes, partial and full refunds and merchant transfers against the",
              "simulator, a fault injected at WeChat Pay calls, crashes between DynamoDB writes, notifications dropped,",
              "duplicated, delayed and reordered; after each, the ledger is checked against WeChat Pay's own",
              "(`shared/tests/ledger.rs`). Every schedule passed, or this section would not be written.", "",
              "| schedules | workers | seconds | schedules/s | operations | faults injected | crashes | notifications delivered / dropped |",
              "|---|---|---|---|---|---|---|---|",
              f"| {n:,} | {report['workers']} | {report['seconds']:.0f} | {report['schedules_per_second']:.1f} | "
              f"{report['operations']:,} | {report['faults_injected']:,} | {report['crashes']:,} | "
              f"{report['notifications_delivered']:,} / {report['notifications_dropped']:,} |", ""]
    kinds = report.get("operations_by_kind") or {}
    if kinds:
        lines += ["Operations by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())) + ".", ""]


def journey(lines):
    data = load("journey.json")
    if not data:
        return
    profiles = {p["name"]: p for p in data["profiles"]}
    hk = profiles.get("hong-kong")
    rows = data["rows"]
    hello = data["hello_init_ms"]
    subjects = []
    for r in rows:
        if r["subject"] not in subjects:
            subjects.append(r["subject"])
    steps = ["login", "phone", "werun", "journey"]

    def row(subject, profile, step):
        return next((r for r in rows if r["subject"] == subject and r["profile"] == profile and r["step"] == step), None)

    def conns(c):
        if not c:
            return ""
        return f"{c['dynamodb']}/{c['secretsmanager']}/{c['wechat']}"

    def calls(c):
        if c is None:
            return ""
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

    lines += [
        f"## Cold journey: the first session after idle (`target/release/coldstart --journey --runs {data['runs']}`)",
        "",
        "`login` cold → `decrypt-phone` cold (the current button's `{code}`) → `werun` cold: each step a",
        "fresh process under the local Runtime API (init + its first event), then a second, warm event to",
        "the same process. Every remote call over TLS (a CA made for the run, `TLS_ROOTS=system`), each",
        "destination behind its own latency proxy (`testkit::latency`): profile **hong-kong** = a function",
        f"in ap-east-1 calling AWS in its region ({hk['aws_ms']:g} ms one way) and WeChat's mainland endpoints",
        f"({hk['wechat_ms']:g} ms one way; WeChat Pay {hk['wechat_pay_ms']:g} ms); profile **zero** = the same path",
        "with no added delay (what moto, the simulator, TLS and the proxies cost here). moto sits behind a",
        "keep-alive front (`testkit::keep_alive`): werkzeug closes every connection, AWS endpoints do not.",
        "",
        "**Floor** of a step = the same subject's step under **zero** + the round trips no implementation",
        "avoids: per remote service the step must reach, one TCP handshake + one TLS 1.3 handshake + one",
        "request cold (3 round trips), one request warm; services in the order data dependencies force",
        "(login: secret → WeChat → DynamoDB; phone: {session, secret} → WeChat; werun: DynamoDB), the",
        "slowest of a group that does not depend on each other. Cold = init + first event (an on-demand",
        "cold start pays both back to back). Medians; ratios within this run.",
        "",
        "| step | subject | init ms | first event ms | cold ms | floor ms | cold / floor | warm ms | warm floor ms | warm / floor | connections opened cold / warm (DynamoDB/Secrets Manager/WeChat) | WeChat calls cold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in steps:
        for subject in subjects:
            r = row(subject, "hong-kong", step)
            if not r:
                continue
            init = f"{r['init_ms']:.1f}" if "init_ms" in r else ""
            first = f"{r['first_ms']:.1f}" if "first_ms" in r else ""
            lines.append(
                f"| {step} | {subject} | {init} | {first} | {r['cold_ms']:.1f} | {r['cold_floor_ms']:.1f} | "
                f"{r['cold_ratio']:.2f} | {r['warm_ms']:.1f} | {r['warm_floor_ms']:.1f} | {r['warm_ratio']:.2f} | "
                f"{conns(r.get('cold_connections'))}{' / ' + conns(r.get('warm_connections')) if r.get('warm_connections') else ''} | "
                f"{calls(r.get('cold_wechat_calls'))} |")
    lines += [
        "",
        "The same under **zero** (the floors' base):",
        "",
        "| step | subject | init ms | first event ms | cold ms | warm ms |",
        "|---|---|---|---|---|---|",
    ]
    for step in steps[:-1]:
        for subject in subjects:
            r = row(subject, "zero", step)
            if r:
                lines.append(f"| {step} | {subject} | {r['init_ms']:.2f} | {r['first_ms']:.2f} | {r['cold_ms']:.2f} | {r['warm_ms']:.2f} |")
    at_init, lazy = (subjects + [None, None])[:2]
    lines += [
        "",
        f"Init under hong-kong against its bound: 1.3 × hello's init ({hello.get('hong-kong', 0):.2f} ms) + what the",
        "preparations cost here (init with them − init without, both under zero: moto, the simulator, TLS)",
        "+ their network time under hong-kong, all started at once (the slowest chain of handshakes and reads).",
        "",
        "| step | init ms | hello init ms | preparations here ms | their network ms | bound ms | init / bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in steps[:-1]:
        r = row(at_init, "hong-kong", step)
        z, zl = row(at_init, "zero", step), row(lazy, "zero", step)
        if r and z and zl:
            local = max(0.0, z["init_ms"] - zl["init_ms"])
            bound = 1.3 * hello.get("hong-kong", 0) + local + r["at_init_network_ms"]
            lines.append(f"| {step} | {r['init_ms']:.1f} | {hello.get('hong-kong', 0):.2f} | {local:.1f} | "
                         f"{r['at_init_network_ms']:.0f} | {bound:.1f} | {r['init_ms'] / bound:.2f} |")
    lines.append("")


LEDGER_HEADING = "## The ledger under faults"


def ledger_only():
    """`make soak` alone: its section of BENCHMARKS.md replaced (or added) with its own date and
    commit, the sections of the last `make bench` left as they are."""
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    section = []
    ledger(section, f"Written by `make soak` on {datetime.date.today()} at commit `{commit}`, apart from the `make bench` run above.")
    if not section:
        sys.exit("bench_report: no target/bench/ledger.json (run make soak)")
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    start = text.find(LEDGER_HEADING)
    if start < 0:
        start = end = text.find("## Remote calls per warm request")
    else:
        following = text.find("\n## ", start + 1)
        end = len(text) if following < 0 else following + 1
    text = text[:start] + "\n".join(section) + "\n" + text[end:]
    open(path, "w").write(text)
    print("\n".join(section))


def main():
    if sys.argv[1:] == ["--ledger-only"]:
        return ledger_only()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.date.today()} (2-core x86_64 machine; local moto server and",
        "WeChat simulator; release builds under a local Lambda Runtime API, `tools/bench`). Lambda's own",
        "numbers differ (arm64, Firecracker, real network): these compare the subjects with each other on",
        "one machine, in one run.",
        "",
    ]
    cold_start(lines)
    warm_cpu(lines)
    throughput(lines)
    journey(lines)
    jitter(lines)
    fleet(lines)
    ledger(lines)
    size(lines)
    lines += ["## Remote calls per warm request", "",
              "Counted in the end-to-end tests (AWS SDK interceptor, simulator request log): see the table in",
              "README.md, \"Remote calls per warm request\".", ""]
    notes = os.path.join(ROOT, "scripts", "bench_notes.md")
    if os.path.exists(notes):
        lines += [open(notes).read().rstrip(), ""]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
