//! Raw scanner artifacts: the files a tool wrote into its output directory, kept gzip-compressed in
//! object storage (a local directory, or S3 and S3-compatible stores such as MinIO) through
//! `object_store`, with one metadata document per file in `cspm_orchestration.artifacts`.
//!
//! An object's key says whose it is (`teams/{team}/runs/{run}/subjobs/{subjob}/{tool}/{file}.gz`) and a
//! document's `_id` is derived from the key, so uploading the same SubJob again (a retry, a re-delivered
//! message) overwrites objects and documents in place: never a duplicate. Objects are written before
//! their documents, so a document always names an object that was complete when it was recorded.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bson::doc;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, RetryConfig, WriteMultipart,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{Env, KeySpec};
use crate::db::Mongo;
use crate::domain::scan::ToolId;
use crate::error::StoreError;
use crate::ids::{RunId, SubJobId, TeamId};
use crate::time::Timestamp;

pub const ARTIFACT_KEYS: &[KeySpec] = &[
    KeySpec::optional(
        "CSPM_ARTIFACT_STORE",
        "local",
        "where raw scanner artifacts are kept: local (a directory) or s3 (S3, or an S3-compatible store such as MinIO)",
    ),
    KeySpec::optional(
        "CSPM_ARTIFACT_DIR",
        "/tmp/cspm-artifacts",
        "root directory of the local artifact store (absolute; the API and the workers must see the same one)",
    ),
    KeySpec::unset("CSPM_S3_BUCKET", "bucket of the artifacts (required when CSPM_ARTIFACT_STORE is s3)"),
    KeySpec::unset(
        "CSPM_S3_ENDPOINT",
        "endpoint URL of an S3-compatible store (MinIO); unset: AWS's endpoint of CSPM_S3_REGION",
    ),
    KeySpec::optional("CSPM_S3_REGION", "us-east-1", "region of the bucket"),
    KeySpec::unset(
        "CSPM_S3_ACCESS_KEY_ID",
        "access key of the bucket; unset: the standard AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, web identity, container or instance credentials)",
    ),
    KeySpec::unset("CSPM_S3_SECRET_ACCESS_KEY", "secret key that goes with CSPM_S3_ACCESS_KEY_ID (keep it secret)"),
    KeySpec::optional(
        "CSPM_S3_PATH_STYLE",
        "false",
        "path-style requests (ENDPOINT/BUCKET/KEY), as MinIO and most S3-compatible stores need; false: virtual-hosted (BUCKET.host)",
    ),
    KeySpec::optional(
        "CSPM_S3_ALLOW_HTTP",
        "false",
        "allow a plain-HTTP CSPM_S3_ENDPOINT (development and tests only)",
    ),
];

/// The standard AWS variables passed to the S3 client when `CSPM_S3_ACCESS_KEY_ID` is unset (read from
/// the same environment map as everything else, so that tests and `--help` see what the binary sees).
const AWS_CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// Most files one SubJob may leave (a tool that writes more is misbehaving; nothing is uploaded).
pub const MAX_FILES_PER_SUBJOB: usize = 1000;
/// Deepest directory level searched below the output directory.
const MAX_DEPTH: usize = 16;
/// Documents removed per round trip by [`ArtifactStore::delete_run`].
const DELETE_BATCH: i64 = 500;
/// Objects without a document removed by one [`ArtifactStore::delete_run`] (the rest by the next).
const LEFTOVER_LIMIT: usize = 10_000;
/// Compressed bytes buffered before an upload switches from one PUT to a multipart upload, and the
/// size of each part after that (S3 wants at least 5 MiB per part but the last).
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one file in flight at once.
const PART_CONCURRENCY: usize = 2;
/// Bytes read from a file at a time, and compressed bytes handed to the uploader at a time.
const READ_CHUNK: usize = 64 * 1024;
const SEND_CHUNK: usize = 256 * 1024;
/// Attempts at one file when the store fails transiently, and the pause before the second one (doubled
/// each time, at most `RETRY_MAX_DELAY`). object_store retries single requests itself as well.
const UPLOAD_ATTEMPTS: u32 = 3;
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

