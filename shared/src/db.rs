//! MongoDB: the databases and collections of the design (section 9), and their indexes.
//!
//! Every document of the fleet lives here; Redis only carries small messages that point at documents.
//! A database-name prefix (`CSPM_DB_PREFIX`) lets tests give every test its own databases on one server.

use std::time::Duration;

use bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use crate::error::{StoreError, StoreResult};

/// The logical databases (names as in the seed product).
pub const PLATFORM_DB: &str = "cspm_platform";
pub const ORCHESTRATION_DB: &str = "cspm_orchestration";
pub const CLOUD_SECURITY_DB: &str = "cspm_cloud_security";
pub const NATIVE_SCANS_DB: &str = "native_scans";
pub const VULNERABILITIES_DB: &str = "cspm_vulnerabilities";
pub const THREAT_INTELLIGENCE_DB: &str = "cspm_threat_intelligence";
/// The compliance engine: the SCF catalog and each team's control states (`crate::compliance`).
pub const COMPLIANCE_DB: &str = "cspm_compliance";

/// Handles to every collection the fleet uses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Mongo {
    client: Client,
    pub users: Collection<Document>,
    pub teams: Collection<Document>,
    /// Signed-in sessions (`crate::store::sessions`): a token is honoured only while its session is here.
    pub sessions: Collection<Document>,
    /// API keys for automation (`crate::store::api_keys`): hashes only, never the key.
    pub api_keys: Collection<Document>,
    /// The audit trail (`crate::store::audit`): insert-only.
    pub audit: Collection<Document>,
    pub scan_runs: Collection<Document>,
    pub sub_jobs: Collection<Document>,
    /// Scan schedules and their fires (`crate::store::schedules`).
    pub schedules: Collection<Document>,
    pub schedule_fires: Collection<Document>,
    /// Metadata of the raw scanner artifacts kept in object storage (`crate::artifacts`).
    pub artifacts: Collection<Document>,
    pub cloud_accounts: Collection<Document>,
    pub findings: Collection<Document>,
    pub occurrences: Collection<Document>,
    pub scan_results: Collection<Document>,
    /// The CISA KEV catalog (`crate::kev`): one document per imported catalog, its entries, and the
    /// pointer to the current one.
    pub kev_catalogs: Collection<Document>,
    pub kev_entries: Collection<Document>,
    pub kev_state: Collection<Document>,
    /// The compliance engine's collections (`crate::compliance::store`).
    pub compliance: ComplianceCollections,
    platform: Database,
    cloud_security: Database,
    orchestration: Database,
    vulnerabilities: Database,
    threat_intelligence: Database,
}

