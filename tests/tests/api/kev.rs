//! The CISA KEV catalog: status and import through the API (roles, refusal of malformed and partial
//! catalogs with the previous one kept, URL imports with conditional requests against a local server),
//! enrichment of findings and occurrences stored by the worker's write path (spring4shell flagged, then
//! unflagged by a catalog without it), and the worker's index noticing a new catalog.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{Document, doc};
use cspm_shared::db::Mongo;
use cspm_shared::domain::finding::NewFinding;
use cspm_shared::domain::role::Role;
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_shared::kev::{self, KevCache, KevSettings, RefreshOutcome, Source};
use cspm_shared::store::findings::{FindingScope, upsert_batch};
use cspm_shared::store::occurrences;
use cspm_shared::time::Timestamp;
use cspm_tests::{TestApi, user_token, wait_until};
use cspm_worker::tools::{FindingSink, ReportKind};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::assert_problem;

const SPRING4SHELL: &str = "CVE-2022-22965";
const IMPORT: &str = "/api/threat-intel/kev/import";
const STATUS: &str = "/api/threat-intel/kev";

fn fixture_bytes() -> Vec<u8> {
    let path = cspm_shared::testing::fixtures_dir().join("kev/known_exploited_vulnerabilities.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture() -> Value {
    serde_json::from_slice(&fixture_bytes()).expect("the fixture is JSON")
}

/// The fixture without spring4shell, its count fixed (a new version of the catalog).
fn without_spring4shell() -> Value {
    let mut v = fixture();
    let list = v["vulnerabilities"].as_array_mut().expect("vulnerabilities");
    let before = list.len();
    list.retain(|e| e["cveID"] != SPRING4SHELL);
    assert_eq!(list.len(), before - 1);
    let n = list.len();
    v["count"] = n.into();
    v["catalogVersion"] = "2025.08.26".into();
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

fn settings() -> KevSettings {
    KevSettings::load(&cspm_shared::config::Env::from_map([("CSPM_KEV_RELOAD_SECS", "1")]))
}

async fn spawn() -> TestApi {
    TestApi::spawn_with(&[("CSPM_KEV_RELOAD_SECS", "1")]).await
}

async fn upload(app: &TestApi, token: &str, body: Vec<u8>) -> (u16, Value) {
    let req = reqwest::Client::new()
        .post(app.api.url(IMPORT))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body);
    app.api.raw(req).await
}

/// Waits until the current catalog is `catalog_id` and its first enrichment pass has run.
async fn wait_enriched(app: &TestApi, token: &str, catalog_id: &str) -> Value {
    wait_until(Duration::from_secs(60), "the KEV enrichment pass", || async {
        let (_, s) = app.api.get(token, STATUS).await;
        let done =
            s["catalog_id"] == catalog_id && matches!(s["enrichment"]["state"].as_str(), Some("applied" | "settled"));
        done.then_some(s)
    })
    .await
}

/// Parses the Trivy spring4shell report with the worker's parser.
async fn spring4shell_findings() -> Vec<NewFinding> {
    let path = cspm_shared::testing::fixtures_dir().join("trivy/golden/spring4shell-jre11.json");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewFinding>>(4);
    let parser = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).expect("the Trivy fixture");
        let mut sink = FindingSink::new(tx, 500);
        ReportKind::Trivy.parse_reader(std::io::BufReader::new(file), "spring4shell-jre11.json", &mut sink)?;
        sink.flush()
    });
    let mut all = Vec::new();
    while let Some(batch) = rx.recv().await {
        all.extend(batch);
    }
    parser.await.expect("parser joined").expect("the report parses");
    assert!(all.iter().any(|f| f.cves().contains(&SPRING4SHELL.to_string())), "spring4shell is in the report");
    all
}

