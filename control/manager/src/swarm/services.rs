//! The leader's side of services: the service ops, and reconciliation (the
//! pure orchestrator and scheduler run against the committed state, their
//! decisions proposed as one command).

use super::{now_secs, op_error, random_id, read_linear, refused, write, Raft, Shared};
use crate::ops::{Op, OpError, OpReply};
use crate::state::orchestrator;
use crate::state::update::apply_changes;
use crate::state::{ClusterState, Command, Refusal, ServiceMode, Task};
use crate::views::{ServiceView, TaskView};

/// The tasks `service ps` / `node ps` list: of one service, on one node, or
/// both; grouped by service name, then by slot (or node), newest first.
fn tasks_of(s: &ClusterState, service: Option<&str>, node: Option<&str>) -> Vec<TaskView> {
    let mut services: Vec<_> = s
        .services
        .values()
        .filter(|sv| service.is_none_or(|id| sv.id == id))
        .collect();
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    services
        .into_iter()
        .flat_map(|sv| s.service_tasks(&sv.id))
        .filter(|t: &&Task| node.is_none_or(|n| t.node_id.as_deref() == Some(n)))
        .map(|t| TaskView::of(s, t))
        .collect()
}

impl Shared {
    /// Executes a service op; this manager must be the leader.
    pub(crate) async fn execute_service(&self, raft: &Raft, op: Op) -> Result<OpReply, OpError> {
        match op {
            Op::Services => {
                let (views, _) = read_linear(raft, |s| {
                    s.services
                        .values()
                        .map(|sv| ServiceView::of(s, sv))
                        .collect()
                })
                .await?;
                Ok(OpReply::Services(views))
            }
            Op::Service { key } => {
                let (view, _) = read_linear(raft, |s| {
                    s.find_service(&key).map(|sv| ServiceView::of(s, sv))
                })
                .await?;
                Ok(OpReply::Service(Box::new(view.map_err(OpError::NotFound)?)))
            }
            Op::CreateService(spec) => {
                let id = {
                    // Ports are allocated from the state: one plan at a time.
                    let _one_at_a_time = self.allocating.lock().await;
                    let (planned, _) =
                        read_linear(raft, |s| s.plan_service(&spec, random_id(25), now_secs()))
                            .await?;
                    let service = planned.map_err(op_error)?;
                    let id = service.id.clone();
                    refused(
                        write(
                            raft,
                            Command::CreateService {
                                service: Box::new(service),
                            },
                        )
                        .await?,
                    )?;
                    id
                };
                self.reconcile(raft).await;
                Ok(OpReply::Id(id))
            }
            Op::ScaleService { key, replicas } => {
                let id = {
                    let _one_at_a_time = self.allocating.lock().await;
                    let (found, _) = read_linear(raft, |s| s.find_service(&key).cloned()).await?;
                    let service = found.map_err(OpError::NotFound)?;
                    if service.spec.mode == ServiceMode::Global {
                        return Err(op_error(Refusal::ScaleGlobal(service.spec.name)));
                    }
                    let mut spec = service.spec.clone();
                    spec.mode = ServiceMode::Replicated { replicas };
                    refused(
                        write(
                            raft,
                            Command::UpdateService {
                                id: service.id.clone(),
                                spec: Box::new(spec),
                                at: now_secs(),
                                force: false,
                                rollback: false,
                            },
                        )
                        .await?,
                    )?;
                    service.id
                };
                self.reconcile(raft).await;
                Ok(OpReply::Id(id))
            }
            Op::UpdateService { key, changes } => {
                let id = {
                    let _one_at_a_time = self.allocating.lock().await;
                    let (planned, _) = read_linear(raft, |s| {
                        let service = s.find_service(&key).map_err(OpError::NotFound)?;
                        let spec =
                            apply_changes(&service.spec, &changes).map_err(OpError::Invalid)?;
                        let spec = s.plan_spec(&spec, Some(&service.id)).map_err(op_error)?;
                        Ok::<_, OpError>((service.id.clone(), spec))
                    })
                    .await?;
                    let (id, spec) = planned?;
                    refused(
                        write(
                            raft,
                            Command::UpdateService {
                                id: id.clone(),
                                spec: Box::new(spec),
                                at: now_secs(),
                                force: changes.force,
                                rollback: false,
                            },
                        )
                        .await?,
                    )?;
                    id
                };
                self.reconcile(raft).await;
                Ok(OpReply::Id(id))
            }
            Op::RollbackService { key } => {
                let (found, _) = read_linear(raft, |s| s.find_service(&key).cloned()).await?;
                let service = found.map_err(OpError::NotFound)?;
                let previous = service.previous_spec.clone().ok_or_else(|| {
                    OpError::Refused(format!(
                        "service {} does not have a previous spec",
                        service.spec.name
                    ))
                })?;
                refused(
                    write(
                        raft,
                        Command::UpdateService {
                            id: service.id.clone(),
                            spec: Box::new(previous),
                            at: now_secs(),
                            force: false,
                            rollback: true,
                        },
                    )
                    .await?,
                )?;
                self.reconcile(raft).await;
                Ok(OpReply::Id(service.id))
            }
            Op::RemoveService { key } => {
                let (id, _) =
                    read_linear(raft, |s| s.find_service(&key).map(|sv| sv.id.clone())).await?;
                let id = id.map_err(OpError::NotFound)?;
                refused(write(raft, Command::RemoveService { id: id.clone() }).await?)?;
                Ok(OpReply::Id(id))
            }
            Op::Tasks { service, node } => {
                let (tasks, _) = read_linear(raft, |s| {
                    let service = service
                        .as_deref()
                        .map(|k| s.find_service(k).map(|sv| sv.id.clone()))
                        .transpose()?;
                    let node = node
                        .as_deref()
                        .map(|k| s.find_node(k).map(|n| n.id.clone()))
                        .transpose()?;
                    Ok::<_, String>(tasks_of(s, service.as_deref(), node.as_deref()))
                })
                .await?;
                Ok(OpReply::Tasks(tasks.map_err(OpError::NotFound)?))
            }
            other => Err(OpError::Invalid(format!("not a service op: {other:?}"))),
        }
    }

    /// Runs the orchestrator and the scheduler on the committed state and
    /// proposes what they decide. Called on the leader's tick and right
    /// after service changes (so `service ps` shows tasks at once); errors
    /// only mean the next tick tries again.
    pub(crate) async fn reconcile(&self, raft: &Raft) {
        let _one_at_a_time = self.reconciling.lock().await;
        let planned = read_linear(raft, |s| {
            orchestrator::reconcile(s, now_secs(), &mut || random_id(25))
        })
        .await;
        let cmd = match planned {
            Ok((Some(cmd), _)) => cmd,
            Ok((None, _)) => return,
            Err(e) => {
                tracing::debug!(error = %e, "no reconciliation: state not readable");
                return;
            }
        };
        match write(raft, cmd).await.map(|o| o.into_result()) {
            Ok(Ok(())) => {}
            Ok(Err(r)) => tracing::info!(refusal = %r, "task plan refused; planning again"),
            Err(e) => tracing::debug!(error = %e, "task plan not committed"),
        }
    }
}
