//! API access control: one bearer token, checked in constant time on every request except
//! `/healthz` (and the dashboard's login form, which exists to take the token).
//!
//! Clients send `Authorization: Bearer <token>`. The dashboard cannot add a header to the page
//! load itself, so it logs in once (`/ui/login`) and the browser then sends the token as an
//! `HttpOnly`, `SameSite=Strict` cookie: same-origin requests only, so another site's page
//! cannot make the browser act with it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use fission_core::{ErrorBody, ErrorCode};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The cookie the dashboard's login sets.
pub const COOKIE_NAME: &str = "fission-token";

/// Paths served without a token.
const PUBLIC_PATHS: &[&str] = &["/healthz", LOGIN_PATH];
const LOGIN_PATH: &str = "/ui/login";

/// Bytes of randomness in a generated token (256 bits).
const GENERATED_TOKEN_BYTES: usize = 32;
/// Shortest token accepted from the operator: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read or written.
    #[error("cannot use the API token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The token (given or read from a file) is unusable.
    #[error(
        "the API token {origin} is too short or not printable: use at least {MIN_TOKEN_LEN} visible ASCII characters (no spaces)"
    )]
    Weak { origin: String },
    /// The operating system's random source failed.
    #[error("cannot generate an API token: {0}")]
    Random(String),
}

/// The token every request must carry. Only its SHA-256 is kept, so comparisons are of equal
/// length and constant time whatever the client sends.
#[derive(Clone)]
pub struct ApiToken {
    digest: Arc<[u8; 32]>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A token must fit in a header and a cookie unchanged: visible ASCII, no separators a cookie
/// would split on.
fn usable(token: &str) -> bool {
    token.len() >= MIN_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
}

impl ApiToken {
    /// The token given by the operator (`--auth-token`, `FISSION_AUTH_TOKEN`).
    pub fn new(token: &str, origin: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if !usable(token) {
            return Err(TokenError::Weak {
                origin: origin.to_owned(),
            });
        }
        Ok(Self {
            digest: Arc::new(digest(token.as_bytes())),
        })
    }

