//! The OpenAPI 3.1 document of the API (`GET /api/openapi.json`) and a page that reads it
//! (`GET /api/docs`), made from the route table: each operation's request side comes from its
//! handler's signature (every extractor is a [`Part`]; the JSON Schemas of bodies and queries are
//! derived from the types serde reads), its access from the table, its success answer from the
//! table's `responds` and `media` with the schema of the type its handler returns ([`Reply`]), and
//! every other answer is a problem document.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::access::{Access, ClientIp, Keys};
use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiError;
use crate::routes::Endpoint;

/// What an operation takes besides its path: query parameters and a body.
#[derive(Debug, Default)]
pub struct Request {
    pub query: Vec<Value>,
    /// The OpenAPI `requestBody` object.
    pub body: Option<Value>,
}

/// An extractor's contribution to its operation's request.
pub trait Part {
    fn describe(req: &mut Request, generator: &mut SchemaGenerator);
}

/// The request of a handler, from its extractors: implemented for the tuples axum's fn handlers are
/// `Handler`s of (`((),)` without arguments, `(M, T1, …, Tn)` otherwise), so that a route whose
/// extractor says nothing about its shape does not compile.
pub trait Describe {
    fn describe(generator: &mut SchemaGenerator) -> Request;
}

impl Describe for ((),) {
    fn describe(_: &mut SchemaGenerator) -> Request {
        Request::default()
    }
}

macro_rules! describe_tuple {
    ($($t:ident),+) => {
        impl<M, $($t: Part),+> Describe for (M, $($t,)+) {
            fn describe(generator: &mut SchemaGenerator) -> Request {
                let mut req = Request::default();
                $($t::describe(&mut req, generator);)+
                req
            }
        }
    };
}
describe_tuple!(T1);
describe_tuple!(T1, T2);
describe_tuple!(T1, T2, T3);
describe_tuple!(T1, T2, T3, T4);
describe_tuple!(T1, T2, T3, T4, T5);
describe_tuple!(T1, T2, T3, T4, T5, T6);

/// The success answer of a handler, from the type it returns: a route's response schema is the
/// schema of what its handler serialises, so the document cannot drift from the code.
pub trait Reply {
    /// The JSON Schema of the success body; `None` where the body is not JSON or there is none.
    fn schema(generator: &mut SchemaGenerator) -> Option<Schema>;
}

impl<T: JsonSchema> Reply for axum::Json<T> {
    fn schema(generator: &mut SchemaGenerator) -> Option<Schema> {
        Some(generator.subschema_for::<T>())
    }
}

/// An error is a problem document, whatever its type.
impl<R: Reply, E: IntoResponse> Reply for Result<R, E> {
    fn schema(generator: &mut SchemaGenerator) -> Option<Schema> {
        R::schema(generator)
    }
}

/// A response part that carries no body (a status, headers, extensions).
pub trait NoBody {}
impl NoBody for axum::http::StatusCode {}
impl NoBody for HeaderMap {}
impl<T> NoBody for axum::Extension<T> {}

impl<P: NoBody, R: Reply> Reply for (P, R) {
    fn schema(generator: &mut SchemaGenerator) -> Option<Schema> {
        R::schema(generator)
    }
}

/// No body (`204`).
impl Reply for axum::http::StatusCode {
    fn schema(_: &mut SchemaGenerator) -> Option<Schema> {
        None
    }
}

/// A body the handler makes itself: a stream, a download, a page; its media type says what it is.
impl Reply for Response {
    fn schema(_: &mut SchemaGenerator) -> Option<Schema> {
        None
    }
}

/// What a handler's future answers, for the argument tuples of axum's `Handler` impls (as [`Describe`]).
pub trait Returns<T> {
    type Output;
}

impl<F, Fut> Returns<((),)> for F
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    type Output = Fut::Output;
}

