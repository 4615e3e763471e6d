//! Request bodies read as Go's `encoding/json` reads them into dockerd's structs.
//!
//! dockerd decodes the bodies of `POST /auth`, `POST /services/create` and
//! `POST /services/{id}/update` with `json.NewDecoder(body).Decode(&v)` into moby's structs. The
//! gate decides on the same fields, so a body must mean to the gate exactly what it means to
//! dockerd: a reader with other rules for duplicate or case-folded keys would let a body name one
//! image to the gate and another to dockerd.
//!
//! | input | Go `encoding/json` | here |
//! |---|---|---|
//! | key vs field name | exact match, else Unicode simple folding | the same ([`key_matches`]) |
//! | `\u` escapes in keys | decoded before matching | the same |
//! | duplicate keys | applied in document order; the last string wins | the same |
//! | object into a struct, or a non-nil pointer to one | merged into the existing value | the same |
//! | `null` into a string or struct | no-op | the same |
//! | `null` into a pointer | sets it to nil | the same |
//! | wrong JSON type for a field we read | error (dockerd answers 400) | error |
//! | key matching no field we read | skipped, whatever its type | the same |
//! | top level `null` | no-op (empty struct) | the same |
//! | top level array, string, number, bool; empty body | error | error |
//! | data after the first value | ignored by `Decode` | **refused** |
//! | invalid UTF-8, lone surrogate escape (`\ud800`) | replaced with U+FFFD | **refused** |
//! | nesting deeper than 128 | accepted up to 10000 | **refused** (serde_json's limit) |
//! | skipped number out of `f64` range (`1e400`) | accepted (syntax only) | **refused** |
//!
//! The refusals fail closed: each is a body no Docker client sends, and reading it like Go would
//! mean reproducing Go's replacement rules byte for byte. dockerd's structs have more fields than
//! the views here; a wrong-typed value in one of those makes dockerd refuse a body the gate
//! passed, which is harmless.
//!
//! The table is Go's own: `testdata/gojson/main.go` runs Go's decoder on `cases.json` and records
//! `answers.json`, and the tests below check every answer.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value as written: object members in document order, duplicates kept.
///
/// Go applies every duplicate in order (merging objects), so a map would lose what dockerd sees.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number; its value is not kept, as no field the gate reads is a number.
    Number,
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object: unescaped keys and values, in document order, duplicates kept.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Go's name for the JSON type, as in its `UnmarshalTypeError`.
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "bool",
            Self::Number => "number",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Json>()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

/// Parses one JSON document (surrounding whitespace allowed). Errors are one-line strings.
///
/// Stricter than Go where Go would guess (see the module table): data after the value, invalid
/// UTF-8, lone surrogates, nesting deeper than 128 and numbers out of `f64` range are errors.
pub(crate) fn parse(bytes: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// Go's field matching: does JSON key `key` select the Go struct field whose json name is `field`
/// (ASCII)?
///
/// Go tries an exact match, then Unicode simple folding: every rune folds to the smallest rune of
/// its `unicode.SimpleFold` orbit and ASCII to upper case. The only non-ASCII runes whose orbit
/// holds an ASCII rune are U+017F `ſ` (with `s`) and U+212A `K` (with `k`), which `main.go` in
/// `testdata/gojson` checks against Go's tables; so for an ASCII field name, folding is ASCII case
/// folding after mapping those two. Look-alikes such as `İ`, `ı` or Cyrillic `І` do not match.
pub(crate) fn key_matches(key: &str, field: &str) -> bool {
    let mut field = field.bytes();
    for c in key.chars() {
        let c = match c {
            '\u{17F}' => 's',
            '\u{212A}' => 'k',
            c => c,
        };
        match field.next() {
            Some(f) if c.is_ascii() && f.eq_ignore_ascii_case(&(c as u8)) => {}
            _ => return false,
        }
    }
    field.next().is_none()
}

/// moby `api/types/registry.AuthConfig`, the part the gate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuthConfig {
    /// `ServerAddress string \`json:"serveraddress,omitempty"\``.
    pub(crate) server_address: String,
}

/// Decodes a `POST /auth` body as dockerd does.
pub(crate) fn auth_config(bytes: &[u8]) -> Result<AuthConfig, String> {
    auth_config_from(&parse(bytes)?)
}

fn auth_config_from(json: &Json) -> Result<AuthConfig, String> {
    let mut out = AuthConfig::default();
    for (key, value) in members(json, "AuthConfig")?.unwrap_or_default() {
        if key_matches(key, "serveraddress") {
            string_field(value, &mut out.server_address, "AuthConfig.serveraddress")?;
        }
    }
    Ok(out)
}

/// moby `api/types/swarm.ServiceSpec`, the part of its `TaskTemplate` (a `TaskSpec` value, not a
/// pointer) the gate reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServiceSpec {
    /// `TaskTemplate.Runtime` (`RuntimeType`, a string; "" when absent).
    pub(crate) runtime: String,
    /// `TaskTemplate.ContainerSpec.Image`; `None` when the `*ContainerSpec` pointer is nil.
    pub(crate) container_image: Option<String>,
    /// `TaskTemplate.PluginSpec.Remote`; `None` when the `*runtime.PluginSpec` pointer is nil,
    /// "" when it is set without a `remote`.
    pub(crate) plugin_remote: Option<String>,
}

