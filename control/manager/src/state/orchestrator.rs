//! The orchestrator: from what the services ask for and what tasks exist, the
//! tasks to make, stop and place. Pure: the leader calls [`reconcile`] on
//! its tick and after every service or node change, with the time and a
//! source of fresh ids, and proposes the [`Command`] it returns.
//!
//! - A replicated service has one live task per slot 1..=replicas. Missing
//!   slots get a new task; slots above `replicas` lose theirs, the highest
//!   first (scale down).
//! - A global service has one live task on every node that is Ready, Active
//!   and satisfies its constraints, nodes that joined later included.
//! - A task whose node is gone, Down or drained, or no longer satisfies the
//!   constraints, is stopped (desired state `shutdown`) and its slot gets a
//!   replacement; a paused node keeps its tasks but takes no new ones.
//! - Tasks without a node (new ones, pending ones) go through the
//!   [`scheduler`](super::scheduler) each time, so a pending task is placed
//!   as soon as a node can take it.
//!
//! A stopped task stays in the state as history (`service ps` shows it),
//! except one that never got further than `assigned`: no node ever took it,
//! so removing it (scale down) just deletes it. Once nodes run tasks, the
//! ones they took are marked `remove` and their agents clean them up.
//!
//! When nothing needs to change, [`reconcile`] returns `None`: a leader
//! whose cluster has converged proposes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::constraint::all_match;
use super::scheduler::Scheduler;
use super::service::{
    FailureAction, RestartCondition, Service, ServiceMode, Task, TaskId, TaskState, TaskStatus,
    UpdateOrder,
};
use super::task::{allocate, TaskNetwork};
use super::update::{UpdateState, UpdateStatus};
use super::{Availability, ClusterState, Command, Node, NodeStatus, Timestamp};

/// How many stopped tasks `service ps` keeps per slot (Docker's default
/// `--task-history-limit`).
pub const TASK_HISTORY: usize = 5;

/// Whether a task may stay on `node`: the node exists, is not Down or
/// drained, and still satisfies the service's constraints.
fn may_stay(node: Option<&Node>, service: &Service) -> bool {
    node.is_some_and(|n| {
        n.status != NodeStatus::Down
            && n.availability != Availability::Drain
            && all_match(&service.spec.constraints, n)
    })
}

/// Whether a global service wants a task on `node`.
fn wants_global(node: &Node, service: &Service) -> bool {
    node.status == NodeStatus::Ready
        && node.availability == Availability::Active
        && all_match(&service.spec.constraints, node)
}

/// What a reconciliation changes.
#[derive(Default)]
struct Plan {
    upsert: BTreeMap<TaskId, Task>,
    removed: BTreeSet<TaskId>,
}

impl Plan {
    /// Stops `task`: deleted if no node ever took it, else desired `shutdown`
    /// (or `remove` when its slot is gone for good).
    fn stop(&mut self, task: &Task, end: TaskState) {
        if end == TaskState::Remove && task.status.state <= TaskState::Assigned {
            self.removed.insert(task.id.clone());
            return;
        }
        let mut t = task.clone();
        t.desired_state = end;
        self.upsert.insert(t.id.clone(), t);
    }
}

