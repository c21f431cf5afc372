//! `cargo bench --bench raft`: committed writes per second with 1 and 3 shoal
//! managers and, in the same run, etcd with 1 and 3 members (see
//! `shoal_bench::raft`). Needs root for the namespaces. The bench binary
//! doubles as `shoald`, so the daemon measured is the one built with it.

use std::process::ExitCode;

use shoal_bench::raft;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shoald") {
        return shoal_daemon::main_from(&args[1..]);
    }
    // `cargo bench` passes `--bench` (and a filter, if given); nothing to configure here.
    // It runs benches from the package directory: results go to the workspace's target/.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let settings = raft::Settings {
        data_dir: target.join("raft-data"),
        out_dir: target.clone(),
        ..raft::Settings::default()
    };
    match raft::run(&settings) {
        Ok(rows) => {
            print!("{}", raft::render(&rows));
            eprintln!("results in {}/raft.{{json,md}}", target.display());
            if let Err(e) = raft::write_files(&rows, &settings.out_dir) {
                eprintln!("cannot write results: {e:#}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("raft bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
