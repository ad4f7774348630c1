//! Audit-trail events: redaction of request bodies and the event shape.
//!
//! Every write to the API is recorded once, after its answer, as an [`AuditEvent`]: who (user, team,
//! role, API key), what (method, path, route template, action name), how it went (status, duration)
//! and a summary of the request body with every secret replaced by [`REDACTED`]. The rules here are
//! pure so that they are tested without a server; storing and reading is `crate::store::audit`.
//!
//! Redaction errs on the side of hiding: a field whose name merely looks like a secret is hidden, and so
//! is a string that looks like a credential whatever its field is called. A body that cannot be parsed
//! is never stored, not even in part: it may be exactly the secret that failed to parse.

use std::time::Duration;

use bson::{Bson, doc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::role::Role;
use crate::ids::{ApiKeyId, AuditId, TeamId, UserId};
use crate::time::Timestamp;

/// What a secret is replaced with.
pub const REDACTED: &str = "***REDACTED***";
/// Longest body summary stored (characters, the cut marker included).
pub const BODY_SUMMARY_MAX_CHARS: usize = 500;
/// Longest user agent stored (characters).
pub const USER_AGENT_MAX_CHARS: usize = 256;
/// Longest path or target id stored (characters): paths are chosen by the caller.
pub const PATH_MAX_CHARS: usize = 512;
/// JSON bodies larger than this are not parsed for a summary (a placeholder is stored instead).
pub const SUMMARY_PARSE_MAX_BYTES: usize = 1 << 20;

/// One recorded request. Insert-only: nothing in the fleet changes an event after it is written;
/// retention removes the old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "_id")]
    pub id: AuditId,
    /// When the request arrived.
    pub at: Timestamp,
    /// The caller's active team (none for requests nobody could be identified for, e.g. a failed sign-in
    /// with an unknown email).
    #[serde(default)]
    pub team_id: Option<TeamId>,
    #[serde(default)]
    pub actor_id: Option<UserId>,
    #[serde(default)]
    pub actor_email: Option<String>,
    #[serde(default)]
    pub actor_role: Option<Role>,
    /// The API key the request came with (its owner is the actor).
    #[serde(default)]
    pub api_key_id: Option<ApiKeyId>,
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The route template (`/api/cloud-scans/{run_id}`), or the path when no route matched.
    pub route: String,
    /// What was done, `<resource>.<verb>` (`scan.start`, `cloud_account.create`, `user.login`).
    pub action: String,
    pub status: u16,
    /// 2xx or 3xx.
    #[serde(deserialize_with = "crate::store::lenient_bool")]
    pub success: bool,
    pub duration_ms: i64,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The redacted body summary ([`body_summary`]); none for an empty body or one never stored
    /// (sign-in, registration, MFA).
    #[serde(default)]
    pub body: Option<String>,
    /// The first path parameter (the object acted on), if the route has one.
    #[serde(default)]
    pub target_id: Option<String>,
}

/// Who made a request, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub team_id: Option<TeamId>,
    pub user_id: Option<UserId>,
    pub email: Option<String>,
    pub role: Option<Role>,
    pub api_key_id: Option<ApiKeyId>,
}

/// What the access layer knows of a finished request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The request path (a query string, if passed along, is dropped).
    pub path: &'a str,
    /// The matched route template, if any.
    pub route: Option<&'a str>,
    /// The route's action name; none: derived from the method and route ([`default_action`]).
    pub action: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The request body; none when the route's bodies are never stored ([`body_is_never_stored`]).
    pub body: Option<&'a [u8]>,
}

