//! `template.yaml` is the one list of functions and routes. These tests hold the code's list of
//! functions ([`FUNCTIONS`]: name, parts, routes) against it, and each function's IAM policy and
//! settings against the parts it declares: a function reads only the secrets, tables and
//! settings it uses, and the merchant's pay keys only where payments are made.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use wxa_shared::function::{FUNCTIONS, Function};

/// The template's functions by binary name.
fn template_functions(template: &Value) -> BTreeMap<String, Value> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .map(|r| {
            let binary = r["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .expect("every function names its Binary")
                .to_owned();
            (binary, r.clone())
        })
        .collect()
}

fn registered(name: &str) -> &'static Function {
    FUNCTIONS
        .iter()
        .copied()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("template.yaml has the function {name}; wxa_shared::function::FUNCTIONS does not"))
}

/// The `Ref`/`Fn::GetAtt` targets of a policy statement's resources.
fn resource_names(resource: &Value) -> Vec<String> {
    match resource {
        Value::Array(items) => items.iter().flat_map(resource_names).collect(),
        Value::Object(o) if o.contains_key("Ref") => vec![o["Ref"].as_str().unwrap().to_owned()],
        Value::Object(o) if o.contains_key("Fn::GetAtt") => vec![o["Fn::GetAtt"][0].as_str().unwrap().to_owned()],
        // `${OrdersTable.Arn}/index/...`: the table's index.
        Value::Object(o) if o.contains_key("Fn::Sub") => {
            let text = o["Fn::Sub"].as_str().unwrap();
            let name = text.strip_prefix("${").and_then(|t| t.split_once('.')).map(|(n, _)| n);
            vec![name.unwrap_or_else(|| panic!("a Sub resource: {text}")).to_owned()]
        }
        other => panic!("a policy resource that is not a Ref or GetAtt: {other}"),
    }
}

/// What a function's policy grants: resource name → actions.
fn grants(function: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for policy in function["Properties"]["Policies"].as_array().into_iter().flatten() {
        // A policy under a condition (`!If [Cond, policy, AWS::NoValue]`): what it grants when on.
        let policy = match policy.get("Fn::If") {
            Some(branches) => {
                assert_eq!(
                    branches[2],
                    serde_json::json!({"Ref": "AWS::NoValue"}),
                    "nothing when off"
                );
                &branches[1]
            }
            None => policy,
        };
        for statement in policy["Statement"].as_array().expect("inline statements only") {
            assert_eq!(statement["Effect"], "Allow");
            let actions: Vec<String> = match &statement["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
                other => panic!("Action {other}"),
            };
            for resource in resource_names(&statement["Resource"]) {
                grants.entry(resource).or_default().extend(actions.iter().cloned());
            }
        }
    }
    grants
}

