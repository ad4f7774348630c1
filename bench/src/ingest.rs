//! `cspm-bench persist`: the findings write path of the worker (`store::findings::upsert_batch`,
//! `store::occurrences::sync_batch`, `resolve_unseen`) against a database, measured in findings per
//! second and in database round trips per finding (every command the driver sends is counted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cspm_shared::db::Mongo;
use cspm_shared::domain::finding::{AffectedPackage, Cvss, FindingClass, NewFinding, Verdict, VulnId, Vulnerability};
use cspm_shared::domain::severity::Severity;
use cspm_shared::ids::{RunId, SubJobId, TeamId};
use cspm_shared::mongodb::event::EventHandler;
use cspm_shared::mongodb::event::command::CommandEvent;
use cspm_shared::mongodb::options::ClientOptions;
use cspm_shared::store::findings::{FindingScope, resolve_unseen, upsert_batch};
use cspm_shared::store::occurrences;
use cspm_shared::time::Timestamp;

/// Counts the commands the driver starts, by name.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    by_name: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Counter {
    fn take(&self) -> (u64, BTreeMap<String, u64>) {
        let total = self.total.swap(0, Ordering::Relaxed);
        let by = self.by_name.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default();
        (total, by)
    }
}

fn finding(i: usize, cve_every: usize) -> NewFinding {
    let severity = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical][i % 4];
    let mut f = NewFinding {
        class: FindingClass::Detection,
        rule_id: format!("check_{:03}", i % 250),
        title: format!("Check {} failed on resource {i}", i % 250),
        description: "A synthetic posture finding of about the size of a real one, with some words in it.".into(),
        severity,
        verdict: if i.is_multiple_of(5) { Verdict::Pass } else { Verdict::Fail },
        resource_uid: format!("arn:aws:s3:::bench-bucket-{i}"),
        resource_type: "AwsS3Bucket".into(),
        service: Some("s3".into()),
        identity: vec![format!("prowler-aws-check_{:03}-123456789012-us-east-1-bench-bucket-{i}", i % 250)],
        remediation: Some("Block public access on the bucket.".into()),
        references: vec![
            "https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-control-block-public-access.html".into(),
        ],
        ..NewFinding::default()
    };
    f.compliance.insert("CIS-3.0".into(), vec![format!("2.1.{}", i % 7)]);
    if cve_every > 0 && i.is_multiple_of(cve_every) {
        let cve = format!("CVE-2024-{:05}", i % 90_000);
        let mut v = Vulnerability::new(VulnId::Cve(cve.clone()), cve.clone(), severity);
        v.cvss = vec![Cvss { version: "3.1".into(), base_score: 7.5, vector: None, source: Some("nvd".into()) }];
        v.package = Some(AffectedPackage {
            name: format!("lib{}", i % 40),
            version: "1.2.3".into(),
            fixed_in_version: Some("1.2.4".into()),
            ..AffectedPackage::default()
        });
        f.class = FindingClass::Vulnerability;
        f.vulnerabilities = vec![v];
    }
    f
}

fn scope(team: &TeamId, at: i64) -> FindingScope {
    FindingScope {
        team_id: team.clone(),
        tool: "prowler".into(),
        account_id: None,
        target: Some("bench".into()),
        region: "us-east-1".into(),
        run_id: RunId::new(),
        subjob_id: SubJobId::new(),
        seen_at: Timestamp::from_millis(at),
        cloud: None,
    }
}

async fn ingest(mongo: &Mongo, scope: &FindingScope, all: &[NewFinding], batch: usize) -> anyhow::Result<()> {
    for chunk in all.chunks(batch) {
        upsert_batch(mongo, scope, chunk).await?;
        occurrences::sync_batch(mongo, scope, chunk).await?;
    }
    Ok(())
}

fn report(phase: &str, n: usize, took: Duration, counter: &Counter) {
    let (total, by) = counter.take();
    let secs = took.as_secs_f64();
    let names: Vec<String> = by.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!(
        "{{\"phase\":\"{phase}\",\"findings\":{n},\"seconds\":{secs:.3},\"findings_per_s\":{:.0},\"round_trips\":{total},\"round_trips_per_finding\":{:.4},\"commands\":{{{}}}}}",
        n as f64 / secs,
        total as f64 / n.max(1) as f64,
        names.join(",")
    );
}

