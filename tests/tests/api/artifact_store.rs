//! The artifact store of `cspm_shared::artifacts` against real servers: a local directory and an
//! S3-compatible server (moto), with the metadata in the Mongo-wire server.

use std::io::Read;
use std::path::Path;

use cspm_shared::artifacts::{self, ArtifactDoc, ArtifactError, ArtifactOwner, ArtifactSettings, ArtifactStore};
use cspm_shared::config::Env;
use cspm_shared::db::Mongo;
use cspm_shared::domain::scan::{Tool, ToolId};
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_tests::{connect_mongo, create_bucket, s3_endpoint, unique_prefix};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

/// Deterministic, poorly compressible bytes (xorshift), so that a large file stays large when gzipped.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A scanner's output directory: a small report, a large file in a subdirectory, and a symbolic link
/// that must not be followed.
pub fn output_dir(big_len: usize) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = br#"{"findings":[{"id":1,"status":"FAIL"}]}"#.repeat(50);
    let big = noise(big_len, 42);
    std::fs::create_dir_all(dir.path().join("raw")).expect("dir");
    std::fs::write(dir.path().join("report.json"), &report).expect("write");
    std::fs::write(dir.path().join("raw/trace.bin"), &big).expect("write");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).expect("symlink");
    (dir, vec![("raw/trace.bin".to_string(), big), ("report.json".to_string(), report)])
}

pub fn owner(team: &TeamId, run: &RunId) -> ArtifactOwner {
    ArtifactOwner {
        team_id: team.clone(),
        run_id: run.clone(),
        subjob_id: SubJobId::new(),
        tool: ToolId::plain(Tool::Prowler),
    }
}

/// The whole object, gunzipped.
pub async fn read_back(store: &ArtifactStore, doc: &ArtifactDoc) -> Vec<u8> {
    let body = store.open(doc).await.expect("opens");
    assert_eq!(body.stored_size, doc.stored_size as u64);
    let gz: Vec<u8> = body
        .stream
        .try_fold(Vec::new(), |mut acc, b| async move {
            acc.extend_from_slice(&b);
            Ok(acc)
        })
        .await
        .expect("reads");
    gunzip(&gz)
}

pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut out).expect("a gzip stream");
    out
}

/// All of a run's artifacts (one page holds them here), checking that the total agrees.
async fn all_of_run(mongo: &Mongo, team: &TeamId, run: &RunId) -> Vec<ArtifactDoc> {
    let (docs, total) = artifacts::list_page(mongo, team, run, None, 0, 1_000).await.expect("lists");
    assert_eq!(total, docs.len() as u64);
    docs
}

async fn local_store(root: &Path) -> (ArtifactStore, Mongo) {
    let store = ArtifactStore::new(&ArtifactSettings::Local { dir: root.join("store") }).expect("store");
    let mongo = connect_mongo(&unique_prefix()).await;
    mongo.ensure_indexes().await.expect("indexes");
    (store, mongo)
}

/// Checks that the documents describe `files` exactly and that every object reads back as the file.
async fn assert_stored(store: &ArtifactStore, docs: &[ArtifactDoc], files: &[(String, Vec<u8>)]) {
    assert_eq!(docs.len(), files.len(), "{docs:?}");
    for (doc, (name, content)) in docs.iter().zip(files) {
        assert_eq!(&doc.file_name, name);
        assert_eq!(doc.size, content.len() as i64);
        assert_eq!(doc.sha256, hex::encode(Sha256::digest(content)));
        assert_eq!(doc.content_encoding, "gzip");
        assert!(doc.key.ends_with(&format!("/prowler/{name}.gz")), "{}", doc.key);
        let back = read_back(store, doc).await;
        assert_eq!(hex::encode(Sha256::digest(&back)), doc.sha256, "{name} changed on the way");
        assert!(back == *content, "{name} changed on the way");
    }
}