fn scope(team: &TeamId, at: i64) -> FindingScope {
    FindingScope {
        team_id: team.clone(),
        tool: "trivy".into(),
        account_id: None,
        target: Some("spring4shell:jre11".into()),
        region: "global".into(),
        run_id: RunId::new(),
        subjob_id: SubJobId::new(),
        seen_at: Timestamp::from_millis(at),
        cloud: None,
    }
}

/// The worker's store stage: enrich from its KEV cache, then findings and occurrences.
async fn ingest(mongo: &Mongo, cache: &KevCache, scope: &FindingScope, findings: &[NewFinding]) {
    for chunk in findings.chunks(500) {
        let mut batch = chunk.to_vec();
        if let Some(index) = cache.current().await {
            index.enrich(&mut batch);
        }
        upsert_batch(mongo, scope, &batch).await.expect("findings stored");
        occurrences::sync_batch(mongo, scope, &batch).await.expect("occurrences stored");
    }
}

async fn spring_finding(mongo: &Mongo, team: &TeamId) -> Document {
    mongo.findings.find_one(doc! { "team_id": team, "cves": SPRING4SHELL }).await.expect("db").expect("finding")
}

async fn spring_occurrence(mongo: &Mongo, team: &TeamId) -> Document {
    mongo
        .occurrences
        .find_one(doc! { "team_id": team, "vulnerability_id": SPRING4SHELL })
        .await
        .expect("db")
        .expect("occurrence")
}

/// The occurrence's `cisa_kev` (the Mongo-wire test server stores booleans written by `$set` as 0/1).
fn cisa_kev(d: &Document) -> Option<bool> {
    d.contains_key("cisa_kev").then(|| cspm_shared::store::flag(d, "cisa_kev"))
}

fn known_exploited(d: &Document) -> Option<bool> {
    d.get_document("kev").ok().and_then(|k| k.get_bool("known_exploited").ok())
}