macro_rules! returns_tuple {
    ($($t:ident),+) => {
        impl<F, Fut, M, $($t),+> Returns<(M, $($t,)+)> for F
        where
            F: FnOnce($($t),+) -> Fut,
            Fut: std::future::Future,
        {
            type Output = Fut::Output;
        }
    };
}
returns_tuple!(T1);
returns_tuple!(T1, T2);
returns_tuple!(T1, T2, T3);
returns_tuple!(T1, T2, T3, T4);
returns_tuple!(T1, T2, T3, T4, T5);
returns_tuple!(T1, T2, T3, T4, T5, T6);

/// Extractors that take nothing from the query or the body (path parameters come from the table's path).
macro_rules! silent_part {
    ($($ty:ty),+ $(,)?) => { $(impl Part for $ty { fn describe(_: &mut Request, _: &mut SchemaGenerator) {} })+ };
}
silent_part!(Caller, HeaderMap, ClientIp);

impl<S> Part for State<S> {
    fn describe(_: &mut Request, _: &mut SchemaGenerator) {}
}

impl<T> Part for Path<T> {
    fn describe(_: &mut Request, _: &mut SchemaGenerator) {}
}

impl<T: Part, E> Part for Result<T, E> {
    fn describe(req: &mut Request, generator: &mut SchemaGenerator) {
        T::describe(req, generator)
    }
}

impl<T: JsonSchema> Part for ApiJson<T> {
    fn describe(req: &mut Request, generator: &mut SchemaGenerator) {
        let schema = generator.subschema_for::<T>();
        req.body = Some(json!({ "required": true, "content": { "application/json": { "schema": schema } } }));
    }
}

/// A body the handler reads itself: optional JSON (`POST /api/schedules/{id}/pause`).
impl Part for Bytes {
    fn describe(req: &mut Request, _: &mut SchemaGenerator) {
        req.body = Some(json!({
            "required": false,
            "content": { "application/json": { "schema": { "type": "object" } } },
        }));
    }
}

/// A streamed body the handler reads itself: a JSON document (the KEV catalog, or `{"url": …}`).
impl Part for axum::body::Body {
    fn describe(req: &mut Request, _: &mut SchemaGenerator) {
        req.body = Some(json!({
            "required": true,
            "content": { "application/json": { "schema": { "type": "object" } } },
        }));
    }
}

/// The SCF catalog upload: the catalog, crosswalks and check mappings as files.
impl Part for Multipart {
    fn describe(req: &mut Request, _: &mut SchemaGenerator) {
        let file = json!({ "type": "string", "format": "binary" });
        req.body = Some(json!({
            "required": true,
            "content": { "multipart/form-data": { "schema": {
                "type": "object",
                "required": ["catalog"],
                "properties": { "catalog": file, "crosswalk": file, "check_mapping": file },
            } } },
        }));
    }
}

/// Query parameters: one per property of the query type, with its schema and required-ness.
impl<Q: JsonSchema> Part for ApiQuery<Q> {
    fn describe(req: &mut Request, _: &mut SchemaGenerator) {
        let root = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
        let schema = root.into_root_schema_for::<Q>();
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
        for (name, prop) in props {
            let mut prop = prop.clone();
            let description = prop.as_object_mut().and_then(|o| o.remove("description"));
            // An absent parameter is serde's `None`; a query string has no null.
            drop_null(&mut prop);
            let mut p =
                json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": prop });
            if let Some(d) = description {
                p["description"] = d;
            }
            req.query.push(p);
        }
    }
}

fn drop_null(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else { return };
    if let Some(Value::Array(types)) = o.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            o.insert("type".into(), only);
        }
    }
}

/// `SecretString` as the API takes it: a string, shown masked.
pub struct Password;

impl JsonSchema for Password {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Password".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({ "type": "string", "format": "password" }))
    }
}

/// A new password: the policy's length is documented (and its character classes described).
pub struct NewPassword;

impl JsonSchema for NewPassword {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NewPassword".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({
            "type": "string",
            "format": "password",
            "minLength": cspm_shared::auth::password::MIN_LENGTH,
            "description": "At least 12 characters, with an upper-case letter, a lower-case letter, a digit and a symbol.",
        }))
    }
}

