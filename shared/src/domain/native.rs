//! Native (non-cloud) scan targets: parsing, the SSRF guard, port lists and network scan profiles.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a native scan points at, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(IpAddr),
    /// A small IPv4 or IPv6 block (at most 256 addresses).
    Cidr(IpAddr, u8),
    Host(String),
}

impl Target {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 253 {
            return Err("target must be an IP address, a small CIDR block or a host name".into());
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target::Ip(ip));
        }
        if let Some((addr, len)) = s.split_once('/') {
            let not_a_target = || format!("`{s}` is not an IP address, CIDR block or host name");
            let ip: IpAddr = addr.parse().map_err(|_| not_a_target())?;
            let len: u8 = len.parse().map_err(|_| not_a_target())?;
            let (min, max) = if ip.is_ipv4() { (24, 32) } else { (120, 128) };
            if !(min..=max).contains(&len) {
                return Err(format!("`{s}`: CIDR blocks are limited to /{min} or smaller (at most 256 addresses)"));
            }
            return Ok(Target::Cidr(ip, len));
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if s.split('.').all(valid_label) && !s.starts_with('-') {
            Ok(Target::Host(s.to_ascii_lowercase()))
        } else {
            Err(format!("`{s}` is not an IP address, CIDR block or host name"))
        }
    }

    /// The addresses to check before scanning: the address, the first and last of a block, or none for a
    /// host name (resolve it first with [`resolve`]).
    pub fn literal_addresses(&self) -> Vec<IpAddr> {
        match self {
            Target::Ip(ip) => vec![*ip],
            Target::Cidr(ip, len) => {
                let (first, last) = cidr_bounds(*ip, *len);
                vec![first, last]
            }
            Target::Host(_) => vec![],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(ip) => write!(f, "{ip}"),
            Target::Cidr(ip, len) => {
                let (first, _) = cidr_bounds(*ip, *len);
                write!(f, "{first}/{len}")
            }
            Target::Host(h) => f.write_str(h),
        }
    }
}

fn cidr_bounds(ip: IpAddr, len: u8) -> (IpAddr, IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            (IpAddr::V4((bits & mask).into()), IpAddr::V4((bits | !mask).into()))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            (IpAddr::V6((bits & mask).into()), IpAddr::V6((bits | !mask).into()))
        }
    }
}

/// The class of an address, for the SSRF guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Private,
    Loopback,
    /// Link-local, cloud metadata, unspecified, multicast, broadcast, documentation: never scanned.
    Forbidden,
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                AddressClass::Loopback
            } else if v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
            {
                AddressClass::Forbidden
            } else if v4.is_private()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
            {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let embedded =
                |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            // Addresses that carry an IPv4 address reach it: judge them by it. IPv4-compatible (::/96),
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16).
            if seg[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return classify(embedded(seg[6], seg[7]));
            }
            if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6] == [0, 0, 0, 0] || seg[2] == 1) {
                return classify(embedded(seg[6], seg[7]));
            }
            if seg[0] == 0x2002 {
                return classify(embedded(seg[1], seg[2]));
            }
            // Teredo hides its IPv4 end point: never scanned.
            if seg[0] == 0x2001 && seg[1] == 0 {
                return AddressClass::Forbidden;
            }
            if v6.is_loopback() {
                AddressClass::Loopback
            } else if v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0xfd00 && seg[1] == 0x0ec2)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
            {
                AddressClass::Forbidden
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
    }
}

/// Which address classes the operator allows as scan targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_private: bool,
    pub allow_loopback: bool,
}