#[tokio::test]
async fn the_status_is_empty_before_the_first_import_and_describes_the_catalog_after() {
    // The tests' environment turns the scheduled source off; the status shows a configured one.
    let app = TestApi::spawn_with(&[("CSPM_KEV_RELOAD_SECS", "1"), ("CSPM_KEV_URL", kev::DEFAULT_SOURCE_URL)]).await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    let viewer = user_token(&app.api, &app.mongo, "viewer@kev.test", &team, Role::Viewer).await;
    let (status, before) = app.api.get(&viewer, STATUS).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["version"], Value::Null);
    assert_eq!(before["count"], 0);
    assert_eq!(before["enrichment"]["state"], "none");
    assert_eq!(before["refresh"]["url"], kev::DEFAULT_SOURCE_URL);

    let started = Instant::now();
    let (status, body) = upload(&app, &admin, fixture_bytes()).await;
    assert_eq!(status, 200, "{body}");
    eprintln!("imported the 1404-entry catalog through the API in {:?}", started.elapsed());
    assert_eq!(body["outcome"], "imported");
    let (status, after) = app.api.get(&viewer, STATUS).await;
    assert_eq!(status, 200);
    assert_eq!(after["version"], "2025.08.25");
    assert_eq!(after["date_released"], "2025-08-25T17:04:19.9796Z");
    assert_eq!(after["count"], 1404);
    assert_eq!(after["source"]["kind"], "upload");
    assert!(after["last_refresh_at"].is_string() && after["imported_at"].is_string(), "{after}");
    assert_eq!(after["last_check"]["outcome"], "imported");
    let stored = app.mongo.kev_entries.count_documents(doc! {}).await.expect("db");
    assert_eq!(stored, 1404);

    // The same file again changes nothing.
    let (status, again) = upload(&app, &admin, fixture_bytes()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outcome"], "unchanged");
    assert_eq!(again["status"]["imported_at"], after["imported_at"]);
    assert_eq!(app.mongo.kev_entries.count_documents(doc! {}).await.expect("db"), 1404);

    let (status, _) = app.api.get("", STATUS).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn only_administrators_import_catalogs() {
    let app = spawn().await;
    let admin = app.admin().await;
    let team = app.admin_team().await;
    for (email, role) in [("manager@kev.test", Role::SecurityManager), ("viewer2@kev.test", Role::Viewer)] {
        let token = user_token(&app.api, &app.mongo, email, &team, role).await;
        let (status, body) = upload(&app, &token, fixture_bytes()).await;
        assert_problem(status, &body, 403, "manage_threat_intel");
    }
    let (_, s) = app.api.get(&admin, STATUS).await;
    assert_eq!(s["version"], Value::Null, "nothing was imported: {s}");
}

#[tokio::test]
async fn a_malformed_or_partial_catalog_is_refused_and_the_previous_one_stays() {
    let app = spawn().await;
    let admin = app.admin().await;
    let (status, body) = upload(&app, &admin, fixture_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let catalog_id = body["status"]["catalog_id"].as_str().expect("id").to_string();

    let full = fixture_bytes();
    let (status, body) = upload(&app, &admin, full[..full.len() / 2].to_vec()).await;
    assert_problem(status, &body, 400, "not valid JSON");

    let mut partial = without_spring4shell();
    partial["count"] = 1404.into();
    let (status, body) = upload(&app, &admin, bytes(&partial)).await;
    assert_problem(status, &body, 422, "declares count 1404 but holds 1403");

    let mut bad = fixture();
    bad["vulnerabilities"][0]["cveID"] = "CVE-25-48384".into();
    bad["vulnerabilities"][1].as_object_mut().expect("entry").remove("requiredAction");
    let (status, body) = upload(&app, &admin, bytes(&bad)).await;
    assert_problem(status, &body, 422, "/vulnerabilities/0/cveID");
    assert!(body["detail"].as_str().unwrap_or_default().contains("`requiredAction` is missing"), "{body}");

    let mut tiny = fixture();
    tiny["vulnerabilities"].as_array_mut().expect("list").truncate(10);
    tiny["count"] = 10.into();
    let (status, body) = upload(&app, &admin, bytes(&tiny)).await;
    assert_problem(status, &body, 422, "fewer than half");

    let req = reqwest::Client::new().post(app.api.url(IMPORT)).bearer_auth(&admin).body(fixture_bytes());
    let (status, body) = app.api.raw(req).await;
    assert_problem(status, &body, 415, "application/json");

    let (_, s) = app.api.get(&admin, STATUS).await;
    assert_eq!(s["catalog_id"], catalog_id.as_str(), "the previous catalog stays: {s}");
    assert_eq!(s["count"], 1404);
    assert_eq!(s["last_check"]["outcome"], "refused");
    let stored = app.mongo.kev_entries.count_documents(doc! { "catalog_id": &catalog_id }).await.expect("db");
    assert_eq!(stored, 1404);
}

/// A one-route HTTP server: serves `body` with an ETag and answers 304 to a request that sends it
/// back. Records each request's headers.
struct CatalogServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CatalogServer {
    async fn start(body: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://127.0.0.1:{}/feeds/kev.json", listener.local_addr().expect("addr").port());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                seen.lock().expect("lock").push(text.clone());
                let etag = "\"kev-2025.08.25\"";
                let answer = if text.contains(&format!("if-none-match: {etag}")) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n").into_bytes()
                } else {
                    let mut a = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nETag: {etag}\r\nLast-Modified: Mon, 25 Aug 2025 17:04:19 GMT\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    a.extend_from_slice(&body);
                    a
                };
                let _ = conn.write_all(&answer).await;
                let _ = conn.shutdown().await;
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

#[tokio::test]
async fn a_url_import_sends_a_conditional_request_the_second_time() {
    let app = spawn().await;
    let admin = app.admin().await;
    let server = CatalogServer::start(fixture_bytes()).await;
    let (status, first) = app.api.post(&admin, IMPORT, json!({ "url": server.url })).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "imported");
    assert_eq!(first["status"]["source"]["kind"], "url");
    assert_eq!(first["status"]["count"], 1404);
    assert!(!server.requests()[0].contains("if-none-match"), "{:?}", server.requests());

    let (status, second) = app.api.post(&admin, IMPORT, json!({ "url": server.url })).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["outcome"], "not_modified");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].contains("if-none-match: \"kev-2025.08.25\""), "{}", requests[1]);
    assert!(requests[1].contains("if-modified-since: mon, 25 aug 2025 17:04:19 gmt"), "{}", requests[1]);
    // Nothing was imported again.
    assert_eq!(second["status"]["imported_at"], first["status"]["imported_at"]);
    assert_eq!(second["status"]["catalog_id"], first["status"]["catalog_id"]);
    assert_eq!(second["status"]["last_check"]["outcome"], "not_modified");
    let catalogs = app.mongo.kev_catalogs.count_documents(doc! {}).await.expect("db");
    assert_eq!(catalogs, 1);

    // The SSRF guard: metadata addresses are never fetched; other schemes are refused.
    for url in ["http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "http://[fd00:ec2::254]/"] {
        let (status, body) = app.api.post(&admin, IMPORT, json!({ "url": url })).await;
        assert_problem(status, &body, 422, "url");
    }
    // A server that is not there: refused, clearly, and the catalog stays.
    let dead = format!("http://127.0.0.1:{}/kev.json", cspm_tests::free_port());
    let (status, body) = app.api.post(&admin, IMPORT, json!({ "url": dead })).await;
    assert_problem(status, &body, 422, "could not be fetched");
    let (_, s) = app.api.get(&admin, STATUS).await;
    assert_eq!(s["catalog_id"], first["status"]["catalog_id"]);
    assert_eq!(s["last_check"]["outcome"], "failed");
}