/// A JSON object whose fields this document does not spell out (stored detail that varies by tool,
/// OCSF events): `#[schemars(with = "Object")]`.
pub struct Object;

impl JsonSchema for Object {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Object".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        object(json!({ "type": "object" }))
    }
}

/// Documents serde's `alias`: the other name is accepted in place of `canonical`, and a body may carry
/// one of the two, never both (serde refuses a field given twice). A required field is then required
/// as either name.
pub fn alias(schema: &mut Schema, alias: &str, canonical: &str) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    let Some(mut p) = props.get(canonical).cloned() else { return };
    if let Some(o) = p.as_object_mut() {
        o.insert("description".into(), json!(format!("Alias of `{canonical}`.")));
        o.insert("deprecated".into(), json!(true));
    }
    props.insert(alias.to_string(), p);
    let Some(o) = schema.as_object_mut() else { return };
    let mut required = false;
    if let Some(Value::Array(list)) = o.get_mut("required") {
        required = list.iter().any(|r| r == canonical);
        list.retain(|r| r != canonical);
    }
    let rule = if required {
        json!({ "oneOf": [{ "required": [canonical] }, { "required": [alias] }] })
    } else {
        json!({ "not": { "required": [canonical, alias] } })
    };
    if let Value::Array(all) = o.entry("allOf").or_insert_with(|| json!([])) {
        all.push(rule);
    }
}

fn object(v: Value) -> Schema {
    match v {
        Value::Object(m) => Schema::from(m),
        _ => Schema::default(),
    }
}

/// The media type of an operation's success answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    /// One JSON object per line (OCSF export).
    Ndjson,
    /// A gzip object (raw scanner output).
    Gzip,
    Html,
}

const PROBLEM: &str = "#/components/schemas/Problem";

/// The document: every route of the table, with the schemas its bodies refer to.
pub fn document(table: &[Endpoint]) -> Value {
    let mut generator =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into()).into_generator();
    // Answers are what serde writes: a field is required unless it is skipped when empty.
    let mut answers = SchemaSettings::draft2020_12()
        .for_serialize()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for e in table {
        let req = (e.describe)(&mut generator);
        let answer = (e.reply)(&mut answers).map(Value::from);
        let n = ids.entry(e.action.to_string()).or_default();
        *n += 1;
        let operation_id = if *n == 1 { e.action.to_string() } else { format!("{}_{}", e.action, n) };
        let op = operation(e, req, answer, operation_id);
        paths.entry(e.path).or_default().insert(e.method.as_str().to_ascii_lowercase(), op);
    }
    let mut schemas = generator.take_definitions(true);
    for (name, schema) in answers.take_definitions(true) {
        // A type read and written under one name has one schema either way (a test holds this).
        schemas.entry(name).or_insert(schema);
    }
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "CSPM scan API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated from the route table of the API (api/src/routes/mod.rs). Errors are RFC 9457 problem documents.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A session token from `POST /api/auth/login`." },
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key",
                    "description": "An API key; its scopes AND its owner's role bound what it may do." },
            },
        },
    })
}

fn operation(e: &Endpoint, req: Request, answer: Option<Value>, operation_id: String) -> Value {
    let mut params: Vec<Value> = path_params(e.path)
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    let has_input = !req.query.is_empty() || req.body.is_some();
    params.extend(req.query);
    let tag = e.action.split('.').next().unwrap_or(e.action);
    let mut op = json!({
        "operationId": operation_id,
        "summary": e.summary,
        "tags": [tag],
        "x-action": e.action,
        "x-audited": e.audited,
        "responses": responses(e, has_input, answer),
    });
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = req.body {
        op["requestBody"] = body;
    }
    let (security, permission, scope) = match e.access {
        Access::Public => (json!([]), None, None),
        Access::SignedIn(k) => (security(k), None, Some(k)),
        Access::Needs(p, k) => (security(k), Some(p.as_str()), Some(k)),
    };
    op["security"] = security;
    if let Some(p) = permission {
        op["x-permission"] = json!(p);
    }
    if let Some(k) = scope {
        op["x-api-key-scope"] = match k {
            Keys::Any => json!("any"),
            Keys::Scope(s) => json!(s.to_string()),
            Keys::None => json!("none: a signed-in session only"),
        };
    }
    op
}

