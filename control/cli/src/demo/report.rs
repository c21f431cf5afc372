//! What `shoal demo` makes of the answers, as pure functions: reading an
//! HTTP answer and the whoami body in it, one line per request, and the
//! summary with its verdict. No sockets and no clock here, so all of it is
//! tested with made-up answers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddrV4;

/// Who answered a request, from the body `shoal whoami` sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The task's full name: `web.3.<task id>`.
    pub task: String,
    /// The node the task runs on, when the body says.
    pub node: Option<String>,
}

/// Reads the `Task:` and `Node:` lines of a whoami body. They come before
/// `RemoteAddr:`, after which whoami echoes the request (whose headers are
/// the client's, not the server's, so they are not looked at). `None` when
/// there is no `Task:` line: the answer did not come from a swarm task.
pub fn parse_whoami(body: &str) -> Option<Answer> {
    let mut task = None;
    let mut node = None;
    for line in body.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim();
        match key {
            "Task" if task.is_none() && !value.is_empty() => task = Some(value.to_string()),
            "Node" if node.is_none() && !value.is_empty() => node = Some(value.to_string()),
            "RemoteAddr" => break,
            _ => {}
        }
    }
    Some(Answer { task: task?, node })
}

/// Splits a whole HTTP/1.x response into its status code and body; the
/// error says what was wrong with it.
pub fn parse_response(raw: &[u8]) -> Result<(u16, &[u8]), String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(if raw.is_empty() {
            "the connection closed without an answer".into()
        } else {
            format!("no end of headers in {} bytes", raw.len())
        });
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let code = match (words.next(), words.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse().ok(),
        _ => None,
    };
    let code = code.ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    Ok((code, &raw[end + 4..]))
}

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A task answered.
    Answered(Answer),
    /// No task answered; why (connection refused, timed out, not whoami...).
    Failed(String),
}

/// One line per request:
/// `node2 (10.99.0.12:5000) -> web.3.<task id> on node3`.
pub fn request_line(node: &str, target: SocketAddrV4, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Answered(a) => match &a.node {
            Some(on) => format!("{node} ({target}) -> {} on {on}", a.task),
            None => format!("{node} ({target}) -> {}", a.task),
        },
        Outcome::Failed(why) => format!("{node} ({target}) -> no answer: {why}"),
    }
}

/// The answers of every request, by task and by the node that was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The nodes asked, in order (the columns).
    nodes: Vec<String>,
    /// The tasks that should answer (the first rows).
    tasks: Vec<String>,
    /// Answers by (task, node asked).
    answers: BTreeMap<(String, String), u32>,
    /// Where each task ran, as its answers said.
    ran_on: BTreeMap<String, String>,
    /// Failed requests by node asked, with the last reason.
    failures: BTreeMap<String, (u32, String)>,
}

/// The verdict on a [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every request was answered, every node answered and every task did.
    Pass {
        /// How many tasks answered.
        tasks: usize,
        /// How many nodes answered.
        nodes: usize,
    },
    /// What went wrong, one sentence each.
    Fail(Vec<String>),
}

