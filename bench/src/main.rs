//! `shoal-bench`: the overlay comparison and friends.
//!
//! `cargo run --release -p shoal-bench -- overlay` builds two nodes with the
//! topology crate and measures, in one run, veth, the kernel's VXLAN, and shoal
//! plain and encrypted. The binary doubles as `shoald` (`shoal-bench shoald ...`)
//! so the daemon measured is always the one built with it. `shoal-bench dns`
//! measures the embedded DNS server against dnsmasq with dnsperf.
//! `shoal-bench mesh` measures the routing mesh against a direct connection
//! and HAProxy (new connections per second and iperf3 throughput).

use std::path::PathBuf;
use std::process::ExitCode;

use shoal_bench::{dns, mesh, overlay, raft};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("shoald") => shoal_daemon::main_from(&args[1..]),
        Some("overlay") => {
            let mut settings = overlay::Settings {
                seconds: 5,
                pings: 200,
                out_dir: PathBuf::from("target/bench"),
                workers: None,
                peers: true,
            };
            let mut rest = args[2..].iter();
            while let Some(a) = rest.next() {
                if a == "--no-peers" {
                    settings.peers = false;
                    continue;
                }
                let value = rest.next();
                match (a.as_str(), value.and_then(|v| v.parse::<u32>().ok())) {
                    ("--seconds", Some(v)) if v > 0 && v <= 60 => settings.seconds = v,
                    ("--pings", Some(v)) if v > 0 && v <= 10_000 => settings.pings = v,
                    ("--workers", Some(v)) if v > 0 && v <= 16 => settings.workers = Some(v),
                    _ => {
                        eprintln!("shoal-bench overlay: unknown or invalid option {a:?} (use --seconds 1..=60, --pings 1..=10000, --workers 1..=16, --no-peers)");
                        return ExitCode::FAILURE;
                    }
                }
            }
            match overlay::run(&settings) {
                Ok(rows) => {
                    print!("{}", overlay::render(&rows));
                    if let Err(e) = overlay::write_files(&rows, &settings.out_dir) {
                        eprintln!("shoal-bench: cannot write results: {e:#}");
                        return ExitCode::FAILURE;
                    }
                    let dir = settings.out_dir.display();
                    match shoal_bench::chart::draw(&rows, &settings.out_dir.join("overlay.png")) {
                        Ok(()) => eprintln!("results in {dir}/overlay.{{json,csv,png}}"),
                        Err(e) => {
                            eprintln!("results in {dir}/overlay.{{json,csv}}; no chart: {e:#}")
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal-bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("raft") => {
            let mut settings = raft::Settings::default();
            let mut rest = args[2..].iter();
            while let Some(a) = rest.next() {
                if a == "--no-etcd" {
                    settings.etcd = false;
                    continue;
                }
                let value = rest.next().map(String::as_str);
                match (a.as_str(), value) {
                    ("--writes", Some(v)) if matches!(v.parse::<u32>(), Ok(1..=1_000_000)) => {
                        settings.writes = v.parse().unwrap_or(1);
                    }
                    ("--clients", Some(v)) => match parse_clients(v) {
                        Some(c) => settings.clients = c,
                        None => {
                            eprintln!("shoal-bench raft: --clients wants a comma-separated list of 1..=256, not {v:?}");
                            return ExitCode::FAILURE;
                        }
                    },
                    _ => {
                        eprintln!("shoal-bench raft: unknown or invalid option {a:?} (use --writes 1..=1000000, --clients 1,16, --no-etcd)");
                        return ExitCode::FAILURE;
                    }
                }
            }
            raft_main(&settings)
        }
        Some("dns") => {
            let mut settings = dns::Settings::default();
            let mut rest = args[2..].iter();
            while let Some(a) = rest.next() {
                let v = rest.next().and_then(|v| v.parse::<u32>().ok());
                match (a.as_str(), v) {
                    ("--seconds", Some(v)) if (1..=60).contains(&v) => settings.seconds = v,
                    ("--clients", Some(v)) if (1..=64).contains(&v) => settings.clients = v,
                    ("--services", Some(v)) if (1..=10_000).contains(&v) => settings.services = v,
                    ("--tasks", Some(v)) if (1..=50).contains(&v) => settings.tasks = v,
                    _ => {
                        eprintln!("shoal-bench dns: unknown or invalid option {a:?} (use --seconds 1..=60, --clients 1..=64, --services 1..=10000, --tasks 1..=50)");
                        return ExitCode::FAILURE;
                    }
                }
            }
            match dns::run(&settings) {
                Ok(rows) => {
                    print!("{}", dns::render(&rows));
                    if let Err(e) = dns::write_files(&rows, &settings.out_dir) {
                        eprintln!("shoal-bench: cannot write results: {e:#}");
                        return ExitCode::FAILURE;
                    }
                    eprintln!("results in {}/dns.json", settings.out_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal-bench dns: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("mesh") => {
            let mut settings = mesh::Settings::default();
            let mut rest = args[2..].iter();
            while let Some(a) = rest.next() {
                let v = rest.next().and_then(|v| v.parse::<u32>().ok());
                match (a.as_str(), v) {
                    ("--seconds", Some(v)) if (1..=60).contains(&v) => settings.seconds = v,
                    ("--concurrency", Some(v)) if (1..=1024).contains(&v) => {
                        settings.concurrency = v
                    }
                    _ => {
                        eprintln!("shoal-bench mesh: unknown or invalid option {a:?} (use --seconds 1..=60, --concurrency 1..=1024)");
                        return ExitCode::FAILURE;
                    }
                }
            }
            match mesh::run(&settings) {
                Ok(report) => {
                    print!("{}", mesh::render(&report));
                    if let Err(e) = mesh::write_files(&report, &settings.out_dir) {
                        eprintln!("shoal-bench: cannot write results: {e:#}");
                        return ExitCode::FAILURE;
                    }
                    eprintln!("results in {}/mesh.json", settings.out_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal-bench mesh: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: shoal-bench overlay [--seconds N] [--pings N] [--workers N] [--no-peers]\n       shoal-bench raft [--writes N] [--clients 1,16] [--no-etcd]\n       shoal-bench dns [--seconds N] [--clients N] [--services N] [--tasks N]\n       shoal-bench mesh [--seconds N] [--concurrency N]"
            );
            ExitCode::FAILURE
        }
    }
}

fn parse_clients(v: &str) -> Option<Vec<u32>> {
    let c: Vec<u32> = v
        .split(',')
        .map(|c| c.trim().parse().ok().filter(|n| (1..=256).contains(n)))
        .collect::<Option<_>>()?;
    (!c.is_empty()).then_some(c)
}

fn raft_main(settings: &raft::Settings) -> ExitCode {
    match raft::run(settings) {
        Ok(rows) => {
            print!("{}", raft::render(&rows));
            match raft::write_files(&rows, &settings.out_dir) {
                Ok(()) => {
                    eprintln!("results in {}/raft.{{json,md}}", settings.out_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shoal-bench: cannot write results: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("shoal-bench raft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