fn security(k: Keys) -> Value {
    match k {
        Keys::None => json!([{ "bearerAuth": [] }]),
        Keys::Any | Keys::Scope(_) => json!([{ "bearerAuth": [] }, { "apiKey": [] }]),
    }
}

/// The `{name}` segments of a route path.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn responses(e: &Endpoint, has_input: bool, answer: Option<Value>) -> Value {
    let mut out = Map::new();
    // Only this document itself is JSON that no type describes.
    let json_schema = answer.unwrap_or_else(|| json!({ "type": "object" }));
    for &status in e.success {
        let content = match (status, e.media) {
            (204, _) => None,
            (_, Media::Json) => Some(json!({ "application/json": { "schema": json_schema.clone() } })),
            (_, Media::Ndjson) => Some(json!({ "application/x-ndjson": { "schema": { "type": "string" } } })),
            (_, Media::Gzip) => {
                Some(json!({ "application/gzip": { "schema": { "type": "string", "format": "binary" } } }))
            }
            (_, Media::Html) => Some(json!({ "text/html": { "schema": { "type": "string" } } })),
        };
        let mut r = json!({ "description": reason(status) });
        if let Some(c) = content {
            r["content"] = c;
        }
        out.insert(status.to_string(), r);
    }
    let public = e.access == Access::Public;
    let write = !matches!(e.method, Method::GET | Method::HEAD);
    let mut errors = vec![404, 500, 503];
    if has_input {
        errors.extend([400, 422]);
    }
    if e.method != Method::GET {
        errors.extend([413, 415]);
    }
    if write {
        errors.push(409);
    }
    if !public || e.action == "user.login" {
        errors.extend([401, 429]);
    }
    if !public {
        errors.push(403);
    }
    errors.sort_unstable();
    for status in errors {
        out.insert(status.to_string(), problem(status));
    }
    out.insert("default".into(), problem(0));
    Value::Object(out)
}

fn problem(status: u16) -> Value {
    let mut r = json!({
        "description": if status == 0 { "Any other error".to_string() } else { reason(status) },
        "content": { "application/problem+json": { "schema": { "$ref": PROBLEM } } },
    });
    let header = match status {
        401 => Some(("WWW-Authenticate", "The scheme to authenticate with (`Bearer`).")),
        429 | 503 => Some(("Retry-After", "Seconds to wait before retrying.")),
        _ => None,
    };
    if let Some((name, description)) = header {
        r["headers"] = json!({ name: { "description": description, "schema": { "type": "string" } } });
    }
    r
}

fn reason(status: u16) -> String {
    axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error").to_string()
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document: the one shape of every error. 5xx details are opaque; `error_id` is in the server's log.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string" },
            "errors": { "type": "array", "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": { "field": { "type": "string" }, "message": { "type": "string" } },
            } },
            "error_id": { "type": "string" },
        },
    })
}

/// The document, built once (when the table is) and served as it is.
pub type Cached = Arc<OnceLock<Bytes>>;

/// Builds the document of `table` into `cache`.
pub fn fill(cache: &Cached, table: &[Endpoint]) {
    let doc = document(table);
    let bytes = serde_json::to_vec(&doc).map(Bytes::from).unwrap_or_default();
    let _ = cache.set(bytes);
}

/// `GET /api/openapi.json`.
pub async fn serve(cache: Cached) -> Response {
    match cache.get() {
        Some(b) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], b.clone()).into_response(),
        None => ApiError::Internal("the OpenAPI document was not built".into()).into_response(),
    }
}

/// `GET /api/docs`: a page that renders the document, with no asset from elsewhere (operators run
/// air-gapped).
pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], DOCS_HTML).into_response()
}

