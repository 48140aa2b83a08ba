//! Flat XML documents, as WeChat Pay APIv2 and WeChat's message push send them: one root element
//! whose children are text fields, `<xml><k><![CDATA[v]]></k><n>1</n>…</xml>`.
//!
//! Anything else is refused with its reason: a DOCTYPE (so no entity a DTD declares, as in an
//! entity bomb), a nested element, a field given twice, text outside a field, a second root.
//! Message pushes nest a little (`<SubscribeMsgPopupEvent><List>…</List><List>…</List>`):
//! [`parse_nested`] reads those, a nested field as the JSON text of its children (a name given
//! more than once inside it becomes an array), as a JSON push carries them.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;

/// The fields of a flat document, by name. Text around a value loses its surrounding whitespace
/// (indentation); CDATA and `&…;` references are kept as written.
pub fn parse(xml: &str) -> Result<BTreeMap<String, String>, String> {
    let mut reader = Reader::from_str(xml);
    let mut fields = BTreeMap::new();
    let mut root: Option<String> = None;
    let mut field: Option<Field> = None;
    let mut depth = 0usize;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = field_name(e.name().as_ref())?;
                match (depth, &field) {
                    (0, _) => open_root(&mut root, name)?,
                    (1, _) => field = Some(Field::new(name)),
                    (_, parent) => return Err(nested(&name, parent)),
                }
                depth += 1;
            }
            Event::Empty(e) => {
                let name = field_name(e.name().as_ref())?;
                match (depth, &field) {
                    (0, _) => open_root(&mut root, name)?,
                    (1, _) => insert(&mut fields, name, String::new())?,
                    (_, parent) => return Err(nested(&name, parent)),
                }
            }
            // quick-xml has checked that the end tag closes the open element.
            Event::End(_) => {
                if let Some(done) = field.take() {
                    let (name, value) = done.finish();
                    insert(&mut fields, name, value)?;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                match &mut field {
                    Some(f) => f.text(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside a field".into()),
                }
            }
            // `&lt;` and the other four predefined entities, and character references.
            Event::GeneralRef(r) => {
                let f = field.as_mut().ok_or("text outside a field")?;
                f.reference(&r)?;
            }
            Event::CData(c) => {
                let f = field.as_mut().ok_or("CDATA outside a field")?;
                f.kept(std::str::from_utf8(&c).map_err(|_| "CDATA that is not UTF-8")?);
            }
            Event::DocType(_) => return Err("a DOCTYPE declaration".into()),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match (&root, depth) {
        (None, _) => Err("no root element".into()),
        (Some(name), 1..) => Err(format!("the document ends before </{name}>")),
        (Some(_), 0) => Ok(fields),
    }
}

fn open_root(root: &mut Option<String>, name: String) -> Result<(), String> {
    if root.is_some() {
        return Err("a second root element".into());
    }
    *root = Some(name);
    Ok(())
}

fn nested(name: &str, parent: &Option<Field>) -> String {
    let parent = parent.as_ref().map_or("?", |f| f.name.as_str());
    format!("<{name}> is nested in <{parent}>: only flat documents are read")
}

fn insert(fields: &mut BTreeMap<String, String>, name: String, value: String) -> Result<(), String> {
    // Two values for one name: which one a signature covers would be a guess.
    if fields.contains_key(&name) {
        return Err(format!("<{name}> is given twice"));
    }
    fields.insert(name, value);
    Ok(())
}

/// Field names are `[A-Za-z0-9_]`; anything else is not one of these documents (and quick-xml
/// reads `<x//>` as an empty element named `x/`, found by the fuzzer).
fn field_name(raw: &[u8]) -> Result<String, String> {
    let valid = !raw.is_empty() && raw.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let name = String::from_utf8_lossy(raw);
    if valid {
        Ok(name.into_owned())
    } else {
        Err(format!("<{name}> is not a field name"))
    }
}

/// One field's value as it is read.
struct Field {
    name: String,
    value: String,
    /// Where the text at the end of the value began, if it ends in plain text: only that text
    /// loses its trailing whitespace.
    text_tail: Option<usize>,
}

impl Field {
    fn new(name: String) -> Self {
        Self {
            name,
            value: String::new(),
            text_tail: None,
        }
    }

    fn text(&mut self, text: &str) {
        let text = if self.value.is_empty() { text.trim_start() } else { text };
        self.text_tail.get_or_insert(self.value.len());
        self.value.push_str(text);
    }

    /// `&lt;` and the other four predefined entities, and character references; any other
    /// entity is refused (no DTD declares one here).
    fn reference(&mut self, r: &quick_xml::events::BytesRef<'_>) -> Result<(), String> {
        let name = r.decode().map_err(|e| e.to_string())?;
        match r.resolve_char_ref().map_err(|e| e.to_string())? {
            Some(c) => self.kept(c.encode_utf8(&mut [0; 4])),
            None => self.kept(
                resolve_predefined_entity(&name)
                    .ok_or_else(|| format!("&{name}; is not one of XML's five entities"))?,
            ),
        }
        Ok(())
    }

    fn kept(&mut self, text: &str) {
        self.value.push_str(text);
        self.text_tail = None;
    }

    /// The name and the value.
    fn finish(mut self) -> (String, String) {
        if let Some(start) = self.text_tail {
            let end = start + self.value[start..].trim_end().len();
            self.value.truncate(end);
        }
        (self.name, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(xml: &str, name: &str) -> String {
        parse(xml).unwrap()[name].clone()
    }

    #[test]
    fn text_is_trimmed_around_the_value_and_cdata_is_kept() {
        assert_eq!(one("<xml><a> 1 </a></xml>", "a"), "1");
        assert_eq!(one("<xml><a><![CDATA[ hi ]]></a></xml>", "a"), " hi ");
        assert_eq!(one("<xml><a>\n  <![CDATA[video]]>\n</a></xml>", "a"), "video");
        assert_eq!(one("<xml><a> x &amp; y </a></xml>", "a"), "x & y");
        assert_eq!(one("<xml><a>&#32;x&#32;</a></xml>", "a"), " x ");
        assert_eq!(one("<xml><a><![CDATA[p]]]]><![CDATA[>q]]></a></xml>", "a"), "p]]>q");
    }

    #[test]
    fn every_refusal_says_why() {
        let cases = [
            ("", "no root element"),
            ("<xml><a>1</a>", "the document ends before </xml>"),
            (
                "<xml><a><b>1</b></a></xml>",
                "<b> is nested in <a>: only flat documents are read",
            ),
            (
                "<xml><a><b/></a></xml>",
                "<b> is nested in <a>: only flat documents are read",
            ),
            ("<xml><a>1</a><a>2</a></xml>", "<a> is given twice"),
            ("<xml>loose<a>1</a></xml>", "text outside a field"),
            ("<xml><a>1</a></xml><xml/>", "a second root element"),
            ("<xml><a-b>1</a-b></xml>", "<a-b> is not a field name"),
            ("<xml><x//></xml>", "<x/> is not a field name"),
            ("<xml><a>&nbsp;</a></xml>", "&nbsp; is not one of XML's five entities"),
            (
                "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]><xml><a>&a;</a></xml>",
                "a DOCTYPE declaration",
            ),
        ];
        for (xml, reason) in cases {
            assert_eq!(parse(xml).unwrap_err(), reason, "{xml}");
        }
        assert!(parse("<xml><a>&#0;</a></xml>").is_err());
        assert!(parse("<xml><a>1</b></xml>").is_err());
    }
}

/// The fields of a document whose fields may nest up to `max_depth` levels below the root; a
/// nested field's value is the JSON text of its children. The same refusals as [`parse`] (no
/// DOCTYPE, XML's five entities only, field names `[A-Za-z0-9_]`, a top-level field once).
pub fn parse_nested(xml: &str, max_depth: usize) -> Result<BTreeMap<String, String>, String> {
    use serde_json::{Map, Value};
    let mut reader = Reader::from_str(xml);
    // The open elements below the root: each one's text so far and its children.
    let mut open: Vec<(Field, Map<String, Value>)> = Vec::new();
    let mut root: Option<String> = None;
    let mut in_root = false;
    let mut fields = BTreeMap::new();
    let close =
        |open: &mut Vec<(Field, Map<String, Value>)>, fields: &mut BTreeMap<String, String>| -> Result<(), String> {
            let (field, children) = open.pop().ok_or("an end tag without a start")?;
            let (name, text) = field.finish();
            let value = if children.is_empty() {
                Value::String(text)
            } else {
                Value::Object(children)
            };
            let Some((_, siblings)) = open.last_mut() else {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                return insert(fields, name, text);
            };
            match siblings.get_mut(&name) {
                None => {
                    siblings.insert(name, value);
                }
                Some(Value::Array(items)) => items.push(value),
                Some(first) => {
                    let first = first.take();
                    siblings.insert(name, Value::Array(vec![first, value]));
                }
            }
            Ok(())
        };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let name = field_name(e.name().as_ref())?;
                if !in_root {
                    open_root(&mut root, name)?;
                    in_root = true;
                } else if open.len() >= max_depth {
                    return Err(format!("<{name}> is nested more than {max_depth} levels deep"));
                } else {
                    open.push((Field::new(name), Map::new()));
                }
            }
            Event::Empty(e) => {
                let name = field_name(e.name().as_ref())?;
                if !in_root {
                    open_root(&mut root, name)?;
                } else if open.len() >= max_depth {
                    return Err(format!("<{name}> is nested more than {max_depth} levels deep"));
                } else {
                    open.push((Field::new(name), Map::new()));
                    close(&mut open, &mut fields)?;
                }
            }
            // quick-xml has checked that the end tag closes the open element.
            Event::End(_) => match open.is_empty() {
                true => in_root = false,
                false => close(&mut open, &mut fields)?,
            },
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                match open.last_mut() {
                    Some((f, _)) => f.text(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside a field".into()),
                }
            }
            Event::GeneralRef(r) => {
                let (f, _) = open.last_mut().ok_or("text outside a field")?;
                f.reference(&r)?;
            }
            Event::CData(c) => {
                let (f, _) = open.last_mut().ok_or("CDATA outside a field")?;
                f.kept(std::str::from_utf8(&c).map_err(|_| "CDATA that is not UTF-8")?);
            }
            Event::DocType(_) => return Err("a DOCTYPE declaration".into()),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    match (&root, in_root) {
        (None, _) => Err("no root element".into()),
        (Some(name), true) => Err(format!("the document ends before </{name}>")),
        (Some(_), false) => Ok(fields),
    }
}

#[cfg(test)]
mod nested_tests {
    use super::*;

    #[test]
    fn pushes_nest_a_little_and_are_read_as_json_text() {
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Event><![CDATA[subscribe_msg_popup_event]]></Event>\
            <SubscribeMsgPopupEvent><List><TemplateId><![CDATA[t1]]></TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List>\
            <List><TemplateId>t2</TemplateId><SubscribeStatusString>reject</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>";
        let fields = parse_nested(xml, 4).unwrap();
        assert_eq!(fields["ToUserName"], "gh_1");
        let event: serde_json::Value = serde_json::from_str(&fields["SubscribeMsgPopupEvent"]).unwrap();
        assert_eq!(
            event,
            serde_json::json!({"List": [
                {"TemplateId": "t1", "SubscribeStatusString": "accept"},
                {"TemplateId": "t2", "SubscribeStatusString": "reject"},
            ]})
        );
        // One item is an object, as a JSON push may give it too.
        let one = parse_nested("<xml><E><List><A>1</A></List></E></xml>", 4).unwrap();
        assert_eq!(one["E"], r#"{"List":{"A":"1"}}"#);
        // Bounded, and the flat refusals still hold.
        assert!(parse_nested("<xml><a><b><c><d><e><f>x</f></e></d></c></b></a></xml>", 4).is_err());
        assert!(parse_nested("<!DOCTYPE x [<!ENTITY a \"b\">]><xml><a>&a;</a></xml>", 4).is_err());
        assert!(parse_nested("<xml><a>1</a><a>2</a></xml>", 4).is_err());
        assert!(parse_nested("<xml><a>1</a></xml><xml/>", 4).is_err());
        assert!(
            parse_nested("<xml>text<a>1</a></xml>", 4).is_err(),
            "text outside a field"
        );
        // CDATA is kept as written, plain text trimmed, as in a flat document.
        let kept = parse_nested(
            "<xml><a><![CDATA[ hi ]]></a><b> 1 </b><c><d><![CDATA[ x ]]></d></c></xml>",
            4,
        )
        .unwrap();
        assert_eq!((kept["a"].as_str(), kept["b"].as_str()), (" hi ", "1"));
        assert_eq!(kept["c"], r#"{"d":" x "}"#);
        assert!(
            parse_nested("<xml><a><b><c><d>1</d></c></b></a></xml>", 4).is_ok(),
            "four levels"
        );
    }
}