impl TargetPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Private if self.allow_private => Ok(()),
            AddressClass::Loopback if self.allow_loopback => Ok(()),
            AddressClass::Private => Err(format!(
                "target {ip} is a private address; the operator has not allowed private scan targets (ALLOW_PRIVATE_SCAN_TARGETS)"
            )),
            AddressClass::Loopback => Err(format!(
                "target {ip} is a loopback address; loopback scan targets are not allowed (CSPM_ALLOW_LOOPBACK_SCAN_TARGETS)"
            )),
            AddressClass::Forbidden => Err(format!(
                "target {ip} is a link-local, metadata or reserved address and is never scanned (SSRF protection)"
            )),
        }
    }

    /// Resolves the target and checks every address it stands for. Returns the addresses to scan, so that
    /// the scanner never resolves the name again (a second lookup could answer differently).
    pub async fn resolve(&self, target: &Target) -> Result<Vec<IpAddr>, String> {
        let addrs = match target {
            Target::Host(h) => {
                let found: Vec<IpAddr> = tokio::net::lookup_host((h.as_str(), 0))
                    .await
                    .map_err(|e| format!("cannot resolve `{h}`: {e}"))?
                    .map(|sa| sa.ip())
                    .collect();
                if found.is_empty() {
                    return Err(format!("`{h}` resolves to no address"));
                }
                found
            }
            other => other.literal_addresses(),
        };
        for ip in &addrs {
            self.check(*ip)?;
        }
        let mut addrs = addrs;
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }
}

/// A port list as nmap takes it: `22,80,8000-8100`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortList(String);

impl PortList {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if s.is_empty() || s.len() > 512 {
            return Err("ports must be a list like `22,80,8000-8100` (at most 512 characters)".into());
        }
        for part in s.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u16 = a.parse().map_err(|_| format!("`{part}` is not a port or port range"))?;
            let b: u16 = b.parse().map_err(|_| format!("`{part}` is not a port or port range"))?;
            if a == 0 || b < a {
                return Err(format!("`{part}` is not a valid port range (1-65535, low-high)"));
            }
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The network-discovery profiles of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkScanType {
    PingSweep,
    PortScan,
    ServiceDetection,
    Comprehensive,
    VulnerabilityScan,
}

impl NetworkScanType {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkScanType::PingSweep => "ping_sweep",
            NetworkScanType::PortScan => "port_scan",
            NetworkScanType::ServiceDetection => "service_detection",
            NetworkScanType::Comprehensive => "comprehensive",
            NetworkScanType::VulnerabilityScan => "vulnerability_scan",
        }
    }
}

impl FromStr for NetworkScanType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ping_sweep" => Ok(Self::PingSweep),
            "port_scan" => Ok(Self::PortScan),
            "service_detection" => Ok(Self::ServiceDetection),
            "comprehensive" => Ok(Self::Comprehensive),
            "vulnerability_scan" => Ok(Self::VulnerabilityScan),
            _ => Err(format!(
                "unknown network scan type `{s}` (expected ping_sweep, port_scan, service_detection, comprehensive or vulnerability_scan)"
            )),
        }
    }
}

/// How thoroughly a web application is scanned (the seed's quick / standard / comprehensive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebScanProfile {
    /// Passive checks and a shallow crawl: minutes.
    Quick,
    /// The scanner's default attack modules over a normal crawl.
    Standard,
    /// Every attack module the scanner has that works without the internet, deeper crawl.
    Comprehensive,
}

impl WebScanProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            WebScanProfile::Quick => "quick",
            WebScanProfile::Standard => "standard",
            WebScanProfile::Comprehensive => "comprehensive",
        }
    }
}

impl FromStr for WebScanProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Self::Quick),
            "standard" => Ok(Self::Standard),
            "comprehensive" => Ok(Self::Comprehensive),
            _ => Err(format!("unknown web scan type `{s}` (expected quick, standard or comprehensive)")),
        }
    }
}

/// Resolves a path a user asked to scan and checks that it lies under one of the operator's roots
/// (`CSPM_SCAN_PATH_ROOTS`, canonical). Symbolic links and `..` are resolved first, so neither can lead
/// outside a root. Returns the canonical path.
pub fn path_under_roots(raw: &str, roots: &[std::path::PathBuf]) -> Result<std::path::PathBuf, String> {
    if roots.is_empty() {
        return Err("filesystem scans are not enabled on this fleet (the operator sets CSPM_SCAN_PATH_ROOTS)".into());
    }
    let path = std::path::Path::new(raw.trim());
    if !path.is_absolute() {
        return Err(format!("`{raw}` is not an absolute path"));
    }
    let real = std::fs::canonicalize(path).map_err(|_| format!("`{raw}` does not exist or cannot be read"))?;
    if roots.iter().any(|r| real.starts_with(r)) {
        Ok(real)
    } else {
        Err(format!("`{raw}` is outside the directories this fleet may scan"))
    }
}

