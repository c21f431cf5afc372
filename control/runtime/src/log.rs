//! Task logs: one JSON object per line in `<state>/logs/<id>.log`, rotated to
//! `<id>.log.1` when the file would pass its cap (one old file is kept).
//!
//! Each record carries a sequence number `n` besides Docker's `t` (time), `s`
//! (stream) and `l` (line), so a reader's cursor is the number of the next
//! line and stays valid across rotation; lines rotated away are skipped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{LogChunk, LogLine, Stream};

/// Lines longer than this are cut in pieces (Docker cuts at 16 KiB too).
pub(crate) const MAX_LINE: usize = 16 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    n: u64,
    t: u64,
    s: Stream,
    l: String,
}

/// The two files of a task's log.
pub(crate) fn paths(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{id}.log")),
        dir.join(format!("{id}.log.1")),
    )
}

/// The writing end shared by a task's stdout and stderr readers.
pub(crate) struct LogWriter {
    current: PathBuf,
    old: PathBuf,
    file: File,
    size: u64,
    next: u64,
    cap: u64,
}

impl LogWriter {
    /// Opens (appending to) the task's log, continuing its numbering.
    pub(crate) fn open(dir: &Path, id: &str, cap: u64) -> io::Result<Self> {
        let (current, old) = paths(dir, id);
        let next = last_number(&current)?
            .or(last_number(&old)?)
            .map_or(0, |n| n + 1);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)?;
        let size = file.metadata()?.len();
        Ok(Self {
            current,
            old,
            file,
            size,
            next,
            cap: cap.max(1),
        })
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let record = Record {
            n: self.next,
            t,
            s: stream,
            l: String::from_utf8_lossy(bytes).into_owned(),
        };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.cap {
            fs::rename(&self.current, &self.old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.current)?;
            self.size = 0;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        self.next += 1;
        Ok(())
    }
}

fn last_number(path: &Path) -> io::Result<Option<u64>> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text
        .split(|&b| b == b'\n')
        .rev()
        .find_map(|l| serde_json::from_slice::<Record>(l).ok())
        .map(|r| r.n))
}

/// Starts a thread that copies `pipe` into `log` line by line; it sends on
/// `done` when the pipe reaches end of file (every writer closed it).
pub(crate) fn spawn_reader(
    task: &str,
    stream: Stream,
    mut pipe: impl Read + Send + 'static,
    log: Arc<Mutex<LogWriter>>,
    done: mpsc::Sender<()>,
) -> io::Result<()> {
    let task = task.to_string();
    let name = match stream {
        Stream::Stdout => "task-stdout",
        Stream::Stderr => "task-stderr",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 8192];
            let emit = |line: &[u8]| {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = log.write(stream, line) {
                    tracing::warn!(task = %task, error = %e, "cannot write the task's log");
                }
            };
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                pending.extend_from_slice(&buf[..n]);
                let mut start = 0;
                while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
                    let mut end = start + pos;
                    while end - start > MAX_LINE {
                        emit(&pending[start..start + MAX_LINE]);
                        start += MAX_LINE;
                    }
                    emit(&pending[start..end]);
                    end += 1;
                    start = end;
                }
                while pending.len() - start > MAX_LINE {
                    emit(&pending[start..start + MAX_LINE]);
                    start += MAX_LINE;
                }
                pending.drain(..start);
            }
            if !pending.is_empty() {
                emit(&pending);
            }
            let _ = done.send(());
        })?;
    Ok(())
}

/// Reads at most `max` lines numbered `since` or later from the task's log.
pub(crate) fn read(dir: &Path, id: &str, since: u64, max: usize) -> io::Result<LogChunk> {
    let (current, old) = paths(dir, id);
    let mut chunk = LogChunk {
        lines: Vec::new(),
        next: since,
    };
    // The old file is needed only when the current one starts after `since`.
    let first_current = first_number(&current)?;
    let files: &[&Path] = match first_current {
        Some(n) if n <= since => &[&current],
        _ => &[&old, &current],
    };
    for path in files {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            if chunk.lines.len() >= max {
                return Ok(chunk);
            }
            // A line being written has no newline yet and does not parse.
            let Ok(record) = serde_json::from_slice::<Record>(&line?) else {
                continue;
            };
            if record.n < since {
                continue;
            }
            chunk.next = record.n + 1;
            chunk.lines.push(LogLine {
                time_ns: record.t,
                stream: record.s,
                line: record.l,
            });
        }
    }
    Ok(chunk)
}

fn first_number(path: &Path) -> io::Result<Option<u64>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut first = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut first)?;
    Ok(serde_json::from_slice::<Record>(&first).ok().map(|r| r.n))
}

/// Deletes both files of the task's log; missing files are fine.
pub(crate) fn remove(dir: &Path, id: &str) -> io::Result<()> {
    let (current, old) = paths(dir, id);
    for path in [current, old] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-log-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rotation_keeps_the_cursor_valid() {
        let dir = temp_dir("rotate");
        let mut w = LogWriter::open(&dir, "t1", 300).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert!(paths(&dir, "t1").1.exists(), "rotated once at least");
        // The oldest lines are gone; reading from 0 starts at the oldest kept.
        let all = read(&dir, "t1", 0, 1000).unwrap();
        assert_eq!(all.next, 20);
        assert_eq!(all.lines.last().unwrap().line, "line 19");
        let first_kept: u64 = all.lines[0].line[5..].parse().unwrap();
        assert!(first_kept > 0);
        let tail = read(&dir, "t1", 18, 1000).unwrap();
        let text: Vec<_> = tail.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(text, ["line 18", "line 19"]);
        // Reopening continues the numbering.
        drop(w);
        let mut w = LogWriter::open(&dir, "t1", 300).unwrap();
        w.write(Stream::Stderr, b"again").unwrap();
        let more = read(&dir, "t1", 20, 10).unwrap();
        assert_eq!(more.next, 21);
        assert_eq!(more.lines[0].stream, Stream::Stderr);
        fs::remove_dir_all(&dir).unwrap();
    }
}