impl Mongo {
    /// Connects lazily: the driver opens connections on first use, so a process can start while the
    /// database is down and become ready when it returns. `timeout` bounds server selection and connects,
    /// so that a request fails fast (503) instead of hanging when the database is away.
    pub async fn connect(uri: &str, db_prefix: &str, app_name: &str, timeout: Duration) -> StoreResult<Self> {
        let mut opts = ClientOptions::parse(uri).await.map_err(|e| StoreError::Database(e.to_string()))?;
        opts.app_name = Some(app_name.to_string());
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.max_pool_size = Some(opts.max_pool_size.unwrap_or(32));
        let client = Client::with_options(opts).map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self::from_client(client, db_prefix))
    }

    pub fn from_client(client: Client, prefix: &str) -> Self {
        let db = |name: &str| client.database(&format!("{prefix}{name}"));
        let platform = db(PLATFORM_DB);
        let orchestration = db(ORCHESTRATION_DB);
        let cloud = db(CLOUD_SECURITY_DB);
        let native = db(NATIVE_SCANS_DB);
        let vulnerabilities = db(VULNERABILITIES_DB);
        let threat_intelligence = db(THREAT_INTELLIGENCE_DB);
        Self {
            users: platform.collection("users"),
            teams: platform.collection("teams"),
            sessions: platform.collection("sessions"),
            api_keys: platform.collection("api_keys"),
            audit: platform.collection("audit_log"),
            scan_runs: orchestration.collection("scan_runs"),
            sub_jobs: orchestration.collection("sub_jobs"),
            schedules: orchestration.collection("schedules"),
            schedule_fires: orchestration.collection("schedule_fires"),
            artifacts: orchestration.collection("artifacts"),
            cloud_accounts: cloud.collection("cloud_accounts"),
            findings: cloud.collection("findings"),
            occurrences: vulnerabilities.collection("vulnerability_occurrences"),
            scan_results: native.collection("scan_results"),
            kev_catalogs: threat_intelligence.collection("kev_catalogs"),
            kev_entries: threat_intelligence.collection("kev_vulnerabilities"),
            kev_state: threat_intelligence.collection("kev_state"),
            compliance: ComplianceCollections::new(&db(COMPLIANCE_DB)),
            platform,
            cloud_security: cloud,
            orchestration,
            vulnerabilities,
            threat_intelligence,
            client,
        }
    }

    pub fn sub_jobs_db(&self) -> &Database {
        &self.orchestration
    }

    pub fn cloud_security_db(&self) -> &Database {
        &self.cloud_security
    }

    pub fn vulnerabilities_db(&self) -> &Database {
        &self.vulnerabilities
    }

    pub fn threat_intelligence_db(&self) -> &Database {
        &self.threat_intelligence
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the database answers a `ping`.
    pub async fn ping(&self) -> StoreResult<()> {
        self.platform.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Creates every index the fleet relies on. Idempotent: creating an existing index is a no-op.
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        for (coll, specs) in self.index_specs() {
            let models: Vec<IndexModel> = specs
                .into_iter()
                .map(|(name, keys, unique)| {
                    IndexModel::builder()
                        .keys(keys)
                        .options(IndexOptions::builder().name(name.to_string()).unique(unique).build())
                        .build()
                })
                .collect();
            coll.create_indexes(models).await?;
        }
        Ok(())
    }

    /// The indexes, as (collection, [(name, keys, unique)]); `docs/ARCHITECTURE.md` lists the same.
    #[allow(clippy::type_complexity)]
    fn index_specs(&self) -> Vec<(&Collection<Document>, Vec<(&'static str, Document, bool)>)> {
        let mut specs = self.core_index_specs();
        specs.extend(self.compliance.index_specs());
        specs
    }

    #[allow(clippy::type_complexity)]
    fn core_index_specs(&self) -> Vec<(&Collection<Document>, Vec<(&'static str, Document, bool)>)> {
        vec![
            (&self.users, vec![("uniq_email", doc! { "email": 1 }, true)]),
            (&self.teams, vec![("uniq_name", doc! { "name": 1 }, true)]),
            (
                &self.sessions,
                vec![
                    ("by_user", doc! { "user_id": 1, "created_at": -1 }, false),
                    ("by_expiry", doc! { "expires_at": 1 }, false),
                ],
            ),
            (
                &self.api_keys,
                vec![
                    ("uniq_hash", doc! { "key_hash": 1 }, true),
                    ("by_owner", doc! { "owner_id": 1, "created_at": -1 }, false),
                    ("by_team", doc! { "team_id": 1, "created_at": -1 }, false),
                ],
            ),
            (
                &self.audit,
                vec![
                    ("by_team_time", doc! { "team_id": 1, "at": -1 }, false),
                    ("by_actor_time", doc! { "actor_id": 1, "at": -1 }, false),
                    ("by_time", doc! { "at": 1 }, false),
                ],
            ),
            (
                &self.cloud_accounts,
                vec![(
                    "uniq_team_provider_account",
                    doc! { "team_id": 1, "provider": 1, "provider_account_id": 1 },
                    true,
                )],
            ),
            (
                &self.scan_runs,
                vec![
                    ("team_created", doc! { "team_id": 1, "created_at": -1 }, false),
                    ("team_account_created", doc! { "team_id": 1, "account_id": 1, "created_at": -1 }, false),
                    ("status_created", doc! { "status": 1, "created_at": 1 }, false),
                ],
            ),
            (
                &self.sub_jobs,
                vec![
                    ("run", doc! { "run_id": 1, "status": 1 }, false),
                    ("dispatch", doc! { "queue": 1, "status": 1, "dispatched_at": 1 }, false),
                    ("lease", doc! { "status": 1, "lease_expires_at": 1 }, false),
                ],
            ),
            (
                &self.schedules,
                vec![
                    ("team_created", doc! { "team_id": 1, "created_at": 1 }, false),
                    ("due", doc! { "status": 1, "next_fire_at": 1 }, false),
                    ("account", doc! { "account_id": 1, "status": 1 }, false),
                ],
            ),
            (
                &self.schedule_fires,
                vec![
                    ("schedule_fire", doc! { "schedule_id": 1, "fire_at": -1 }, false),
                    ("status_lease", doc! { "status": 1, "lease_until": 1 }, false),
                    ("account_outcomes", doc! { "account_id": 1, "status": 1, "run_finished_at": -1 }, false),
                    ("created", doc! { "created_at": 1 }, false),
                ],
            ),
            (
                &self.artifacts,
                vec![("team_run", doc! { "team_id": 1, "run_id": 1 }, false), ("uniq_key", doc! { "key": 1 }, true)],
            ),
            (
                &self.findings,
                vec![
                    ("uniq_dedup_key", doc! { "dedup_key": 1 }, true),
                    ("team_last_seen", doc! { "team_id": 1, "last_seen": -1 }, false),
                    ("team_run", doc! { "team_id": 1, "last_run_id": 1 }, false),
                    (
                        "scope_status",
                        doc! { "team_id": 1, "tool": 1, "account_id": 1, "target": 1, "region": 1, "status": 1 },
                        false,
                    ),
                    ("team_status_severity", doc! { "team_id": 1, "status": 1, "severity_id": -1 }, false),
                    ("team_rule", doc! { "team_id": 1, "rule_id": 1 }, false),
                    ("first_subjob", doc! { "first_subjob_id": 1 }, false),
                    ("resolved_by_subjob", doc! { "resolution.subjob_id": 1 }, false),
                    ("reopened_by_subjob", doc! { "reopened_subjob_id": 1 }, false),
                    // KEV re-enrichment finds every team's findings of a CVE.
                    ("cve_status", doc! { "cves": 1, "status": 1 }, false),
                ],
            ),
            (
                &self.occurrences,
                vec![
                    ("team_status_risk", doc! { "team_id": 1, "status": 1, "risk_score": -1 }, false),
                    ("team_vulnerability", doc! { "team_id": 1, "vulnerability_id": 1 }, false),
                    ("team_asset", doc! { "team_id": 1, "asset_id": 1 }, false),
                    ("vulnerability_status", doc! { "vulnerability_id": 1, "status": 1 }, false),
                    (
                        "scope_status",
                        doc! { "team_id": 1, "tool": 1, "account_id": 1, "target": 1, "region": 1, "status": 1 },
                        false,
                    ),
                ],
            ),
            (&self.kev_entries, vec![("uniq_catalog_cve", doc! { "catalog_id": 1, "cve_id": 1 }, true)]),
            (
                &self.scan_results,
                vec![
                    ("uniq_scan_id", doc! { "scan_id": 1 }, true),
                    ("team_created", doc! { "team_id": 1, "created_at": -1 }, false),
                ],
            ),
        ]
    }
}

/// The collections of `cspm_compliance`.
#[derive(Clone, Debug)]
pub struct ComplianceCollections {
    /// One document per imported catalog version (`status`: `writing`, then `complete`).
    pub catalogs: Collection<Document>,
    /// Which catalog version is in force (`_id: "scf"`), flipped after a version is complete.
    pub catalog_pointer: Collection<Document>,
    /// The controls of every stored version (`_id`: catalog id and SCF id).
    pub controls: Collection<Document>,
    /// The tools' check → requirement rows of every stored version.
    pub check_mappings: Collection<Document>,
    /// A team's state of one control (`_id`: team and SCF id): derived state, evidence, override.
    pub control_state: Collection<Document>,
    /// One document per sync of a team.
    pub sync_jobs: Collection<Document>,
    /// Per team: the sync in progress (the one-at-a-time claim) and the last ones.
    pub teams: Collection<Document>,
    /// Per team and framework: the score threshold.
    pub thresholds: Collection<Document>,
    database: Database,
}

impl ComplianceCollections {
    fn new(db: &Database) -> Self {
        Self {
            catalogs: db.collection("scf_catalogs"),
            catalog_pointer: db.collection("scf_catalog_pointer"),
            controls: db.collection("scf_controls"),
            check_mappings: db.collection("check_mappings"),
            control_state: db.collection("control_state"),
            sync_jobs: db.collection("sync_jobs"),
            teams: db.collection("compliance_teams"),
            thresholds: db.collection("thresholds"),
            database: db.clone(),
        }
    }

    /// The `cspm_compliance` database (for batched writes).
    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// Runs a database command on `cspm_compliance` (batched writes).
    pub async fn command(&self, command: Document) -> StoreResult<Document> {
        Ok(self.database.run_command(command).await?)
    }

    #[allow(clippy::type_complexity)]
    fn index_specs(&self) -> Vec<(&Collection<Document>, Vec<(&'static str, Document, bool)>)> {
        vec![
            (&self.controls, vec![("catalog_scf", doc! { "catalog_id": 1, "scf_id": 1 }, false)]),
            (&self.check_mappings, vec![("catalog", doc! { "catalog_id": 1 }, false)]),
            (&self.control_state, vec![("team_scf", doc! { "team_id": 1, "scf_id": 1 }, false)]),
            (&self.sync_jobs, vec![("team_created", doc! { "team_id": 1, "created_at": -1 }, false)]),
            (&self.thresholds, vec![("team", doc! { "team_id": 1 }, false)]),
        ]
    }
}