#[test]
fn every_function_and_route_of_the_template_is_the_codes_and_back() {
    let template = testkit::template();
    let functions = template_functions(&template);
    for function in FUNCTIONS {
        assert!(
            functions.contains_key(function.name),
            "{} is in FUNCTIONS but not in template.yaml",
            function.name
        );
    }
    for (name, resource) in &functions {
        let function = registered(name);
        let in_template: BTreeSet<(String, String)> = resource["Properties"]["Events"]
            .as_object()
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|e| e["Type"] == "HttpApi")
            .map(|e| {
                let p = &e["Properties"];
                (
                    p["Method"].as_str().unwrap().to_uppercase(),
                    p["Path"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let in_code: BTreeSet<(String, String)> = function
            .routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(in_template, in_code, "{name}: template.yaml's routes vs the code's");
    }
}

#[test]
fn each_function_may_read_only_the_secrets_and_tables_it_uses() {
    let template = testkit::template();
    for (name, resource) in template_functions(&template) {
        let parts = registered(&name).parts;
        let grants = grants(&resource);
        let secrets: BTreeSet<&str> = grants
            .iter()
            .filter(|(_, actions)| actions.iter().any(|a| a.starts_with("secretsmanager:")))
            .map(|(r, _)| r.as_str())
            .collect();
        let mut expected = BTreeSet::new();
        // An automatic reply, when the operator sets one, is a WeChat call (see Parts::auto_reply).
        if parts.wechat || parts.auto_reply {
            expected.insert("AppSecretArn");
        }
        if parts.push {
            expected.insert("PushSecretArn");
        }
        if parts.pay {
            expected.insert("PaySecretArn");
        }
        assert_eq!(secrets, expected, "{name}: the secrets its policy lets it read");
        for (resource, actions) in &grants {
            for action in actions {
                match action.split_once(':').map(|(service, _)| service) {
                    Some("secretsmanager") => assert_eq!(action, "secretsmanager:GetSecretValue", "{name}"),
                    Some("dynamodb") => {}
                    _ => panic!("{name}: an action beyond DynamoDB and Secrets Manager: {action}"),
                }
            }
            let uses = match resource.as_str() {
                "SessionsTable" => parts.sessions,
                "OrdersTable" => parts.orders,
                "RefundsTable" => parts.refunds,
                "TransfersTable" => parts.transfers,
                "MessagesTable" => parts.messages,
                "TokensTable" => parts.access_token || parts.auto_reply,
                "AppSecretArn" | "PaySecretArn" | "PushSecretArn" => true,
                other => panic!("{name}: a grant on {other}"),
            };
            assert!(uses, "{name} may use {resource} without declaring the part");
        }
        if parts.sessions {
            assert!(
                grants.contains_key("SessionsTable"),
                "{name} declares sessions but may not read them"
            );
        }
        if parts.access_token || parts.auto_reply {
            let actions = grants.get("TokensTable").cloned().unwrap_or_default();
            let expected: BTreeSet<String> = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
                .map(String::from)
                .into();
            assert_eq!(
                actions, expected,
                "{name}: reads the shared token, refreshes it under a lease, nothing more"
            );
        }
    }
}

#[test]
fn invoked_functions_have_no_route_and_scheduled_ones_a_schedule() {
    use wxa_shared::function::Entry;
    let template = testkit::template();
    for (name, resource) in template_functions(&template) {
        let events: Vec<&str> = resource["Properties"]["Events"]
            .as_object()
            .map(|e| e.values().map(|v| v["Type"].as_str().unwrap()).collect())
            .unwrap_or_default();
        match registered(&name).entry {
            Entry::Routes(routes) => {
                assert!(
                    !routes.is_empty() && events.iter().all(|t| *t == "HttpApi"),
                    "{name}: {events:?}"
                )
            }
            Entry::Ops(ops) => assert!(
                !ops.is_empty() && events.is_empty(),
                "{name} is invoked by the back office (IAM), never through the API: {events:?}"
            ),
            Entry::Scheduled(_) => assert_eq!(events, ["Schedule"], "{name} runs on a schedule"),
        }
    }
}

#[test]
fn each_function_is_given_exactly_the_settings_it_reads() {
    let template = testkit::template();
    let globals: BTreeSet<String> = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for (name, resource) in template_functions(&template) {
        let settings = registered(&name).parts.settings();
        let mut given = globals.clone();
        if let Some(own) = resource["Properties"]["Environment"]["Variables"].as_object() {
            given.extend(own.keys().cloned());
        }
        for setting in &given {
            assert!(
                settings.iter().any(|(n, _)| n == setting),
                "{name} is given {setting}, which it never reads"
            );
        }
        for (setting, required) in settings {
            assert!(
                !required || given.contains(setting),
                "{name} needs {setting}, which the template does not set"
            );
        }
    }
}

#[test]
fn the_lambda_timeout_fits_one_aws_call_and_one_wechat_call() {
    let template = testkit::template();
    let timeout_secs = template["Globals"]["Function"]["Timeout"]
        .as_u64()
        .expect("a global Timeout");
    let needed = std::time::Duration::from_millis(wxa_shared::config::DEFAULT_WECHAT_TIMEOUT_MS)
        + wxa_shared::net::aws::OPERATION_TIMEOUT
        + wxa_shared::deadline::MARGIN;
    assert!(
        std::time::Duration::from_secs(timeout_secs) >= needed,
        "Timeout {timeout_secs} s is shorter than the budgets' {needed:?}"
    );
    for (name, resource) in template_functions(&template) {
        assert!(
            resource["Properties"].get("Timeout").is_none(),
            "{name} sets its own Timeout: keep the one in Globals, which the budgets agree with"
        );
    }
}

/// `(METHOD, path)` of every operation in an OpenAPI document (as JSON).
fn openapi_routes(openapi: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// What `openapi` lacks of the template's routes, and what it has that the template does not.
fn openapi_mismatches(openapi: &Value) -> Vec<String> {
    let template: BTreeSet<(String, String)> = testkit::template_routes()
        .into_iter()
        .map(|(_, method, path)| (method, path))
        .collect();
    let documented = openapi_routes(openapi);
    let mut problems = Vec::new();
    for (method, path) in template.difference(&documented) {
        problems.push(format!(
            "openapi.yaml lacks {method} {path}, which template.yaml routes"
        ));
    }
    for (method, path) in documented.difference(&template) {
        problems.push(format!(
            "openapi.yaml has {method} {path}, which template.yaml does not route"
        ));
    }
    problems
}

#[test]
fn openapi_documents_every_route_and_no_other() {
    let openapi = testkit::openapi();
    assert_eq!(openapi_mismatches(&openapi), Vec::<String>::new());
}

#[test]
fn a_route_missing_from_openapi_is_named() {
    // A copy of openapi.yaml without `POST /logout`: the check must say so.
    let text = std::fs::read_to_string(testkit::workspace_root().join("openapi.yaml")).unwrap();
    let start = text.find("\n  /logout:\n").expect("openapi.yaml documents /logout") + 1;
    let end = start + 1 + text[start + 1..].find("\n  /").expect("another path follows") + 1;
    let copy = std::env::temp_dir().join(format!("openapi-without-logout-{}.yaml", std::process::id()));
    std::fs::write(&copy, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let openapi = testkit::yaml_file(&copy);
    let _ = std::fs::remove_file(&copy);
    assert_eq!(
        openapi_mismatches(&openapi),
        ["openapi.yaml lacks POST /logout, which template.yaml routes"]
    );
}

#[test]
fn every_route_has_an_event_and_every_event_a_route() {
    let routes = testkit::template_routes();
    for (name, method, path) in &routes {
        let events = testkit::events_for(method, path);
        assert!(!events.is_empty(), "events/ has no event for {method} {path} ({name})");
        for file in events {
            let event: Value = serde_json::from_str(
                &std::fs::read_to_string(testkit::workspace_root().join("events").join(&file)).unwrap(),
            )
            .unwrap();
            let raw_path = event["rawPath"].as_str().unwrap_or_default();
            let segments_match = raw_path.split('/').count() == path.split('/').count()
                && raw_path
                    .split('/')
                    .zip(path.split('/'))
                    .all(|(have, want)| have == want || (want.starts_with('{') && !have.is_empty()));
            assert!(segments_match, "{file}: rawPath {raw_path} is not {path}");
            assert_eq!(event["requestContext"]["http"]["method"], method.as_str(), "{file}");
            assert_eq!(event["requestContext"]["routeKey"], event["routeKey"], "{file}");
        }
    }
    for entry in std::fs::read_dir(testkit::workspace_root().join("events")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let event: Value = serde_json::from_str(
            &std::fs::read_to_string(testkit::workspace_root().join("events").join(&file)).unwrap(),
        )
        .unwrap();
        let key = event["routeKey"].as_str().unwrap_or_default();
        assert!(
            routes.iter().any(|(_, m, p)| key == format!("{m} {p}")),
            "events/{file} is for {key:?}, which template.yaml does not route"
        );
    }
}

#[test]
fn every_function_folder_is_a_template_function_running_its_own_routes() {
    let template = testkit::template();
    let in_template: BTreeSet<String> = template_functions(&template).into_keys().collect();
    let folders: BTreeSet<String> = std::fs::read_dir(testkit::workspace_root().join("functions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(folders, in_template, "functions/ vs template.yaml's functions");
    for name in &folders {
        let main = std::fs::read_to_string(
            testkit::workspace_root()
                .join("functions")
                .join(name)
                .join("src/main.rs"),
        )
        .unwrap();
        let module = name.replace('-', "_");
        assert!(
            main.contains(&format!("handlers::{module}::FUNCTION")),
            "functions/{name}/src/main.rs does not run handlers::{module}::FUNCTION"
        );
    }
}

#[test]
fn the_readme_route_table_lists_every_route() {
    let readme = std::fs::read_to_string(testkit::workspace_root().join("README.md")).unwrap();
    // Rows of the first table: | `function` | `METHOD /path ...` | what it does |
    let rows: BTreeSet<(String, String, String)> = readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let route = cells.get(2)?.strip_prefix('`')?;
            let mut words = route.split_whitespace();
            let method = words.next()?;
            let path = words.next()?.trim_end_matches('`');
            ["GET", "POST"]
                .contains(&method)
                .then(|| (name.to_owned(), method.to_owned(), path.to_owned()))
        })
        .collect();
    let routes: BTreeSet<(String, String, String)> = testkit::template_routes().into_iter().collect();
    assert_eq!(rows, routes, "README.md's function table vs template.yaml");
}

#[test]
fn the_demo_walks_every_route() {
    // scripts/demo.py also checks this itself at the end of a run, against the template.
    let demo = std::fs::read_to_string(testkit::workspace_root().join("scripts/demo.py")).unwrap();
    for (name, method, path) in testkit::template_routes() {
        assert!(
            demo.contains(&format!("\"{method}\", \"{path}\"")),
            "scripts/demo.py never calls {method} {path} ({name})"
        );
    }
}

/// cfn-lint in us-east-1, ap-east-1 and both China regions with every option off, a domain alone
/// and every option on; then the SAM translation of each partition: ARNs of the region's
/// partition, no literal amazonaws.com, least-privilege roles, the domain's resources only with
/// a domain, three alarms per function (scripts/check_template.py says what it checks).
#[test]
fn the_template_deploys_in_every_partition_with_every_option_on_and_off() {
    let output = std::process::Command::new(testkit::venv_bin("python"))
        .arg(testkit::workspace_root().join("scripts/check_template.py"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The alarms on the functions' own metrics name metrics the code emits (`metrics::Metric`), in
/// its namespace, by the function dimension it writes.
#[test]
fn the_alarms_watch_metrics_the_functions_emit() {
    use wxa_shared::metrics::{Metric, NAMESPACE};
    let template = testkit::template();
    let mut watched = 0;
    for resource in template["Resources"].as_object().unwrap().values() {
        if resource["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let properties = &resource["Properties"];
        let mut metrics = vec![properties.clone()];
        if let Some(stats) = properties["Metrics"].as_array() {
            metrics.extend(stats.iter().map(|m| m["MetricStat"]["Metric"].clone()));
        }
        for metric in metrics.iter().filter(|m| m["Namespace"] == NAMESPACE) {
            let name = metric["MetricName"].as_str().unwrap();
            assert!(
                Metric::ALL.iter().any(|m| m.name() == name),
                "an alarm watches {name}, which no function emits"
            );
            let dimensions: Vec<&str> = metric["Dimensions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["Name"].as_str().unwrap())
                .collect();
            assert_eq!(dimensions, ["Function"], "{name}");
            watched += 1;
        }
    }
    assert!(watched >= 6, "the payment and push alarms watch the functions' metrics");
}