#[tokio::test]
async fn a_subjobs_output_is_stored_compressed_listed_and_read_back_identical() {
    let root = tempfile::tempdir().expect("tempdir");
    let (store, mongo) = local_store(root.path()).await;
    let (out, files) = output_dir(11 * 1024 * 1024);
    let (team, run) = (TeamId::new(), RunId::new());
    let o = owner(&team, &run);

    let docs = store.upload_dir(&mongo, &o, out.path()).await.expect("uploads");
    assert_stored(&store, &docs, &files).await;
    assert!(docs[1].stored_size < docs[1].size, "the report is compressed: {:?}", docs[1]);
    let listed = all_of_run(&mongo, &team, &run).await;
    assert_eq!(listed, docs);
    let one = artifacts::get(&mongo, &team, &run, &docs[0].id).await.expect("reads");
    assert_eq!(one.as_ref(), Some(&docs[0]));
    assert!(artifacts::get(&mongo, &TeamId::new(), &run, &docs[0].id).await.expect("reads").is_none());
    assert!(artifacts::get(&mongo, &team, &RunId::new(), &docs[0].id).await.expect("reads").is_none());

    // A retry, or a re-delivered SubJob: the same ids, nothing twice.
    let again = store.upload_dir(&mongo, &o, out.path()).await.expect("uploads again");
    assert_eq!(again.iter().map(|d| &d.id).collect::<Vec<_>>(), docs.iter().map(|d| &d.id).collect::<Vec<_>>());
    assert_eq!(mongo.artifacts.count_documents(bson::doc! {}).await.expect("counts"), 2);
    assert_stored(&store, &again, &files).await;

    // An attempt that produced less replaces the SubJob's artifacts: the missing one is gone.
    std::fs::remove_file(out.path().join("raw/trace.bin")).expect("remove");
    let fewer = store.upload_dir(&mongo, &o, out.path()).await.expect("uploads");
    assert_eq!(fewer.len(), 1);
    assert_eq!(all_of_run(&mongo, &team, &run).await, fewer);
    let err = store.open(&docs[0]).await.expect_err("its object is gone");
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn deleting_a_run_removes_its_objects_and_documents_and_nothing_else() {
    let root = tempfile::tempdir().expect("tempdir");
    let (store, mongo) = local_store(root.path()).await;
    let (out, _) = output_dir(64 * 1024);
    let team = TeamId::new();
    let (run, kept_run) = (RunId::new(), RunId::new());
    for _ in 0..2 {
        store.upload_dir(&mongo, &owner(&team, &run), out.path()).await.expect("uploads");
    }
    let kept = store.upload_dir(&mongo, &owner(&team, &kept_run), out.path()).await.expect("uploads");
    // An object whose document was never written (an upload cut short) goes too.
    let stray = root.path().join(format!("store/teams/{team}/runs/{run}/subjobs/sj_x/prowler/stray.gz"));
    std::fs::create_dir_all(stray.parent().expect("parent")).expect("dir");
    std::fs::write(&stray, b"x").expect("write");

    let removed = store.delete_run(&mongo, &team, &run).await.expect("deletes");
    assert_eq!(removed, 4);
    assert!(all_of_run(&mongo, &team, &run).await.is_empty());
    let run_dir = root.path().join(format!("store/teams/{team}/runs/{run}"));
    let left: Vec<_> = walk(&run_dir);
    assert!(left.is_empty(), "objects left behind: {left:?}");
    assert_eq!(all_of_run(&mongo, &team, &kept_run).await, kept);
    for d in &kept {
        read_back(&store, d).await;
    }
    assert_eq!(store.delete_run(&mongo, &team, &run).await.expect("idempotent"), 0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] })
        .collect()
}

/// The S3 settings of a test, read the way the binaries read them.
fn s3_settings(bucket: &str) -> ArtifactSettings {
    let endpoint = s3_endpoint();
    let env = Env::from_map([
        ("CSPM_ARTIFACT_STORE", "s3"),
        ("CSPM_S3_BUCKET", bucket),
        ("CSPM_S3_ENDPOINT", endpoint.as_str()),
        ("CSPM_S3_ACCESS_KEY_ID", "testing-key-id"),
        ("CSPM_S3_SECRET_ACCESS_KEY", "testing-secret-key"),
        ("CSPM_S3_PATH_STYLE", "true"),
        ("CSPM_S3_ALLOW_HTTP", "true"),
    ]);
    let settings = ArtifactSettings::load(&env);
    env.finish(settings).expect("valid S3 settings")
}