/// Installs ring as the process-wide TLS provider of rustls, once; later calls do nothing.
///
/// reqwest is built with rustls but without a provider of its own (its default provider would be
/// aws-lc-rs, a C library built with cmake), and it panics when a client is built before a provider is
/// installed. Call this before building any HTTP client (the artifact store does).
pub fn install_tls_provider() {
    // An error means a provider is already installed, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Which store keeps the artifacts, read once from the environment.
#[derive(Debug, Clone)]
pub enum ArtifactSettings {
    /// A directory of this machine (or a volume every binary mounts at the same place).
    Local {
        dir: PathBuf,
    },
    S3(S3Settings),
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    /// Static credentials; `None`: the standard AWS credentials in `aws_env`, or the instance's.
    pub credentials: Option<S3Credentials>,
    pub path_style: bool,
    pub allow_http: bool,
    /// The standard AWS variables that were set (see `AWS_CREDENTIAL_VARS`).
    pub aws_env: Vec<(&'static str, SecretString)>,
}

/// Both halves are kept secret: an access key id is not a password, but it names an account.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
}

impl ArtifactSettings {
    /// Reads [`ARTIFACT_KEYS`]; every problem is recorded in `env`, naming its key.
    pub fn load(env: &Env) -> Self {
        let kind = env.string("CSPM_ARTIFACT_STORE", "local").to_ascii_lowercase();
        let dir = PathBuf::from(env.string("CSPM_ARTIFACT_DIR", "/tmp/cspm-artifacts"));
        if !dir.is_absolute() {
            env.refuse("CSPM_ARTIFACT_DIR", "must be an absolute path");
        }
        let bucket = env.optional_string("CSPM_S3_BUCKET");
        let endpoint = env.optional_string("CSPM_S3_ENDPOINT");
        let region = env.string("CSPM_S3_REGION", "us-east-1");
        let access_key_id = env.optional_secret("CSPM_S3_ACCESS_KEY_ID");
        let secret_access_key = env.optional_secret("CSPM_S3_SECRET_ACCESS_KEY");
        let path_style = env.flag("CSPM_S3_PATH_STYLE", false);
        let allow_http = env.flag("CSPM_S3_ALLOW_HTTP", false);
        match kind.as_str() {
            "local" => ArtifactSettings::Local { dir },
            "s3" => {
                let bucket = match bucket {
                    Some(b) => {
                        if let Err(why) = check_bucket_name(&b) {
                            env.refuse("CSPM_S3_BUCKET", &why);
                        }
                        b
                    }
                    None => {
                        env.refuse("CSPM_S3_BUCKET", "required when CSPM_ARTIFACT_STORE is s3");
                        String::new()
                    }
                };
                if let Some(e) = &endpoint
                    && let Err(why) = check_endpoint(e, &bucket, path_style, allow_http)
                {
                    env.refuse("CSPM_S3_ENDPOINT", &why);
                }
                if !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || region.len() > 64 {
                    env.refuse("CSPM_S3_REGION", "is not a region name (such as us-east-1)");
                }
                let credentials = match (access_key_id, secret_access_key) {
                    (Some(access_key_id), Some(secret_access_key)) => {
                        Some(S3Credentials { access_key_id, secret_access_key })
                    }
                    (None, None) => None,
                    (Some(_), None) => {
                        env.refuse("CSPM_S3_SECRET_ACCESS_KEY", "required when CSPM_S3_ACCESS_KEY_ID is set");
                        None
                    }
                    (None, Some(_)) => {
                        env.refuse("CSPM_S3_ACCESS_KEY_ID", "required when CSPM_S3_SECRET_ACCESS_KEY is set");
                        None
                    }
                };
                let aws_env =
                    AWS_CREDENTIAL_VARS.iter().filter_map(|k| env.optional_secret(k).map(|v| (*k, v))).collect();
                ArtifactSettings::S3(S3Settings {
                    bucket,
                    endpoint,
                    region,
                    credentials,
                    path_style,
                    allow_http,
                    aws_env,
                })
            }
            other => {
                env.refuse("CSPM_ARTIFACT_STORE", &format!("`{other}` is not a store (use local or s3)"));
                ArtifactSettings::Local { dir }
            }
        }
    }
}

/// S3's rules for bucket names (the ones that matter for addressing).
fn check_bucket_name(b: &str) -> Result<(), String> {
    let ok_chars = b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ok_ends =
        b.starts_with(|c: char| c.is_ascii_alphanumeric()) && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if (3..=63).contains(&b.len()) && ok_chars && ok_ends && !b.contains("..") {
        Ok(())
    } else {
        Err(format!("`{b}` is not a bucket name (3 to 63 lower-case letters, digits, '-' or '.')"))
    }
}

fn check_endpoint(raw: &str, bucket: &str, path_style: bool, allow_http: bool) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err("is plain HTTP; set CSPM_S3_ALLOW_HTTP=true to allow it (never in production)".into()),
        other => return Err(format!("has the scheme `{other}`; use https://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the value: it holds credentials.
        return Err("must not contain credentials (use CSPM_S3_ACCESS_KEY_ID and CSPM_S3_SECRET_ACCESS_KEY)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment".into());
    }
    let host = url.host_str().unwrap_or_default();
    if !path_style && !host.starts_with(&format!("{bucket}.")) {
        return Err(format!(
            "with virtual-hosted requests the endpoint must name the bucket (https://{bucket}.{host}); set CSPM_S3_PATH_STYLE=true for MinIO and other path-style stores"
        ));
    }
    Ok(())
}

/// The id of an artifact document: `art_` and 32 hexadecimal digits derived from the object key, so
/// that recording the same object twice writes the same document.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactId(String);

impl ArtifactId {
    pub const PREFIX: &'static str = "art_";

    pub fn for_key(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self(format!("{}{}", Self::PREFIX, hex::encode(&digest[..16])))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ArtifactId {
    type Err = crate::ids::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            || crate::ids::IdError { kind: "artifact", prefix: Self::PREFIX, value: s.chars().take(80).collect() };
        let rest = s.strip_prefix(Self::PREFIX).ok_or_else(err)?;
        if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(format!("{}{}", Self::PREFIX, rest.to_ascii_lowercase())))
        } else {
            Err(err())
        }
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ArtifactId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ArtifactId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl From<ArtifactId> for bson::Bson {
    fn from(id: ArtifactId) -> Self {
        bson::Bson::String(id.0)
    }
}

/// Whose artifacts are uploaded: the SubJob, its run and team, and the tool that wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactOwner {
    pub team_id: TeamId,
    pub run_id: RunId,
    pub subjob_id: SubJobId,
    pub tool: ToolId,
}

/// One stored artifact (`cspm_orchestration.artifacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDoc {
    #[serde(rename = "_id")]
    pub id: ArtifactId,
    pub team_id: TeamId,
    pub run_id: RunId,
    pub subjob_id: SubJobId,
    pub tool: ToolId,
    /// The file's path below the output directory (`/`-separated).
    pub file_name: String,
    /// The object's key in the store.
    pub key: String,
    /// Bytes of the original file.
    pub size: i64,
    /// Bytes stored (compressed).
    pub stored_size: i64,
    /// SHA-256 of the original content, hexadecimal.
    pub sha256: String,
    /// Always `gzip`: the stored object is the gzip of the file.
    pub content_encoding: String,
    pub created_at: Timestamp,
}