#[tokio::test]
async fn the_scheduled_refresh_fetches_only_when_due_and_honours_304() {
    let prefix = cspm_tests::unique_prefix();
    let mongo = cspm_tests::connect_mongo(&prefix).await;
    mongo.ensure_indexes().await.expect("indexes");
    let server = CatalogServer::start(fixture_bytes()).await;
    let env = cspm_shared::config::Env::from_map([
        ("CSPM_KEV_URL", server.url.as_str()),
        ("CSPM_KEV_REFRESH_HOURS", "1"),
        ("CSPM_KEV_RELOAD_SECS", "1"),
    ]);
    let settings = KevSettings::load(&env);
    let http = kev::fetch::source_client(settings.fetch_timeout).expect("client");
    let first = kev::refresh_from_source(&mongo, &settings, &http).await.expect("refreshed");
    assert!(matches!(first, RefreshOutcome::Imported { count: 1404, .. }), "{first:?}");
    // Within the hour: no request at all.
    assert_eq!(kev::refresh_from_source(&mongo, &settings, &http).await.expect("refresh"), RefreshOutcome::NotDue);
    assert_eq!(server.requests().len(), 1);
    // Due again (as if an hour had passed): a conditional request, answered 304.
    mongo
        .kev_state
        .update_one(doc! { "_id": "current" }, doc! { "$set": { "fetch.next_check_at": 0_i64 } })
        .await
        .expect("db");
    assert_eq!(kev::refresh_from_source(&mongo, &settings, &http).await.expect("refresh"), RefreshOutcome::NotModified);
    assert!(server.requests()[1].contains("if-none-match"));
    let state = kev::status(&mongo).await.expect("status");
    assert!(state.enriched_at.is_some(), "the first pass ran with the refresh");
}