impl Tally {
    /// An empty tally for requests to `nodes`, expecting answers from
    /// `tasks` (their full names).
    pub fn new(nodes: &[String], tasks: &[String]) -> Self {
        Tally {
            nodes: nodes.to_vec(),
            tasks: tasks.to_vec(),
            answers: BTreeMap::new(),
            ran_on: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Counts one request to `node`.
    pub fn record(&mut self, node: &str, outcome: &Outcome) {
        match outcome {
            Outcome::Answered(a) => {
                *self
                    .answers
                    .entry((a.task.clone(), node.to_string()))
                    .or_default() += 1;
                if let Some(on) = &a.node {
                    self.ran_on.insert(a.task.clone(), on.clone());
                }
            }
            Outcome::Failed(why) => {
                let f = self.failures.entry(node.to_string()).or_default();
                f.0 += 1;
                f.1.clone_from(why);
            }
        }
    }

    /// The expected tasks, then any other task that answered.
    fn rows(&self) -> Vec<&String> {
        let mut rows: Vec<&String> = self.tasks.iter().collect();
        for (task, _) in self.answers.keys() {
            if !rows.contains(&task) {
                rows.push(task);
            }
        }
        rows
    }

    fn count(&self, task: &str, node: &str) -> u32 {
        self.answers
            .get(&(task.to_string(), node.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn answered_through(&self, node: &str) -> u32 {
        self.answers
            .iter()
            .filter(|((_, n), _)| n == node)
            .map(|(_, c)| c)
            .sum()
    }

    fn answered_by(&self, task: &str) -> u32 {
        self.answers
            .iter()
            .filter(|((t, _), _)| t == task)
            .map(|(_, c)| c)
            .sum()
    }

    /// The summary table: one row per task (where it runs, then its answers
    /// through each node asked), a row of failed requests, and the verdict.
    pub fn render(&self) -> String {
        let mut rows = vec![{
            let mut header = vec!["TASK".to_string(), "RUNS ON".into()];
            header.extend(
                self.nodes
                    .iter()
                    .map(|n| format!("VIA {}", n.to_uppercase())),
            );
            header
        }];
        for task in self.rows() {
            let mut row = vec![
                task.clone(),
                self.ran_on.get(task).cloned().unwrap_or_else(|| "?".into()),
            ];
            row.extend(self.nodes.iter().map(|n| self.count(task, n).to_string()));
            rows.push(row);
        }
        let mut failed = vec!["(no answer)".to_string(), String::new()];
        failed.extend(
            self.nodes
                .iter()
                .map(|n| self.failures.get(n).map_or(0, |f| f.0).to_string()),
        );
        rows.push(failed);
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("   ").trim_end());
        }
        match self.verdict() {
            Verdict::Pass { tasks, nodes } => {
                let _ = writeln!(out, "all {tasks} tasks answered through all {nodes} nodes");
            }
            Verdict::Fail(problems) => {
                for p in problems {
                    let _ = writeln!(out, "FAILED: {p}");
                }
            }
        }
        out
    }

    /// Passes when every request was answered, every node was asked and
    /// answered, and every expected task answered at least once. Which task
    /// answers through which node is the load balancer's choice, so a task
    /// missing from one node's column is not a failure.
    pub fn verdict(&self) -> Verdict {
        let mut problems = Vec::new();
        for node in &self.nodes {
            let answered = self.answered_through(node);
            match self.failures.get(node) {
                Some((failed, why)) => problems.push(format!(
                    "{node} left {failed} of {} requests unanswered (last: {why})",
                    failed + answered
                )),
                None if answered == 0 => problems.push(format!("{node} was not asked")),
                None => {}
            }
        }
        let silent: Vec<&str> = self
            .tasks
            .iter()
            .filter(|t| self.answered_by(t) == 0)
            .map(String::as_str)
            .collect();
        if !silent.is_empty() {
            problems.push(format!(
                "{} of {} tasks never answered: {}",
                silent.len(),
                self.tasks.len(),
                silent.join(", ")
            ));
        }
        if self.tasks.is_empty() {
            problems.push("no task was expected to answer".into());
        }
        if problems.is_empty() {
            Verdict::Pass {
                tasks: self.tasks.len(),
                nodes: self.nodes.len(),
            }
        } else {
            Verdict::Fail(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `shoal whoami` sends (see `whoami::render`'s test).
    const BODY: &str = "Task: web.3.k2x9q\nNode: node3\nHostname: 5f1c0e2a9b7d\nIP: 10.0.1.5\nIP: 127.0.0.1\nRemoteAddr: 10.0.0.2:41234\nGET / HTTP/1.0\nHost: 10.99.0.12:5000\n";

    fn answer(task: &str, node: &str) -> Outcome {
        Outcome::Answered(Answer {
            task: task.into(),
            node: Some(node.into()),
        })
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_whoami_body_names_task_and_node() {
        assert_eq!(
            parse_whoami(BODY),
            Some(Answer {
                task: "web.3.k2x9q".into(),
                node: Some("node3".into())
            })
        );
        // Without a node line (whoami leaves unknown values out).
        assert_eq!(
            parse_whoami("Task: web.1.a\nHostname: h\nRemoteAddr: 1.2.3.4:5\n"),
            Some(Answer {
                task: "web.1.a".into(),
                node: None
            })
        );
        // Not a task: whoami run by hand, or something else on the port.
        assert_eq!(parse_whoami("Hostname: h\nRemoteAddr: 1.2.3.4:5\n"), None);
        assert_eq!(parse_whoami("<html>hello</html>"), None);
        // The echoed request cannot pass for the server's identity.
        assert_eq!(
            parse_whoami("Hostname: h\nRemoteAddr: 1.2.3.4:5\nGET / HTTP/1.0\nTask: fake\n"),
            None
        );
    }

    #[test]
    fn responses_split_into_status_and_body() {
        let raw = b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nTask";
        assert_eq!(parse_response(raw), Ok((200, &b"Task"[..])));
        let raw = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert_eq!(parse_response(raw), Ok((503, &b""[..])));
        assert!(parse_response(b"")
            .unwrap_err()
            .contains("closed without an answer"));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n")
            .unwrap_err()
            .contains("no end of headers"));
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")
            .unwrap_err()
            .contains("not an HTTP status line"));
    }

    #[test]
    fn a_request_line_says_who_was_asked_and_who_answered() {
        let to: SocketAddrV4 = "10.99.0.12:5000".parse().unwrap();
        assert_eq!(
            request_line("node2", to, &answer("web.3.k2x9q", "node3")),
            "node2 (10.99.0.12:5000) -> web.3.k2x9q on node3"
        );
        assert_eq!(
            request_line("node2", to, &Outcome::Failed("connection refused".into())),
            "node2 (10.99.0.12:5000) -> no answer: connection refused"
        );
    }

    #[test]
    fn every_task_through_every_node_passes() {
        let nodes = names(&["node1", "node2", "node3"]);
        let tasks = names(&["web.1.a", "web.2.b", "web.3.c"]);
        let mut t = Tally::new(&nodes, &tasks);
        for (i, node) in nodes.iter().enumerate() {
            for j in 0..2 {
                let k = (i + j) % 3 + 1;
                let task = format!("web.{k}.{}", ["a", "b", "c"][k - 1]);
                t.record(node, &answer(&task, &format!("node{k}")));
            }
        }
        assert_eq!(t.verdict(), Verdict::Pass { tasks: 3, nodes: 3 });
        assert_eq!(
            t.render(),
            "\
TASK          RUNS ON   VIA NODE1   VIA NODE2   VIA NODE3
web.1.a       node1     1           0           1
web.2.b       node2     1           1           0
web.3.c       node3     0           1           1
(no answer)             0           0           0
all 3 tasks answered through all 3 nodes
"
        );
    }

    #[test]
    fn a_silent_node_and_a_silent_task_are_named() {
        let nodes = names(&["node1", "node2"]);
        let tasks = names(&["web.1.a", "web.2.b"]);
        let mut t = Tally::new(&nodes, &tasks);
        t.record("node1", &answer("web.1.a", "node1"));
        t.record("node1", &answer("web.1.a", "node1"));
        t.record("node2", &Outcome::Failed("timed out".into()));
        t.record("node2", &Outcome::Failed("connection refused".into()));
        assert_eq!(
            t.verdict(),
            Verdict::Fail(vec![
                "node2 left 2 of 2 requests unanswered (last: connection refused)".into(),
                "1 of 2 tasks never answered: web.2.b".into(),
            ])
        );
        let text = t.render();
        assert!(text.contains("web.2.b       ?"), "{text}");
        assert!(
            text.contains("(no answer)             0           2"),
            "{text}"
        );
        assert!(
            text.ends_with("FAILED: 1 of 2 tasks never answered: web.2.b\n"),
            "{text}"
        );
    }

    #[test]
    fn an_unexpected_task_gets_a_row_and_nothing_asked_fails() {
        let nodes = names(&["node1"]);
        let mut t = Tally::new(&nodes, &names(&["web.1.a"]));
        t.record("node1", &answer("web.1.a", "node1"));
        t.record("node1", &answer("old.1.z", "node1"));
        assert_eq!(t.verdict(), Verdict::Pass { tasks: 1, nodes: 1 });
        assert!(t.render().contains("old.1.z"), "{}", t.render());

        let t = Tally::new(&nodes, &[]);
        assert_eq!(
            t.verdict(),
            Verdict::Fail(vec![
                "node1 was not asked".into(),
                "no task was expected to answer".into()
            ])
        );
    }
}