/// The tasks to make, stop and place so that the state matches what its
/// services ask for; `None` when it already does.
pub fn reconcile(
    state: &ClusterState,
    now: Timestamp,
    new_id: &mut dyn FnMut() -> String,
) -> Option<Command> {
    let mut plan = Plan::default();
    let mut to_place: Vec<Task> = Vec::new();
    let mut addresses = Addresses::new(state);
    let mut updates = Vec::new();
    let mut rollbacks = Vec::new();
    clean_up_ended(state, &mut plan);
    for service in state.services.values() {
        // The live tasks, and the finished ones that keep their slot (or
        // node) because the restart policy lets them rest.
        let holders: Vec<&Task> = state
            .service_tasks(&service.id)
            .into_iter()
            .filter(|t| t.is_live() || t.desired_state == TaskState::Complete)
            .collect();
        // Tasks on nodes they may not stay on make way for replacements.
        let mut kept: Vec<&Task> = Vec::new();
        // Placed tasks made from an older spec than the tasks must run.
        let mut outdated: Vec<&Task> = Vec::new();
        for &task in &holders {
            let placed = task.status.state >= TaskState::Assigned;
            if !task.is_live() {
                kept.push(task);
                continue;
            }
            match &task.node_id {
                Some(node) if placed && !may_stay(state.nodes.get(node), service) => {
                    plan.stop(task, TaskState::Shutdown)
                }
                // A global task waiting for a node that is gone.
                Some(node) if task.slot.is_none() && !state.nodes.contains_key(node) => {
                    plan.stop(task, TaskState::Remove)
                }
                _ => kept.push(task),
            }
        }
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => {
                let mut by_slot: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
                for task in kept {
                    by_slot
                        .entry(task.slot.unwrap_or(0))
                        .or_default()
                        .push(task);
                }
                // Newest first within a slot, whichever nodes its tasks are on.
                for tasks in by_slot.values_mut() {
                    tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
                }
                for (&slot, tasks) in &by_slot {
                    // service_tasks sorts newest first: the first one stays.
                    let (first, extra) = tasks.split_first().expect("non-empty slot");
                    for t in extra {
                        if !kept_for_start_first(service, first, t) {
                            plan.stop(t, TaskState::Shutdown);
                        }
                    }
                    if slot >= 1 && slot <= replicas {
                        outdated.extend(outdated_in(service, first, extra));
                    }
                    if slot == 0 || slot > replicas {
                        if first.is_live() {
                            plan.stop(first, TaskState::Remove);
                        }
                    } else if first.status.state < TaskState::Assigned {
                        to_place.push((*first).clone());
                    } else if let Some(next) = restart(first, service, now, &mut plan) {
                        to_place.push(new_task(
                            service,
                            Some(slot),
                            None,
                            now,
                            new_id(),
                            next,
                            &mut addresses,
                        ));
                    }
                }
                for slot in 1..=replicas {
                    if !by_slot.contains_key(&slot) {
                        to_place.push(new_task(
                            service,
                            Some(slot),
                            None,
                            now,
                            new_id(),
                            0,
                            &mut addresses,
                        ));
                    }
                }
            }
            ServiceMode::Global => {
                let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
                for task in kept {
                    if let Some(node) = task.node_id.as_deref() {
                        by_node.entry(node).or_default().push(task);
                    }
                }
                for (node, tasks) in &by_node {
                    let (first, extra) = tasks.split_first().expect("non-empty node");
                    for t in extra {
                        if !kept_for_start_first(service, first, t) {
                            plan.stop(t, TaskState::Shutdown);
                        }
                    }
                    outdated.extend(outdated_in(service, first, extra));
                    let wanted = state
                        .nodes
                        .get(*node)
                        .is_some_and(|n| wants_global(n, service));
                    if first.status.state < TaskState::Assigned {
                        if wanted {
                            to_place.push((*first).clone());
                        } else {
                            plan.stop(first, TaskState::Remove);
                        }
                    } else if let Some(next) = restart(first, service, now, &mut plan) {
                        if wanted {
                            to_place.push(new_task(
                                service,
                                None,
                                Some((*node).to_string()),
                                now,
                                new_id(),
                                next,
                                &mut addresses,
                            ));
                        }
                    }
                }
                for node in state.nodes.values() {
                    if wants_global(node, service) && !by_node.contains_key(node.id.as_str()) {
                        to_place.push(new_task(
                            service,
                            None,
                            Some(node.id.clone()),
                            now,
                            new_id(),
                            0,
                            &mut addresses,
                        ));
                    }
                }
            }
        }
        let update = UpdateContext {
            service,
            holders: &holders,
            outdated: &outdated,
            now,
        };
        match roll(&update, &plan) {
            Roll::Batch(old) => {
                for t in old {
                    let node = if t.slot.is_none() {
                        t.node_id.clone()
                    } else {
                        None
                    };
                    if service.spec.update.order == UpdateOrder::StopFirst {
                        plan.stop(t, TaskState::Shutdown);
                    }
                    to_place.push(new_task(
                        service,
                        t.slot,
                        node,
                        now,
                        new_id(),
                        0,
                        &mut addresses,
                    ));
                }
            }
            Roll::Status(status) => updates.push((service.id.clone(), status)),
            Roll::Rollback => rollbacks.push(service.id.clone()),
            Roll::Wait => {}
        }
        trim_history(state, service, &mut plan);
    }
    let leaving: BTreeSet<&str> = plan
        .upsert
        .keys()
        .chain(plan.removed.iter())
        .map(String::as_str)
        .collect();
    let mut scheduler = Scheduler::new(state, &leaving);
    for task in to_place {
        let Some(service) = state.services.get(&task.service_id) else {
            continue;
        };
        let placed = scheduler.place(&task, service, now);
        match state.tasks.get(&task.id) {
            // A pending task that is still pending for the same reason is
            // left alone: no write every tick.
            Some(old)
                if same_status(&old.status, &placed.status) && old.node_id == placed.node_id => {}
            _ => {
                plan.upsert.insert(placed.id.clone(), placed);
            }
        }
    }
    if plan.upsert.is_empty()
        && plan.removed.is_empty()
        && updates.is_empty()
        && rollbacks.is_empty()
    {
        return None;
    }
    Some(Command::SetTasks {
        tasks: plan.upsert.into_values().collect(),
        removed: plan.removed.into_iter().collect(),
        updates,
        rollbacks,
        at: now,
    })
}