/// A web application to scan: an `http` or `https` URL without credentials in it. Its host goes through
/// the SSRF guard like any native target ([`TargetPolicy::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTarget {
    /// The URL as it will be given to the scanner (normalised).
    pub url: String,
    pub host: Target,
}

impl WebTarget {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 2048 {
            return Err("target_url must be an http or https URL of at most 2048 characters".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{s}` is not a URL: it contains spaces or control characters"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("`{s}` is not an http:// or https:// URL"));
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(format!("`{s}`: only http and https URLs can be scanned"));
        }
        // URL parsers repair `http:///x` into `http://x/`; a target must name its host plainly.
        if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
            return Err(format!("`{s}` names no host"));
        }
        let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{s}`: only http and https URLs can be scanned"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not accepted".into());
        }
        if url.port() == Some(0) {
            return Err(format!("`{s}` has an invalid port"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => Target::parse(d)?,
            Some(url::Host::Ipv4(ip)) => Target::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Target::Ip(IpAddr::V6(ip)),
            None => return Err(format!("`{s}` names no host")),
        };
        Ok(Self { url: url.to_string(), host })
    }
}

/// Checks a container image reference and returns it trimmed (see [`image_registry`]).
pub fn parse_image_ref(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    image_registry(s)?;
    Ok(s.to_string())
}

/// Checks an image reference against the distribution reference grammar,
/// `[registry[:port]/]repository[:tag][@digest]`, so that nothing else (an option, a path, a shell
/// word) reaches Trivy. Returns the registry when the reference names one.
pub fn image_registry(reference: &str) -> Result<Option<&str>, String> {
    let bad = |why: String| {
        Err(format!(
            "`{reference}` is not a valid image reference ({why}); expected [registry[:port]/]repository[:tag][@sha256:digest]"
        ))
    };
    if reference.is_empty() || reference.len() > 512 {
        return bad("it is empty or longer than 512 characters".into());
    }
    if reference.starts_with('-') {
        return bad("it starts with `-`".into());
    }
    if !reference.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("it contains spaces, control or non-ASCII characters".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let ok = match d.split_once(':') {
            Some(("sha256", h)) => hex(h, 64),
            Some(("sha512", h)) => hex(h, 128),
            _ => false,
        };
        if !ok {
            return bad("the digest must be sha256: and 64 lowercase hex digits".into());
        }
    }
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if !name_tag[i + 1..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if let Some(t) = tag {
        let mut bytes = t.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !first_ok
            || t.len() > 128
            || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        {
            return bad(format!("`{t}` is not a valid tag"));
        }
    }
    if name.is_empty() || name.len() > 255 {
        return bad("the repository name is empty or longer than 255 characters".into());
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let registry = if parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost") {
        Some(parts.remove(0))
    } else {
        None
    };
    if let Some(r) = registry
        && !valid_registry(r)
    {
        return bad(format!("`{r}` is not a valid registry host[:port]"));
    }
    for p in parts {
        if !valid_path_component(p) {
            return bad(format!(
                "`{p}` is not a valid repository component (lowercase letters and digits, joined by `.`, `_`, `__` or dashes)"
            ));
        }
    }
    Ok(registry)
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && host.len() <= 253 && host.split('.').all(label_ok)
}

fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// What a Trivy target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A container image reference (`alpine:3.19`, `registry.example.com/app@sha256:…`).
    Image,
    /// A directory on the worker: packages (lock files), secrets and IaC misconfigurations.
    Filesystem,
    /// A directory of IaC only (Dockerfile, Terraform, Kubernetes, Helm): misconfigurations.
    Config,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Image => "image",
            ArtifactKind::Filesystem => "filesystem",
            ArtifactKind::Config => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_ips_blocks_or_names() {
        assert_eq!(Target::parse("127.0.0.1"), Ok(Target::Ip("127.0.0.1".parse().expect("ip"))));
        assert!(matches!(Target::parse("10.0.0.7/24"), Ok(Target::Cidr(_, 24))));
        assert_eq!(Target::parse("10.0.0.7/24").map(|t| t.to_string()), Ok("10.0.0.0/24".to_string()));
        assert!(Target::parse("10.0.0.0/8").is_err());
        assert_eq!(Target::parse("Example.COM"), Ok(Target::Host("example.com".into())));
        for bad in ["", "a b", "-x.com", "x..com", "http://x.com", "1.2.3.4; rm -rf /"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_guard_refuses_what_the_operator_has_not_allowed() {
        let strict = TargetPolicy::default();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(strict.check(ip("8.8.8.8")).is_ok());
        assert!(strict.check(ip("127.0.0.1")).is_err());
        assert!(strict.check(ip("10.1.2.3")).is_err());
        assert!(strict.check(ip("::ffff:127.0.0.1")).is_err());
        let open = TargetPolicy { allow_private: true, allow_loopback: true };
        assert!(open.check(ip("127.0.0.1")).is_ok());
        assert!(open.check(ip("::1")).is_ok());
        assert!(open.check(ip("192.168.1.1")).is_ok());
        for never in ["169.254.169.254", "0.0.0.0", "fe80::1", "fd00:ec2::254", "224.0.0.1", "255.255.255.255"] {
            assert!(open.check(ip(never)).is_err(), "{never}");
        }
        // IPv6 forms that reach an IPv4 address are judged by that address.
        for wrapped in
            ["64:ff9b::a00:1", "2002:a00:1::1", "::10.0.0.1", "64:ff9b::7f00:1", "2002:a9fe:a9fe::1", "2001:0:1::1"]
        {
            assert!(strict.check(ip(wrapped)).is_err(), "{wrapped}");
        }
        assert!(strict.check(ip("64:ff9b::808:808")).is_ok(), "NAT64 of a public address");
    }

    #[tokio::test]
    async fn host_names_are_resolved_and_every_address_checked() {
        let strict = TargetPolicy::default();
        let err = strict.resolve(&Target::Host("localhost".into())).await.expect_err("loopback refused");
        assert!(err.contains("loopback"), "{err}");
        let loopback = TargetPolicy { allow_private: false, allow_loopback: true };
        let addrs = loopback.resolve(&Target::Host("localhost".into())).await.expect("resolves");
        assert!(addrs.iter().all(|a| a.is_loopback()));
    }

    #[test]
    fn scan_paths_must_stay_under_the_roots() {
        let root = std::env::temp_dir().join(format!("cspm-roots-{}", std::process::id()));
        let inside = root.join("repo");
        std::fs::create_dir_all(&inside).expect("dirs");
        let roots = vec![std::fs::canonicalize(&root).expect("canonical")];
        assert!(path_under_roots(inside.to_str().expect("utf-8"), &roots).is_ok());
        let escape = format!("{}/../", inside.display());
        assert!(path_under_roots(&format!("{escape}.."), &roots).is_err());
        std::os::unix::fs::symlink("/etc", inside.join("etc")).expect("symlink");
        assert!(path_under_roots(inside.join("etc").to_str().expect("utf-8"), &roots).is_err());
        assert!(path_under_roots("relative", &roots).is_err());
        assert!(path_under_roots(inside.to_str().expect("utf-8"), &[]).is_err());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn web_targets_are_http_urls_without_credentials() {
        let t = WebTarget::parse("http://127.0.0.1:8080/app?x=1").expect("url");
        assert_eq!(t.host, Target::Ip("127.0.0.1".parse().expect("ip")));
        assert_eq!(WebTarget::parse("https://Example.com").map(|t| t.url), Ok("https://example.com/".into()));
        assert!(matches!(WebTarget::parse("http://[::1]:80/").map(|t| t.host), Ok(Target::Ip(_))));
        for bad in ["file:///etc/passwd", "gopher://x", "http://user:pw@x.com/", "x.com", "", "http://", "http:///x"] {
            assert!(WebTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_follow_the_grammar() {
        for good in [
            "alpine",
            "alpine:3.19",
            "library/alpine:latest",
            "registry.example.com:5000/team/app:v1.2-rc_3",
            "localhost/app",
            "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_image_ref(good).as_deref(), Ok(good), "{good}");
        }
        for bad in ["", "-v", "--input=/etc", "Alpine", "a b", "app:", "app@sha256:xyz", "app;rm", "/abs", "a//b"] {
            assert!(parse_image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_lists_are_validated() {
        assert!(PortList::parse("22, 80,8000-8100").is_ok());
        for bad in ["", "0", "70000", "80-22", "http", "1;2"] {
            assert!(PortList::parse(bad).is_err(), "{bad}");
        }
    }
}
