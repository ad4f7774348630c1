//! `cspm-bench`: drives canary SubJobs through a running fleet (API → Redis → workers → MongoDB) and
//! reports throughput and latency from the SubJobs' own timestamps (created, claimed, finished).
//!
//! - `throughput`: starts many SubJobs at once (several multi-region runs) and measures SubJobs per
//!   second from the first creation to the last completion, with full bookkeeping (claim, lease,
//!   finish, roll-up).
//! - `latency`: starts one-SubJob runs at a steady rate and reports the delay from creation to the
//!   claim by a worker (the queueing latency Celery's baseline reports as "task start − enqueue").
//! - `persist`: the worker's findings write path alone against the database (no API needed): findings
//!   per second and round trips per finding, first sight, seen again, and half resolved.
//! - `containers`: the Docker runner's overhead per SubJob and how many containers run side by side
//!   (the Docker engine only).
//! - `queue`, `bookkeeping`: the queue alone and the database's SubJob bookkeeping alone (no fleet),
//!   the upper bounds of the fleet's figures on this machine (see `floor`).
//! - `compliance`: one compliance sync of a team with many findings against the full SCF catalog
//!   imported from the fixtures (time and peak memory; the database only).

mod compliance;
mod containers;
mod floor;
mod ingest;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bson::doc;
use clap::{Parser, Subcommand};
use cspm_shared::db::Mongo;
use futures::TryStreamExt;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "cspm-bench", about = "Benchmarks a running CSPM fleet with canary SubJobs")]
struct Cli {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    #[arg(long, default_value = "admin@cspm.local")]
    email: String,
    /// The API password (not needed by `persist`).
    #[arg(long, env = "CSPM_BENCH_PASSWORD", default_value = "")]
    password: String,
    /// MongoDB URI and database prefix of the fleet (timestamps are read from the SubJobs).
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    mongodb_uri: String,
    #[arg(long, default_value = "")]
    db_prefix: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// SubJobs per second, end to end, for a burst of SubJobs.
    Throughput {
        #[arg(long, default_value_t = 5000)]
        subjobs: usize,
        /// How many runs (accounts) the SubJobs are spread over.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// Creation-to-claim latency of SubJobs arriving at a steady rate, in runs of `per_run` SubJobs.
    Latency {
        /// SubJobs per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// SubJobs in all.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// SubJobs per run (1: every SubJob is a whole run, with its creation and roll-up).
        #[arg(long, default_value_t = 10)]
        per_run: usize,
    },
    /// Findings per second through the worker's parser and identity (no database, no API).
    Parse {
        /// prowler, trivy, zap, nmap or wapiti.
        #[arg(long, default_value = "prowler")]
        tool: String,
        /// Also render each finding as its OCSF event and serialise it.
        #[arg(long)]
        render: bool,
        file: std::path::PathBuf,
    },
    /// The Docker runner's cost per SubJob: container round trips, then `parallel` at once.
    Containers {
        /// An image with `sh` (scripts/images.sh builds cspm-base:bookworm).
        #[arg(long, default_value = "cspm-base:bookworm")]
        image: String,
        #[arg(long, default_value_t = 30)]
        count: usize,
        /// Containers at once (a worker's default concurrency: 4 cloud + 2 native).
        #[arg(long, default_value_t = 6)]
        parallel: usize,
    },
    /// One compliance sync: `findings` findings against the catalog imported from the fixtures.
    Compliance {
        #[arg(long, default_value_t = 100_000)]
        findings: usize,
        /// The fixtures directory (the operator's SCF files and Prowler's check files).
        #[arg(long, env = "CSPM_FIXTURES_DIR", default_value = "/work/shared/fixtures")]
        fixtures: std::path::PathBuf,
        /// Only sync this team (stored by an earlier run, which prints it), in a fresh process.
        #[arg(long)]
        sync_only: Option<cspm_shared::ids::TeamId>,
    },
    /// Sign-in answer times for an unknown address and for a known one with a wrong password,
    /// interleaved: they must not tell the two apart (run against an API whose lockout threshold is
    /// above `count`, or the known account locks, which answers the same way again).
    SignIn {
        #[arg(long, default_value_t = 30)]
        count: usize,
    },
    /// The queue alone (apalis-redis as the workers configure it, a handler that does nothing):
    /// messages per second for a burst, and push-to-start delay of messages pushed one at a time.
    Queue {
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Worker instances, each with its own name and concurrency (as two `cspm-worker` processes).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Concurrency of each (the workers' default cloud concurrency is 16 in the fleet benchmark).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Messages pushed one at a time at `rate` per second, for the delay from push to start.
        #[arg(long, default_value_t = 1000)]
        paced: usize,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
    },
    /// The database's SubJob bookkeeping alone: insert (a run's batch), claim with a lease, finish,
    /// in the batches the workers' ledger forms.
    Bookkeeping {
        #[arg(long, default_value_t = 20_000)]
        subjobs: usize,
        #[arg(long, default_value_t = 500)]
        per_run: usize,
        /// SubJobs per claim and per finish round trip.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Concurrent claim-and-finish loops (two workers: 2).
        #[arg(long, default_value_t = 2)]
        lanes: usize,
    },
    /// Findings per second through the worker's write path (batched upserts, lifecycle, occurrences).
    Persist {
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Findings per batch (the worker uses 500).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Every n-th finding carries a CVE (0: none).
        #[arg(long, default_value_t = 4)]
        cve_every: usize,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn account(&self, n: usize, regions: &[String]) -> anyhow::Result<String> {
        let (s, b) = self
            .post(
                "/api/cloud-accounts",
                json!({ "provider": "aws", "account_id": format!("{:012}", 700_000_000_000u64 + n as u64),
                        "account_name": format!("bench {n}"), "regions": regions }),
            )
            .await?;
        if s != 201 {
            bail!("creating an account: {s} {b}");
        }
        Ok(b["id"].as_str().unwrap_or_default().to_string())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Parse { tool, render, file } = &cli.cmd {
        return tokio::task::block_in_place(|| ingest::parse(tool, file, *render));
    }
    if let Cmd::Containers { image, count, parallel } = &cli.cmd {
        return containers::run(image, (*count).max(1), (*parallel).max(1)).await;
    }
    if let Cmd::Persist { count, batch, cve_every } = cli.cmd {
        return ingest::persist(&cli.mongodb_uri, &cli.db_prefix, count, batch.max(1), cve_every).await;
    }
    if let Cmd::Queue { redis_url, messages, workers, concurrency, paced, rate } = &cli.cmd {
        return floor::queue(redis_url, *messages, (*workers).max(1), (*concurrency).max(1), *paced, rate.max(1.0))
            .await;
    }
    if let Cmd::Bookkeeping { subjobs, per_run, batch, lanes } = cli.cmd {
        return floor::bookkeeping(&cli.mongodb_uri, &cli.db_prefix, subjobs, per_run.max(1), batch.max(1), lanes)
            .await;
    }
    if let Cmd::Compliance { findings, fixtures, sync_only } = &cli.cmd {
        return compliance::run(&cli.mongodb_uri, &cli.db_prefix, fixtures, *findings, sync_only.clone()).await;
    }
    cspm_shared::artifacts::install_tls_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).pool_max_idle_per_host(64).build()?;
    if let Cmd::SignIn { count } = cli.cmd {
        return sign_in_timing(&http, &cli.api, &cli.email, count.max(1)).await;
    }
    let login: Value = http
        .post(format!("{}/api/auth/login", cli.api))
        .json(&json!({ "email": cli.email, "password": cli.password }))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().context("sign-in failed")?.to_string();
    let client = Client { http, base: cli.api.clone(), token };
    let mongo = Mongo::connect(&cli.mongodb_uri, &cli.db_prefix, "cspm-bench", Duration::from_secs(5)).await?;
    match cli.cmd {
        Cmd::Throughput { subjobs, runs } => throughput(&client, &mongo, subjobs, runs).await,
        Cmd::Latency { rate, count, per_run } => latency(&client, &mongo, rate, count, per_run.max(1)).await,
        Cmd::Persist { .. }
        | Cmd::Parse { .. }
        | Cmd::Containers { .. }
        | Cmd::Compliance { .. }
        | Cmd::Queue { .. }
        | Cmd::Bookkeeping { .. }
        | Cmd::SignIn { .. } => Ok(()),
    }
}

/// Times failed sign-ins of an address that has no account and of `known` with a wrong password,
/// alternating the two so that drift in the machine's load falls on both alike.
async fn sign_in_timing(http: &reqwest::Client, api: &str, known: &str, count: usize) -> anyhow::Result<()> {
    let cases = [("unknown_user", "nobody-at-all@bench.invalid"), ("wrong_password", known)];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut answers: [BTreeSet<(u16, String)>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for i in 0..count + 1 {
        for (c, (_, email)) in cases.iter().enumerate() {
            let started = Instant::now();
            let resp = http
                .post(format!("{api}/api/auth/login"))
                .json(&json!({ "email": email, "password": "Not-The-Password-1!" }))
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            // The first round warms connections and caches up.
            if i > 0 {
                times[c].push(ms);
                answers[c].insert((status, body["detail"].as_str().unwrap_or_default().to_string()));
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (c, (name, _)) in cases.iter().enumerate() {
        let t = &mut times[c];
        t.sort_by(f64::total_cmp);
        out.insert(
            (*name).into(),
            json!({ "p50_ms": pct(t, 50.0), "p95_ms": pct(t, 95.0), "min_ms": t[0], "max_ms": t[t.len() - 1] }),
        );
    }
    out.insert("phase".into(), json!("sign_in_timing"));
    out.insert("attempts_each".into(), json!(count));
    out.insert("same_answers".into(), json!(answers[0] == answers[1]));
    out.insert("p50_difference_ms".into(), json!(pct(&times[1], 50.0) - pct(&times[0], 50.0)));
    println!("{}", Value::Object(out));
    Ok(())
}

async fn throughput(client: &Client, mongo: &Mongo, subjobs: usize, runs: usize) -> anyhow::Result<()> {
    let per_run = subjobs / runs;
    // Regions × canary labels per run: 10 labels, the rest regions.
    let labels = 10.min(per_run);
    let regions: Vec<String> = (0..per_run / labels).map(|i| format!("bench-{i:03}")).collect();
    let tools: Vec<String> = (0..labels).map(|i| format!("canary:l{i}")).collect();
    let mut accounts = Vec::new();
    for i in 0..runs {
        accounts.push(client.account(i, &regions).await?);
    }
    let started = Instant::now();
    let mut ids = Vec::new();
    for a in &accounts {
        let (s, b) = client.post("/api/cloud-scans/initiate", json!({ "account_id": a, "tools": tools })).await?;
        if s != 202 {
            bail!("starting a run: {s} {b}");
        }
        ids.push(b["run_id"].as_str().unwrap_or_default().to_string());
    }
    let created_in = started.elapsed();
    let total = (regions.len() * tools.len() * runs) as u64;
    wait_runs(mongo, &ids, Duration::from_secs(3600)).await?;
    let wall = started.elapsed();
    let (first_created, last_finished, _) = span(mongo, &ids).await?;
    let secs = (last_finished - first_created) as f64 / 1000.0;
    println!(
        "{{\"phase\":\"throughput\",\"subjobs\":{total},\"runs\":{runs},\"seconds\":{secs:.3},\"subjobs_per_s\":{:.1},\"create_seconds\":{:.3},\"wall_seconds\":{:.3}}}",
        total as f64 / secs,
        created_in.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}

async fn latency(client: &Client, mongo: &Mongo, rate: f64, count: usize, per_run: usize) -> anyhow::Result<()> {
    let region = vec!["us-east-1".to_string()];
    let runs = count.div_ceil(per_run);
    let tools: Vec<String> = (0..per_run).map(|i| format!("canary:l{i}")).collect();
    let mut accounts = Vec::with_capacity(runs);
    for i in 0..runs {
        // Distinct provider ids per phase, so that several phases can run against one fleet.
        accounts.push(client.account(100_000 * per_run + i, &region).await?);
    }
    let period = Duration::from_secs_f64(per_run as f64 / rate);
    let start = tokio::time::Instant::now();
    let mut pending = Vec::with_capacity(count);
    for (i, a) in accounts.iter().enumerate() {
        tokio::time::sleep_until(start + period * i as u32).await;
        let c = client.http.clone();
        let url = format!("{}/api/cloud-scans/initiate", client.base);
        let token = client.token.clone();
        let body = json!({ "account_id": a, "tools": tools });
        pending.push(tokio::spawn(async move {
            let r = c.post(url).bearer_auth(token).json(&body).send().await?;
            let v: Value = r.json().await?;
            anyhow::Ok(v["run_id"].as_str().unwrap_or_default().to_string())
        }));
    }
    let offered = start.elapsed();
    let mut ids = Vec::with_capacity(count);
    for p in pending {
        ids.push(p.await??);
    }
    wait_runs(mongo, &ids, Duration::from_secs(600)).await?;
    let mut claim = Vec::new();
    let mut from_enqueue = Vec::new();
    let mut end_to_end = Vec::new();
    for chunk in ids.chunks(500) {
        let runs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let jobs: Vec<bson::Document> =
            mongo.sub_jobs.find(doc! { "run_id": { "$in": runs } }).await?.try_collect().await?;
        for j in jobs {
            let created = j.get_i64("created_at").unwrap_or(0);
            let started = j.get_i64("started_at").unwrap_or(0);
            let finished = j.get_i64("finished_at").unwrap_or(0);
            claim.push((started - created) as f64);
            // `dispatched_at` is stamped just before the SubJob is written and pushed to Redis.
            if let Ok(dispatched) = j.get_i64("dispatched_at") {
                from_enqueue.push((started - dispatched) as f64);
            }
            end_to_end.push((finished - created) as f64);
        }
    }
    claim.sort_by(f64::total_cmp);
    from_enqueue.sort_by(f64::total_cmp);
    end_to_end.sort_by(f64::total_cmp);
    println!(
        "{{\"phase\":\"latency\",\"rate\":{rate},\"per_run\":{per_run},\"subjobs\":{},\"offered_seconds\":{:.2},\"claim_ms_p50\":{},\"claim_ms_p99\":{},\"claim_ms_max\":{},\"enqueue_to_claim_ms_p50\":{},\"enqueue_to_claim_ms_p99\":{},\"finish_ms_p50\":{},\"finish_ms_p99\":{}}}",
        claim.len(),
        offered.as_secs_f64(),
        pct(&claim, 50.0),
        pct(&claim, 99.0),
        claim.last().copied().unwrap_or(0.0),
        pct(&from_enqueue, 50.0),
        pct(&from_enqueue, 99.0),
        pct(&end_to_end, 50.0),
        pct(&end_to_end, 99.0)
    );
    Ok(())
}

/// Nearest-rank percentile (as the Celery baseline computes it).
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

async fn wait_runs(mongo: &Mongo, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let active = mongo
            .scan_runs
            .count_documents(doc! { "_id": { "$in": ids.to_vec() }, "status": { "$in": ["queued", "running"] } })
            .await?;
        if active == 0 {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{active} runs still active after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (first SubJob creation, last SubJob completion, count) over the runs, in epoch milliseconds.
async fn span(mongo: &Mongo, ids: &[String]) -> anyhow::Result<(i64, i64, i64)> {
    let rows: Vec<bson::Document> = mongo
        .sub_jobs
        .aggregate(vec![
            doc! { "$match": { "run_id": { "$in": ids.to_vec() } } },
            doc! { "$group": { "_id": bson::Bson::Null, "first": { "$min": "$created_at" }, "last": { "$max": "$finished_at" }, "n": { "$sum": 1 } } },
        ])
        .await?
        .try_collect()
        .await?;
    let row = rows.first().context("no SubJobs")?;
    let num = |k: &str| match row.get(k) {
        Some(bson::Bson::Int64(n)) => *n,
        Some(bson::Bson::Int32(n)) => i64::from(*n),
        Some(bson::Bson::Double(f)) => *f as i64,
        _ => 0,
    };
    Ok((num("first"), num("last"), num("n")))
}