fn same_status(a: &TaskStatus, b: &TaskStatus) -> bool {
    a.state == b.state && a.message == b.message && a.err == b.err
}

fn new_task(
    service: &Service,
    slot: Option<u64>,
    node: Option<String>,
    now: Timestamp,
    id: String,
    restarts: u64,
    addresses: &mut Addresses,
) -> Task {
    Task {
        id,
        service_id: service.id.clone(),
        slot,
        node_id: node,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::New,
            message: "created".into(),
            err: None,
            exit_code: None,
            timestamp: now,
        },
        spec_version: service.version,
        created_at: now,
        networks: addresses.attach(service),
        restarts,
    }
}

/// What the restart policy does with a task that ended while it was wanted:
/// `Some(attempts)` when a replacement (with that many attempts behind it)
/// should start now, in which case the ended task is retired; `None` while
/// the delay runs, or for good when the policy says no more (the task then
/// keeps its slot as finished, desired `complete`).
fn restart(task: &Task, service: &Service, now: Timestamp, plan: &mut Plan) -> Option<u64> {
    if !task.is_live() || !task.status.state.is_terminal() {
        return None;
    }
    let policy = &service.spec.restart;
    let wanted = match policy.condition {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => task.status.state != TaskState::Complete,
        RestartCondition::None => false,
    };
    let attempts = task.restarts + 1;
    if !wanted || (policy.max_attempts > 0 && task.restarts >= policy.max_attempts) {
        let mut t = task.clone();
        t.desired_state = TaskState::Complete;
        plan.upsert.insert(t.id.clone(), t);
        return None;
    }
    let delay = policy.delay_ns.div_ceil(1_000_000_000);
    if now < task.status.timestamp.saturating_add(delay) {
        return None;
    }
    plan.stop(task, TaskState::Shutdown);
    Some(attempts)
}

/// Tasks that are done with: a task asked to go (`remove`) that its node
/// says has stopped is deleted; one whose node left the swarm while it may
/// have been running is marked `orphaned` (its addresses are then free).
fn clean_up_ended(state: &ClusterState, plan: &mut Plan) {
    for task in state.tasks.values() {
        let ended = task.status.state.is_terminal();
        if task.desired_state == TaskState::Remove && ended {
            plan.removed.insert(task.id.clone());
            continue;
        }
        let gone = task
            .node_id
            .as_ref()
            .is_some_and(|n| !state.nodes.contains_key(n));
        if gone && !ended && task.status.state >= TaskState::Assigned {
            let mut t = task.clone();
            if t.desired_state <= TaskState::Running {
                t.desired_state = TaskState::Shutdown;
            }
            t.status = TaskStatus {
                state: TaskState::Orphaned,
                message: "node left the swarm".into(),
                err: None,
                exit_code: None,
                timestamp: task.status.timestamp,
            };
            plan.upsert.insert(t.id.clone(), t);
        }
    }
}

/// The addresses held on every network, as tasks are made in one plan.
struct Addresses<'a> {
    state: &'a ClusterState,
    used: BTreeMap<String, BTreeSet<std::net::Ipv4Addr>>,
}

impl<'a> Addresses<'a> {
    fn new(state: &'a ClusterState) -> Self {
        Addresses {
            state,
            used: BTreeMap::new(),
        }
    }

    /// One address on each of the service's networks (the ingress network
    /// first when it publishes through the routing mesh). A full network
    /// gives no address: the task is made without that attachment and its
    /// node reports the failure.
    fn attach(&mut self, service: &Service) -> Vec<TaskNetwork> {
        let mut out = Vec::new();
        for id in self.state.service_networks(&service.spec) {
            let Some(network) = self.state.networks.get(&id) else {
                continue;
            };
            let used = self
                .used
                .entry(id.clone())
                .or_insert_with(|| self.state.addresses_in_use(network));
            if let Some(ip) = allocate(network, used) {
                out.push(TaskNetwork { network_id: id, ip });
            }
        }
        out
    }
}

/// Deletes the oldest stopped tasks of each slot (or node) beyond
/// [`TASK_HISTORY`], so that history does not grow without end.
fn trim_history(state: &ClusterState, service: &Service, plan: &mut Plan) {
    let mut dead: BTreeMap<(Option<u64>, Option<&str>), Vec<&Task>> = BTreeMap::new();
    for task in state.service_tasks(&service.id) {
        let stopped = !task.is_live() || plan.upsert.get(&task.id).is_some_and(|t| !t.is_live());
        if stopped && !plan.removed.contains(&task.id) {
            let key = match task.slot {
                Some(slot) => (Some(slot), None),
                None => (None, task.node_id.as_deref()),
            };
            dead.entry(key).or_default().push(task);
        }
    }
    for tasks in dead.values() {
        // Newest first: everything past the limit goes.
        for t in tasks.iter().skip(TASK_HISTORY) {
            plan.upsert.remove(&t.id);
            plan.removed.insert(t.id.clone());
        }
    }
}

