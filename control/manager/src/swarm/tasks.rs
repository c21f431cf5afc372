//! The leader's side of the node agents' task traffic: assignments, status
//! reports and log lines.

use super::{read_linear, refused, write, Raft, Shared};
use crate::dispatch::{assignments, ServiceLogLine};
use crate::ops::{Op, OpError, OpReply};
use crate::state::Command;

/// The most lines one `service logs` answer carries; the CLI asks again for
/// the rest.
const LOG_PAGE: usize = 2000;

impl Shared {
    /// Executes an agent's task op or `service logs`; this manager must be
    /// the leader.
    pub(crate) async fn execute_task(&self, raft: &Raft, op: Op) -> Result<OpReply, OpError> {
        match op {
            Op::Assignments { node_id } => {
                // The committed state is enough: an agent asks again soon.
                let a = raft.read(|s| {
                    s.nodes
                        .contains_key(&node_id)
                        .then(|| assignments(s, &node_id))
                });
                let a = a.ok_or_else(|| not_a_member(&node_id))?;
                Ok(OpReply::Assignments(Box::new(a)))
            }
            Op::ReportTasks { node_id, updates } => {
                if !updates.is_empty() {
                    refused(
                        write(
                            raft,
                            Command::UpdateTaskStatus {
                                node: node_id,
                                updates,
                            },
                        )
                        .await?,
                    )?;
                    // A task that ended may be replaced at once.
                    self.reconcile(raft).await;
                }
                Ok(OpReply::Done)
            }
            Op::Attach {
                node_id,
                id,
                network,
            } => {
                let key = crate::state::attachment_key(&node_id, &id);
                let cmd = Command::Attach {
                    id,
                    network: network.clone(),
                    node: node_id,
                    at: super::now_secs(),
                };
                refused(write(raft, cmd).await?)?;
                let reply = raft.read(|s| {
                    let a = s.attachments.get(&key)?;
                    let n = s.networks.get(&a.network_id)?;
                    Some(crate::ops::AttachReply {
                        ip: a.ip,
                        prefix_len: n.subnet.prefix_len(),
                        gateway: n.gateway,
                    })
                });
                let reply = reply.ok_or_else(|| {
                    OpError::NotFound(format!("the attachment to network {network} is gone"))
                })?;
                Ok(OpReply::Attached(reply))
            }
            Op::Detach { node_id, id } => {
                refused(write(raft, Command::Detach { id, node: node_id }).await?)?;
                Ok(OpReply::Done)
            }
            Op::PushLogs { node_id, lines } => {
                // Each line goes to its task's service, if the task is this
                // node's: a node cannot write into another's logs.
                let owners = raft.read(|s| {
                    lines
                        .iter()
                        .map(|l| {
                            s.tasks
                                .get(&l.task_id)
                                .filter(|t| t.node_id.as_deref() == Some(node_id.as_str()))
                                .map(|t| t.service_id.clone())
                        })
                        .collect::<Vec<_>>()
                });
                let mut store = self.logs.lock().expect("log store");
                for (line, owner) in lines.into_iter().zip(owners) {
                    if let Some(service) = owner {
                        store.push(&service, line);
                    }
                }
                Ok(OpReply::Done)
            }
            Op::Logs { service, since } => {
                let (found, _) =
                    read_linear(raft, |s| s.find_service(&service).map(|sv| sv.id.clone())).await?;
                let id = found.map_err(OpError::NotFound)?;
                let lines = self
                    .logs
                    .lock()
                    .expect("log store")
                    .read(&id, since, LOG_PAGE);
                let out = raft.read(|s| {
                    lines
                        .into_iter()
                        .map(|(seq, line)| {
                            let task = s.tasks.get(&line.task_id);
                            let name = match (task, s.services.get(&id)) {
                                (Some(t), Some(sv)) => format!("{}.{}", t.name(sv.name()), t.id),
                                _ => line.task_id.clone(),
                            };
                            let node = task
                                .and_then(|t| t.node_id.as_ref())
                                .and_then(|n| s.nodes.get(n))
                                .map(|n| n.hostname.clone())
                                .unwrap_or_default();
                            ServiceLogLine {
                                seq,
                                task: name,
                                node,
                                line,
                            }
                        })
                        .collect()
                });
                Ok(OpReply::Logs(out))
            }
            other => Err(OpError::Invalid(format!("not a task op: {other:?}"))),
        }
    }
}

fn not_a_member(node_id: &str) -> OpError {
    OpError::Forbidden(format!(
        "node {node_id} is not a member of this swarm (was it removed?)"
    ))
}