    /// The token kept in `path`, generated there (mode 0600) when the file does not exist.
    /// Returns whether it was generated now.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // A file copied in by hand may be readable by others: the token is a password.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
                let token = Self::new(&text, &format!("in {}", path.display()))?;
                Ok((token, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = generate()?;
                // Written to a temporary name and renamed, so a crash never leaves a partial
                // token that a restart would then refuse.
                let tmp = path.with_extension("tmp");
                let _ = std::fs::remove_file(&tmp);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(format!("{token}\n").as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok((Self::new(&token, "generated")?, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(digest(presented.as_bytes()).ct_eq(self.digest.as_ref()))
    }
}

/// 256 random bits, hex: survives shells, headers and cookies unquoted.
fn generate() -> Result<String, TokenError> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// What a request presented.
enum Presented<'a> {
    Nothing,
    Bearer(&'a str),
    Cookie(&'a str),
    /// An `Authorization` header of another scheme, or not text.
    Malformed,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let Ok(text) = value.to_str() else {
            return Presented::Malformed;
        };
        return match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Presented::Bearer(token.trim())
            }
            _ => Presented::Malformed,
        };
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map_or(Presented::Nothing, |(_, value)| Presented::Cookie(value))
}

/// The middleware: a request without the token gets 401 and reaches no handler.
pub(crate) async fn require_token(
    State(token): State<ApiToken>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if PUBLIC_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let (ok, missing) = match presented(req.headers()) {
        Presented::Bearer(t) | Presented::Cookie(t) => (token.matches(t), false),
        Presented::Malformed => (false, false),
        Presented::Nothing => (false, true),
    };
    if ok {
        return next.run(req).await;
    }
    // A person opening the dashboard gets the login form rather than JSON.
    if req.method() == Method::GET && path.starts_with("/ui") && wants_html(req.headers()) {
        return login_page(StatusCode::UNAUTHORIZED, !missing);
    }
    unauthorized(missing)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// 401 in Fission's `{code, message}` shape, with the challenge RFC 6750 asks for.
fn unauthorized(missing: bool) -> Response {
    let message = if missing {
        "this server requires an API token: send 'Authorization: Bearer <token>' \
         (fission CLI: set FISSION_AUTH_TOKEN or --auth-token; the server keeps a generated \
         token in <data-dir>/auth-token)"
    } else {
        "the API token is wrong: it does not match the server's (--auth-token / \
         FISSION_AUTH_TOKEN of the server, or <data-dir>/auth-token)"
    };
    let body = ErrorBody {
        code: ErrorCode::NotAuthorized.wire_code(),
        message: message.to_owned(),
    };
    let challenge = if missing {
        r#"Bearer realm="fission""#
    } else {
        r#"Bearer realm="fission", error="invalid_token""#
    };
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        axum::Json(body),
    )
        .into_response()
}

/// The dashboard's login form (no script: it must work before the app is allowed to load).
fn login_page(status: StatusCode, wrong: bool) -> Response {
    let note = if wrong {
        r#"<p class="err">That token is not this server's.</p>"#
    } else {
        ""
    };
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Fission dashboard: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}}input{{width:100%;font:inherit;padding:.4em;box-sizing:border-box}}button{{margin-top:.8em;font:inherit;padding:.4em 1.2em}}.err{{color:#b00020}}code{{background:#eee;padding:0 .2em}}</style></head>
<body><h1>Fission dashboard</h1>{note}
<form method="post" action="{LOGIN_PATH}"><label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button id="login" type="submit">Log in</button></form>
<p>The token is the server's <code>--auth-token</code> / <code>FISSION_AUTH_TOKEN</code>, or the one it generated in <code>&lt;data-dir&gt;/auth-token</code>.</p>
</body></html>"#
    );
    let mut resp = (status, Html(html)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /ui/login`: the form. `POST /ui/login` (form field `token`): on a match, the cookie and
/// a redirect to the dashboard; else the form again with 401.
pub(crate) async fn login(
    State(token): State<ApiToken>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if method != Method::POST {
        return login_page(StatusCode::OK, false);
    }
    let given = form_field(&body, "token").unwrap_or_default();
    if !token.matches(given.trim()) {
        return login_page(StatusCode::UNAUTHORIZED, true);
    }
    // `Secure` when the page came over TLS (the proxy or our own listener says so via the URL
    // scheme the browser used, which only `Origin` reveals to us).
    let secure = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict{}",
        given.trim(),
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to("/ui").into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        // `usable` tokens are valid header text; anything else never matched above.
        Err(_) => login_page(StatusCode::UNAUTHORIZED, true),
    }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_itself_only() {
        let t = ApiToken::new("0123456789abcdef0123", "test").expect("token");
        assert!(t.matches("0123456789abcdef0123"));
        assert!(!t.matches("0123456789abcdef0124"));
        assert!(!t.matches(""));
        assert!(!t.matches("0123456789abcdef01230"));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused() {
        assert!(ApiToken::new("short", "--auth-token").is_err());
        assert!(ApiToken::new("with space inside 12345", "--auth-token").is_err());
        assert!(ApiToken::new("semi;colon-0123456789", "--auth-token").is_err());
        let e = ApiToken::new("x", "--auth-token").expect_err("weak");
        assert!(e.to_string().contains("--auth-token"), "{e}");
    }

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("auth-token");
        let (first, generated) = ApiToken::load_or_generate(&path).expect("generate");
        assert!(generated);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(first.matches(text.trim()));
        assert_eq!(text.trim().len(), GENERATED_TOKEN_BYTES * 2);
        let (again, generated) = ApiToken::load_or_generate(&path).expect("load");
        assert!(!generated);
        assert!(again.matches(text.trim()));
    }

    #[test]
    fn bearer_header_wins_over_cookie_and_other_schemes_are_malformed() {
        let mut h = HeaderMap::new();
        assert!(matches!(presented(&h), Presented::Nothing));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; fission-token=tok"),
        );
        assert!(matches!(presented(&h), Presented::Cookie("tok")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert!(matches!(presented(&h), Presented::Bearer("abc")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(presented(&h), Presented::Malformed));
    }
}