pub async fn persist(uri: &str, prefix: &str, count: usize, batch: usize, cve_every: usize) -> anyhow::Result<()> {
    let counter = Arc::new(Counter::default());
    let mut opts = ClientOptions::parse(uri).await?;
    let c = counter.clone();
    opts.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        if let CommandEvent::Started(s) = e {
            c.total.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut m) = c.by_name.lock() {
                *m.entry(s.command_name).or_default() += 1;
            }
        }
    }));
    let mongo = Mongo::from_client(cspm_shared::mongodb::Client::with_options(opts)?, prefix);
    mongo.ensure_indexes().await?;
    counter.take();
    let team = TeamId::new();
    let all: Vec<NewFinding> = (0..count).map(|i| finding(i, cve_every)).collect();

    let first = scope(&team, 1_000);
    let t = Instant::now();
    ingest(&mongo, &first, &all, batch).await?;
    report("persist_first_sight", count, t.elapsed(), &counter);

    let again = scope(&team, 2_000);
    let t = Instant::now();
    ingest(&mongo, &again, &all, batch).await?;
    report("persist_seen_again", count, t.elapsed(), &counter);

    // A third scan reports only half: the other half is resolved in one statement.
    let half = scope(&team, 3_000);
    let t = Instant::now();
    ingest(&mongo, &half, &all[..count / 2], batch).await?;
    let resolved = resolve_unseen(&mongo, &half).await? + occurrences::resolve_unseen(&mongo, &half).await?;
    report("persist_half_and_resolve", count / 2, t.elapsed(), &counter);
    println!("{{\"phase\":\"persist_resolved\",\"resolved\":{resolved}}}");
    Ok(())
}

/// `cspm-bench parse`: the worker's own per-finding work before storing, on this thread and one
/// consumer thread: the tool's parser streams `NewFinding`s in batches (as in the pipeline), and each
/// gets its identity (`dedup_key`). With `render`, each is also rendered as its OCSF event and
/// serialised (what `cspm-worker normalize` and the API's OCSF stream do).
pub fn parse(tool: &str, path: &std::path::Path, render: bool) -> anyhow::Result<()> {
    use cspm_shared::ocsf::event::{EventContext, render as render_event};
    use cspm_worker::tools::{FindingSink, ReportKind};
    let kind = match tool {
        "prowler" => ReportKind::Prowler,
        "trivy" => ReportKind::Trivy,
        "zap" => ReportKind::Zap,
        "nmap" => ReportKind::Nmap,
        "wapiti" => ReportKind::Wapiti,
        other => anyhow::bail!("unknown tool `{other}`"),
    };
    let bytes = std::fs::metadata(path)?.len();
    let team: TeamId = "team_00000000000000000000000000".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let file = std::fs::File::open(path)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewFinding>>(2);
    let name = path.display().to_string();
    let parser = std::thread::spawn(move || {
        let mut sink = FindingSink::new(tx, 500);
        kind.parse_reader(std::io::BufReader::with_capacity(1 << 16, file), &name, &mut sink)
    });
    let tool_name = kind.tool().as_str();
    let (mut n, mut check, mut out_bytes) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(4096);
    while let Some(batch) = rx.blocking_recv() {
        for f in &batch {
            let key = cspm_shared::store::findings::dedup_key(&team, tool_name, &f.identity);
            check = check.wrapping_add(u64::from(key.as_bytes()[0]));
            if render {
                let ctx = EventContext {
                    tool: tool_name,
                    tool_version: None,
                    dedup_key: &key,
                    seen_at: Timestamp::from_millis(1_700_000_000_000),
                    first_seen: None,
                    status: cspm_shared::domain::finding::FindingStatus::first(f.verdict),
                    cloud: None,
                };
                line.clear();
                serde_json::to_writer(&mut line, &render_event(f, &ctx))?;
                out_bytes += line.len() as u64 + 1;
            }
            n += 1;
        }
    }
    parser.join().map_err(|_| anyhow::anyhow!("the parser panicked"))?.map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "{{\"phase\":\"{}\",\"tool\":\"{tool}\",\"findings\":{n},\"bytes\":{bytes},\"seconds\":{secs:.3},\"findings_per_s\":{:.0},\"mb_per_s\":{:.1},\"output_bytes\":{out_bytes},\"peak_rss_mib\":{:.1},\"check\":{check}}}",
        if render { "parse_normalise_render" } else { "parse_normalise_fingerprint" },
        n as f64 / secs,
        bytes as f64 / secs / 1e6,
        rss / 1024.0
    );
    Ok(())
}