/// The object key of a file of a SubJob: `teams/{team}/runs/{run}/subjobs/{subjob}/{tool}/{file}.gz`,
/// each segment of `file_name` kept as a segment of the key (characters that stores dislike are
/// percent-encoded).
pub fn object_key(owner: &ArtifactOwner, file_name: &str) -> String {
    object_path(owner, file_name).to_string()
}

fn object_path(owner: &ArtifactOwner, file_name: &str) -> ObjectPath {
    let tool = owner.tool.to_string();
    let mut segments: Vec<String> = file_name.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if let Some(last) = segments.last_mut() {
        last.push_str(".gz");
    }
    let fixed = [
        "teams",
        owner.team_id.as_str(),
        "runs",
        owner.run_id.as_str(),
        "subjobs",
        owner.subjob_id.as_str(),
        tool.as_str(),
    ];
    fixed.into_iter().map(PathPart::from).chain(segments.iter().map(|s| PathPart::from(s.as_str()))).collect()
}

fn run_prefix(team: &TeamId, run: &RunId) -> ObjectPath {
    ["teams", team.as_str(), "runs", run.as_str()].into_iter().map(PathPart::from).collect()
}

/// Why an artifact operation failed. Messages name the store and the key, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the artifact store cannot be set up: {0}")]
    Config(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{dir} holds more than {max} files; none was uploaded")]
    TooManyFiles { dir: String, max: usize },
    #[error("the S3 bucket `{bucket}` does not exist (create it, or correct CSPM_S3_BUCKET)")]
    NoSuchBucket { bucket: String },
    #[error("`{key}` is not in the {store}")]
    NotFound { store: String, key: String },
    #[error("the {store} refused access to `{key}` (check its credentials and permissions): {reason}")]
    Denied { store: String, key: String, reason: String },
    /// The store failed or could not be reached, possibly for a while: worth another try later.
    #[error("{op} `{key}` in the {store} failed: {reason}")]
    Unavailable { op: &'static str, store: String, key: String, reason: String },
    /// The store refused the request for good (an unsupported operation, a rejected precondition).
    #[error("{op} `{key}` in the {store} was refused: {reason}")]
    Refused { op: &'static str, store: String, key: String, reason: String },
    #[error(transparent)]
    Database(#[from] StoreError),
}

impl ArtifactError {
    /// Whether the same operation may succeed later (the store or the database was away).
    pub fn is_transient(&self) -> bool {
        match self {
            ArtifactError::Unavailable { .. } => true,
            ArtifactError::Database(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<bson::error::Error> for ArtifactError {
    fn from(e: bson::error::Error) -> Self {
        ArtifactError::Database(e.into())
    }
}

impl From<mongodb::error::Error> for ArtifactError {
    fn from(e: mongodb::error::Error) -> Self {
        ArtifactError::Database(e.into())
    }
}

/// An artifact being read: the size of the stored (gzip) object and its bytes as they arrive.
pub struct ArtifactBody {
    pub stored_size: u64,
    pub stream: BoxStream<'static, Result<Bytes, ArtifactError>>,
}

impl fmt::Debug for ArtifactBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactBody").field("stored_size", &self.stored_size).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Local,
    S3,
}

/// The object store of the artifacts. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    backend: Backend,
    /// What the store is, for messages: `local artifact directory /x` or `S3 bucket `b``.
    name: Arc<str>,
    bucket: Option<Arc<str>>,
}

impl fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactStore").field("store", &self.name).finish_non_exhaustive()
    }
}

/// A regular file found below an output directory, with the identity it had when it was found.
#[derive(Debug, Clone)]
struct FoundFile {
    path: PathBuf,
    name: String,
    dev: u64,
    ino: u64,
}

/// What the compressing thread hands to the uploader. The upload completes only on `End`: a thread
/// that stopped half-way (an error, a panic) must never leave a truncated object behind.
enum Chunk {
    Data(Bytes),
    End { size: u64, sha256: [u8; 32] },
    Failed(ArtifactError),
}

impl ArtifactStore {
    /// Builds the store. Contacts nothing: a store that is away shows on the first upload or read. The
    /// local directory is created if missing.
    pub fn new(settings: &ArtifactSettings) -> Result<Self, ArtifactError> {
        match settings {
            ArtifactSettings::Local { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ArtifactError::Config(format!("cannot create {}: {e}", dir.display())))?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| ArtifactError::Config(format!("cannot use {}: {e}", dir.display())))?
                    .with_automatic_cleanup(true);
                Ok(Self {
                    inner: Arc::new(fs),
                    backend: Backend::Local,
                    name: format!("local artifact directory {}", dir.display()).into(),
                    bucket: None,
                })
            }
            ArtifactSettings::S3(s) => {
                install_tls_provider();
                let mut builder = AmazonS3Builder::new();
                match &s.credentials {
                    Some(c) => {
                        builder = builder
                            .with_access_key_id(c.access_key_id.expose_secret())
                            .with_secret_access_key(c.secret_access_key.expose_secret());
                    }
                    None => {
                        for (var, value) in &s.aws_env {
                            if let Ok(key) = var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                                builder = builder.with_config(key, value.expose_secret());
                            }
                        }
                    }
                }
                if let Some(endpoint) = &s.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                // Bounded: a store that is away fails an upload within about half a minute, and the
                // upload's own attempts (UPLOAD_ATTEMPTS) decide what happens next.
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(2),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(30),
                };
                let options = ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60));
                let s3 = builder
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_client_options(options)
                    .with_allow_http(s.allow_http)
                    .with_virtual_hosted_style_request(!s.path_style)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| {
                        ArtifactError::Config(format!("S3 bucket `{}`: {}", s.bucket, short(&e.to_string())))
                    })?;
                Ok(Self {
                    inner: Arc::new(s3),
                    backend: Backend::S3,
                    name: format!("S3 bucket `{}`", s.bucket).into(),
                    bucket: Some(s.bucket.as_str().into()),
                })
            }
        }
    }

    /// What the store is, for logs and messages (`S3 bucket `cspm-artifacts``).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Uploads every regular file below `dir` (recursively; symbolic links and anything that is not a
    /// regular file are skipped), each gzip-compressed while it streams, then records one document per
    /// file. Running it again for the same SubJob replaces its artifacts: same keys, same ids, and the
    /// artifacts of an earlier attempt that this one did not produce are removed.
    pub async fn upload_dir(
        &self,
        mongo: &Mongo,
        owner: &ArtifactOwner,
        dir: &Path,
    ) -> Result<Vec<ArtifactDoc>, ArtifactError> {
        let root = dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || find_files(&root))
            .await
            .map_err(|e| ArtifactError::Read { path: dir.display().to_string(), reason: e.to_string() })??;
        let mut docs = Vec::with_capacity(files.len());
        for file in files {
            let path = object_path(owner, &file.name);
            let key = path.to_string();
            let (size, stored_size, sha256) = self.upload_file_with_retries(&file, &path).await?;
            docs.push(ArtifactDoc {
                id: ArtifactId::for_key(&key),
                team_id: owner.team_id.clone(),
                run_id: owner.run_id.clone(),
                subjob_id: owner.subjob_id.clone(),
                tool: owner.tool.clone(),
                file_name: file.name,
                key,
                size: i64::try_from(size).unwrap_or(i64::MAX),
                stored_size: i64::try_from(stored_size).unwrap_or(i64::MAX),
                sha256: hex::encode(sha256),
                content_encoding: "gzip".to_string(),
                created_at: Timestamp::now(),
            });
        }
        for d in &docs {
            mongo.artifacts.replace_one(doc! { "_id": &d.id }, bson::serialize_to_document(d)?).upsert(true).await?;
        }
        self.remove_stale(mongo, owner, &docs).await?;
        Ok(docs)
    }

    /// Removes what an earlier upload of the SubJob recorded and this one did not produce.
    async fn remove_stale(
        &self,
        mongo: &Mongo,
        owner: &ArtifactOwner,
        kept: &[ArtifactDoc],
    ) -> Result<(), ArtifactError> {
        let kept: Vec<&str> = kept.iter().map(|d| d.id.as_str()).collect();
        let filter = doc! {
            "team_id": &owner.team_id,
            "run_id": &owner.run_id,
            "subjob_id": &owner.subjob_id,
            "_id": { "$nin": kept },
        };
        let stale: Vec<ArtifactDoc> =
            find_docs(mongo, filter, i64::try_from(MAX_FILES_PER_SUBJOB).unwrap_or(i64::MAX)).await?;
        if !stale.is_empty() {
            self.delete_docs(mongo, &stale).await?;
        }
        Ok(())
    }

    async fn upload_file_with_retries(
        &self,
        file: &FoundFile,
        path: &ObjectPath,
    ) -> Result<(u64, u64, [u8; 32]), ArtifactError> {
        let mut attempt = 1;
        let mut delay = RETRY_FIRST_DELAY;
        loop {
            match self.upload_file(file, path).await {
                Err(e) if e.is_transient() && attempt < UPLOAD_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "artifact upload failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX_DELAY);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt at one file: a thread reads and compresses it (hashing the original) while this task
    /// uploads what comes out, as one PUT if it stays under `PART_BYTES` compressed, else in parts.
    async fn upload_file(&self, file: &FoundFile, path: &ObjectPath) -> Result<(u64, u64, [u8; 32]), ArtifactError> {
        let (tx, mut rx) = mpsc::channel::<Chunk>(4);
        let source = file.clone();
        let producer = tokio::task::spawn_blocking(move || compress(&source, &tx));
        let mut multipart: Option<WriteMultipart> = None;
        let fed = self.feed(path, &mut rx, &mut multipart).await;
        drop(rx);
        // The thread ends by itself once the channel is closed; wait for it so no reader outlives the call.
        let _ = producer.await;
        match fed {
            Ok((size, sha256, stored, pending)) => {
                let done = match multipart {
                    Some(upload) => upload.finish().await.map(|_| ()),
                    None => {
                        let payload: PutPayload = pending.into_iter().collect();
                        let opts = PutOptions { attributes: self.attributes(), ..Default::default() };
                        self.inner.put_opts(path, payload, opts).await.map(|_| ())
                    }
                };
                done.map_err(|e| self.classify(e, "uploading", path, true))?;
                Ok((size, stored, sha256))
            }
            Err(e) => {
                if let Some(upload) = multipart {
                    // Best effort: the store also expires abandoned multipart uploads.
                    let _ = upload.abort().await;
                }
                Err(e)
            }
        }
    }

    /// Takes the compressed chunks; returns the original size and hash, the compressed size, and the
    /// chunks still held when the upload never grew past one part.
    async fn feed(
        &self,
        path: &ObjectPath,
        rx: &mut mpsc::Receiver<Chunk>,
        multipart: &mut Option<WriteMultipart>,
    ) -> Result<(u64, [u8; 32], u64, Vec<Bytes>), ArtifactError> {
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut stored = 0u64;
        loop {
            match rx.recv().await {
                Some(Chunk::Data(bytes)) => {
                    stored += bytes.len() as u64;
                    match multipart {
                        Some(upload) => {
                            upload
                                .wait_for_capacity(PART_CONCURRENCY)
                                .await
                                .map_err(|e| self.classify(e, "uploading", path, true))?;
                            upload.put(bytes);
                        }
                        None => {
                            pending_bytes += bytes.len();
                            pending.push(bytes);
                            if pending_bytes >= PART_BYTES {
                                let opts = PutMultipartOptions { attributes: self.attributes(), ..Default::default() };
                                let started = self
                                    .inner
                                    .put_multipart_opts(path, opts)
                                    .await
                                    .map_err(|e| self.classify(e, "uploading", path, true))?;
                                let mut upload = WriteMultipart::new_with_chunk_size(started, PART_BYTES);
                                for b in pending.drain(..) {
                                    upload.put(b);
                                }
                                *multipart = Some(upload);
                            }
                        }
                    }
                }
                Some(Chunk::End { size, sha256 }) => return Ok((size, sha256, stored, pending)),
                Some(Chunk::Failed(e)) => return Err(e),
                None => {
                    return Err(ArtifactError::Read {
                        path: path.to_string(),
                        reason: "the compressing thread stopped before the end of the file".into(),
                    });
                }
            }
        }
    }

    /// S3 keeps a content type with the object; the local store has nowhere to keep one.
    fn attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        if self.backend == Backend::S3 {
            a.insert(Attribute::ContentType, "application/gzip".into());
        }
        a
    }

    /// Opens an artifact for reading: the stored gzip object, streamed.
    pub async fn open(&self, doc: &ArtifactDoc) -> Result<ArtifactBody, ArtifactError> {
        let path = self.parse_key(&doc.key)?;
        let got = self.inner.get(&path).await.map_err(|e| self.classify(e, "reading", &path, false))?;
        let stored_size = got.meta.size;
        let store = self.clone();
        let stream = got.into_stream().map_err(move |e| store.classify(e, "reading", &path, false)).boxed();
        Ok(ArtifactBody { stored_size, stream })
    }

    /// Removes every artifact of a run, objects first, then their documents, in bounded batches; then
    /// any object left under the run's prefix without a document (an upload cut short before it was
    /// recorded). Returns how many documents were removed. For retention.
    pub async fn delete_run(&self, mongo: &Mongo, team: &TeamId, run: &RunId) -> Result<u64, ArtifactError> {
        let mut removed = 0u64;
        loop {
            let batch = find_docs(mongo, doc! { "team_id": team, "run_id": run }, DELETE_BATCH).await?;
            if batch.is_empty() {
                break;
            }
            let n = self.delete_docs(mongo, &batch).await?;
            if n == 0 {
                // Nothing could be removed (another process got there first): the next round would
                // read the same batch again.
                break;
            }
            removed += n;
        }
        let prefix = run_prefix(team, run);
        let leftovers: Vec<ObjectPath> = self
            .inner
            .list(Some(&prefix))
            .take(LEFTOVER_LIMIT)
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.classify(e, "listing", &prefix, false))?;
        for path in leftovers {
            self.delete_object(&path).await?;
        }
        Ok(removed)
    }

    /// Deletes the objects of `docs` (a few at a time), then the documents.
    async fn delete_docs(&self, mongo: &Mongo, docs: &[ArtifactDoc]) -> Result<u64, ArtifactError> {
        let paths = docs.iter().map(|d| self.parse_key(&d.key)).collect::<Result<Vec<_>, _>>()?;
        futures::stream::iter(paths)
            .map(|p| async move { self.delete_object(&p).await })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let r = mongo.artifacts.delete_many(doc! { "_id": { "$in": ids } }).await?;
        Ok(r.deleted_count)
    }

    async fn delete_object(&self, path: &ObjectPath) -> Result<(), ArtifactError> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.classify(e, "deleting", path, false)),
        }
    }

    fn parse_key(&self, key: &str) -> Result<ObjectPath, ArtifactError> {
        ObjectPath::parse(key).map_err(|e| ArtifactError::Refused {
            op: "reading",
            store: self.name.to_string(),
            key: key.to_string(),
            reason: short(&e.to_string()),
        })
    }

    /// Sorts an object_store error by what the caller can do about it, naming the store and the key.
    fn classify(&self, e: object_store::Error, op: &'static str, path: &ObjectPath, writing: bool) -> ArtifactError {
        let store = self.name.to_string();
        let key = path.to_string();
        match e {
            // An object PUT cannot miss anything but its bucket.
            object_store::Error::NotFound { .. } if writing && self.bucket.is_some() => {
                ArtifactError::NoSuchBucket { bucket: self.bucket.as_deref().unwrap_or_default().to_string() }
            }
            object_store::Error::NotFound { source, .. } => {
                if self.backend == Backend::S3 && source.to_string().contains("NoSuchBucket") {
                    ArtifactError::NoSuchBucket { bucket: self.bucket.as_deref().unwrap_or_default().to_string() }
                } else {
                    ArtifactError::NotFound { store, key }
                }
            }
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => {
                ArtifactError::Denied { store, key, reason: short(&source.to_string()) }
            }
            e @ (object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }) => {
                ArtifactError::Unavailable { op, store, key, reason: short(&e.to_string()) }
            }
            other => ArtifactError::Refused { op, store, key, reason: short(&other.to_string()) },
        }
    }
}

