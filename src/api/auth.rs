//! Who is asking: a Bearer token from `[[http.tokens]]`, or the session cookie the web page got by signing in
//! with one. Tokens and session ids are compared in constant time and never logged. A cookie-authenticated
//! request that changes state must carry the session's CSRF token in `X-CSRF-Token`. Failed sign-ins are
//! limited per client address.

use super::ApiState;
use super::config::{Role, Token};
use super::error::{ApiError, ApiResult};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "caretaker_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins allowed per client address per window before 429.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Signed in through the session cookie (not a Bearer token).
    pub session: bool,
    pub csrf: Option<String>,
}

impl Principal {
    /// 403 unless the caller's role includes `role`.
    pub fn require(&self, role: Role, what: &str) -> ApiResult<()> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "`{}` has role {}: {what} needs {} or above",
                self.name,
                self.role.as_str(),
                role.as_str()
            )))
        }
    }
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    pub expires: Instant,
}

/// Sessions (keyed by the SHA-256 of their id) and failed sign-ins per address.
#[derive(Debug, Default)]
pub struct Sessions {
    pub by_hash: HashMap<String, Session>,
    pub failures: HashMap<IpAddr, (u32, Instant)>,
}

/// Constant-time equality (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured token matching `presented`: every token is compared, whatever matches first.
pub fn find_token<'a>(tokens: &'a [Token], presented: &[u8]) -> Option<&'a Token> {
    let mut found = None;
    for t in tokens {
        if ct_eq(&t.secret, presented) && found.is_none() {
            found = Some(t);
        }
    }
    found
}

/// `n` random bytes from the system's CSPRNG, hex.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: refuse rather than hand out guessable secrets.
        return String::new();
    }
    hex(&b)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 hex of a secret (session ids and request keys are stored hashed).
pub fn sha256_hex(s: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn state_changing(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The caller, if any credentials came: `Ok(None)` without any, 401 for a wrong token, 403 `csrf` for a
/// cookie-authenticated state change without the session's CSRF token.
pub fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    method: &Method,
) -> ApiResult<Option<Principal>> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        else {
            return Err(ApiError::unauthorized(
                "use `Authorization: Bearer <token>`",
            ));
        };
        return match find_token(&state.http.tokens, t.trim().as_bytes()) {
            Some(tok) => Ok(Some(Principal {
                name: tok.name.clone(),
                role: tok.role,
                session: false,
                csrf: None,
            })),
            None => Err(ApiError::unauthorized("unknown token")),
        };
    }
    let Some(id) = cookie_value(headers, COOKIE) else {
        return Ok(None);
    };
    let key = sha256_hex(&id);
    let session = {
        let mut s = state.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match s.by_hash.get(&key) {
            Some(x) if x.expires > Instant::now() => Some(x.clone()),
            Some(_) => {
                s.by_hash.remove(&key);
                None
            }
            None => None,
        }
    };
    let Some(session) = session else {
        return Ok(None);
    };
    if state_changing(method) {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct_eq(sent.as_bytes(), session.csrf.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a signed-in page must send its X-CSRF-Token header with changes",
            ));
        }
    }
    Ok(Some(Principal {
        name: session.name,
        role: session.role,
        session: true,
        csrf: Some(session.csrf),
    }))
}

/// A caller that must be authenticated (401 otherwise).
pub struct Auth(pub Principal);

/// A caller that may be anonymous (public routes); wrong credentials are still refused.
pub struct MaybeAuth(pub Option<Principal>);

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> ApiResult<Self> {
        match authenticate(state, &parts.headers, &parts.method)? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::unauthorized(
                "sign in: send `Authorization: Bearer <token>` or the session cookie",
            )),
        }
    }
}

impl FromRequestParts<ApiState> for MaybeAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> ApiResult<Self> {
        Ok(MaybeAuth(authenticate(
            state,
            &parts.headers,
            &parts.method,
        )?))
    }
}

/// The client's address (the TCP peer), when the server recorded it.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl Sessions {
    /// 429 with the seconds to wait when `ip` failed too often lately.
    pub fn check_rate(&mut self, ip: Option<IpAddr>, now: Instant) -> ApiResult<()> {
        let Some(ip) = ip else { return Ok(()) };
        if let Some((n, since)) = self.failures.get(&ip).copied() {
            let elapsed = now.duration_since(since);
            if elapsed >= FAILURE_WINDOW {
                self.failures.remove(&ip);
            } else if n >= MAX_FAILURES {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many failed sign-ins from this address; wait and try again",
                );
                e.retry_after = Some((FAILURE_WINDOW - elapsed).as_secs().max(1));
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn failed(&mut self, ip: Option<IpAddr>, now: Instant) {
        let Some(ip) = ip else { return };
        // Keep the table bounded: forget stale entries when it grows.
        if self.failures.len() > 10_000 {
            self.failures
                .retain(|_, (_, t)| now.duration_since(*t) < FAILURE_WINDOW);
        }
        let e = self.failures.entry(ip).or_insert((0, now));
        e.0 += 1;
    }

    /// A new session for a token; returns (session id, CSRF token).
    pub fn open(&mut self, name: &str, role: Role, now: Instant) -> Option<(String, String)> {
        let id = random_hex(32);
        let csrf = random_hex(24);
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        self.by_hash.retain(|_, s| s.expires > now);
        self.by_hash.insert(
            sha256_hex(&id),
            Session {
                name: name.to_string(),
                role,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Some((id, csrf))
    }

    pub fn close(&mut self, id: &str) {
        self.by_hash.remove(&sha256_hex(id));
    }
}

/// The session id from a request's cookie (for sign-out).
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_sign_ins_are_limited_per_address() {
        let mut s = Sessions::default();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        let other: Option<IpAddr> = Some([10, 0, 0, 2].into());
        let t = Instant::now();
        for _ in 0..MAX_FAILURES {
            s.check_rate(ip, t).unwrap();
            s.failed(ip, t);
        }
        let e = s.check_rate(ip, t + Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(50));
        s.check_rate(other, t).unwrap();
        s.check_rate(ip, t + FAILURE_WINDOW).unwrap();
    }

    #[test]
    fn tokens_match_exactly() {
        let toks = vec![
            Token {
                name: "a".into(),
                role: Role::Viewer,
                secret: b"0123456789abcdef".to_vec(),
            },
            Token {
                name: "b".into(),
                role: Role::Admin,
                secret: b"fedcba9876543210".to_vec(),
            },
        ];
        assert_eq!(find_token(&toks, b"fedcba9876543210").unwrap().name, "b");
        assert!(find_token(&toks, b"fedcba987654321").is_none());
        assert!(find_token(&toks, b"").is_none());
        assert_eq!(random_hex(16).len(), 32);
    }
}
