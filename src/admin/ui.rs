//! The web console: `GET /ui` and its two files, embedded in the binary
//! (`src/admin/ui/`: plain HTML, CSS and JavaScript, no build step).
//!
//! The page is static and holds no data, so it is served without the admin
//! token; everything it shows comes from the API (`/proxies`,
//! `/toxic-types`, `/stats`, connections), which asks for the token as
//! usual. A Content-Security-Policy limits the page to its own origin: it
//! loads nothing from, and sends nothing to, anywhere else.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

use super::Body;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Same origin only; no inline script or style markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The console's files: the page and what it loads.
const FILES: &[(&str, &str, &str)] = &[
    ("/ui", "text/html; charset=utf-8", INDEX_HTML),
    ("/ui/", "text/html; charset=utf-8", INDEX_HTML),
    ("/ui/app.js", "text/javascript; charset=utf-8", APP_JS),
    ("/ui/style.css", "text/css; charset=utf-8", STYLE_CSS),
];

/// Whether `path` is one of the console's static files (served without the
/// token).
pub(super) fn is_static(path: &str) -> bool {
    FILES.iter().any(|(p, _, _)| *p == path)
}

/// The console file at `path`, if there is one.
pub(super) fn file(path: &str) -> Option<Response<Body>> {
    let (_, content_type, text) = FILES.iter().find(|(p, _, _)| *p == path)?;
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        for (path, _, _) in FILES {
            assert!(is_static(path) && file(path).is_some(), "{path}");
        }
        assert!(!is_static("/ui/other.js") && file("/proxies").is_none());
        // Every file the page refers to is served, and nothing off-site is
        // named anywhere (the CSP would block it anyway).
        for name in ["/ui/app.js", "/ui/style.css"] {
            assert!(INDEX_HTML.contains(name), "{name}");
        }
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn") && !text.contains("@import"));
        }
    }
}
