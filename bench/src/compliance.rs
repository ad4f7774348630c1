//! `cspm-bench compliance`: one compliance sync of a team with many findings against a full catalog.
//!
//! Imports the operator's SCF catalog from the fixture files (the 1,451-control JSON catalog, titles
//! from the YAML one, its crosswalks and Prowler's check → requirement files), stores `findings`
//! synthetic findings through the worker's write path (Prowler checks named in those check files, with
//! the compliance metadata Prowler writes for them, plus scanner findings without any, which take the
//! keyword path), then times the sync and reads the process's peak resident memory during it (reset
//! through `/proc/self/clear_refs` first, so it is the sync's own peak).

use std::path::Path;
use std::time::Instant;

use cspm_shared::compliance::catalog::{self, PartKind, Upload};
use cspm_shared::compliance::store;
use cspm_shared::compliance::sync::{self, SyncStart, SyncTrigger};
use cspm_shared::db::Mongo;
use cspm_shared::domain::finding::{FindingClass, NewFinding, Verdict};
use cspm_shared::domain::severity::Severity;
use cspm_shared::ids::{RunId, SubJobId, TeamId, UserId};
use cspm_shared::store::findings::{FindingScope, upsert_batch};
use cspm_shared::time::Timestamp;

fn read(dir: &Path, kind: PartKind, rel: &str) -> anyhow::Result<Upload> {
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Upload { kind, name: rel.rsplit('/').next().unwrap_or(rel).to_string(), bytes })
}

/// Resident memory now and at its peak since the last reset, in MiB (Linux).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// (check, compliance) pairs as Prowler would write them, from its check → requirement files.
fn prowler_checks(
    checks: &[catalog::CheckRequirement],
) -> Vec<(String, std::collections::BTreeMap<String, Vec<String>>)> {
    let mut by_check: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>> =
        Default::default();
    for r in checks {
        for c in &r.checks {
            by_check.entry(c.clone()).or_default().entry(r.framework.clone()).or_default().push(r.id.clone());
        }
    }
    by_check.into_iter().collect()
}

/// Scanner findings without compliance metadata (generic words only).
const OTHER_TITLES: &[&str] = &[
    "Storage volume is not encrypted at rest",
    "Password policy allows short passwords",
    "Audit logging is disabled for the account",
    "Open port exposes a remote administration service",
    "Container image runs a package with a known vulnerability",
    "TLS certificate is expired on the web endpoint",
    "Backup retention is shorter than required",
    "Multi-factor authentication is not enforced for privileged users",
];

