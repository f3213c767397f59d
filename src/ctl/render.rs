//! What `wsfault ctl` prints: aligned tables of the shared view types, the
//! server's JSON for `--json`, and attribute values in `k=v` form.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::toxics::message_match::{CountSpec, DataOpcode, JsonMatchSpec, MessageMatchSpec};
use crate::toxics::{MatchSpec, ToxicSpec};
use crate::views::{ConnectionView, ProxyView};

/// `--json`: pretty-prints a JSON body, passes a non-JSON body through
/// (with a final newline) and prints nothing for an empty one.
pub fn pretty(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return String::new();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut text =
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
            text.push('\n');
            text
        }
        Err(_) => {
            let mut text = String::from_utf8_lossy(body).into_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    }
}

/// Renders rows under headers as left-aligned columns two spaces apart, with
/// no trailing spaces. Widths count characters, not bytes.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line per proxy: NAME, LISTEN, UPSTREAM, ENABLED, TOXICS (a count).
pub fn render_proxies(proxies: &[ProxyView]) -> String {
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.listen.clone(),
                p.upstream.clone(),
                p.enabled.to_string(),
                p.toxics.len().to_string(),
            ]
        })
        .collect();
    render_table(&["NAME", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS"], &rows)
}

/// One proxy's fields, then its toxic table (or "no toxics").
pub fn render_proxy_detail(proxy: &ProxyView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:      {}", proxy.name);
    let _ = writeln!(out, "Listen:    {}", proxy.listen);
    let _ = writeln!(out, "Upstream:  {}", proxy.upstream);
    let _ = writeln!(out, "Enabled:   {}", proxy.enabled);
    out.push('\n');
    if proxy.toxics.is_empty() {
        out.push_str("no toxics\n");
    } else {
        out.push_str(&render_toxics(&proxy.toxics));
    }
    out
}

/// NAME, TYPE, STREAM, TOXICITY, ATTRIBUTES, and CONDITIONS
/// ([`render_conditions`]) when any toxic has them.
pub fn render_toxics(toxics: &[ToxicSpec]) -> String {
    let conditions: Vec<String> = toxics.iter().map(render_conditions).collect();
    let with_conditions = conditions.iter().any(|c| !c.is_empty());
    let mut headers = vec!["NAME", "TYPE", "STREAM", "TOXICITY", "ATTRIBUTES"];
    if with_conditions {
        headers.push("CONDITIONS");
    }
    let rows: Vec<Vec<String>> = toxics
        .iter()
        .zip(conditions)
        .map(|(t, conditions)| {
            let mut row = vec![
                t.name.clone(),
                t.kind.clone(),
                t.stream.label().to_string(),
                format_number(t.toxicity),
                render_attributes(&t.attributes),
            ];
            if with_conditions {
                row.push(conditions);
            }
            row
        })
        .collect();
    render_table(&headers, &rows)
}

/// A toxic's CONDITIONS cell ("" when it has none), space-separated:
/// * the connection matchers as the server wrote them,
///   `match={"header":{...},"path":"/chat/*","subprotocol":"v2"}`;
/// * the message matchers, `kind=heartbeat opcode=text contains=typing
///   regex=RE json:/type=="next"` (`json:PTR exists`, `json:PTR absent`);
/// * the count, `count: after 10, every 3, limit 5` (no limit: the last
///   part left out);
/// * the schedule as the server wrote it, `schedule={...}`.
///
/// Text values are bare unless they need quotes, as in
/// [`render_attributes`]; a `json:` value is JSON (`"next"` is a string,
/// `3` a number).
pub fn render_conditions(toxic: &ToxicSpec) -> String {
    let mut parts = Vec::new();
    if let Some(matcher) = &toxic.matcher {
        let connection = MatchSpec {
            message: None,
            ..matcher.clone()
        };
        if connection != MatchSpec::default() {
            parts.push(format!("match={}", compact_json(&connection)));
        }
        if let Some(message) = &matcher.message {
            render_message(message, &mut parts);
        }
    }
    if let Some(count) = &toxic.count {
        parts.push(render_count(count));
    }
    if let Some(s) = &toxic.schedule {
        parts.push(format!("schedule={}", compact_json(s)));
    }
    parts.join(" ")
}

/// `match.message`'s fields, in the order of the spec.
fn render_message(message: &MessageMatchSpec, parts: &mut Vec<String>) {
    if let Some(kind) = message.kind {
        parts.push(format!("kind={}", kind.label()));
    }
    if let Some(opcode) = message.opcode {
        let opcode = match opcode {
            DataOpcode::Text => "text",
            DataOpcode::Binary => "binary",
        };
        parts.push(format!("opcode={opcode}"));
    }
    if let Some(contains) = &message.contains {
        parts.push(format!("contains={}", format_text(contains)));
    }
    if let Some(regex) = &message.regex {
        parts.push(format!("regex={}", format_text(regex)));
    }
    if let Some(JsonMatchSpec {
        pointer,
        equals,
        exists,
    }) = &message.json
    {
        let pointer = format_text(pointer);
        if let Some(equals) = equals {
            parts.push(format!("json:{pointer}=={equals}"));
        }
        match exists {
            Some(false) => parts.push(format!("json:{pointer} absent")),
            Some(true) if equals.is_none() => parts.push(format!("json:{pointer} exists")),
            _ => {}
        }
    }
}

/// `count: after A, every E[, limit L]`.
fn render_count(count: &CountSpec) -> String {
    let mut text = format!("count: after {}, every {}", count.after, count.every);
    if let Some(limit) = count.limit {
        let _ = write!(text, ", limit {limit}");
    }
    text
}

/// `headline` (its `{}` replaced by the toxic's name) over a one-row toxic
/// table: the answer to `toxic add` and `toxic update`.
pub fn render_toxic_answer(headline: &str, toxic: &ToxicSpec) -> String {
    format!(
        "{}\n{}",
        headline.replacen("{}", &toxic.name, 1),
        render_toxics(std::slice::from_ref(toxic))
    )
}

/// ID, CLIENT, PATH, SUBPROTOCOL, AGE, UP and DOWN FRAMES/BYTES.
pub fn render_connections(connections: &[ConnectionView]) -> String {
    let rows: Vec<Vec<String>> = connections
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.client.clone(),
                c.path.clone(),
                c.subprotocol.clone().unwrap_or_default(),
                format_age(c.age_ms),
                format!("{}/{}", c.upstream.frames, c.upstream.bytes),
                format!("{}/{}", c.downstream.frames, c.downstream.bytes),
            ]
        })
        .collect();
    render_table(
        &[
            "ID",
            "CLIENT",
            "PATH",
            "SUBPROTOCOL",
            "AGE",
            "UP FRAMES/BYTES",
            "DOWN FRAMES/BYTES",
        ],
        &rows,
    )
}