#[tokio::test]
async fn spring4shell_is_flagged_after_import_and_unflagged_when_a_catalog_drops_it() {
    let app = spawn().await;
    let admin = app.admin().await;
    let team = TeamId::new();
    let cache = KevCache::new(app.mongo.clone(), Duration::from_secs(1));
    let findings = spring4shell_findings().await;

    // Stored before any catalog exists: no mark.
    ingest(&app.mongo, &cache, &scope(&team, 1_000), &findings).await;
    assert_eq!(known_exploited(&spring_finding(&app.mongo, &team).await), None);
    assert_eq!(cisa_kev(&spring_occurrence(&app.mongo, &team).await), Some(false));

    // Importing the catalog re-enriches what is stored.
    let (status, body) = upload(&app, &admin, fixture_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let first_id = body["status"]["catalog_id"].as_str().expect("id").to_string();
    let s = wait_enriched(&app, &admin, &first_id).await;
    assert!(s["enrichment"]["first_pass"]["findings_updated"].as_i64() >= Some(1), "{s}");
    let f = spring_finding(&app.mongo, &team).await;
    let mark = f.get_document("kev").expect("kev");
    assert_eq!(mark.get_bool("known_exploited").ok(), Some(true), "{f}");
    assert_eq!(mark.get_str("cve").ok(), Some(SPRING4SHELL));
    assert_eq!(mark.get_str("date_added").ok(), Some("2022-04-04"));
    assert_eq!(mark.get_str("due_date").ok(), Some("2022-04-25"));
    assert_eq!(mark.get_str("known_ransomware_campaign_use").ok(), Some("Unknown"));
    assert_eq!(mark.get_str("required_action").ok(), Some("Apply updates per vendor instructions."));
    let o = spring_occurrence(&app.mongo, &team).await;
    assert_eq!(cisa_kev(&o), Some(true), "{o}");
    assert_eq!(known_exploited(&o), Some(true));
    // The API shows it.
    let fid = f.get_str("_id").expect("id").to_string();
    let other = app.admin_team().await;
    assert_ne!(other, team);

    // A team whose scan runs after the import is flagged at ingest, by the worker's index (once it
    // has looked for a new catalog).
    cache.refresh_now().await.expect("reload");
    ingest(&app.mongo, &cache, &scope(&other, 2_000), &findings).await;
    let g = spring_finding(&app.mongo, &other).await;
    assert_eq!(known_exploited(&g), Some(true), "{g}");
    let (status, view) = app.api.get(&admin, &format!("/api/cspm/findings/{}", g.get_str("_id").expect("id"))).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["kev"]["known_exploited"], true, "{view}");
    assert_eq!(view["kev"]["due_date"], "2022-04-25");
    let (_, occ) =
        app.api.get(&admin, &format!("/api/vulnerabilities/occurrences?vulnerability_id={SPRING4SHELL}")).await;
    assert_eq!(occ["occurrences"][0]["cisa_kev"], true, "{occ}");

    // A new version without spring4shell unflags both teams' findings and occurrences.
    let (status, body) = upload(&app, &admin, bytes(&without_spring4shell())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["version"], "2025.08.26");
    let second_id = body["status"]["catalog_id"].as_str().expect("id").to_string();
    let s = wait_enriched(&app, &admin, &second_id).await;
    assert_eq!(s["enrichment"]["first_pass"]["cves_changed"], 1, "only spring4shell changed: {s}");
    for t in [&team, &other] {
        let f = spring_finding(&app.mongo, t).await;
        assert_eq!(known_exploited(&f), Some(false), "{f}");
        assert!(f.get_document("kev").expect("kev").get("due_date").is_none());
        let o = spring_occurrence(&app.mongo, t).await;
        assert_eq!(cisa_kev(&o), Some(false), "{o}");
    }
    assert_eq!(spring_finding(&app.mongo, &team).await.get_str("_id").ok(), Some(fid.as_str()));

    // A second pass changes nothing (idempotent), and the worker's next sighting agrees.
    let current = kev::KevIndex::load(&app.mongo, &second_id, "2025.08.26").await.expect("index");
    let earlier = kev::KevIndex::load(&app.mongo, &first_id, "2025.08.25").await.expect("earlier index");
    let again = kev::enrich::reenrich(&app.mongo, &current, &[earlier]).await.expect("pass");
    assert_eq!((again.findings_updated, again.occurrences_updated), (0, 0), "{again:?}");
    cache.refresh_now().await.expect("reload");
    ingest(&app.mongo, &cache, &scope(&team, 3_000), &findings).await;
    assert_eq!(known_exploited(&spring_finding(&app.mongo, &team).await), Some(false));

    // Once settled, the earlier catalog is removed.
    wait_until(Duration::from_secs(30), "the earlier catalog to be removed", || async {
        let left = app.mongo.kev_entries.count_documents(doc! { "catalog_id": &first_id }).await.ok()?;
        let (_, s) = app.api.get(&admin, STATUS).await;
        (left == 0 && s["enrichment"]["state"] == "settled").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_index_notices_a_new_catalog_version() {
    let prefix = cspm_tests::unique_prefix();
    let mongo = cspm_tests::connect_mongo(&prefix).await;
    mongo.ensure_indexes().await.expect("indexes");
    let settings = settings();
    let cache = KevCache::new(mongo.clone(), Duration::from_secs(1));
    assert!(cache.current().await.is_none(), "no catalog yet");

    kev::import_bytes(&mongo, &settings, fixture_bytes(), Source::upload()).await.expect("imported");
    // The worker looks again once its interval has passed, and loads the catalog.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = cache.current().await.expect("loaded");
    assert_eq!(first.version, "2025.08.25");
    assert_eq!(first.len(), 1404);
    assert!(first.get(SPRING4SHELL).is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = cache.current().await.expect("held");
    assert!(Arc::ptr_eq(&first, &same), "an unchanged version is not reloaded");
    let patient = KevCache::new(mongo.clone(), Duration::from_secs(3600));
    assert_eq!(patient.current().await.expect("loaded").version, "2025.08.25");

    kev::import_bytes(&mongo, &settings, bytes(&without_spring4shell()), Source::upload()).await.expect("imported");
    let held = patient.current().await.expect("held");
    assert_eq!(held.version, "2025.08.25", "within its interval a worker does not look");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = cache.current().await.expect("reloaded");
    assert_eq!(second.version, "2025.08.26");
    assert_eq!(second.len(), 1403);
    assert!(second.get(SPRING4SHELL).is_none());
    assert_eq!(patient.refresh_now().await.expect("checked").expect("held").version, "2025.08.26");
}

async fn first_catalog_id(mongo: &Mongo) -> String {
    kev::status(mongo).await.expect("status").catalog_id.expect("a catalog")
}

/// Figures for docs/benchmarks.md: `cargo nextest run -p cspm-tests --test api kev_figures --run-ignored
/// only --no-capture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn kev_figures() {
    let prefix = cspm_tests::unique_prefix();
    let mongo = cspm_tests::connect_mongo(&prefix).await;
    mongo.ensure_indexes().await.expect("indexes");
    let settings = settings();
    let started = Instant::now();
    kev::import_bytes(&mongo, &settings, fixture_bytes(), Source::upload()).await.expect("imported");
    let import = started.elapsed();
    let started = Instant::now();
    let first = kev::apply_pending(&mongo, &settings).await.expect("pass").expect("stats");
    let empty_pass = started.elapsed();

    // 10,000 CVE findings (and occurrences) of one team, all on listed CVEs (about 7 per CVE).
    let catalog = fixture();
    let listed: Vec<String> = catalog["vulnerabilities"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["cveID"].as_str().map(str::to_string))
        .collect();
    let team = TeamId::new();
    let template = spring4shell_findings().await.into_iter().find(|f| !f.cves().is_empty()).expect("a CVE finding");
    let findings: Vec<NewFinding> = (0..10_000)
        .map(|i| {
            let mut f = template.clone();
            let cve = listed[i % listed.len()].clone();
            f.vulnerabilities[0].id = cspm_shared::domain::finding::VulnId::Cve(cve.clone());
            f.identity.push(format!("{i}"));
            if let Some(p) = f.vulnerabilities[0].package.as_mut() {
                p.path = Some(format!("/app/lib/{i}.jar"));
            }
            f
        })
        .collect();
    // The ingest stage's cost: 200,000 CVE findings through the index, a tenth of them listed.
    let index = kev::KevIndex::load(&mongo, &first_catalog_id(&mongo).await, "2025.08.25").await.expect("index");
    let mut many: Vec<NewFinding> = (0..200_000)
        .map(|i| {
            let mut f = template.clone();
            let cve = if i % 10 == 0 { listed[i % listed.len()].clone() } else { format!("CVE-2099-{i}") };
            f.vulnerabilities[0].id = cspm_shared::domain::finding::VulnId::Cve(cve);
            f
        })
        .collect();
    let started = Instant::now();
    index.enrich(&mut many);
    let enrich = started.elapsed();
    assert_eq!(many.iter().filter(|f| f.kev.as_ref().is_some_and(|k| k.known_exploited)).count(), 20_000);
    drop(many);
    let none = KevCache::new(mongo.clone(), Duration::from_secs(3600));
    // Stored without marks (as if scanned before the catalog): the pass must write them all.
    mongo.kev_state.delete_many(doc! {}).await.expect("db");
    let started = Instant::now();
    ingest(&mongo, &none, &scope(&team, 1_000), &findings).await;
    let stored = started.elapsed();
    kev::import_bytes(&mongo, &settings, fixture_bytes(), Source::upload()).await.expect("re-imported");
    let started = Instant::now();
    let pass = kev::apply_pending(&mongo, &settings).await.expect("pass").expect("stats");
    let reenrich = started.elapsed();
    eprintln!(
        "KEV figures: import of 1404 entries {import:?}; first pass over no findings {empty_pass:?} ({first:?}); \
         enrichment of 200,000 findings in memory {enrich:?}; \
         10,000 findings + occurrences stored in {stored:?}; re-enrichment {reenrich:?} ({pass:?})"
    );
    assert_eq!(pass.findings_updated, 10_000);
    assert_eq!(pass.occurrences_updated, 10_000);
}

/// A clean-up that read the pointer before an import flipped it (the settled catalog's, now earlier)
/// removes only catalogs older than the one it read: never the one just made current, which must keep
/// every entry for the workers to load.
#[tokio::test]
async fn a_clean_up_that_read_the_pointer_before_a_flip_keeps_the_new_catalog() {
    let prefix = cspm_tests::unique_prefix();
    let mongo = cspm_tests::connect_mongo(&prefix).await;
    mongo.ensure_indexes().await.expect("indexes");
    let settings = settings();
    let pointer = || async { kev::store::current_pointer(&mongo).await.expect("db").expect("a catalog in force") };
    let entries = |id: String| {
        let mongo = mongo.clone();
        async move { mongo.kev_entries.count_documents(doc! { "catalog_id": id }).await.expect("count") }
    };

    kev::import_bytes(&mongo, &settings, fixture_bytes(), Source::upload()).await.expect("imported");
    let first = pointer().await.catalog_id;
    kev::import_bytes(&mongo, &settings, bytes(&without_spring4shell()), Source::upload()).await.expect("imported");
    let second = pointer().await;
    assert_ne!(first, second.catalog_id);

    // What a pass that still holds the first catalog as current does once it is settled.
    assert_eq!(kev::store::remove_old(&mongo, &first).await.expect("removal"), 0, "nothing is older than it");
    assert_eq!(entries(second.catalog_id.clone()).await, second.count, "the catalog in force is whole");
    let cache = KevCache::new(mongo.clone(), Duration::from_secs(3600));
    assert_eq!(cache.refresh_now().await.expect("loads").expect("held").len() as u64, second.count);

    // The clean-up of the catalog in force removes the earlier one, entries and all.
    assert_eq!(kev::store::remove_old(&mongo, &second.catalog_id).await.expect("removal"), 1);
    assert_eq!(entries(first).await, 0);
    assert_eq!(entries(second.catalog_id).await, second.count);
}
