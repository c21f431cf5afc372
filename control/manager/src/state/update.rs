//! `service update` and `service rollback`: which changes redeploy tasks,
//! and the state of a rolling update.
//!
//! A change to what a task runs (command, environment, networks, published
//! ports) or `--force` marks the service's current version as the one every
//! task must come from ([`Service::redeploy_version`]); tasks made from an
//! older version are *outdated*, and the orchestrator replaces them in
//! batches (`--update-parallelism`, `--update-delay`, `--update-order`).
//! Scaling, constraints, restart and update settings and labels change no
//! running task (constraints move only the tasks that no longer satisfy
//! them, as before).
//!
//! A new task that fails while an update runs is a failed update: by
//! `--update-failure-action` the update pauses (until the next `service
//! update`), carries on, or rolls back to the previous spec.

use serde::{Deserialize, Serialize};

use super::constraint::Constraint;
use super::service::{
    FailureAction, PortConfig, RestartCondition, Service, ServiceMode, ServiceSpec, Task,
    UpdateOrder,
};
use super::Timestamp;

/// Docker's `UpdateStatus.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    /// Tasks are being replaced.
    Updating,
    /// Stopped after a failure; the next `service update` resumes.
    Paused,
    /// Every task runs the new spec.
    Completed,
    /// Going back to the previous spec.
    RollbackStarted,
    /// A rollback stopped after a failure.
    RollbackPaused,
    /// Every task runs the previous spec again.
    RollbackCompleted,
}

impl UpdateState {
    /// Whether tasks are being replaced now.
    pub fn in_progress(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// Whether it stopped after a failure, waiting for the next update.
    pub fn is_paused(self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }
}

/// Where a service's last update stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The state.
    pub state: UpdateState,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended, once it did.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    /// Docker's words: "update in progress", "update paused due to failure
    /// or early termination of task ...".
    pub message: String,
}

/// Whether going from `old` to `new` changes what tasks run, so they must
/// be replaced.
pub fn redeploys(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    old.command != new.command
        || old.image != new.image
        || old.env != new.env
        || old.networks != new.networks
        || old.ports != new.ports
        || old.limits != new.limits
}

impl Service {
    /// Whether `task` was made from a spec older than the one tasks must run.
    pub fn is_outdated(&self, task: &Task) -> bool {
        task.spec_version < self.redeploy_version
    }

    /// Records a new spec (from `service update`, `scale` or `rollback`):
    /// the old one becomes the previous spec, the version goes up, and when
    /// tasks must change an update (or rollback) starts.
    pub(super) fn set_spec(
        &mut self,
        spec: ServiceSpec,
        force: bool,
        rollback: bool,
        at: Timestamp,
    ) {
        let redeploy = force || redeploys(&self.spec, &spec);
        self.previous_spec = Some(std::mem::replace(&mut self.spec, spec));
        self.version += 1;
        self.updated_at = at;
        if redeploy {
            self.redeploy_version = self.version;
            let (state, message) = if rollback {
                (UpdateState::RollbackStarted, "rollback in progress")
            } else {
                (UpdateState::Updating, "update in progress")
            };
            self.update_status = Some(UpdateStatus {
                state,
                started_at: at,
                completed_at: None,
                message: message.into(),
            });
        }
    }
}

/// What `service update` asks to change; unset fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanges {
    /// `--replicas`.
    #[serde(default)]
    pub replicas: Option<u64>,
    /// `--args` / `-- COMMAND ARGS`: the whole new command.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `--image`: the new image (only for a service that has one).
    #[serde(default)]
    pub image: Option<String>,
    /// `--env-add K=V` (replaces K if set).
    #[serde(default)]
    pub env_add: Vec<String>,
    /// `--env-rm K`.
    #[serde(default)]
    pub env_rm: Vec<String>,
    /// `--constraint-add`.
    #[serde(default)]
    pub constraint_add: Vec<Constraint>,
    /// `--constraint-rm`, as written.
    #[serde(default)]
    pub constraint_rm: Vec<String>,
    /// `--publish-add`.
    #[serde(default)]
    pub publish_add: Vec<PortConfig>,
    /// `--publish-rm TARGET`: the target (container) port.
    #[serde(default)]
    pub publish_rm: Vec<u16>,
    /// `--restart-*`.
    #[serde(default)]
    pub restart_condition: Option<RestartCondition>,
    /// `--restart-delay`, nanoseconds.
    #[serde(default)]
    pub restart_delay_ns: Option<u64>,
    /// `--restart-max-attempts`.
    #[serde(default)]
    pub restart_max_attempts: Option<u64>,
    /// `--update-parallelism`.
    #[serde(default)]
    pub update_parallelism: Option<u64>,
    /// `--update-delay`, nanoseconds.
    #[serde(default)]
    pub update_delay_ns: Option<u64>,
    /// `--update-order`.
    #[serde(default)]
    pub update_order: Option<UpdateOrder>,
    /// `--update-failure-action`.
    #[serde(default)]
    pub update_failure_action: Option<FailureAction>,
    /// `--update-monitor`, nanoseconds.
    #[serde(default)]
    pub update_monitor_ns: Option<u64>,
    /// `--limit-cpu`, nano CPUs.
    #[serde(default)]
    pub limit_cpu: Option<u64>,
    /// `--limit-memory`, bytes.
    #[serde(default)]
    pub limit_memory: Option<u64>,
    /// `--force`: replace the tasks even if nothing they run changed.
    #[serde(default)]
    pub force: bool,
}

