//! Nmap: network discovery. Runs an unprivileged connect scan of the SubJob's target (resolved and
//! checked against the SSRF policy again, here, so that a name cannot resolve differently between the
//! API's check and the scan), writes XML, and reports every open port as a finding whose identity is
//! (host, port, protocol, service).

use std::collections::HashSet;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;

use bson::{Document, doc};
use cspm_shared::domain::finding::{AffectedPackage, Cvss, Endpoint, FindingClass, VulnId, Vulnerability};
use cspm_shared::domain::native::{NetworkScanType, Target};
use cspm_shared::domain::severity::Severity;
use cspm_shared::store::findings::NewFinding;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::{FindingSink, JobContext, Plan, ToolError, open_output};
use crate::config::WorkerConfig;
use crate::runner::ProcessSpec;
use crate::runner::local::find_executable;

pub const OUTPUT_FILE: &str = "nmap.xml";
/// Script output kept per script (the rest is cut).
const MAX_SCRIPT_OUTPUT: usize = 2048;
/// Host names kept per host and CPEs per port: every finding of the host (port) carries them, so an
/// unbounded list would cost (ports × names) or (CVEs × CPEs) in time and memory.
const MAX_LISTED: usize = 32;

pub fn check_available(config: &WorkerConfig) -> Result<(), ToolError> {
    find_executable(&config.nmap_path).map(|_| ()).ok_or_else(|| {
        ToolError::new(format!(
            "tool `nmap` is not available on this worker: `{}` was not found (install nmap or set CSPM_NMAP_PATH)",
            config.nmap_path
        ))
    })
}

pub async fn plan(ctx: &JobContext<'_>) -> Result<Plan, ToolError> {
    let spec = ctx.job.native.as_ref().ok_or_else(|| ToolError::new("the SubJob has no native target"))?;
    let target = Target::parse(&spec.target).map_err(ToolError::new)?;
    let addrs = ctx.config.target_policy.resolve(&target).await.map_err(ToolError::new)?;
    let targets: Vec<String> = match &target {
        Target::Cidr(..) => vec![target.to_string()],
        _ => {
            // nmap scans one address family per run: prefer IPv4 when the name has both.
            let v4: Vec<String> = addrs.iter().filter(|a| a.is_ipv4()).map(IpAddr::to_string).collect();
            if v4.is_empty() { addrs.iter().map(IpAddr::to_string).collect() } else { v4 }
        }
    };
    let ipv6 = targets.iter().all(|t| t.contains(':'));
    let mut args: Vec<String> = vec!["-oX".into(), ctx.workdir.join(OUTPUT_FILE).display().to_string(), "-n".into()];
    args.extend(["--max-retries".into(), "2".into(), "-T4".into()]);
    args.extend(["--host-timeout".into(), format!("{}s", ctx.job.timeout_secs.max(1))]);
    if ipv6 {
        args.push("-6".into());
    }
    match spec.scan_type {
        NetworkScanType::PingSweep => args.push("-sn".into()),
        other => {
            args.extend(["-sT".into(), "-Pn".into()]);
            match other {
                NetworkScanType::ServiceDetection => args.push("-sV".into()),
                NetworkScanType::Comprehensive => args.extend(["-sV".into(), "-sC".into()]),
                NetworkScanType::VulnerabilityScan => args.extend(["-sV".into(), "--script".into(), "vuln".into()]),
                _ => {}
            }
            match &spec.ports {
                Some(p) => args.extend(["-p".into(), p.as_str().to_string()]),
                None => args.extend(["--top-ports".into(), "1000".into()]),
            }
        }
    }
    args.push("--".into());
    args.extend(targets);
    Ok(Plan::Process(ProcessSpec {
        program: ctx.config.nmap_path.clone(),
        args,
        env: vec![],
        workdir: ctx.workdir.clone(),
        ok_exit_codes: vec![],
        secret_files: vec![],
        mounts: vec![],
    }))
}

#[derive(Default)]
struct Port {
    protocol: String,
    port: u32,
    state: String,
    service: Option<Document>,
    service_name: String,
    cpes: Vec<String>,
    scripts: Vec<Document>,
}

#[derive(Default)]
struct Host {
    up: bool,
    address: Option<String>,
    hostnames: Vec<String>,
    ports: Vec<Port>,
}