#[tokio::test]
async fn artifacts_round_trip_through_an_s3_compatible_store_in_parts() {
    let bucket = format!("cspm-{}", unique_prefix());
    create_bucket(&bucket).await;
    let store = ArtifactStore::new(&s3_settings(&bucket)).expect("store");
    let mongo = connect_mongo(&unique_prefix()).await;
    mongo.ensure_indexes().await.expect("indexes");
    // Over two parts of 8 MiB once compressed: a multipart upload.
    let (out, files) = output_dir(17 * 1024 * 1024);
    let (team, run) = (TeamId::new(), RunId::new());
    let o = owner(&team, &run);

    let docs = store.upload_dir(&mongo, &o, out.path()).await.expect("uploads");
    assert_stored(&store, &docs, &files).await;
    assert_eq!(all_of_run(&mongo, &team, &run).await, docs);
    let again = store.upload_dir(&mongo, &o, out.path()).await.expect("uploads again");
    assert_eq!(again.iter().map(|d| &d.id).collect::<Vec<_>>(), docs.iter().map(|d| &d.id).collect::<Vec<_>>());
    assert_eq!(all_of_run(&mongo, &team, &run).await.len(), 2);

    assert_eq!(store.delete_run(&mongo, &team, &run).await.expect("deletes"), 2);
    let err = store.open(&docs[0]).await.expect_err("deleted");
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_upload_to_a_missing_bucket_fails_naming_the_bucket() {
    let bucket = format!("cspm-missing-{}", unique_prefix());
    let store = ArtifactStore::new(&s3_settings(&bucket)).expect("store");
    let mongo = connect_mongo(&unique_prefix()).await;
    let (out, _) = output_dir(1024);
    let err = store.upload_dir(&mongo, &owner(&TeamId::new(), &RunId::new()), out.path()).await.expect_err("fails");
    assert!(matches!(err, ArtifactError::NoSuchBucket { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&bucket), "{text}");
    assert!(!text.contains("testing-secret-key") && !text.contains("testing-key-id"), "{text}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_failed_upload_is_spooled_and_uploaded_once_the_store_is_back() {
    // The bucket does not exist yet: the store is "away".
    let bucket = format!("cspm-late-{}", unique_prefix());
    let store = ArtifactStore::new(&s3_settings(&bucket)).expect("store");
    let mongo = connect_mongo(&unique_prefix()).await;
    mongo.ensure_indexes().await.expect("indexes");
    let root = tempfile::tempdir().expect("output root");
    let (team, run) = (TeamId::new(), RunId::new());
    let who = owner(&team, &run);
    let job_dir = root.path().join(run.as_str()).join(who.subjob_id.as_str());
    std::fs::create_dir_all(&job_dir).expect("job dir");
    std::fs::write(job_dir.join("report.json"), b"{\"findings\":[]}").expect("write");

    let warning = cspm_worker::artifacts::upload_or_spool(&store, &mongo, root.path(), &who, &job_dir)
        .await
        .expect("spooled, not lost")
        .expect("a warning for the SubJob");
    assert!(warning.contains(&bucket) && warning.contains("kept for a retry"), "{warning}");
    assert!(!job_dir.exists(), "the output moved to the spool");
    assert_eq!(cspm_worker::artifacts::drain_spool(&store, &mongo, root.path()).await, 0, "still away");
    assert!(all_of_run(&mongo, &team, &run).await.is_empty());

    create_bucket(&bucket).await;
    assert_eq!(cspm_worker::artifacts::drain_spool(&store, &mongo, root.path()).await, 1);
    let docs = all_of_run(&mongo, &team, &run).await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_name, "report.json");
    assert_eq!(read_back(&store, &docs[0]).await, b"{\"findings\":[]}");
    assert_eq!(std::fs::read_dir(root.path().join(".spool")).expect("spool").count(), 0, "the spool is emptied");
    assert_eq!(cspm_worker::artifacts::drain_spool(&store, &mongo, root.path()).await, 0, "nothing twice");
}

#[tokio::test]
async fn output_that_can_never_be_uploaded_is_not_spooled() {
    let root = tempfile::tempdir().expect("output root");
    let (store, mongo) = local_store(root.path()).await;
    let (team, run) = (TeamId::new(), RunId::new());
    let who = owner(&team, &run);
    let job_dir = root.path().join(run.as_str()).join(who.subjob_id.as_str());
    std::fs::create_dir_all(&job_dir).expect("job dir");
    for i in 0..=artifacts::MAX_FILES_PER_SUBJOB {
        std::fs::write(job_dir.join(format!("f{i}.txt")), b"x").expect("write");
    }
    let warning = cspm_worker::artifacts::upload_or_spool(&store, &mongo, root.path(), &who, &job_dir)
        .await
        .expect("no store failure")
        .expect("a warning for the SubJob");
    assert!(warning.contains("not kept"), "{warning}");
    assert!(job_dir.exists(), "left for the pipeline to remove, not spooled");
    assert!(!root.path().join(".spool").exists(), "a retry could never succeed: nothing is spooled");
    assert!(all_of_run(&mongo, &team, &run).await.is_empty());
}
