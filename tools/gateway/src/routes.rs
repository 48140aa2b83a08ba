//! The routes of `template.yaml`: every `HttpApi` event of every `AWS::Serverless::Function`,
//! matched as API Gateway matches them (the most specific route wins; `ANY` and `$default` too).

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Route {
    /// `None` for `ANY`.
    pub method: Option<Method>,
    /// The path as the template writes it (`/login`, `/orders/{id}`), or `$default`.
    pub path: String,
    /// The binary `cargo lambda` knows (`Metadata.BuildProperties.Binary`).
    pub function: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{name+}`: the rest of the path.
    Greedy(String),
}

impl Route {
    /// API Gateway's `routeKey`: `POST /login`, `ANY /x`, `$default`.
    pub fn key(&self) -> String {
        if self.is_default() {
            return "$default".to_owned();
        }
        let method = self.method.as_ref().map_or("ANY", Method::as_str);
        format!("{method} {}", self.path)
    }

    fn is_default(&self) -> bool {
        self.path == "$default"
    }

    /// The path parameters when `path` is this route's.
    fn match_path(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let mut parts = path.strip_prefix('/')?.split('/');
        let mut params = BTreeMap::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => (parts.next()? == literal).then_some(())?,
                Segment::Param(name) => {
                    let value = parts.next().filter(|v| !v.is_empty())?;
                    params.insert(name.clone(), value.to_owned());
                }
                Segment::Greedy(name) => {
                    let rest: Vec<&str> = parts.by_ref().collect();
                    let rest = rest.join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    params.insert(name.clone(), rest);
                }
            }
        }
        parts.next().is_none().then_some(params)
    }

    /// How specific the route is: literal segments first, a greedy one last, a method over `ANY`.
    fn rank(&self) -> (usize, bool, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let greedy = self.segments.iter().any(|s| matches!(s, Segment::Greedy(_)));
        (literals, !greedy, self.method.is_some())
    }
}

/// What a request finds.
pub enum Found<'a> {
    Route(&'a Route, BTreeMap<String, String>),
    /// The path has routes, none for this method: their methods (for `Allow`).
    MethodNotAllowed(Vec<String>),
    NotFound,
}

#[derive(Debug, Clone)]
pub struct Routes(Vec<Route>);

impl Routes {
    /// Reads the routes of the template given as JSON (`scripts/cfn_json.py template.yaml`).
    pub fn from_template(template: &Value) -> Result<Self, String> {
        let resources = template["Resources"]
            .as_object()
            .ok_or("the template has no Resources")?;
        let mut routes = Vec::new();
        for (name, resource) in resources {
            if resource["Type"] != "AWS::Serverless::Function" {
                continue;
            }
            let events = resource["Properties"]["Events"].as_object().into_iter().flatten();
            for (event, spec) in events.filter(|(_, e)| e["Type"] == "HttpApi") {
                let function = resource["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()
                    .ok_or_else(|| format!("{name}: Metadata.BuildProperties.Binary is not a string"))?;
                let literal = |field: &str| match &spec["Properties"][field] {
                    Value::Null => Ok(None),
                    Value::String(s) => Ok(Some(s.clone())),
                    other => Err(format!("{name}.Events.{event}.{field}: not a literal string: {other}")),
                };
                // SAM: an event without Method and Path is the API's `$default` route.
                let method = literal("Method")?.unwrap_or_else(|| "ANY".to_owned());
                let path = literal("Path")?.unwrap_or_else(|| "$default".to_owned());
                routes.push(route(&method, &path, function).map_err(|e| format!("{name}.Events.{event}: {e}"))?);
            }
        }
        for (i, a) in routes.iter().enumerate() {
            if let Some(b) = routes[..i].iter().find(|b| b.key() == a.key()) {
                return Err(format!(
                    "{} is routed to both {} and {}",
                    a.key(),
                    b.function,
                    a.function
                ));
            }
        }
        Ok(Routes(routes))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let on_path: Vec<(&Route, BTreeMap<String, String>)> = self
            .0
            .iter()
            .filter(|r| !r.is_default())
            .filter_map(|r| r.match_path(path).map(|params| (r, params)))
            .collect();
        let allowed = on_path
            .iter()
            .filter(|(r, _)| r.method.as_ref().is_none_or(|m| m == method))
            .max_by_key(|(r, _)| r.rank());
        if let Some((route, params)) = allowed {
            return Found::Route(route, params.clone());
        }
        if let Some(default) = self.0.iter().find(|r| r.is_default()) {
            return Found::Route(default, BTreeMap::new());
        }
        if on_path.is_empty() {
            return Found::NotFound;
        }
        let mut allow: Vec<String> = on_path
            .iter()
            .filter_map(|(r, _)| r.method.as_ref().map(|m| m.to_string()))
            .collect();
        allow.sort();
        allow.dedup();
        Found::MethodNotAllowed(allow)
    }
}

fn route(method: &str, path: &str, function: &str) -> Result<Route, String> {
    let method = match method.to_ascii_uppercase().as_str() {
        "ANY" => None,
        m => Some(Method::from_bytes(m.as_bytes()).map_err(|_| format!("method {method:?}"))?),
    };
    let segments = if path == "$default" {
        Vec::new()
    } else {
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| format!("path {path:?} does not start with /"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(
                |(i, part)| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => match name.strip_suffix('+') {
                        Some(greedy) if i == last => Ok(Segment::Greedy(greedy.to_owned())),
                        Some(_) => Err(format!("path {path:?}: a greedy parameter must be last")),
                        None => Ok(Segment::Param(name.to_owned())),
                    },
                    None => Ok(Segment::Literal((*part).to_owned())),
                },
            )
            .collect::<Result<_, _>>()?
    };
    Ok(Route {
        method,
        path: path.to_owned(),
        function: function.to_owned(),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(list: &[(&str, &str, &str)]) -> Routes {
        Routes(list.iter().map(|(m, p, f)| route(m, p, f).unwrap()).collect())
    }

    fn found(routes: &Routes, method: Method, path: &str) -> String {
        match routes.find(&method, path) {
            Found::Route(r, params) => format!("{} {} {params:?}", r.key(), r.function),
            Found::MethodNotAllowed(allow) => format!("405 {}", allow.join(", ")),
            Found::NotFound => "404".to_owned(),
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let table = routes(&[
            ("GET", "/session", "session"),
            ("POST", "/session/reset", "session"),
            ("GET", "/orders/{id}", "orders"),
            ("GET", "/orders/today", "today"),
            ("ANY", "/files/{path+}", "files"),
            ("DELETE", "/files/{path+}", "delete"),
        ]);
        assert_eq!(found(&table, Method::GET, "/session"), "GET /session session {}");
        assert_eq!(found(&table, Method::POST, "/session"), "405 GET");
        assert_eq!(found(&table, Method::GET, "/session/reset"), "405 POST");
        assert_eq!(found(&table, Method::GET, "/session/"), "404");
        assert_eq!(
            found(&table, Method::GET, "/orders/today"),
            "GET /orders/today today {}"
        );
        assert_eq!(
            found(&table, Method::GET, "/orders/T1"),
            r#"GET /orders/{id} orders {"id": "T1"}"#
        );
        assert_eq!(found(&table, Method::GET, "/orders/"), "404");
        assert_eq!(
            found(&table, Method::PUT, "/files/a/b.png"),
            r#"ANY /files/{path+} files {"path": "a/b.png"}"#
        );
        assert_eq!(
            found(&table, Method::DELETE, "/files/a"),
            r#"DELETE /files/{path+} delete {"path": "a"}"#
        );
        assert_eq!(found(&table, Method::GET, "/files"), "404");
    }

    #[test]
    fn default_takes_what_no_route_does() {
        let table = routes(&[("POST", "/login", "login"), ("ANY", "$default", "fallback")]);
        assert_eq!(found(&table, Method::POST, "/login"), "POST /login login {}");
        assert_eq!(found(&table, Method::GET, "/login"), "$default fallback {}");
        assert_eq!(found(&table, Method::GET, "/elsewhere"), "$default fallback {}");
    }

    #[test]
    fn template_mistakes_are_named() {
        let template = |events: Value| {
            serde_json::json!({"Resources": {"F": {
                "Type": "AWS::Serverless::Function",
                "Metadata": {"BuildProperties": {"Binary": "f"}},
                "Properties": {"Events": events}
            }}})
        };
        let error = |events| Routes::from_template(&template(events)).unwrap_err();
        assert!(
            error(serde_json::json!({"A": {"Type": "HttpApi", "Properties": {"Method": "GET", "Path": "x"}}}))
                .contains("start with /")
        );
        assert!(
            error(serde_json::json!({"A": {"Type": "HttpApi", "Properties": {"Method": "GET", "Path": {"Ref": "P"}}}}))
                .contains("F.Events.A.Path: not a literal string")
        );
        assert!(
            error(serde_json::json!({
                "A": {"Type": "HttpApi", "Properties": {"Method": "GET", "Path": "/x"}},
                "B": {"Type": "HttpApi", "Properties": {"Method": "get", "Path": "/x"}}
            }))
            .contains("GET /x is routed to both")
        );
        let sqs = serde_json::json!({"Q": {"Type": "SQS", "Properties": {}}});
        assert!(Routes::from_template(&template(sqs)).unwrap().is_empty());
    }
}
