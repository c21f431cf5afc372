//! `shoal doctor`: can this host run Shoal? One line per check, with what to do
//! about each failure.

use std::path::Path;
use std::time::Duration;

use hyper::Method;
use serde::Serialize;
use shoal_sys::probe::{self, Outcome, Proto};

/// How much a failed check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Shoal cannot run without it.
    Required,
    /// Shoal runs without it, slower or with less.
    Optional,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// Required or optional.
    pub severity: Severity,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, or what to do.
    pub detail: String,
}

impl Check {
    fn new(check: &str, severity: Severity, outcome: Outcome) -> Check {
        let (ok, detail) = match outcome {
            Outcome::Ok(d) => (true, d),
            Outcome::Missing(d) => (false, d),
        };
        Check {
            check: check.to_string(),
            severity,
            ok,
            detail,
        }
    }

    /// `ok`, `MISSING` (required) or `warn` (optional).
    pub fn status(&self) -> &'static str {
        match (self.ok, self.severity) {
            (true, _) => "ok",
            (false, Severity::Required) => "MISSING",
            (false, Severity::Optional) => "warn",
        }
    }
}

const DOCKER_SOCKET: &str = "/var/run/docker.sock";

fn docker() -> Outcome {
    if !Path::new(DOCKER_SOCKET).exists() {
        return Outcome::Missing(format!(
            "{DOCKER_SOCKET} not found: start the Docker Engine to run tasks as containers"
        ));
    }
    let ping = crate::http::block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3),
            crate::http::request(Path::new(DOCKER_SOCKET), Method::GET, "/_ping", None),
        )
        .await
    });
    match ping {
        Ok(Ok(Ok((status, body)))) if status.is_success() && body.trim() == "OK" => {
            Outcome::Ok("Docker Engine answers /_ping".into())
        }
        Ok(Ok(Ok((status, body)))) => {
            Outcome::Missing(format!("Docker answered {status}: {}", body.trim()))
        }
        Ok(Ok(Err(e))) => Outcome::Missing(format!(
            "{e:#}: is dockerd running, and may this user use its socket?"
        )),
        Ok(Err(_)) => Outcome::Missing("Docker did not answer /_ping within 3 s".into()),
        Err(e) => Outcome::Missing(format!("{e:#}")),
    }
}

/// Runs every check.
pub fn run_checks() -> Vec<Check> {
    use Severity::*;
    let mut checks = vec![
        Check::new("/dev/net/tun and TAP creation", Required, probe::tun()),
        Check::new("network namespaces", Required, probe::netns()),
        Check::new("veth and bridge", Required, probe::veth_and_bridge()),
        Check::new("UDP GSO (UDP_SEGMENT)", Optional, probe::udp_gso()),
        Check::new("UDP GRO (UDP_GRO)", Optional, probe::udp_gro()),
        Check::new("io_uring", Optional, probe::io_uring()),
        Check::new(
            "kernel VXLAN (comparisons only)",
            Optional,
            probe::kernel_vxlan(),
        ),
    ];
    for (proto, port, why) in [
        (Proto::Udp, 4789, "VXLAN"),
        (Proto::Tcp, 7946, "gossip"),
        (Proto::Udp, 7946, "gossip"),
        (Proto::Tcp, 2377, "manager API"),
    ] {
        let name = format!(
            "port {port}/{} ({why})",
            if proto == Proto::Tcp { "tcp" } else { "udp" }
        );
        checks.push(Check::new(&name, Optional, probe::port_free(proto, port)));
    }
    checks.push(Check::new("Docker Engine socket", Optional, docker()));
    checks
}

/// The report as an aligned text table.
pub fn render_table(checks: &[Check]) -> String {
    let w = checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<w$}  {:<7}  DETAIL\n", "CHECK", "STATUS");
    for c in checks {
        out += &format!("{:<w$}  {:<7}  {}\n", c.check, c.status(), c.detail);
    }
    let missing = checks.iter().filter(|c| c.status() == "MISSING").count();
    let warns = checks.iter().filter(|c| c.status() == "warn").count();
    out += &match missing {
        0 => format!("\nShoal can run on this host ({warns} warning(s)).\n"),
        n => format!(
            "\n{n} required capability(ies) missing: Shoal cannot run here until they are fixed.\n"
        ),
    };
    out
}

/// True when every required check passed.
pub fn all_required_ok(checks: &[Check]) -> bool {
    checks
        .iter()
        .all(|c| c.ok || c.severity == Severity::Optional)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, severity: Severity, ok: bool) -> Check {
        Check {
            check: name.into(),
            severity,
            ok,
            detail: format!("detail of {name}"),
        }
    }

    #[test]
    fn table_aligns_and_summarises() {
        let rows = vec![
            check("tun", Severity::Required, true),
            check("a longer check name", Severity::Optional, false),
        ];
        let t = render_table(&rows);
        let lines: Vec<_> = t.lines().collect();
        assert!(lines[0].starts_with("CHECK"));
        assert_eq!(lines[1].find("ok"), lines[0].find("STATUS"));
        assert!(lines[2].contains("warn") && lines[2].contains("detail of a longer check name"));
        assert!(t.contains("1 warning(s)"));
        assert!(all_required_ok(&rows));
    }

    #[test]
    fn a_missing_requirement_fails() {
        let rows = vec![check("tun", Severity::Required, false)];
        assert!(!all_required_ok(&rows));
        assert!(render_table(&rows).contains("MISSING"));
        assert!(render_table(&rows).contains("cannot run here"));
    }
}
