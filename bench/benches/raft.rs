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
    match raft::run(&raft::Settings::default()) {
        Ok(rows) => {
            print!("{}", raft::render(&rows));
            if let Err(e) = raft::write_files(&rows, &raft::Settings::default().out_dir) {
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