/// A page of the team's run's artifacts (optionally of one SubJob), ordered by key (SubJob, tool, file
/// name), and how many there are in all.
pub async fn list_page(
    mongo: &Mongo,
    team: &TeamId,
    run: &RunId,
    subjob: Option<&SubJobId>,
    skip: u64,
    limit: i64,
) -> Result<(Vec<ArtifactDoc>, u64), ArtifactError> {
    let mut filter = doc! { "team_id": team, "run_id": run };
    if let Some(subjob) = subjob {
        filter.insert("subjob_id", subjob);
    }
    let total = mongo.artifacts.count_documents(filter.clone()).await?;
    let cursor = mongo.artifacts.find(filter).sort(doc! { "key": 1 }).skip(skip).limit(limit).await?;
    let docs: Vec<bson::Document> = cursor.try_collect().await?;
    let page = docs.into_iter().map(bson::deserialize_from_document).collect::<Result<Vec<ArtifactDoc>, _>>()?;
    Ok((page, total))
}

/// One artifact of the team's run, or `None` (also when it belongs to another team or run).
pub async fn get(
    mongo: &Mongo,
    team: &TeamId,
    run: &RunId,
    id: &ArtifactId,
) -> Result<Option<ArtifactDoc>, ArtifactError> {
    let found = mongo.artifacts.find_one(doc! { "_id": id, "team_id": team, "run_id": run }).await?;
    Ok(found.map(bson::deserialize_from_document).transpose()?)
}