/// Streams the XML: one host at a time in memory, whatever the size of the scan.
pub fn parse(workdir: &Path, max_bytes: u64, sink: &mut FindingSink) -> Result<(), ToolError> {
    let path = workdir.join(OUTPUT_FILE);
    let file = open_output(&path, max_bytes)?;
    parse_reader(BufReader::new(file), &path.display().to_string(), sink)
}

pub fn parse_reader<R: std::io::BufRead>(input: R, name: &str, sink: &mut FindingSink) -> Result<(), ToolError> {
    let mut reader = Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut host: Option<Host> = None;
    let mut port: Option<Port> = None;
    let mut in_cpe = false;
    let mut saw_root = false;
    let mut finished = false;
    let mut closed = false;
    loop {
        let pos = reader.buffer_position();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| ToolError::new(format!("{name}: malformed nmap XML at byte {pos}: {e}")))?;
        match event {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == "nmaprun" => saw_root = true,
            Event::End(e) if e.name().as_ref() == "nmaprun" => closed = true,
            Event::Start(e) if e.name().as_ref() == "host" => host = Some(Host::default()),
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "address" => {
                if let Some(h) = host.as_mut() {
                    let kind = attr(&e, "addrtype").unwrap_or_default();
                    if kind == "ipv4" || kind == "ipv6" {
                        h.address.get_or_insert(attr(&e, "addr").unwrap_or_default());
                    }
                }
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "hostname" => {
                if let (Some(h), Some(n)) = (host.as_mut(), attr(&e, "name"))
                    && h.hostnames.len() < MAX_LISTED
                {
                    h.hostnames.push(n);
                }
            }
            Event::Start(e) if e.name().as_ref() == "port" => {
                port = Some(Port {
                    protocol: attr(&e, "protocol").unwrap_or_default(),
                    port: attr(&e, "portid").and_then(|p| p.parse().ok()).unwrap_or(0),
                    ..Port::default()
                });
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "status" && port.is_none() => {
                if let Some(h) = host.as_mut() {
                    h.up = attr(&e, "state").as_deref() == Some("up");
                }
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "state" => {
                if let Some(p) = port.as_mut() {
                    p.state = attr(&e, "state").unwrap_or_default();
                }
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "service" => {
                if let Some(p) = port.as_mut() {
                    p.service_name = attr(&e, "name").unwrap_or_default();
                    let mut d = Document::new();
                    for key in ["name", "product", "version", "extrainfo", "ostype", "method", "tunnel"] {
                        if let Some(v) = attr(&e, key) {
                            d.insert(key, v);
                        }
                    }
                    p.service = Some(d);
                }
            }
            Event::Start(e) if e.name().as_ref() == "cpe" => in_cpe = port.is_some(),
            Event::Text(t) if in_cpe => {
                if let Some(p) = port.as_mut() {
                    let text = t.xml10_content().trim().to_string();
                    if !text.is_empty() && p.cpes.len() < MAX_LISTED {
                        p.cpes.push(text);
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == "cpe" => in_cpe = false,
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "script" => {
                if let Some(p) = port.as_mut() {
                    let mut output = attr(&e, "output").unwrap_or_default();
                    super::cut(&mut output, MAX_SCRIPT_OUTPUT);
                    p.scripts.push(doc! { "id": attr(&e, "id").unwrap_or_default(), "output": output });
                }
            }
            Event::End(e) if e.name().as_ref() == "port" => {
                if let (Some(p), Some(h)) = (port.take(), host.as_mut())
                    && p.state == "open"
                {
                    h.ports.push(p);
                }
            }
            Event::End(e) if e.name().as_ref() == "host" => {
                if let Some(h) = host.take() {
                    emit_host(h, sink)?;
                }
            }
            Event::Empty(e) | Event::Start(e) if e.name().as_ref() == "finished" => {
                if attr(&e, "exit").as_deref() == Some("error") {
                    let msg = attr(&e, "errormsg").unwrap_or_else(|| "unknown error".into());
                    return Err(ToolError::new(format!("{name}: nmap reported an error: {msg}")));
                }
                finished = true;
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_root {
        return Err(ToolError::new(format!("{name}: not an nmap XML report (no <nmaprun> element)")));
    }
    if !finished || !closed || host.is_some() {
        return Err(ToolError::new(format!(
            "{name}: the nmap report is truncated (ends at byte {} before the scan finished)",
            reader.buffer_position()
        )));
    }
    sink.flush()
}

fn emit_host(h: Host, sink: &mut FindingSink) -> Result<(), ToolError> {
    let Some(address) = h.address else { return Ok(()) };
    if h.up {
        // A host that answered is a verified result even with no open port.
        sink.count_examined(1);
    }
    for p in h.ports {
        let service = if p.service_name.is_empty() { "unknown".to_string() } else { p.service_name.clone() };
        let field = |k: &str| p.service.as_ref().and_then(|s| s.get_str(k).ok()).unwrap_or_default().to_string();
        let (product_name, product_version) = (field("product"), field("version"));
        let product = [product_name.as_str(), product_version.as_str()]
            .iter()
            .filter(|x| !x.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let title = format!("Open port {}/{} ({service}) on {address}", p.port, p.protocol);
        let description = if product.is_empty() {
            format!("{address} accepts connections on {}/{}, identified as {service}.", p.port, p.protocol)
        } else {
            format!("{address} accepts connections on {}/{}, running {product} ({service}).", p.port, p.protocol)
        };
        let resource_uid = format!("{address}:{}/{}", p.port, p.protocol);
        let endpoint = Endpoint {
            ip: Some(address.clone()),
            hostname: h.hostnames.first().cloned(),
            port: u16::try_from(p.port).ok(),
            protocol: Some(p.protocol.clone()),
            service: Some(service.clone()),
            ..Endpoint::default()
        };
        let cves = script_cves(&p.scripts);
        sink.push(NewFinding {
            rule_id: "nmap.open_port".into(),
            title,
            description,
            severity: Severity::Informational,
            resource_uid: resource_uid.clone(),
            resource_type: "network_endpoint".into(),
            service: Some(service.clone()),
            identity: vec![address.clone(), p.port.to_string(), p.protocol.clone(), service.clone()],
            remediation: Some(
                "Confirm the service should be reachable; close the port or restrict access if not.".into(),
            ),
            endpoint: Some(endpoint.clone()),
            details: doc! {
                "host": &address,
                "hostnames": h.hostnames.clone(),
                "port": i64::from(p.port),
                "protocol": &p.protocol,
                "state": &p.state,
                "service": p.service.clone().unwrap_or_default(),
                "cpe": p.cpes.clone(),
                "scripts": p.scripts.clone(),
            },
            ..NewFinding::default()
        })?;
        for (cve, score, script) in cves {
            let severity = score.map(severity_of_cvss).unwrap_or(Severity::Medium);
            let mut v = Vulnerability::new(VulnId::Cve(cve.clone()), cve.clone(), severity);
            v.cvss = score
                .map(|s| {
                    vec![Cvss { version: "2.0".into(), base_score: s, vector: None, source: Some(script.clone()) }]
                })
                .unwrap_or_default();
            if !product_name.is_empty() {
                v.package = Some(AffectedPackage {
                    name: product_name.clone(),
                    version: product_version.clone(),
                    ..AffectedPackage::default()
                });
            }
            v.references = vec![format!("https://nvd.nist.gov/vuln/detail/{cve}")];
            let on = if product.is_empty() { service.clone() } else { product.clone() };
            sink.push(NewFinding {
                class: FindingClass::Vulnerability,
                rule_id: cve.clone(),
                title: format!("{cve} in {on} on {resource_uid}"),
                description: format!("The nmap script `{script}` reports {cve} for {on} listening on {resource_uid}."),
                severity,
                resource_uid: resource_uid.clone(),
                resource_type: "network_endpoint".into(),
                service: Some(service.clone()),
                identity: vec![address.clone(), p.port.to_string(), p.protocol.clone(), cve.clone()],
                remediation: Some(format!(
                    "Upgrade {on} to a release that fixes {cve}, or restrict access to the port."
                )),
                vulnerabilities: vec![v],
                endpoint: Some(endpoint.clone()),
                details: doc! { "script": &script, "cpe": p.cpes.clone() },
                ..NewFinding::default()
            })?;
        }
    }
    Ok(())
}

/// CVE ids named by the port's script output, once each, with the score printed after the id where the
/// script gives one (`vulners`: `CVE-2018-15919<TAB>5.0<TAB>url`), and the script that named it.
fn script_cves(scripts: &[Document]) -> Vec<(String, Option<f64>, String)> {
    let mut out: Vec<(String, Option<f64>, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for s in scripts {
        let script = s.get_str("id").unwrap_or_default().to_string();
        let output = s.get_str("output").unwrap_or_default();
        for line in output.lines() {
            let tokens: Vec<&str> =
                line.split(|c: char| c.is_whitespace() || c == ',' || c == ';').filter(|t| !t.is_empty()).collect();
            for (i, t) in tokens.iter().enumerate() {
                let Some(cve) = cve_id(t) else { continue };
                let score = tokens.get(i + 1).and_then(|n| n.parse::<f64>().ok()).filter(|n| (0.0..=10.0).contains(n));
                if seen.insert(cve.clone()) {
                    out.push((cve, score, script.clone()));
                }
            }
        }
    }
    out
}

/// `CVE-2014-0160` in a token (also `CVE:CVE-2014-0160`), upper-cased.
fn cve_id(token: &str) -> Option<String> {
    let upper = token.to_ascii_uppercase();
    let at = upper.find("CVE-")?;
    let rest = &upper[at + 4..];
    let (year, num) = rest.split_once('-')?;
    let num: String = num.chars().take_while(char::is_ascii_digit).collect();
    (year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) && num.len() >= 4).then(|| format!("CVE-{year}-{num}"))
}

fn severity_of_cvss(score: f64) -> Severity {
    match score {
        s if s >= 9.0 => Severity::Critical,
        s if s >= 7.0 => Severity::High,
        s if s >= 4.0 => Severity::Medium,
        s if s > 0.0 => Severity::Low,
        _ => Severity::Informational,
    }
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cspm_shared::store::findings::NewFinding;
    use tokio::sync::mpsc;

    fn fixture(rel: &str) -> std::path::PathBuf {
        cspm_shared::testing::fixtures_dir().join("nmap").join(rel)
    }

    fn parse_file(path: &Path) -> Result<Vec<NewFinding>, ToolError> {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut sink = FindingSink::new(tx, 2);
        let file = std::fs::File::open(path).expect("fixture");
        let r = parse_reader(BufReader::new(file), &path.display().to_string(), &mut sink);
        drop(sink);
        let mut all = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            all.extend(batch);
        }
        r.map(|()| all)
    }

    /// A fuzz target's finding (`fuzz/`), kept as a regression input.
    fn fuzz_input(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz").join(name)
    }

    #[test]
    fn fuzz_an_error_that_nmap_reports_names_the_file() {
        let bytes = std::fs::read(fuzz_input("nmap-error-unnamed.bin")).expect("fuzz input");
        let err = parse_reader(&bytes[..], "scan.xml", &mut FindingSink::counting()).expect_err("nmap's error");
        assert_eq!(err.message, "scan.xml: nmap reported an error: x");
    }

    #[test]
    fn fuzz_thousands_of_cves_on_a_port_are_each_reported_once() {
        // 12,000 CVEs named by one port's scripts, 10,980 of them within the 2,048 bytes kept of each
        // script's output: each was compared with every one before it (over the fuzz target's 10 s timeout).
        let bytes = std::fs::read(fuzz_input("nmap-many-cves.bin")).expect("fuzz input");
        let mut sink = FindingSink::counting();
        parse_reader(&bytes[..], "cves.xml", &mut sink).expect("parses");
        assert_eq!(sink.emitted, 1 + 10_980);
        let twice = [
            doc! { "id": "a", "output": "CVE-2014-0160 CVE-2014-0160" },
            doc! { "id": "b", "output": "CVE-2014-0160" },
        ];
        assert_eq!(script_cves(&twice), vec![("CVE-2014-0160".to_string(), None, "a".to_string())]);
    }

    #[test]
    fn fuzz_host_names_and_cpes_are_bounded_on_every_finding() {
        // 200 names, 200 open ports, 200 CPEs on a port with CVEs: every finding carried every name,
        // every CVE finding every CPE, (ports × names) in all.
        let found = parse_file(&fuzz_input("nmap-names-times-ports.bin")).expect("parses");
        assert_eq!(found.len(), 200 + 2);
        for f in &found {
            assert_eq!(
                f.details.get_array("cpe").map(|a| a.len()).ok(),
                Some(if f.resource_uid.ends_with(":1/tcp") { MAX_LISTED } else { 0 })
            );
            if f.class == FindingClass::Detection {
                assert_eq!(f.details.get_array("hostnames").map(|a| a.len()).ok(), Some(MAX_LISTED));
            }
            assert_eq!(f.endpoint.as_ref().and_then(|e| e.hostname.as_deref()), Some("h0"));
        }
    }

    #[test]
    fn open_ports_with_services_become_findings() {
        let found = parse_file(&fixture("generated/nmap-sV-sC-127.0.0.1-2ports.xml")).expect("parses");
        assert_eq!(found.len(), 2);
        let http = found.iter().find(|f| f.resource_uid == "127.0.0.1:1880/tcp").expect("http port");
        assert_eq!(http.identity, vec!["127.0.0.1", "1880", "tcp", "http"]);
        assert!(http.description.contains("SimpleHTTPServer 0.6"), "{}", http.description);
        assert_eq!(http.details.get_array("cpe").map(|a| a.len()).ok(), Some(1));
        assert_eq!(http.details.get_array("scripts").map(|a| a.len()).ok(), Some(2));
    }

    #[test]
    fn hosts_with_only_closed_ports_report_nothing_but_count_as_examined() {
        let path = fixture("generated/nmap-sT-127.0.0.1-closed-only.xml");
        let found = parse_file(&path).expect("parses");
        assert!(found.is_empty());
        let mut sink = FindingSink::counting();
        let file = std::fs::File::open(&path).expect("fixture");
        parse_reader(BufReader::new(file), "x", &mut sink).expect("parses");
        assert_eq!((sink.emitted, sink.examined), (0, 1));
    }

    #[test]
    fn cves_named_by_scripts_become_vulnerability_findings() {
        let found = parse_file(&fixture("defectdojo/nmap_script_vulners.xml")).expect("parses");
        let vulns: Vec<&NewFinding> = found.iter().filter(|f| f.class == FindingClass::Vulnerability).collect();
        assert_eq!(vulns.len(), 2, "{found:#?}");
        let v = vulns.iter().find(|f| f.rule_id == "CVE-2018-15919").expect("CVE-2018-15919");
        assert_eq!(v.severity, Severity::Medium);
        assert_eq!(v.vulnerabilities[0].max_base_score(), Some(5.0));
        assert_eq!(v.vulnerabilities[0].package.as_ref().map(|p| p.name.as_str()), Some("OpenSSH"));
        assert_eq!(v.identity, vec!["192.168.0.1", "5022", "tcp", "CVE-2018-15919"]);
        assert_eq!(found.iter().filter(|f| f.class == FindingClass::Detection).count(), 1);
        assert_eq!(cve_id("CVE:CVE-2014-0160"), Some("CVE-2014-0160".into()));
        assert_eq!(cve_id("CVE-20-1"), None);
    }

    #[test]
    fn several_ports_and_ipv6_hosts_parse() {
        let found = parse_file(&fixture("defectdojo/nmap_multiple_port.xml")).expect("parses");
        assert!(found.len() >= 10, "{}", found.len());
        let v6 = parse_file(&fixture("generated/nmap-6-sV-ipv6-loopback-closed.xml")).expect("parses");
        assert!(
            v6.iter().all(|f| f.resource_uid.starts_with("::1:")),
            "{:?}",
            v6.iter().map(|f| &f.resource_uid).collect::<Vec<_>>()
        );
    }

    #[test]
    fn truncated_or_foreign_input_is_a_clear_error() {
        let text = std::fs::read_to_string(fixture("generated/nmap-sV-sC-127.0.0.1-2ports.xml")).expect("fixture");
        let cut = &text[..text.len() / 2];
        let (tx, _rx) = mpsc::channel(1024);
        let mut sink = FindingSink::new(tx, 100);
        let err = parse_reader(cut.as_bytes(), "scan.xml", &mut sink).expect_err("truncated");
        assert!(err.message.contains("scan.xml") && err.message.contains("byte"), "{err}");
        let err = parse_reader(&b"<html></html>"[..], "page.xml", &mut sink).expect_err("not nmap");
        assert!(err.message.contains("not an nmap XML report"), "{err}");
    }
}