/// Whether `old`, outdated, stays while `newer` (from the current spec)
/// starts: `--update-order start-first` stops the old task only once its
/// replacement runs (and keeps it when the replacement fails).
fn kept_for_start_first(service: &Service, newer: &Task, old: &Task) -> bool {
    service.spec.update.order == UpdateOrder::StartFirst
        && old.spec_version < newer.spec_version
        && newer.status.state != TaskState::Running
        && !old.status.state.is_terminal()
}

/// The outdated task of a slot (or node) that an update would replace: the
/// newest live one when it is placed and outdated; none while a
/// start-first replacement is on its way.
fn outdated_in<'a>(service: &Service, first: &'a Task, extra: &[&'a Task]) -> Option<&'a Task> {
    let starting = extra
        .iter()
        .any(|t| kept_for_start_first(service, first, t));
    (!starting
        && first.is_live()
        && first.status.state >= TaskState::Assigned
        && !first.status.state.is_terminal()
        && service.is_outdated(first))
    .then_some(first)
}

/// One service's rolling update, as the orchestrator sees it.
struct UpdateContext<'a> {
    service: &'a Service,
    /// Its live and finished-for-good tasks, newest first.
    holders: &'a [&'a Task],
    /// Its outdated tasks that an update may replace, one per slot.
    outdated: &'a [&'a Task],
    now: Timestamp,
}

/// What a rolling update does this round.
enum Roll<'a> {
    /// Replace these outdated tasks.
    Batch(Vec<&'a Task>),
    /// Record a new update status (completed or paused).
    Status(UpdateStatus),
    /// The update failed and rolls back.
    Rollback,
    /// Nothing now.
    Wait,
}

/// The next step of a service's rolling update: batches of
/// `--update-parallelism` tasks (0: all at once), each after the previous
/// one runs and `--update-delay` has passed; a new task that fails stops the
/// update by `--update-failure-action`; none left outdated ends it.
fn roll<'a>(u: &UpdateContext<'a>, plan: &Plan) -> Roll<'a> {
    let service = u.service;
    let Some(status) = service
        .update_status
        .as_ref()
        .filter(|s| s.state.in_progress())
    else {
        return Roll::Wait;
    };
    let rollback = status.state == UpdateState::RollbackStarted;
    let fresh: Vec<&Task> = u
        .holders
        .iter()
        .copied()
        .filter(|t| !service.is_outdated(t) && t.created_at >= status.started_at)
        .collect();
    let failed = fresh
        .iter()
        .find(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected));
    let policy = &service.spec.update;
    if let Some(t) = failed {
        match policy.failure_action {
            FailureAction::Continue => {}
            FailureAction::Rollback if !rollback && service.previous_spec.is_some() => {
                return Roll::Rollback
            }
            _ => {
                let what = if rollback { "rollback" } else { "update" };
                return Roll::Status(UpdateStatus {
                    state: if rollback {
                        UpdateState::RollbackPaused
                    } else {
                        UpdateState::Paused
                    },
                    started_at: status.started_at,
                    completed_at: None,
                    message: format!(
                        "{what} paused due to failure or early termination of task {}",
                        t.id
                    ),
                });
            }
        }
    }
    // A new task is in flight until it has run for the monitor period.
    let monitor = policy.monitor_ns.div_ceil(1_000_000_000);
    let in_flight = fresh
        .iter()
        .filter(|t| {
            t.is_live()
                && (t.status.state < TaskState::Running
                    || (t.status.state == TaskState::Running
                        && u.now < t.status.timestamp.saturating_add(monitor)))
        })
        .count();
    let waiting: Vec<&Task> = u
        .outdated
        .iter()
        .copied()
        .filter(|t| !plan.upsert.contains_key(&t.id) && !plan.removed.contains(&t.id))
        .collect();
    if waiting.is_empty() {
        if in_flight == 0 {
            let (state, message) = if rollback {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            return Roll::Status(UpdateStatus {
                state,
                started_at: status.started_at,
                completed_at: Some(u.now),
                message: message.into(),
            });
        }
        return Roll::Wait;
    }
    let parallelism = match policy.parallelism {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let delay = policy.delay_ns.div_ceil(1_000_000_000);
    let last_batch = fresh.iter().map(|t| t.created_at).max();
    let rested = last_batch.is_none_or(|at| in_flight == 0 && at.saturating_add(delay) <= u.now);
    if in_flight >= parallelism || !rested {
        return Roll::Wait;
    }
    let mut batch = waiting;
    batch.sort_by_key(|t| (t.slot, t.node_id.clone()));
    batch.truncate(parallelism - in_flight);
    Roll::Batch(batch)
}
