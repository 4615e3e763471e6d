//! The registry-policy gate: which image references does a request bring in?
//!
//! Parameters are read exactly as dockerd reads them (Go's `r.Form.Get`: the first value, pairs
//! split on `&` only, pairs with `;` or a bad escape skipped), so the image decided here is the
//! image dockerd pulls. A form-encoded body would be merged into dockerd's form ahead of the query
//! string; such requests are refused on gated routes instead of being parsed twice.

use vch_policy::{ImageRef, Registry};

/// Parses a query string as Go's `url.ParseQuery`, keeping pairs in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(k), Some(v)) = (query_unescape(k), query_unescape(v)) {
            out.push((k, v));
        }
    }
    out
}

/// Go's `r.Form.Get`: the first value of a key, or "".
pub fn form_get<'a>(form: &'a [(String, String)], key: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `url.QueryUnescape`: `+` is a space, `%XX` escapes; `None` when malformed or not UTF-8.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What `POST /images/create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImagesCreate {
    /// A pull of this reference (`fromImage`, with `tag` as tag or digest).
    Pull(ImageRef),
    /// An import (`fromSrc`): no registry involved.
    Import,
}

/// Reads `POST /images/create` as dockerd's `postImagesCreate` does. An unparsable `fromImage` is
/// an error (dockerd would refuse it too; refusing here keeps it from reaching dockerd at all).
pub fn images_create(form: &[(String, String)]) -> Result<ImagesCreate, String> {
    let image = form_get(form, "fromImage");
    let tag = form_get(form, "tag");
    if image.is_empty() {
        return Ok(ImagesCreate::Import);
    }
    let named = ImageRef::parse(image).map_err(|e| e.to_string())?;
    if tag.is_empty() {
        return Ok(ImagesCreate::Pull(named));
    }
    // dockerd: a `tag` that parses as a digest makes a digest reference; otherwise it replaces
    // any tag in `fromImage`.
    let text = if tag.contains(':') {
        format!("{}@{tag}", named.name())
    } else {
        format!("{}:{tag}", named.name())
    };
    ImageRef::parse(&text)
        .map(ImagesCreate::Pull)
        .map_err(|e| e.to_string())
}

/// The registry of a `POST /auth` body (`serveraddress`; empty means Docker Hub).
pub fn auth_registry(body: &[u8]) -> Result<Registry, String> {
    #[derive(serde::Deserialize)]
    struct AuthConfig {
        #[serde(default)]
        serveraddress: String,
    }
    let config: AuthConfig =
        serde_json::from_slice(body).map_err(|e| format!("invalid auth request body: {e}"))?;
    Registry::parse(&config.serveraddress).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_like_go() {
        let q = parse_query("fromImage=reg.x%2Fa&tag=1&fromImage=evil.x/b&x;y=1&bad=%zz&sp=a+b");
        assert_eq!(form_get(&q, "fromImage"), "reg.x/a");
        assert_eq!(form_get(&q, "tag"), "1");
        assert_eq!(form_get(&q, "bad"), "");
        assert_eq!(form_get(&q, "sp"), "a b");
        assert_eq!(form_get(&q, "x"), "");
    }

    #[test]
    fn pulls_as_dockerd_builds_them() {
        let pull = |q: &str| match images_create(&parse_query(q)) {
            Ok(ImagesCreate::Pull(r)) => r.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            pull("fromImage=busybox&tag=latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(pull("fromImage=reg.x:5000/a&tag=v1"), "reg.x:5000/a:v1");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            pull(&format!("fromImage=reg.x/a&tag={d}")),
            format!("reg.x/a@{d}")
        );
        assert_eq!(pull("fromImage=reg.x/a:v2"), "reg.x/a:v2");
        assert_eq!(pull("fromImage=reg.x/a:v2&tag=v3"), "reg.x/a:v3");
        assert_eq!(
            images_create(&parse_query("fromSrc=-&repo=x")),
            Ok(ImagesCreate::Import)
        );
        assert!(images_create(&parse_query("fromImage=Bad/Name")).is_err());
    }

    #[test]
    fn auth_server_address() {
        assert!(
            auth_registry(br#"{"username":"u","password":"p"}"#)
                .unwrap()
                .is_docker_hub()
        );
        assert_eq!(
            auth_registry(br#"{"serveraddress":"https://reg.x:5000/v2/"}"#)
                .unwrap()
                .as_str(),
            "reg.x:5000"
        );
        assert!(auth_registry(b"not json").is_err());
    }
}