impl AuditEvent {
    /// The event of one request: the body summarised and redacted, the user agent and path cut, the
    /// target taken from the first path parameter.
    pub fn record(req: RequestFacts<'_>, actor: Actor, at: Timestamp) -> Self {
        let path = req.path.split('?').next().unwrap_or_default();
        let route = req.route.unwrap_or(path);
        let action = match req.action {
            Some(a) => a.to_string(),
            None => default_action(req.method, route),
        };
        AuditEvent {
            id: AuditId::new(),
            at,
            team_id: actor.team_id,
            actor_id: actor.user_id,
            actor_email: actor.email,
            actor_role: actor.role,
            api_key_id: actor.api_key_id,
            method: req.method.to_ascii_uppercase(),
            path: cut(path, PATH_MAX_CHARS),
            route: cut(route, PATH_MAX_CHARS),
            action,
            status: req.status,
            success: (200..400).contains(&req.status),
            duration_ms: req.duration.as_millis().min(i64::MAX as u128) as i64,
            ip: req.ip.map(|s| cut(s, 64)),
            user_agent: req.user_agent.map(|s| cut(s, USER_AGENT_MAX_CHARS)),
            body: req.body.and_then(|b| body_summary(req.content_type, b)),
            target_id: req.route.and_then(|r| first_path_param(r, path)).map(|s| cut(&s, PATH_MAX_CHARS)),
        }
    }
}

/// Whether a field name names a secret (compared without case, `_` and `-`).
pub fn is_secret_key(key: &str) -> bool {
    const PARTS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "credential",
        "privatekey",
        "accesskey",
        "mfa",
        "sessionid",
        "authorization",
        "cookie",
    ];
    let flat: String = key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    if PARTS.iter().any(|p| flat.contains(p)) || flat == "auth" || flat == "pwd" {
        return true;
    }
    // `key` alone, or as the last word of a name (`ssh_key`, `x-api-key`, `encryptionKey`), plural too.
    let lower = key.to_lowercase();
    ["key", "keys"].iter().any(|k| {
        lower == *k
            || lower.ends_with(&format!("_{k}"))
            || lower.ends_with(&format!("-{k}"))
            || (key.len() > k.len() && key.ends_with(&format!("K{}", &k[1..])))
    })
}

/// Whether a string looks like a credential whatever field holds it: an API key of ours, an
/// `Authorization` header value, a PEM private key, an AWS access key id.
pub fn looks_like_secret(s: &str) -> bool {
    let t = s.trim();
    let lower_start: String = t.chars().take(7).flat_map(char::to_lowercase).collect();
    if t.starts_with("osk_") || lower_start.starts_with("bearer ") || lower_start.starts_with("basic ") {
        return true;
    }
    if t.contains("-----BEGIN") && t.contains("PRIVATE KEY") {
        return true;
    }
    (t.starts_with("AKIA") || t.starts_with("ASIA"))
        && t.len() >= 16
        && t.len() <= 128
        && t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Replaces, at every depth, the value of every field that names a secret (whole: a `credentials`
/// object goes at once) and every string that looks like one, with [`REDACTED`].
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) {
                    *v = Value::String(REDACTED.to_string());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if looks_like_secret(s) => *s = REDACTED.to_string(),
        _ => {}
    }
}

/// The stored summary of a request body: JSON redacted and cut to [`BODY_SUMMARY_MAX_CHARS`]; anything
/// else (or JSON that does not parse) only as its kind and size. `None` for an empty body.
pub fn body_summary(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let n = body.len();
    let essence = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let is_json = match essence.as_deref() {
        Some(e) => e == "application/json" || e.ends_with("+json"),
        // No content type: JSON if it parses as JSON.
        None => true,
    };
    if !is_json {
        return Some(format!("<{}, {n} bytes>", printable_media_type(essence.as_deref().unwrap_or_default())));
    }
    if n > SUMMARY_PARSE_MAX_BYTES {
        return Some(format!("<JSON too large to summarise, {n} bytes>"));
    }
    match serde_json::from_slice::<Value>(body) {
        // A bare string has no field name to judge it by: it may be a token on its own.
        Ok(Value::String(_)) => Some(format!("<JSON string, {n} bytes>")),
        Ok(mut v) if essence.is_some() || v.is_object() || v.is_array() => {
            redact(&mut v);
            Some(cut(&v.to_string(), BODY_SUMMARY_MAX_CHARS))
        }
        _ if essence.is_none() => Some(format!("<body without a content type, {n} bytes>")),
        _ => Some(format!("<unparseable JSON, {n} bytes>")),
    }
}

/// A media type as the caller sent it, if it is a plain one; the header is the caller's to choose.
fn printable_media_type(essence: &str) -> &str {
    let plain = !essence.is_empty()
        && essence.len() <= 100
        && essence.bytes().all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b));
    if plain { essence } else { "non-JSON body" }
}