/// `k=v` pairs sorted by name; strings bare unless they need quotes.
pub fn render_attributes(attributes: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = attributes.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|key| {
            let value = &attributes[key];
            let text = match value {
                Value::String(s) => format_text(s),
                Value::Number(n) => n
                    .as_f64()
                    .filter(|_| n.is_f64())
                    .map(format_number)
                    .unwrap_or_else(|| n.to_string()),
                other => other.to_string(),
            };
            format!("{key}={text}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A string bare, or JSON-quoted when it is empty or has a space, a control
/// character, a quote or `=`.
fn format_text(text: &str) -> String {
    let bare = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if bare {
        text.to_string()
    } else {
        Value::from(text).to_string()
    }
}

fn format_age(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `1` rather than `1.0`, `0.25` as is.
fn format_number(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map(|n| {
            let text = n.to_string();
            text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
        })
        .unwrap_or_else(|| value.to_string())
}

/// One line of JSON with keys sorted, as the server's JSON would print.
fn compact_json(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::client::parse_proxy_map;
    use serde_json::json;

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let table = render_table(
            &["NAME", "TYPE", "X"],
            &[
                vec!["a".into(), "latency".into(), "".into()],
                vec!["longer-name".into(), "é".into(), "1".into()],
            ],
        );
        assert_eq!(
            table,
            "NAME         TYPE     X\n\
             a            latency\n\
             longer-name  é        1\n"
        );
    }

    fn sample_proxies() -> Vec<ProxyView> {
        let body = json!({
            "web": {"name": "web", "listen": "127.0.0.1:8081", "upstream": "backend:80",
                    "enabled": false, "toxics": []},
            "chat": {"name": "chat", "listen": "0.0.0.0:8080", "upstream": "ws://backend:9000/ws",
                     "enabled": true, "extensions": "strip",
                     "toxics": [
                        {"name": "lossy", "type": "message_loss", "stream": "upstream",
                         "toxicity": 1.0, "attributes": {"probability": 0.02}},
                        {"name": "slow", "type": "latency", "stream": "downstream",
                         "toxicity": 0.5, "attributes": {"latency": 300, "jitter": 100},
                         "schedule": {"start_after": 0, "duration": 5000, "period": 30000}}
                     ]}
        });
        parse_proxy_map(body.to_string().as_bytes()).expect("valid test input")
    }

    #[test]
    fn proxy_list_table() {
        let proxies = sample_proxies();
        assert_eq!(proxies[0].name, "chat", "sorted by name");
        assert_eq!(
            render_proxies(&proxies),
            "NAME  LISTEN          UPSTREAM              ENABLED  TOXICS\n\
             chat  0.0.0.0:8080    ws://backend:9000/ws  true     2\n\
             web   127.0.0.1:8081  backend:80            false    0\n"
        );
    }

    #[test]
    fn toxic_table_and_detail() {
        let proxies = sample_proxies();
        let detail = render_proxy_detail(&proxies[0]);
        assert!(detail.starts_with("Name:      chat\nListen:    0.0.0.0:8080\n"));
        let toxics = render_toxics(&proxies[0].toxics);
        let lines: Vec<&str> = toxics.lines().collect();
        assert_eq!(
            lines[0],
            "NAME   TYPE          STREAM      TOXICITY  ATTRIBUTES              CONDITIONS"
        );
        assert_eq!(
            lines[1],
            "lossy  message_loss  upstream    1         probability=0.02"
        );
        assert_eq!(
            lines[2],
            r#"slow   latency       downstream  0.5       jitter=100 latency=300  schedule={"duration":5000,"period":30000,"start_after":0}"#
        );
        assert!(detail.ends_with(&toxics));
        assert!(render_proxy_detail(&proxies[1]).ends_with("no toxics\n"));
    }

    #[test]
    fn match_conditions_print_as_the_server_wrote_them() {
        let toxic = crate::views::toxic_from_json(json!({
            "name": "n", "type": "latency",
            "match": {"path": "/chat/*", "header": {"x-b": "2", "x-a": "1"}}
        }))
        .expect("valid test input");
        let table = render_toxic_answer("Added toxic {}.", &toxic);
        assert!(table.starts_with("Added toxic n.\n"), "{table}");
        assert!(
            table.ends_with(
                "match={\"header\":{\"x-a\":\"1\",\"x-b\":\"2\"},\"path\":\"/chat/*\"}\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn message_matchers_and_counts_print_in_conditions() {
        let toxic = crate::views::toxic_from_json(json!({
            "name": "beats", "type": "message_loss", "attributes": {"probability": 1},
            "match": {"message": {"kind": "heartbeat", "json": {"pointer": "/type", "equals": "next"}}},
            "count": {"after": 10, "every": 3, "limit": 5}
        }))
        .expect("valid test input");
        assert_eq!(
            render_conditions(&toxic),
            r#"kind=heartbeat json:/type=="next" count: after 10, every 3, limit 5"#
        );
        let table = render_toxic_answer("Added toxic {}.", &toxic);
        assert_eq!(
            table.lines().nth(1),
            Some("NAME   TYPE          STREAM      TOXICITY  ATTRIBUTES     CONDITIONS")
        );
        assert!(
            table.ends_with(
                "probability=1  kind=heartbeat json:/type==\"next\" count: after 10, every 3, limit 5\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn every_condition_in_order() {
        let toxic = crate::views::toxic_from_json(json!({
            "name": "n", "type": "close",
            "match": {"subprotocol": "graphql-ws",
                      "message": {"opcode": "text", "contains": "a b", "regex": "^\\d+$",
                                  "json": {"pointer": "/payload/id", "exists": false}}},
            "count": {"limit": 1},
            "schedule": {"start_after": 5}
        }))
        .expect("valid test input");
        assert_eq!(
            render_conditions(&toxic),
            r#"match={"subprotocol":"graphql-ws"} opcode=text contains="a b" regex=^\d+$ json:/payload/id absent count: after 0, every 1, limit 1 schedule={"duration":0,"period":0,"start_after":5}"#
        );
        let exists = crate::views::toxic_from_json(json!({
            "type": "duplicate", "match": {"message": {"json": {"pointer": "/id", "exists": true}}},
            "count": {"every": 2}
        }))
        .expect("valid test input");
        assert_eq!(
            render_conditions(&exists),
            "json:/id exists count: after 0, every 2"
        );
        let plain = crate::views::toxic_from_json(json!({"type": "latency"})).expect("valid");
        assert_eq!(render_conditions(&plain), "");
        assert!(!render_toxics(&[plain]).contains("CONDITIONS"));
    }

    #[test]
    fn attribute_rendering() {
        let attrs = json!({"reason": "going away", "code": 1012, "opcodes": ["pong"], "mode": "reset", "p": 1.0})
            .as_object()
            .cloned()
            .expect("valid test input");
        assert_eq!(
            render_attributes(&attrs),
            r#"code=1012 mode=reset opcodes=["pong"] p=1 reason="going away""#
        );
    }

    #[test]
    fn connection_table() {
        let body = json!([{"id": 7, "client": "127.0.0.1:5000", "path": "/chat?x=1", "subprotocol": null,
                           "age_ms": 1500, "upstream": {"frames": 3, "bytes": 120},
                           "downstream": {"frames": 4, "bytes": 200}}]);
        let connections: Vec<ConnectionView> =
            serde_json::from_value(body).expect("valid test input");
        let table = render_connections(&connections);
        assert!(table
            .lines()
            .nth(1)
            .expect("valid test input")
            .starts_with("7   127.0.0.1:5000  /chat?x=1"));
        assert!(table.contains("1.5s"));
        assert!(table.contains("3/120"));
    }

    #[test]
    fn json_passthrough_is_pretty_or_verbatim() {
        assert_eq!(pretty(b""), "");
        assert_eq!(pretty(b"{\"a\":1}"), "{\n  \"a\": 1\n}\n");
        assert_eq!(pretty(b"plain"), "plain\n");
    }
}