const DOCS_HTML: &str = include_str!("openapi/docs.html");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table;

    fn doc() -> Value {
        document(&table(1 << 20))
    }

    #[test]
    fn every_route_of_the_table_is_an_operation_with_its_path_parameters() {
        let d = doc();
        for e in table(1 << 20) {
            let op = &d["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} is not in the document", e.method, e.path);
            assert_eq!(op["summary"], e.summary);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for name in path_params(e.path) {
                assert!(declared.contains(&name), "{} {}: path parameter `{name}` not declared", e.method, e.path);
            }
            assert_eq!(declared.len(), path_params(e.path).count(), "{} {}", e.method, e.path);
            for s in e.success {
                assert!(op["responses"][s.to_string()].is_object(), "{} {}: no {s} answer", e.method, e.path);
            }
            assert!(op["responses"]["default"].is_object());
        }
    }

    #[test]
    fn json_bodies_are_documented_with_their_schema() {
        let d = doc();
        let mut generator = SchemaGenerator::default();
        for e in table(1 << 20) {
            let req = (e.describe)(&mut generator);
            let op = &d["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["requestBody"].is_object(), req.body.is_some(), "{} {}", e.method, e.path);
        }
        // An `ApiJson` body is its type's schema, with serde's names, defaults and strictness.
        let create = &d["paths"]["/api/cloud-accounts"]["post"]["requestBody"];
        assert_eq!(create["required"], true);
        let reference = create["content"]["application/json"]["schema"]["$ref"].as_str().unwrap_or_default();
        let name = reference.strip_prefix("#/components/schemas/").unwrap_or_default();
        let schema = &d["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], false, "{schema}");
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert!(required.contains(&"provider") && !required.contains(&"regions"), "{schema}");
        assert!(schema["properties"]["name"].is_object(), "the alias `name` is documented: {schema}");
        // `account_name` is required under either of its names, and only one may be sent.
        assert!(!required.contains(&"account_name") && !required.contains(&"name"), "{schema}");
        assert_eq!(
            schema["allOf"][0]["oneOf"],
            json!([{ "required": ["account_name"] }, { "required": ["name"] }]),
            "one of the two names, not both: {schema}"
        );
        let update = &d["components"]["schemas"]["UpdateAccount"];
        assert_eq!(update["allOf"][0]["not"], json!({ "required": ["account_name", "name"] }), "{update}");
        let login = &d["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        let login = &d["components"]["schemas"]
            [login["$ref"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default()];
        assert_eq!(login["properties"]["password"]["format"], "password", "{login}");
    }

    #[test]
    fn queries_are_parameters_and_the_upload_is_multipart() {
        let d = doc();
        let params = d["paths"]["/api/cspm/findings"]["get"]["parameters"].as_array().cloned().unwrap_or_default();
        let limit = params.iter().find(|p| p["name"] == "limit").cloned().unwrap_or_default();
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["required"], false);
        assert_eq!(limit["schema"]["type"], "integer", "{limit}");
        assert!(params.iter().any(|p| p["name"] == "search"));
        let upload = &d["paths"][crate::routes::IMPORT_SCF_PATH]["post"]["requestBody"]["content"];
        assert_eq!(upload["multipart/form-data"]["schema"]["properties"]["catalog"]["format"], "binary");
        assert!(d["paths"]["/api/schedules/{id}/pause"]["post"]["requestBody"]["required"] == false);
    }

    #[test]
    fn access_becomes_security_permission_and_scope() {
        let d = doc();
        assert_eq!(d["paths"]["/api/auth/login"]["post"]["security"], json!([]));
        assert_eq!(d["paths"]["/api/auth/logout"]["post"]["security"], json!([{ "bearerAuth": [] }]));
        let scan = &d["paths"]["/api/cloud-scans"]["post"];
        assert_eq!(scan["security"], json!([{ "bearerAuth": [] }, { "apiKey": [] }]));
        assert_eq!(scan["x-permission"], "run_scans");
        assert!(scan["x-api-key-scope"].is_string());
        assert!(scan["responses"]["202"].is_object() && scan["responses"]["403"].is_object());
        assert_eq!(
            d["paths"]["/api/cloud-scans/{run_id}/ocsf"]["get"]["responses"]["200"]["content"]["application/x-ndjson"]
                ["schema"]["type"],
            "string"
        );
    }

    /// Follows a `$ref` into the document's components.
    fn resolve<'a>(d: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => d.pointer(pointer).unwrap_or(&Value::Null),
            None => schema,
        }
    }

    /// A route whose handler returns JSON without a type that describes it does not get past this
    /// test: its success answer would be a loose object, and the fuzzer could not check it.
    #[test]
    fn every_json_success_answer_has_the_schema_of_the_type_its_handler_returns() {
        let d = doc();
        for e in table(1 << 20) {
            let op = &d["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
            for s in e.success {
                let answer = &op["responses"][s.to_string()];
                if *s == 204 || e.media != Media::Json {
                    assert!(answer["content"].get("application/json").is_none(), "{} {}", e.method, e.path);
                    continue;
                }
                let schema = &answer["content"]["application/json"]["schema"];
                if e.path == "/api/openapi.json" {
                    // The document itself: JSON that no Rust type describes.
                    assert_eq!(schema, &json!({ "type": "object" }));
                    continue;
                }
                let typed = resolve(&d, schema);
                assert!(
                    typed["properties"].is_object() || typed["oneOf"].is_array(),
                    "{} {} answers {s} with no typed body: {schema}",
                    e.method,
                    e.path
                );
            }
        }
        // What serde writes: always-present fields are required, skipped ones are not.
        let started = resolve(
            &d,
            &d["paths"]["/api/cloud-scans/initiate"]["post"]["responses"]["202"]["content"]["application/json"]["schema"],
        );
        let required: Vec<&str> =
            started["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert!(required.contains(&"run_id") && required.contains(&"estimated_completion"), "{started}");
        assert!(!required.contains(&"already_running"), "{started}");
        assert!(
            started["properties"]["estimated_completion"]["type"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("null")))
        );
    }

    /// Requests and answers are described by two generators (serde reads and writes differently); a type
    /// name they share must mean one schema, since the document keeps one of them.
    #[test]
    fn request_and_answer_schemas_agree_on_shared_names() {
        let settings = || SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into());
        let mut requests = settings().into_generator();
        let mut answers = settings().for_serialize().into_generator();
        for e in table(1 << 20) {
            (e.describe)(&mut requests);
            (e.reply)(&mut answers);
        }
        let requests = requests.take_definitions(true);
        for (name, schema) in answers.take_definitions(true) {
            if let Some(other) = requests.get(&name) {
                assert_eq!(other, &schema, "`{name}` differs between requests and answers");
            }
        }
    }

    /// The structure OpenAPI 3.1 requires, as far as it can be checked here: schemathesis refuses a
    /// document that is not valid.
    #[test]
    fn the_document_is_well_formed_openapi_3_1() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
        let mut ids = std::collections::BTreeSet::new();
        let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
        for (path, item) in d["paths"].as_object().cloned().unwrap_or_default() {
            assert!(path.starts_with('/'), "{path}");
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                assert!(methods.contains(&method.as_str()), "{path}: {method}");
                assert!(
                    ids.insert(op["operationId"].as_str().unwrap_or_default().to_string()),
                    "duplicate id in {path}"
                );
                let responses = op["responses"].as_object().cloned().unwrap_or_default();
                assert!(!responses.is_empty(), "{method} {path}");
                for (code, r) in responses {
                    assert!(code == "default" || code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c)), "{code}");
                    assert!(r["description"].is_string(), "{method} {path} {code}");
                }
                for p in op["parameters"].as_array().cloned().unwrap_or_default() {
                    assert!(p["name"].is_string() && p["schema"].is_object(), "{p}");
                    assert!(
                        ["query", "path", "header", "cookie"].contains(&p["in"].as_str().unwrap_or_default()),
                        "{p}"
                    );
                    if p["in"] == "path" {
                        assert_eq!(p["required"], true, "{p}");
                    }
                }
            }
        }
        // Every reference resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(&d, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external reference {r}"));
            assert!(d.pointer(pointer).is_some(), "dangling reference {r}");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| collect_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }
}
