//! Raw scanner artifacts of a scan: the list (`GET /api/cloud-scans/{run_id}/artifacts`) and the
//! download of one, as the gzip object it is stored as (`GET /api/cloud-scans/{run_id}/artifacts/{id}`).
//! Both need the permission to view scans, and the run must be the caller's team's.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cspm_shared::artifacts::{self, ArtifactDoc, ArtifactId};
use cspm_shared::domain::scan::ToolId;
use cspm_shared::ids::{RunId, SubJobId};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{ApiQuery, page, path_id};
use crate::problem::{ApiError, ApiResult};
use crate::routes::scans::load;
use crate::routes::{Time, rfc3339};
use crate::state::AppState;

/// A page of a scan's raw scanner output files.
#[derive(Serialize, JsonSchema)]
pub struct ArtifactList {
    run_id: RunId,
    artifacts: Vec<ArtifactView>,
    /// How many files match in all (every page).
    total: u64,
    skip: u64,
    limit: i64,
}

#[derive(Deserialize, JsonSchema)]
pub struct ArtifactQuery {
    /// Only this SubJob's files (`sj_…`).
    subjob_id: Option<String>,
    /// Files per page, 1 to 1,000 (default 100).
    limit: Option<i64>,
    skip: Option<u64>,
}

/// One raw output file, as stored (gzip).
#[derive(Serialize, JsonSchema)]
pub struct ArtifactView {
    /// `art_` and 32 hexadecimal digits.
    #[schemars(with = "String")]
    id: ArtifactId,
    subjob_id: SubJobId,
    #[schemars(with = "String")]
    tool: ToolId,
    file_name: String,
    /// Bytes before compression.
    size: i64,
    /// Bytes as stored (and downloaded).
    stored_size: i64,
    sha256: String,
    content_encoding: String,
    created_at: Time,
    /// The path to download it from.
    download: String,
}

pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    ApiQuery(q): ApiQuery<ArtifactQuery>,
) -> ApiResult<Json<ArtifactList>> {
    let (skip, limit) = page(q.skip, q.limit, 100, 1_000)?;
    let run = load(&s, &caller, &run_id).await?;
    let subjob: Option<SubJobId> = q
        .subjob_id
        .map(|raw| raw.parse().map_err(|_| ApiError::invalid("subjob_id", "not a SubJob id")))
        .transpose()?;
    let (docs, total) = artifacts::list_page(&s.mongo, &caller.team, &run.id, subjob.as_ref(), skip, limit).await?;
    Ok(Json(ArtifactList { run_id: run.id, artifacts: docs.iter().map(view).collect(), total, skip, limit }))
}

pub async fn download(
    State(s): State<AppState>,
    caller: Caller,
    Path((run_id, artifact_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let run = load(&s, &caller, &run_id).await?;
    let id: ArtifactId = path_id(&artifact_id, "artifact")?;
    let doc =
        artifacts::get(&s.mongo, &caller.team, &run.id, &id).await?.ok_or_else(|| ApiError::not_found("artifact"))?;
    let body = s.artifacts.open(&doc).await?;
    // An error after the first bytes can only cut the response short; say why in the log.
    let stream = body.stream.inspect_err(|e| tracing::warn!(error = %e, "artifact download cut short"));
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.stored_size));
    let disposition = format!("attachment; filename=\"{}.gz\"", download_name(&doc.file_name));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn view(d: &ArtifactDoc) -> ArtifactView {
    ArtifactView {
        id: d.id.clone(),
        subjob_id: d.subjob_id.clone(),
        tool: d.tool.clone(),
        file_name: d.file_name.clone(),
        size: d.size,
        stored_size: d.stored_size,
        sha256: d.sha256.clone(),
        content_encoding: d.content_encoding.clone(),
        created_at: rfc3339(d.created_at),
        download: format!("/api/cloud-scans/{}/artifacts/{}", d.run_id, d.id),
    }
}

/// The file's last segment, with anything that could break out of the quoted header value (or
/// surprise a browser) replaced by `_`.
fn download_name(file_name: &str) -> String {
    let last = file_name.rsplit('/').next().unwrap_or(file_name);
    let safe: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() { "artifact".to_string() } else { safe.to_string() }
}

#[cfg(test)]
mod tests {
    use super::download_name;

    #[test]
    fn download_names_cannot_break_the_header() {
        assert_eq!(download_name("reports/output.ocsf.json"), "output.ocsf.json");
        assert_eq!(download_name("a\"b;\r\nc.txt"), "a_b___c.txt");
        assert_eq!(download_name("..."), "artifact");
        assert_eq!(download_name("rapport-été.html"), "rapport-_t_.html");
    }
}