/// At most `max` characters of `s`; a cut text ends with `…` (counted).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The routes whose request bodies are never stored, even redacted: sign-in, registration, MFA, SSO,
/// password changes and resets (`/api/auth/…`), and the setup wizard's configuration, which carries
/// the platform's own secrets.
pub fn body_is_never_stored(route: &str) -> bool {
    route.starts_with("/api/auth/") || route.starts_with("/api/platform-setup/")
}

/// The value of the route's first path parameter in `path` (`/api/schedules/{id}/pause` and
/// `/api/schedules/sched_01…/pause` give `sched_01…`).
pub fn first_path_param(route: &str, path: &str) -> Option<String> {
    let mut segments = path.split('/');
    for template in route.split('/') {
        let segment = segments.next()?;
        if template.starts_with('{') && template.ends_with('}') {
            return (!segment.is_empty()).then(|| segment.to_string());
        }
    }
    None
}

/// `<resource>.<verb>` for a route without a declared action: the resource is the first path segment
/// after `/api/` in the singular, snake case (`cloud-accounts` → `cloud_account`); the verb is the last
/// literal segment after a parameter (`/api/cloud-accounts/{id}/scan` → `scan`), or else follows the
/// method (POST `create`, PUT and PATCH `update`, DELETE `delete`, GET `view`).
pub fn default_action(method: &str, route: &str) -> String {
    let segments: Vec<&str> =
        route.strip_prefix("/api").unwrap_or(route).split('/').filter(|s| !s.is_empty()).collect();
    let resource =
        segments.first().filter(|s| !s.starts_with('{')).map(|s| singular(s)).unwrap_or_else(|| "api".into());
    let has_param = segments.iter().any(|s| s.starts_with('{'));
    let after_param = segments.last().filter(|s| has_param && !s.starts_with('{'));
    let verb = match after_param {
        Some(v) => v.replace('-', "_"),
        None => match method.to_ascii_uppercase().as_str() {
            "POST" => "create".into(),
            "PUT" | "PATCH" => "update".into(),
            "DELETE" => "delete".into(),
            "GET" | "HEAD" => "view".into(),
            other => other.to_ascii_lowercase(),
        },
    };
    format!("{resource}.{verb}")
}

fn singular(segment: &str) -> String {
    let s = segment.replace('-', "_");
    if let Some(stem) = s.strip_suffix("ies") {
        format!("{stem}y")
    } else if s.ends_with("ss") {
        s
    } else if let Some(stem) = s.strip_suffix('s') {
        stem.to_string()
    } else {
        s
    }
}

/// Whether `action` matches `pattern`, where `*` stands for any run of characters (`scan.*`,
/// `*.delete`, `*`); without `*` the pattern is the action itself.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        // No `*`: the one part is the pattern.
        return pattern == action;
    };
    let Some(mut rest) = action.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The MongoDB condition on `action` for a pattern, `None` when the pattern matches every action: the
/// action itself without `*`, else an anchored `$regex` (sent as a string: the Mongo-wire test server
/// refuses BSON regular expressions) in which every character but `*` stands for itself. A pattern
/// ending in `*` becomes a prefix expression (`^scan\.`), which MongoDB answers from an index.
pub fn action_filter(pattern: &str) -> Option<Bson> {
    if pattern.chars().all(|c| c == '*') {
        return None;
    }
    if !pattern.contains('*') {
        return Some(Bson::String(pattern.to_string()));
    }
    Some(Bson::Document(doc! { "$regex": action_regex(pattern) }))
}