/// Decodes a `POST /services/create` or `POST /services/{id}/update` body as dockerd does.
pub(crate) fn service_spec(bytes: &[u8]) -> Result<ServiceSpec, String> {
    service_spec_from(&parse(bytes)?)
}

fn service_spec_from(json: &Json) -> Result<ServiceSpec, String> {
    let mut out = ServiceSpec::default();
    for (key, value) in members(json, "ServiceSpec")?.unwrap_or_default() {
        if key_matches(key, "TaskTemplate") {
            // A value struct: every `TaskTemplate` merges into the same one.
            for (key, value) in members(value, "ServiceSpec.TaskTemplate")?.unwrap_or_default() {
                if key_matches(key, "ContainerSpec") {
                    let path = "TaskTemplate.ContainerSpec";
                    pointer_field(value, &mut out.container_image, "Image", path)?;
                } else if key_matches(key, "PluginSpec") {
                    let path = "TaskTemplate.PluginSpec";
                    pointer_field(value, &mut out.plugin_remote, "remote", path)?;
                } else if key_matches(key, "Runtime") {
                    string_field(value, &mut out.runtime, "TaskTemplate.Runtime")?;
                }
            }
        }
    }
    Ok(out)
}

/// An object's members; `None` for `null` (a no-op into a struct); an error for other types.
fn members<'a>(value: &'a Json, path: &str) -> Result<Option<&'a [(String, Json)]>, String> {
    match value {
        Json::Null => Ok(None),
        Json::Object(members) => Ok(Some(members)),
        other => Err(type_error(other, path)),
    }
}

/// A `string` field: `null` leaves it as it was.
fn string_field(value: &Json, out: &mut String, path: &str) -> Result<(), String> {
    match value {
        Json::Null => Ok(()),
        Json::String(s) => {
            s.clone_into(out);
            Ok(())
        }
        other => Err(type_error(other, path)),
    }
}

/// A pointer to a struct of which the gate reads one string field, seen as that field's value:
/// `null` sets the pointer to nil; an object decodes into the existing pointee (allocated empty if
/// the pointer was nil), as Go's `indirect` does.
fn pointer_field(
    value: &Json,
    out: &mut Option<String>,
    field: &str,
    path: &str,
) -> Result<(), String> {
    let Some(members) = members(value, path)? else {
        *out = None;
        return Ok(());
    };
    let pointee = out.get_or_insert_default();
    for (key, value) in members {
        if key_matches(key, field) {
            string_field(value, pointee, &format!("{path}.{field}"))?;
        }
    }
    Ok(())
}

fn type_error(value: &Json, path: &str) -> String {
    format!("cannot decode a JSON {} into {path}", value.kind())
}

