//! Seeded gossip simulation.
//!
//! `cargo run --release -p shoal-gossip --example sim -- --nodes 1000 --seed 1 [--loss 0.01] [--latency-ms 1]`

use shoal_gossip::sim::{run_scenarios, SimConfig};
use std::time::{Duration, Instant};

fn main() {
    let mut nodes = 50usize;
    let mut seed = 1u64;
    let mut loss = 0.0f64;
    let mut latency_ms = 1u64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        let bad = |f: &str| -> ! {
            eprintln!("sim: {f} needs a number (got {val:?})");
            std::process::exit(2)
        };
        match args[i].as_str() {
            "--nodes" => nodes = val.parse().unwrap_or_else(|_| bad("--nodes")),
            "--seed" => seed = val.parse().unwrap_or_else(|_| bad("--seed")),
            "--loss" => loss = val.parse().unwrap_or_else(|_| bad("--loss")),
            "--latency-ms" => latency_ms = val.parse().unwrap_or_else(|_| bad("--latency-ms")),
            other => {
                eprintln!(
                    "sim: unknown argument {other}; use --nodes N --seed S --loss P --latency-ms L"
                );
                std::process::exit(2)
            }
        }
        i += 2;
    }
    if nodes < 4 {
        eprintln!("sim: --nodes must be at least 4");
        std::process::exit(2)
    }
    let mut cfg = SimConfig::new(nodes, seed);
    cfg.loss = loss;
    cfg.latency = Duration::from_millis(latency_ms);
    let wall = Instant::now();
    let r = run_scenarios(cfg);
    let show = |d: Option<Duration>| {
        d.map_or("did not converge".to_owned(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    println!("shoal-gossip simulation: {nodes} nodes, seed {seed}, loss {loss}, latency {latency_ms} ms (virtual time)");
    println!("| measure                                        | value |");
    println!("|------------------------------------------------|-------|");
    println!(
        "| membership converged after join                | {} |",
        show(r.membership)
    );
    println!(
        "| (a) new endpoint known on every node           | {} |",
        show(r.publish)
    );
    println!(
        "| (b) killed node's endpoints unavailable        | {} |",
        show(r.failure)
    );
    println!(
        "| (c) partition heal to identical views          | {} |",
        show(r.heal)
    );
    println!(
        "| (d) steady state bytes/s per node              | {:.0} |",
        r.steady_bytes_per_node_per_sec
    );
    println!("(wall time {:.1} s)", wall.elapsed().as_secs_f64());
}