/// The regular expression of a wildcard pattern (see [`action_filter`]).
pub fn action_regex(pattern: &str) -> String {
    let (body, open_end) = match pattern.strip_suffix('*') {
        Some(stem) => (stem.trim_end_matches('*'), true),
        None => (pattern, false),
    };
    let mut re = String::from("^");
    for c in body.chars() {
        match c {
            '*' => re.push_str(".*"),
            // A backslash before ASCII punctuation means the character itself in every dialect
            // (PCRE on MongoDB, Python's on the test server); letters, digits and the rest are plain.
            c if c.is_ascii_punctuation() => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    if !open_end {
        re.push('$');
    }
    re
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_redacted_at_every_depth_and_the_rest_is_kept() {
        let mut v = json!({
            "account_name": "prod",
            "Password": "hunter2",
            "new_passwd": "x",
            "client_secret": "s",
            "refresh_token": "t",
            "api_key": "k1",
            "apiKey": "k2",
            "X-Api-Key": "k3",
            "key": "k4",
            "ssh_key": "k5",
            "encryptionKey": "k6",
            "private_key": "k7",
            "mfa_code": "123456",
            "session_id": "sess",
            "sessionId": "sess2",
            "headers": { "Authorization": "whatever", "Cookie": "c=1", "accept": "json" },
            "credentials": { "access_key_id": "AKIAXXXX", "nested": { "deep": 1 } },
            "items": [ { "token": "a" }, { "name": "kept" } ],
            "key_id": "key_01",
            "monkey": "banana",
            "keyboard": "qwerty",
        });
        redact(&mut v);
        let r = json!(REDACTED);
        for k in [
            "Password",
            "new_passwd",
            "client_secret",
            "refresh_token",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "key",
            "ssh_key",
            "encryptionKey",
            "private_key",
            "mfa_code",
            "session_id",
            "sessionId",
            "credentials",
        ] {
            assert_eq!(v[k], r, "{k} is not redacted: {v}");
        }
        assert_eq!(v["headers"]["Authorization"], r);
        assert_eq!(v["headers"]["Cookie"], r);
        assert_eq!(v["headers"]["accept"], json!("json"));
        assert_eq!(v["items"][0]["token"], r);
        assert_eq!(v["items"][1]["name"], json!("kept"));
        assert_eq!(v["account_name"], json!("prod"));
        // Ids of keys and words that merely contain "key" are not secrets.
        assert_eq!(v["key_id"], json!("key_01"));
        assert_eq!(v["monkey"], json!("banana"));
        assert_eq!(v["keyboard"], json!("qwerty"));
    }

    #[test]
    fn strings_that_look_like_credentials_are_redacted_whatever_their_field() {
        let mut v = json!({
            "note": "osk_abcdefabcdefabcdefabcdef",
            "header": "Bearer eyJhbGciOi",
            "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
            "aws": "AKIAIOSFODNN7EXAMPLE",
            "list": ["basic dXNlcjpwYXNz", "plain"],
            "name": "AKIA is a prefix",
        });
        redact(&mut v);
        for k in ["note", "header", "pem", "aws"] {
            assert_eq!(v[k], json!(REDACTED), "{k}: {v}");
        }
        assert_eq!(v["list"], json!([REDACTED, "plain"]));
        assert_eq!(v["name"], json!("AKIA is a prefix"));
    }

    #[test]
    fn a_json_body_is_summarised_redacted() {
        let body = br#"{"email":"a@b.c","password":"hunter2","regions":["eu-west-1"]}"#;
        let s = body_summary(Some("application/json; charset=utf-8"), body).expect("a summary");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains(REDACTED) && s.contains("eu-west-1") && s.contains("a@b.c"), "{s}");
        let s = body_summary(Some("application/merge-patch+json"), br#"{"token":"t0k"}"#).expect("summary");
        assert!(!s.contains("t0k"), "{s}");
        // No content type: read as JSON when it is JSON.
        let s = body_summary(None, br#"{"secret":"zz9"}"#).expect("summary");
        assert!(!s.contains("zz9"), "{s}");
    }

    #[test]
    fn a_long_summary_is_cut_on_a_character_boundary() {
        let long = format!(r#"{{"name":"{}"}}"#, "é".repeat(2_000));
        let s = body_summary(Some("application/json"), long.as_bytes()).expect("summary");
        assert_eq!(s.chars().count(), BODY_SUMMARY_MAX_CHARS);
        assert!(s.ends_with('…'));
        let short = body_summary(Some("application/json"), br#"{"a":1}"#).expect("summary");
        assert_eq!(short, r#"{"a":1}"#);
    }

    #[test]
    fn bodies_that_are_not_json_are_stored_as_their_kind_and_size_only() {
        let raw = b"{\"password\": \"hunter2\"";
        assert_eq!(
            body_summary(Some("application/json"), raw).as_deref(),
            Some(format!("<unparseable JSON, {} bytes>", raw.len()).as_str())
        );
        let form = b"--x\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n--x--";
        let s = body_summary(Some("multipart/form-data; boundary=x"), form).expect("summary");
        assert_eq!(s, format!("<multipart/form-data, {} bytes>", form.len()));
        let s = body_summary(Some("text/plain\u{7}<script>"), b"password=hunter2").expect("summary");
        assert_eq!(s, "<non-JSON body, 16 bytes>");
        let s = body_summary(None, b"password=hunter2").expect("summary");
        assert!(!s.contains("hunter2"), "{s}");
        for ctype in [Some("application/json"), None] {
            let s = body_summary(ctype, br#""hunter2""#).expect("summary");
            assert!(!s.contains("hunter2"), "{s}");
        }
        assert_eq!(body_summary(None, b"42").as_deref(), Some("<body without a content type, 2 bytes>"));
        assert_eq!(body_summary(Some("application/json"), b"42").as_deref(), Some("42"));
        assert_eq!(body_summary(Some("application/json"), b""), None);
        assert_eq!(body_summary(Some("application/json"), b"  \n"), None);
    }

    #[test]
    fn a_huge_json_body_is_not_parsed() {
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(SUMMARY_PARSE_MAX_BYTES));
        let s = body_summary(Some("application/json"), big.as_bytes()).expect("summary");
        assert!(s.starts_with("<JSON too large"), "{s}");
    }

    #[test]
    fn wildcard_patterns_match_as_documented() {
        assert!(action_matches("scan.*", "scan.start"));
        assert!(action_matches("scan.*", "scan.cancel"));
        assert!(!action_matches("scan.*", "scanner.update"));
        assert!(!action_matches("scan.*", "scan"));
        assert!(!action_matches("scan.*", "cloud_scan.start"));
        assert!(action_matches("*.delete", "cloud_account.delete"));
        assert!(!action_matches("*.delete", "cloud_account.deleted"));
        assert!(action_matches("*", "anything.at_all"));
        assert!(action_matches("*", ""));
        assert!(action_matches("scan.start", "scan.start"));
        assert!(!action_matches("scan.start", "scan.started"));
        assert!(action_matches("*account*", "cloud_account.create"));
        assert!(action_matches("a*b*c", "aXbYc"));
        assert!(!action_matches("a*b*c", "aXcYb"));
        assert!(!action_matches("ab*ba", "aba"), "the two ends must not overlap");
    }

    #[test]
    fn the_database_filter_of_a_pattern_means_the_same_as_the_pattern() {
        assert_eq!(action_filter("*"), None);
        assert_eq!(action_filter("**"), None);
        assert_eq!(action_filter("scan.start"), Some(Bson::String("scan.start".into())));
        assert_eq!(action_regex("scan.*"), r"^scan\.");
        assert_eq!(action_regex("*.delete"), r"^.*\.delete$");
        assert_eq!(action_regex("a-b:c*"), r"^a\-b\:c");
        let actions = [
            "scan.start",
            "scan.cancel",
            "scanner.update",
            "scan",
            "cloud_account.delete",
            "cloud_account.deleted",
            "user.login",
            "a+b.c",
            "ab",
            "aba",
        ];
        for pattern in ["scan.*", "*.delete", "*account*", "a+b.*", "ab*ba", "*.*", "user.login", "s*n"] {
            let re = regex_automata::dfa::regex::Regex::new(&action_regex(pattern)).expect("a valid expression");
            for a in actions {
                assert_eq!(re.is_match(a), action_matches(pattern, a), "`{pattern}` on `{a}`");
            }
        }
    }

    #[test]
    fn an_event_records_the_request_as_the_access_layer_saw_it() {
        let body = br#"{"provider":"aws","credentials":{"secret_access_key":"zzz"}}"#;
        let req = RequestFacts {
            method: "post",
            path: "/api/cloud-accounts/acc_01/scan?x=1",
            route: Some("/api/cloud-accounts/{id}/scan"),
            action: None,
            status: 202,
            duration: Duration::from_millis(37),
            ip: Some("10.0.0.7"),
            user_agent: Some(&"a".repeat(1_000)),
            content_type: Some("application/json"),
            body: Some(body),
        };
        let actor = Actor { team_id: Some(TeamId::new()), user_id: Some(UserId::new()), ..Actor::default() };
        let e = AuditEvent::record(req, actor, Timestamp::from_millis(5));
        assert_eq!(e.method, "POST");
        assert_eq!(e.path, "/api/cloud-accounts/acc_01/scan");
        assert_eq!(e.action, "cloud_account.scan");
        assert_eq!(e.target_id.as_deref(), Some("acc_01"));
        assert!(e.success);
        assert_eq!(e.duration_ms, 37);
        assert_eq!(e.user_agent.as_ref().map(|u| u.chars().count()), Some(USER_AGENT_MAX_CHARS));
        let stored = e.body.clone().expect("a body");
        assert!(!stored.contains("zzz") && stored.contains("aws"), "{stored}");
        let failed = AuditEvent::record(
            RequestFacts { status: 401, body: None, action: Some("user.login"), ..req },
            Actor::default(),
            Timestamp::from_millis(5),
        );
        assert!(!failed.success);
        assert_eq!(failed.body, None);
        assert_eq!(failed.action, "user.login");
        assert!(!AuditEvent::record(RequestFacts { status: 500, ..req }, Actor::default(), Timestamp::now()).success);
        assert!(AuditEvent::record(RequestFacts { status: 303, ..req }, Actor::default(), Timestamp::now()).success);
    }

    #[test]
    fn an_event_round_trips_through_bson() {
        let e = AuditEvent::record(
            RequestFacts {
                method: "DELETE",
                path: "/api/schedules/sched_1",
                route: Some("/api/schedules/{id}"),
                action: Some("schedule.delete"),
                status: 204,
                duration: Duration::from_millis(3),
                ip: None,
                user_agent: None,
                content_type: None,
                body: None,
            },
            Actor { role: Some(Role::Viewer), email: Some("v@x.test".into()), ..Actor::default() },
            Timestamp::now(),
        );
        let d = bson::serialize_to_document(&e).expect("serialises");
        assert!(d.get_str("_id").expect("_id").starts_with("aud_"));
        assert_eq!(d.get_str("actor_role").ok(), Some("viewer"));
        let back: AuditEvent = bson::deserialize_from_document(d).expect("deserialises");
        assert_eq!(back, e);
    }

    #[test]
    fn routes_without_a_declared_action_get_resource_and_verb() {
        assert_eq!(default_action("POST", "/api/cloud-accounts"), "cloud_account.create");
        assert_eq!(default_action("DELETE", "/api/cloud-accounts/{id}"), "cloud_account.delete");
        assert_eq!(default_action("PUT", "/api/vulnerabilities/occurrences/{id}/status"), "vulnerability.status");
        assert_eq!(default_action("POST", "/api/schedules/{id}/pause"), "schedule.pause");
        assert_eq!(default_action("POST", "/api/cloud-scans/initiate"), "cloud_scan.create");
        assert_eq!(default_action("PATCH", "/api/api-keys/{key_id}"), "api_key.update");
        assert_eq!(default_action("POST", "/api/compliance-engine/sync"), "compliance_engine.create");
        assert_eq!(default_action("POST", "/"), "api.create");
    }

    #[test]
    fn the_target_is_the_first_path_parameter() {
        assert_eq!(first_path_param("/api/schedules/{id}/pause", "/api/schedules/s1/pause").as_deref(), Some("s1"));
        assert_eq!(
            first_path_param("/api/cloud-scans/{run_id}/artifacts/{a}", "/api/cloud-scans/r/artifacts/x").as_deref(),
            Some("r")
        );
        assert_eq!(first_path_param("/api/cloud-accounts", "/api/cloud-accounts"), None);
        assert_eq!(first_path_param("/api/x/{id}", "/api/x"), None);
    }

    #[test]
    fn sign_in_and_setup_bodies_are_never_stored() {
        assert!(body_is_never_stored("/api/auth/login"));
        assert!(body_is_never_stored("/api/auth/mfa/verify"));
        assert!(body_is_never_stored("/api/platform-setup/save-config"));
        assert!(!body_is_never_stored("/api/cloud-accounts"));
    }

    #[test]
    fn cut_counts_characters_not_bytes() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 3), "hé…");
        assert_eq!(cut("", 3), "");
    }
}