/// Writes `json` back as JSON text, members in order and duplicates kept; numbers become `0`.
fn to_json_text(json: &Json) -> String {
    fn write(json: &Json, out: &mut String) {
        match json {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number => out.push('0'),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
        }
    }
    fn write_string(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let mut out = String::new();
    write(json, &mut out);
    out
}

/// The fuzz invariants: never panics; a parsed document re-serialised parses to the same value;
/// `auth_config` and `service_spec` are deterministic and give the same answer on the
/// re-serialised text (so the views depend on the document only, not on its spelling).
pub fn check_invariants(data: &[u8]) {
    let auth = auth_config(data).ok();
    let spec = service_spec(data).ok();
    assert_eq!(auth, auth_config(data).ok(), "auth_config is deterministic");
    assert_eq!(
        spec,
        service_spec(data).ok(),
        "service_spec is deterministic"
    );
    let Ok(json) = parse(data) else {
        assert!(
            auth.is_none() && spec.is_none(),
            "no view of an unparsable body"
        );
        return;
    };
    let text = to_json_text(&json);
    match parse(text.as_bytes()) {
        Ok(again) => assert_eq!(json, again, "round trip through {text}"),
        Err(e) => panic!("re-serialised JSON does not parse: {e}: {text}"),
    }
    assert_eq!(
        auth,
        auth_config(text.as_bytes()).ok(),
        "auth_config of {text}"
    );
    assert_eq!(
        spec,
        service_spec(text.as_bytes()).ok(),
        "service_spec of {text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Go's answers, recorded by `testdata/gojson/main.go`.
    const ANSWERS: &str = include_str!("../testdata/gojson/answers.json");

    fn body(case: &Value) -> Vec<u8> {
        if let Some(hex) = case["body_hex"].as_str() {
            return (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
        }
        case["body"].as_str().unwrap_or("").as_bytes().to_vec()
    }

    fn cases() -> Vec<Value> {
        let cases: Vec<Value> = serde_json::from_str(ANSWERS).unwrap();
        assert!(cases.len() >= 60, "only {} cases", cases.len());
        cases
    }

    #[test]
    fn agrees_with_go() {
        let mut refused = 0;
        for case in cases() {
            let name = case["name"].as_str().unwrap();
            let body = body(&case);
            let go_ok = case["ok"].as_bool().unwrap();
            let ours: Result<Value, String> = match case["kind"].as_str().unwrap() {
                "auth" => auth_config(&body)
                    .map(|a| serde_json::json!({ "serveraddress": a.server_address })),
                "service" => service_spec(&body).map(|s| {
                    serde_json::json!({
                        "runtime": s.runtime,
                        "container_image": s.container_image,
                        "plugin_remote": s.plugin_remote,
                    })
                }),
                kind => panic!("{name}: unknown kind {kind}"),
            };
            if let Some(why) = case["we_refuse"].as_str() {
                // A documented fail-closed difference: Go must accept it, we must not.
                assert!(
                    go_ok,
                    "{name}: marked refused ({why}) but Go refuses it too"
                );
                assert!(ours.is_err(), "{name}: should be refused ({why}): {ours:?}");
                refused += 1;
                continue;
            }
            if !go_ok {
                assert!(
                    ours.is_err(),
                    "{name}: Go errs ({}), we gave {ours:?}",
                    case["error"]
                );
                continue;
            }
            let ours = ours.unwrap_or_else(|e| panic!("{name}: Go accepts, we refuse: {e}"));
            for (field, value) in ours.as_object().unwrap() {
                assert_eq!(&case[field], value, "{name}: field {field}");
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn invariants_hold_on_the_cases_and_near_misses() {
        for case in cases() {
            let body = body(&case);
            check_invariants(&body);
            // Near misses: each byte deleted, or replaced by a byte that shifts the structure.
            for i in 0..body.len().min(200) {
                let mut b = body.clone();
                b.remove(i);
                check_invariants(&b);
                for r in [b'"', b'{', b'}', b'\\', b',', b'n', 0xC5] {
                    let mut b = body.clone();
                    b[i] = r;
                    check_invariants(&b);
                }
            }
        }
    }

    #[test]
    fn key_matching() {
        for (key, field, want) in [
            ("Image", "Image", true),
            ("image", "Image", true),
            ("IMAGE", "Image", true),
            ("serveraddress", "serveraddress", true),
            ("ServerAddress", "serveraddress", true),
            ("\u{17F}erveraddre\u{17F}\u{17F}", "serveraddress", true),
            ("\u{17F}ERVERADDRESS", "serveraddress", true),
            ("Tas\u{212A}Template", "TaskTemplate", true),
            ("ta\u{17F}\u{212A}template", "TaskTemplate", true),
            ("Container\u{17F}pec", "ContainerSpec", true),
            // ſ folds only with s, K only with k.
            ("\u{17F}mage", "Image", false),
            ("Ta\u{212A}kTemplate", "TaskTemplate", false),
            // Look-alikes outside the two orbits.
            ("\u{130}mage", "Image", false),
            ("\u{131}mage", "Image", false),
            ("\u{406}mage", "Image", false),
            ("\u{FF29}mage", "Image", false),
            ("\u{2160}mage", "Image", false),
            ("Tas\u{3BA}Template", "TaskTemplate", false),
            ("I\u{307}mage", "Image", false),
            // Length and punctuation.
            ("", "Image", false),
            ("Imag", "Image", false),
            ("Images", "Image", false),
            ("Image\0", "Image", false),
            ("server_address", "serveraddress", false),
            ("", "", true),
        ] {
            assert_eq!(key_matches(key, field), want, "{key:?} vs {field:?}");
        }
    }

    #[test]
    fn parse_keeps_order_and_duplicates() {
        let json = parse(br#" {"b":1,"a":[true,null],"b":"x","\u0062":{}} "#).unwrap();
        assert_eq!(
            json,
            Json::Object(vec![
                ("b".into(), Json::Number),
                ("a".into(), Json::Array(vec![Json::Bool(true), Json::Null])),
                ("b".into(), Json::String("x".into())),
                ("b".into(), Json::Object(vec![])),
            ])
        );
        assert_eq!(
            to_json_text(&json),
            r#"{"b":0,"a":[true,null],"b":"x","b":{}}"#
        );
    }

    #[test]
    fn errors_are_one_line() {
        for body in [
            &b""[..],
            b"{",
            b"{} x",
            b"\"\xff\"",
            b"[1,]",
            b"{\"a\"\n:\n}",
        ] {
            let e = parse(body).unwrap_err();
            assert!(!e.contains('\n'), "{e:?}");
        }
        let e = service_spec(br#"{"TaskTemplate":{"ContainerSpec":{"Image":5}}}"#).unwrap_err();
        assert_eq!(
            e,
            "cannot decode a JSON number into TaskTemplate.ContainerSpec.Image"
        );
    }

    #[test]
    fn escapes_survive_the_round_trip() {
        let body = "{\"k\\\"\\\\\\u0001\\u001f\\n\u{17F}\":\"\\t\u{10000}\"}";
        check_invariants(body.as_bytes());
        let json = parse(body.as_bytes()).unwrap();
        assert_eq!(parse(to_json_text(&json).as_bytes()).unwrap(), json);
    }
}