async fn find_docs(mongo: &Mongo, filter: bson::Document, limit: i64) -> Result<Vec<ArtifactDoc>, ArtifactError> {
    let cursor = mongo.artifacts.find(filter).sort(doc! { "key": 1 }).limit(limit).await?;
    let docs: Vec<bson::Document> = cursor.try_collect().await?;
    Ok(docs.into_iter().map(bson::deserialize_from_document).collect::<Result<Vec<ArtifactDoc>, _>>()?)
}

/// The regular files below `root`, by name; refuses a tree of more than [`MAX_FILES_PER_SUBJOB`].
fn find_files(root: &Path) -> Result<Vec<FoundFile>, ArtifactError> {
    use std::os::unix::fs::MetadataExt;
    let read_err =
        |p: &Path, e: std::io::Error| ArtifactError::Read { path: p.display().to_string(), reason: e.to_string() };
    let meta = std::fs::metadata(root).map_err(|e| read_err(root, e))?;
    if !meta.is_dir() {
        return Err(ArtifactError::Read { path: root.display().to_string(), reason: "not a directory".into() });
    }
    let mut found = Vec::new();
    // (directory, its name below the root, depth)
    let mut dirs = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| read_err(&dir, e))? {
            let entry = entry.map_err(|e| read_err(&dir, e))?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(dir = %dir.display(), "an artifact whose name is not UTF-8 was skipped");
                continue;
            };
            let name = if prefix.is_empty() { file_name } else { format!("{prefix}/{file_name}") };
            // Not followed: a link could point anywhere on the worker.
            let meta = std::fs::symlink_metadata(entry.path()).map_err(|e| read_err(&entry.path(), e))?;
            if meta.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    dirs.push((entry.path(), name, depth + 1));
                }
            } else if meta.is_file() {
                found.push(FoundFile { path: entry.path(), name, dev: meta.dev(), ino: meta.ino() });
                if found.len() > MAX_FILES_PER_SUBJOB {
                    return Err(ArtifactError::TooManyFiles {
                        dir: root.display().to_string(),
                        max: MAX_FILES_PER_SUBJOB,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Reads, hashes and gzips one file on a blocking thread, sending the output as it grows.
fn compress(file: &FoundFile, tx: &mpsc::Sender<Chunk>) {
    let last = match compress_inner(file, tx) {
        Ok(Some((size, sha256))) => Chunk::End { size, sha256 },
        // The uploader went away: nobody is listening.
        Ok(None) => return,
        Err(e) => Chunk::Failed(e),
    };
    let _ = tx.blocking_send(last);
}

fn compress_inner(file: &FoundFile, tx: &mpsc::Sender<Chunk>) -> Result<Option<(u64, [u8; 32])>, ArtifactError> {
    use std::os::unix::fs::MetadataExt;
    let read_err =
        |e: std::io::Error| ArtifactError::Read { path: file.path.display().to_string(), reason: e.to_string() };
    let mut f = std::fs::File::open(&file.path).map_err(read_err)?;
    // The file opened must be the regular file that was found, not something swapped in since.
    let meta = f.metadata().map_err(read_err)?;
    if !meta.is_file() || meta.dev() != file.dev || meta.ino() != file.ino {
        return Err(ArtifactError::Read {
            path: file.path.display().to_string(),
            reason: "the file was replaced while it was being uploaded".into(),
        });
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(SEND_CHUNK * 2), Compression::default());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        encoder.write_all(&buf[..n]).map_err(read_err)?;
        if encoder.get_ref().len() >= SEND_CHUNK {
            let out = std::mem::take(encoder.get_mut());
            if tx.blocking_send(Chunk::Data(Bytes::from(out))).is_err() {
                return Ok(None);
            }
        }
    }
    let out = encoder.finish().map_err(read_err)?;
    if !out.is_empty() && tx.blocking_send(Chunk::Data(Bytes::from(out))).is_err() {
        return Ok(None);
    }
    Ok(Some((size, hasher.finalize().into())))
}

/// Store error texts can be long (response bodies); keep what a person needs.
fn short(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scan::Tool;

    fn owner() -> ArtifactOwner {
        ArtifactOwner {
            team_id: TeamId::new(),
            run_id: RunId::new(),
            subjob_id: SubJobId::new(),
            tool: ToolId::plain(Tool::Prowler),
        }
    }

    fn s3_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            vec![("CSPM_ARTIFACT_STORE".into(), "s3".into()), ("CSPM_S3_BUCKET".into(), "cspm-artifacts".into())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    #[test]
    fn the_default_store_is_the_local_directory() {
        let env = Env::from_map(Vec::<(String, String)>::new());
        let s = ArtifactSettings::load(&env);
        assert!(env.finish(()).is_ok());
        match s {
            ArtifactSettings::Local { dir } => assert_eq!(dir, PathBuf::from("/tmp/cspm-artifacts")),
            other => panic!("expected the local store, got {other:?}"),
        }
    }

    #[test]
    fn bad_values_refuse_start_up_naming_each_key() {
        let env = Env::from_map(vec![
            ("CSPM_ARTIFACT_STORE", "s3"),
            ("CSPM_ARTIFACT_DIR", "relative/dir"),
            ("CSPM_S3_PATH_STYLE", "maybe"),
            ("CSPM_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("CSPM_S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ]);
        let _ = ArtifactSettings::load(&env);
        let text = env.finish(()).expect_err("refused").to_string();
        for key in [
            "CSPM_ARTIFACT_DIR",
            "CSPM_S3_PATH_STYLE",
            "CSPM_S3_BUCKET",
            "CSPM_S3_ENDPOINT",
            "CSPM_S3_SECRET_ACCESS_KEY",
        ] {
            assert!(text.contains(key), "{key} not named in: {text}");
        }
        let env = Env::from_map([("CSPM_ARTIFACT_STORE", "ftp")]);
        let _ = ArtifactSettings::load(&env);
        assert!(env.finish(()).expect_err("refused").to_string().contains("CSPM_ARTIFACT_STORE"));
    }

    #[test]
    fn an_endpoint_must_fit_the_addressing_style_and_carry_no_credentials() {
        let refused = |extra: &[(&str, &str)]| {
            let env = Env::from_map(s3_env(extra));
            let _ = ArtifactSettings::load(&env);
            env.finish(()).err().map(|e| e.to_string())
        };
        let virtual_hosted = refused(&[("CSPM_S3_ENDPOINT", "https://minio.example")]).expect("refused");
        assert!(virtual_hosted.contains("CSPM_S3_PATH_STYLE"), "{virtual_hosted}");
        assert!(refused(&[("CSPM_S3_ENDPOINT", "https://minio.example"), ("CSPM_S3_PATH_STYLE", "true")]).is_none());
        assert!(refused(&[("CSPM_S3_ENDPOINT", "https://cspm-artifacts.minio.example")]).is_none());
        let with_secret =
            refused(&[("CSPM_S3_ENDPOINT", "https://user:hunter2@minio.example"), ("CSPM_S3_PATH_STYLE", "true")])
                .expect("refused");
        assert!(with_secret.contains("CSPM_S3_ENDPOINT") && !with_secret.contains("hunter2"), "{with_secret}");
        assert!(refused(&[("CSPM_S3_BUCKET", "Not_A_Bucket")]).expect("refused").contains("CSPM_S3_BUCKET"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let env = Env::from_map(s3_env(&[
            ("CSPM_S3_ACCESS_KEY_ID", "AKIAVERYSECRETID"),
            ("CSPM_S3_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret"),
            ("AWS_SESSION_TOKEN", "session-secret"),
        ]));
        let s = ArtifactSettings::load(&env);
        assert!(env.finish(()).is_ok());
        let text = format!("{s:?}");
        for secret in ["AKIAVERYSECRETID", "wJalrXUtnFEMI-secret", "session-secret"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let store = ArtifactStore::new(&s).expect("builds without contacting anything");
        assert!(!format!("{store:?}").contains("wJalrXUtnFEMI-secret"));
        assert_eq!(store.name(), "S3 bucket `cspm-artifacts`");
    }

    #[test]
    fn every_standard_aws_variable_is_understood_by_the_s3_client() {
        for var in AWS_CREDENTIAL_VARS {
            assert!(var.to_ascii_lowercase().parse::<AmazonS3ConfigKey>().is_ok(), "{var}");
        }
    }

    #[test]
    fn keys_name_the_owner_and_ids_follow_from_keys() {
        let o = owner();
        let key = object_key(&o, "reports/output.ocsf.json");
        assert_eq!(
            key,
            format!(
                "teams/{}/runs/{}/subjobs/{}/prowler/reports/output.ocsf.json.gz",
                o.team_id, o.run_id, o.subjob_id
            )
        );
        assert_eq!(ArtifactId::for_key(&key), ArtifactId::for_key(&key));
        assert_ne!(ArtifactId::for_key(&key), ArtifactId::for_key(&object_key(&o, "other.json")));
        let id = ArtifactId::for_key(&key);
        assert_eq!(id.as_str().parse::<ArtifactId>().expect("parses"), id);
        assert!("art_xyz".parse::<ArtifactId>().is_err());
        assert!("scan_01ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<ArtifactId>().is_err());
        // Characters that stores dislike cannot escape their segment.
        let odd = object_key(&o, "a#b/..");
        assert!(odd.ends_with("/prowler/a%23b/...gz"), "{odd}");
        assert_eq!(odd.split('/').count(), 9, "{odd}");
    }

    #[test]
    fn only_regular_files_are_found_and_their_number_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sub/deeper")).expect("dirs");
        std::fs::write(dir.path().join("a.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("sub/deeper/b.txt"), b"x").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).expect("symlink");
        std::os::unix::fs::symlink(dir.path().join("sub"), dir.path().join("dirlink")).expect("symlink");
        let names: Vec<String> = find_files(dir.path()).expect("walks").into_iter().map(|f| f.name).collect();
        assert_eq!(names, vec!["a.json".to_string(), "sub/deeper/b.txt".to_string()]);

        let many = tempfile::tempdir().expect("tempdir");
        for i in 0..=MAX_FILES_PER_SUBJOB {
            std::fs::write(many.path().join(format!("f{i}")), b"").expect("write");
        }
        let err = find_files(many.path()).expect_err("too many");
        assert!(matches!(err, ArtifactError::TooManyFiles { .. }), "{err}");
        assert!(find_files(&dir.path().join("missing")).is_err());
    }

    #[tokio::test]
    async fn a_file_is_gzipped_while_it_streams_and_reads_back_identical() {
        use std::io::Read as _;
        let root = tempfile::tempdir().expect("tempdir");
        let store = ArtifactStore::new(&ArtifactSettings::Local { dir: root.path().join("store") }).expect("store");
        let src = tempfile::tempdir().expect("tempdir");
        // Incompressible enough to need several parts.
        let mut content = Vec::with_capacity(20 * 1024 * 1024);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while content.len() < 20 * 1024 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            content.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(src.path().join("big.bin"), &content).expect("write");
        let files = find_files(src.path()).expect("walks");
        let o = owner();
        let path = object_path(&o, &files[0].name);
        let (size, stored, sha256) = store.upload_file_with_retries(&files[0], &path).await.expect("uploads");
        assert_eq!(size, content.len() as u64);
        assert_eq!(sha256, <[u8; 32]>::from(Sha256::digest(&content)));
        let doc = ArtifactDoc {
            id: ArtifactId::for_key(path.as_ref()),
            team_id: o.team_id.clone(),
            run_id: o.run_id.clone(),
            subjob_id: o.subjob_id.clone(),
            tool: o.tool.clone(),
            file_name: files[0].name.clone(),
            key: path.to_string(),
            size: size as i64,
            stored_size: stored as i64,
            sha256: hex::encode(sha256),
            content_encoding: "gzip".into(),
            created_at: Timestamp::now(),
        };
        let body = store.open(&doc).await.expect("opens");
        assert_eq!(body.stored_size, stored);
        let gz: Vec<u8> = body
            .stream
            .try_fold(Vec::new(), |mut acc, b| async move {
                acc.extend_from_slice(&b);
                Ok(acc)
            })
            .await
            .expect("reads");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).expect("gunzips");
        assert!(back == content, "the round trip changed the content");
    }
}