/// `spec` with `changes` made; a removal of something the spec does not
/// have is an error naming it, as Docker's are.
pub fn apply_changes(spec: &ServiceSpec, changes: &ServiceChanges) -> Result<ServiceSpec, String> {
    let c = changes;
    let mut new = spec.clone();
    if let Some(replicas) = c.replicas {
        match new.mode {
            ServiceMode::Replicated { .. } => new.mode = ServiceMode::Replicated { replicas },
            ServiceMode::Global => {
                return Err("--replicas can only be used with replicated mode".into())
            }
        }
    }
    if let Some(command) = &c.command {
        if command.is_empty() {
            return Err("the new command is empty".into());
        }
        new.command = command.clone();
    }
    if let Some(image) = &c.image {
        if new.image.is_none() {
            return Err(
                "--image can only change the image of a service created with --image".into(),
            );
        }
        super::service::check_image(image)?;
        new.image = Some(image.clone());
    }
    for key in &c.env_rm {
        new.env
            .retain(|kv| kv.split('=').next() != Some(key.as_str()));
    }
    for kv in &c.env_add {
        let key = kv.split('=').next().unwrap_or_default();
        if key.is_empty() {
            return Err(format!("invalid --env-add {kv:?}: use KEY=VALUE"));
        }
        new.env.retain(|old| old.split('=').next() != Some(key));
        new.env.push(kv.clone());
    }
    for text in &c.constraint_rm {
        let before = new.constraints.len();
        let wanted = text.replace(' ', "");
        new.constraints
            .retain(|k| k.to_string().replace(' ', "") != wanted);
        if new.constraints.len() == before {
            return Err(format!("constraint {text:?} is not one of the service's"));
        }
    }
    for k in &c.constraint_add {
        if !new.constraints.contains(k) {
            new.constraints.push(k.clone());
        }
    }
    for target in &c.publish_rm {
        let before = new.ports.len();
        new.ports.retain(|p| p.target != *target);
        if new.ports.len() == before {
            return Err(format!(
                "the service publishes no port with target {target}"
            ));
        }
    }
    for p in &c.publish_add {
        new.ports
            .retain(|old| !(old.target == p.target && old.protocol == p.protocol));
        new.ports.push(*p);
    }
    let r = &mut new.restart;
    r.condition = c.restart_condition.unwrap_or(r.condition);
    r.delay_ns = c.restart_delay_ns.unwrap_or(r.delay_ns);
    r.max_attempts = c.restart_max_attempts.unwrap_or(r.max_attempts);
    let u = &mut new.update;
    u.parallelism = c.update_parallelism.unwrap_or(u.parallelism);
    u.delay_ns = c.update_delay_ns.unwrap_or(u.delay_ns);
    u.order = c.update_order.unwrap_or(u.order);
    u.failure_action = c.update_failure_action.unwrap_or(u.failure_action);
    u.monitor_ns = c.update_monitor_ns.unwrap_or(u.monitor_ns);
    if c.limit_cpu.is_some() {
        new.limits.nano_cpus = c.limit_cpu;
    }
    if c.limit_memory.is_some() {
        new.limits.memory_bytes = c.limit_memory;
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 2 },
            command: vec!["sleep".into(), "1".into()],
            env: vec!["A=1".into(), "B=2".into()],
            constraints: vec!["node.role==worker".parse().unwrap()],
            ports: vec!["5000:80".parse().unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn changes_apply_and_say_whether_tasks_must_change() {
        let old = spec();
        let scaled = apply_changes(
            &old,
            &ServiceChanges {
                replicas: Some(5),
                constraint_add: vec!["node.labels.zone==a".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(scaled.mode, ServiceMode::Replicated { replicas: 5 });
        assert_eq!(scaled.constraints.len(), 2);
        assert!(
            !redeploys(&old, &scaled),
            "scaling and placement move no task"
        );
        let changed = apply_changes(
            &old,
            &ServiceChanges {
                env_add: vec!["A=9".into(), "C=3".into()],
                env_rm: vec!["B".into()],
                publish_rm: vec![80],
                publish_add: vec!["6000:81".parse().unwrap()],
                constraint_rm: vec!["node.role == worker".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(changed.env, ["A=9", "C=3"]);
        assert_eq!(changed.ports.len(), 1);
        assert_eq!(changed.ports[0].target, 81);
        assert!(changed.constraints.is_empty());
        assert!(redeploys(&old, &changed));
    }

    #[test]
    fn removing_what_is_not_there_is_refused_naming_it() {
        let e = apply_changes(
            &spec(),
            &ServiceChanges {
                publish_rm: vec![443],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("443"), "{e}");
        let e = apply_changes(
            &spec(),
            &ServiceChanges {
                constraint_rm: vec!["node.role==manager".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("node.role==manager"), "{e}");
        let mut global = spec();
        global.mode = ServiceMode::Global;
        assert!(apply_changes(
            &global,
            &ServiceChanges {
                replicas: Some(2),
                ..Default::default()
            }
        )
        .is_err());
    }
}