/// `sync_only`: the catalog and the team's findings are already stored (by an earlier run of this
/// command, which prints the team): only the sync, in this fresh process, so that its memory is the
/// sync's alone.
pub async fn run(
    uri: &str,
    prefix: &str,
    fixtures: &Path,
    count: usize,
    sync_only: Option<TeamId>,
) -> anyhow::Result<()> {
    let mongo = Mongo::connect(uri, prefix, "cspm-bench", std::time::Duration::from_secs(10)).await?;
    if let Some(team) = sync_only {
        return sync_once(&mongo, &team).await;
    }
    mongo.ensure_indexes().await?;
    let mut uploads = vec![
        read(fixtures, PartKind::Catalog, "scf/security-controls-mcp/scf-controls.json")?,
        read(fixtures, PartKind::Catalog, "scf/ciso-assistant/scf-2025.2.2.yaml")?,
        read(fixtures, PartKind::Crosswalk, "scf/security-controls-mcp/framework-to-scf.json")?,
    ];
    for fw in ["nist-csf-2.0", "iso27001-2022", "cis-controls-v8", "pcidss-4_0"] {
        uploads.push(read(
            fixtures,
            PartKind::Crosswalk,
            &format!("scf/ciso-assistant/mapping-{fw}-and-scf-2025.2.2.yaml"),
        )?);
    }
    for f in ["nist_csf_2.0_aws", "iso27001_2022_aws", "cis_5.0_aws", "cis_controls_8.1"] {
        uploads.push(read(fixtures, PartKind::CheckMapping, &format!("prowler/compliance/{f}.json"))?);
    }
    let t = Instant::now();
    let cat = tokio::task::spawn_blocking(move || catalog::assemble(&uploads)).await??;
    let parse_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (record, _) = store::store_catalog(&mongo, &cat, &UserId::new()).await?;
    let store_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"phase\":\"compliance_import\",\"controls\":{},\"crosswalk_pairs\":{},\"check_requirements\":{},\"parse_seconds\":{parse_s:.3},\"store_seconds\":{store_s:.3}}}",
        record.controls, record.crosswalk_pairs, record.check_requirements
    );

    let checks = prowler_checks(&cat.checks);
    drop(cat);
    let team = TeamId::new();
    let scope = FindingScope {
        team_id: team.clone(),
        tool: "prowler".into(),
        account_id: None,
        target: Some("bench".into()),
        region: "us-east-1".into(),
        run_id: RunId::new(),
        subjob_id: SubJobId::new(),
        seen_at: Timestamp::now(),
        cloud: None,
    };
    let t = Instant::now();
    let mut batch = Vec::with_capacity(500);
    for i in 0..count {
        // Four in five are Prowler checks (with their requirements), one in five other scanners' findings.
        let f = if i % 5 != 4 && !checks.is_empty() {
            let (check, compliance) = &checks[i % checks.len()];
            NewFinding {
                class: FindingClass::Compliance,
                rule_id: check.clone(),
                title: check.replace('_', " "),
                severity: Severity::Medium,
                verdict: [Verdict::Fail, Verdict::Pass, Verdict::Pass, Verdict::Manual][i % 4],
                resource_uid: format!("arn:aws:bench:::resource-{i}"),
                resource_type: "AwsResource".into(),
                service: check.split('_').next().map(str::to_string),
                identity: vec![format!("bench-{i}")],
                compliance: compliance.clone(),
                ..NewFinding::default()
            }
        } else {
            NewFinding {
                class: FindingClass::Detection,
                rule_id: format!("rule_{}", i % 97),
                title: format!("{} ({})", OTHER_TITLES[i % OTHER_TITLES.len()], i % 97),
                severity: Severity::High,
                verdict: Verdict::Fail,
                resource_uid: format!("host-{i}"),
                resource_type: "host".into(),
                identity: vec![format!("bench-{i}")],
                ..NewFinding::default()
            }
        };
        batch.push(f);
        if batch.len() == 500 {
            upsert_batch(&mongo, &scope, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        upsert_batch(&mongo, &scope, &batch).await?;
    }
    println!(
        "{{\"phase\":\"compliance_findings\",\"team\":\"{team}\",\"findings\":{count},\"store_seconds\":{:.3}}}",
        t.elapsed().as_secs_f64()
    );
    sync_once(&mongo, &team).await
}

async fn sync_once(mongo: &Mongo, team: &TeamId) -> anyhow::Result<()> {
    // The sync's own peak: reset the high-water mark first.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss_before, _) = rss_mib();
    let SyncStart::Claimed(claimed) = sync::claim(mongo, team, SyncTrigger::Manual, None).await? else {
        anyhow::bail!("a sync of the bench team is already running");
    };
    let t = Instant::now();
    let result = sync::run(mongo, claimed).await.map_err(|e| anyhow::anyhow!(e))?;
    let secs = t.elapsed().as_secs_f64();
    let (rss_after, peak) = rss_mib();
    println!(
        "{{\"phase\":\"compliance_sync\",\"findings\":{},\"controls\":{},\"controls_with_evidence\":{},\"mapped\":{},\"unmapped\":{},\"by_path\":{},\"seconds\":{secs:.3},\"findings_per_s\":{:.0},\"rss_before_mib\":{rss_before:.1},\"rss_peak_mib\":{peak:.1},\"rss_after_mib\":{rss_after:.1}}}",
        result.findings_read,
        result.catalog_controls,
        result.controls_with_evidence,
        result.mapped_findings,
        result.unmapped_findings,
        serde_json::to_string(&result.findings_by_path)?,
        result.findings_read as f64 / secs,
    );
    Ok(())
}
