//! Services and tasks as Docker's CLI shows them: `service ls`, `service ps`
//! and `node ps`, `service inspect`.
//!
//! There are no images: a task runs a command, so the IMAGE column shows the
//! command, which is what tells one service's tasks from another's.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{columns, human_duration, rfc3339, short_id};
use crate::state::service::{format_duration, PortConfig, PublishMode, Service, ServiceMode, Task};
use crate::state::{ClusterState, TaskState};

/// A service with its task counts, as `service ls` and `service inspect` need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The service.
    pub service: Service,
    /// Tasks whose process runs.
    pub running: u64,
    /// Tasks that should run.
    pub desired: u64,
    /// Its virtual IPs: network id and address with the subnet's prefix
    /// length (`10.0.1.2/24`), as Docker's `Endpoint.VirtualIPs` shows them.
    #[serde(default)]
    pub vips: Vec<(String, String)>,
}

impl ServiceView {
    /// The view of `service` in `state`.
    pub fn of(state: &ClusterState, service: &Service) -> Self {
        let live = state
            .tasks
            .values()
            .filter(|t| t.service_id == service.id && t.is_live());
        let (mut running, mut live_count) = (0, 0);
        for t in live {
            live_count += 1;
            if t.status.state == TaskState::Running {
                running += 1;
            }
        }
        let desired = match service.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global => live_count,
        };
        let vips = service
            .vips
            .iter()
            .map(|v| {
                let prefix = state
                    .networks
                    .get(&v.network_id)
                    .map_or(32, |n| n.subnet.prefix_len());
                (v.network_id.clone(), format!("{}/{prefix}", v.ip))
            })
            .collect();
        ServiceView {
            service: service.clone(),
            running,
            desired,
            vips,
        }
    }
}

/// A task with what `service ps` prints about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task.
    pub task: Task,
    /// `web.1`.
    pub name: String,
    /// Its service's command.
    pub command: Vec<String>,
    /// Its service's image (`--image`).
    #[serde(default)]
    pub image: Option<String>,
    /// Its node's hostname, once placed.
    pub node: Option<String>,
    /// Its host-mode published ports.
    pub ports: Vec<PortConfig>,
}

impl TaskView {
    /// The view of `task` in `state`.
    pub fn of(state: &ClusterState, task: &Task) -> Self {
        let service = state.services.get(&task.service_id);
        let name = service.map_or_else(|| task.service_id.clone(), |s| s.spec.name.clone());
        TaskView {
            name: task.name(&name),
            command: service.map(|s| s.spec.command.clone()).unwrap_or_default(),
            image: service.and_then(|s| s.spec.image.clone()),
            node: task
                .node_id
                .as_ref()
                .filter(|_| task.status.state >= TaskState::Assigned)
                .map(|n| {
                    state
                        .nodes
                        .get(n)
                        .map_or_else(|| n.clone(), |n| n.hostname.clone())
                }),
            ports: service
                .map(|s| {
                    s.spec
                        .ports
                        .iter()
                        .filter(|p| p.mode == PublishMode::Host)
                        .copied()
                        .collect()
                })
                .unwrap_or_default(),
            task: task.clone(),
        }
    }
}

fn ports_column(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `service ls`: sorted by name.
pub fn render_service_ls(services: &[ServiceView], no_trunc: bool) -> String {
    let mut sorted: Vec<&ServiceView> = services.iter().collect();
    sorted.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    let mut rows = vec![vec![
        "ID".to_string(),
        "NAME".into(),
        "MODE".into(),
        "REPLICAS".into(),
        "IMAGE".into(),
        "PORTS".into(),
    ]];
    for v in sorted {
        let spec = &v.service.spec;
        let mut replicas = format!("{}/{}", v.running, v.desired);
        if let (ServiceMode::Replicated { .. }, Some(max)) = (spec.mode, spec.max_replicas_per_node)
        {
            replicas.push_str(&format!(" (max {max} per node)"));
        }
        let ingress: Vec<PortConfig> = spec
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress)
            .copied()
            .collect();
        rows.push(vec![
            short_id(&v.service.id, no_trunc).to_string(),
            spec.name.clone(),
            spec.mode.name().into(),
            replicas,
            spec.image.clone().unwrap_or_else(|| spec.command.join(" ")),
            ports_column(&ingress),
        ]);
    }
    columns(&rows)
}

/// `service ps` and `node ps`: the tasks in the order given (by slot, newest
/// first); a slot's older tasks are shown as `\_ web.1`, like Docker.
pub fn render_task_ps(tasks: &[TaskView], now: u64, no_trunc: bool) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "NAME".into(),
        "IMAGE".into(),
        "NODE".into(),
        "DESIRED STATE".into(),
        "CURRENT STATE".into(),
        "ERROR".into(),
        "PORTS".into(),
    ]];
    let mut previous: Option<&str> = None;
    for v in tasks {
        let name = if previous == Some(v.name.as_str()) {
            format!(" \\_ {}", v.name)
        } else {
            v.name.clone()
        };
        previous = Some(&v.name);
        let t = &v.task;
        let error = t.status.err.clone().unwrap_or_default();
        rows.push(vec![
            short_id(&t.id, no_trunc).to_string(),
            name,
            v.image.clone().unwrap_or_else(|| v.command.join(" ")),
            v.node.clone().unwrap_or_default(),
            t.desired_state.title().into(),
            format!(
                "{} {} ago",
                t.status.state.title(),
                human_duration(now.saturating_sub(t.status.timestamp))
            ),
            if error.is_empty() {
                String::new()
            } else {
                format!("\"{error}\"")
            },
            ports_column(&v.ports),
        ]);
    }
    columns(&rows)
}

/// `service inspect`: Docker's JSON shape, with the command where Docker
/// has the image's container spec.
pub fn service_inspect(v: &ServiceView) -> Value {
    let s = &v.service;
    json!({
        "ID": s.id,
        "Version": {"Index": s.version},
        "CreatedAt": rfc3339(s.created_at),
        "UpdatedAt": rfc3339(s.updated_at),
        "Spec": spec_json(&s.spec),
        "PreviousSpec": s.previous_spec.as_ref().map(spec_json),
        "Endpoint": {
            "Spec": endpoint_json(&s.spec),
            "Ports": ports_json(&s.spec.ports),
            "VirtualIPs": v.vips.iter().map(|(net, addr)| json!({"NetworkID": net, "Addr": addr})).collect::<Vec<_>>(),
        },
        "ServiceStatus": {"RunningTasks": v.running, "DesiredTasks": v.desired},
        "UpdateStatus": s.update_status.as_ref().map(|u| json!({
            "State": u.state,
            "StartedAt": rfc3339(u.started_at),
            "CompletedAt": u.completed_at.map(rfc3339),
            "Message": u.message,
        })),
    })
}

fn ports_json(ports: &[PortConfig]) -> Value {
    ports
        .iter()
        .map(|p| {
            json!({
                "Protocol": p.protocol.to_string(),
                "TargetPort": p.target,
                "PublishedPort": p.published.unwrap_or(0),
                "PublishMode": p.mode.to_string(),
            })
        })
        .collect()
}

fn endpoint_json(spec: &crate::state::ServiceSpec) -> Value {
    json!({"Mode": spec.endpoint_mode.to_string(), "Ports": ports_json(&spec.ports)})
}

fn spec_json(spec: &crate::state::ServiceSpec) -> Value {
    let mode = match spec.mode {
        ServiceMode::Replicated { replicas } => json!({"Replicated": {"Replicas": replicas}}),
        ServiceMode::Global => json!({"Global": {}}),
    };
    let restart = &spec.restart;
    let update = &spec.update;
    json!({
        "Name": spec.name,
        "Labels": spec.labels,
        "TaskTemplate": {
            "ContainerSpec": {"Command": spec.command, "Env": spec.env},
            "Resources": {"Limits": {
                "NanoCPUs": spec.limits.nano_cpus.unwrap_or(0),
                "MemoryBytes": spec.limits.memory_bytes.unwrap_or(0),
            }},
            "RestartPolicy": {
                "Condition": serde_json::to_value(restart.condition).unwrap_or(Value::Null),
                "Delay": restart.delay_ns,
                "MaxAttempts": restart.max_attempts,
            },
            "Placement": {
                "Constraints": spec.constraints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "MaxReplicas": spec.max_replicas_per_node.unwrap_or(0),
            },
            "Networks": spec.networks.iter().map(|n| json!({"Target": n})).collect::<Vec<_>>(),
        },
        "Mode": mode,
        "UpdateConfig": {
            "Parallelism": update.parallelism,
            "Delay": update.delay_ns,
            "DelayText": format_duration(update.delay_ns),
            "FailureAction": serde_json::to_value(update.failure_action).unwrap_or(Value::Null),
            "Monitor": update.monitor_ns,
            "Order": serde_json::to_value(update.order).unwrap_or(Value::Null),
        },
        "EndpointSpec": endpoint_json(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::service::{TaskState, TaskStatus};
    use crate::state::ServiceSpec;

    fn service() -> Service {
        Service {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            spec: ServiceSpec {
                name: "web".into(),
                mode: ServiceMode::Replicated { replicas: 3 },
                command: vec!["shoal".into(), "whoami".into()],
                ports: vec!["5000:80".parse().unwrap()],
                ..Default::default()
            },
            version: 1,
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            previous_spec: None,
            redeploy_version: 1,
            update_status: None,
            vips: Vec::new(),
        }
    }

    fn task(
        id: &str,
        slot: u64,
        state: TaskState,
        desired: TaskState,
        err: Option<&str>,
    ) -> TaskView {
        TaskView {
            task: Task {
                id: id.into(),
                service_id: "abcdefghijklmnopqrstuvwxy".into(),
                slot: Some(slot),
                node_id: Some("n1".into()),
                desired_state: desired,
                status: TaskStatus {
                    state,
                    message: String::new(),
                    err: err.map(str::to_string),
                    exit_code: None,
                    timestamp: 100,
                },
                spec_version: 1,
                created_at: 100,
                networks: vec![],
                restarts: 0,
            },
            name: format!("web.{slot}"),
            command: vec!["shoal".into(), "whoami".into()],
            image: None,
            node: (state >= TaskState::Assigned).then(|| "node1".to_string()),
            ports: vec![],
        }
    }

    #[test]
    fn service_ls_looks_like_dockers() {
        let v = ServiceView {
            service: service(),
            running: 0,
            desired: 3,
            vips: vec![],
        };
        assert_eq!(
            render_service_ls(&[v], false),
            "\
ID             NAME   MODE         REPLICAS   IMAGE          PORTS
abcdefghijkl   web    replicated   0/3        shoal whoami   *:5000->80/tcp
"
        );
    }

    #[test]
    fn service_ps_shows_history_and_the_pending_reason() {
        let tasks = vec![
            task(
                "t1aaaaaaaaaaaaa",
                1,
                TaskState::Assigned,
                TaskState::Running,
                None,
            ),
            task(
                "t0aaaaaaaaaaaaa",
                1,
                TaskState::Assigned,
                TaskState::Shutdown,
                None,
            ),
            task(
                "t2aaaaaaaaaaaaa",
                2,
                TaskState::Pending,
                TaskState::Running,
                Some("no suitable node (scheduling constraints not satisfied on 3 nodes)"),
            ),
        ];
        let out = render_task_ps(&tasks, 160, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID             NAME        IMAGE          NODE    DESIRED STATE   CURRENT STATE                 ERROR                                                                  PORTS"
        );
        assert!(lines[1].starts_with("t1aaaaaaaaaa   web.1       shoal whoami   node1   Running         Assigned About a minute ago"), "{out}");
        let got = lines;
        assert!(got[2].contains(" \\_ web.1 "), "{out}");
        assert!(
            got[3]
                .contains("\"no suitable node (scheduling constraints not satisfied on 3 nodes)\""),
            "{out}"
        );
        assert!(got[3].contains("Pending About a minute ago"), "{out}");
    }

    #[test]
    fn service_inspect_has_dockers_fields() {
        let v = service_inspect(&ServiceView {
            service: service(),
            running: 0,
            desired: 3,
            vips: vec![("net1".into(), "10.0.0.2/24".into())],
        });
        assert_eq!(v["ID"], "abcdefghijklmnopqrstuvwxy");
        assert_eq!(v["Endpoint"]["VirtualIPs"][0]["Addr"], "10.0.0.2/24");
        assert_eq!(v["Spec"]["Name"], "web");
        assert_eq!(v["Spec"]["Mode"]["Replicated"]["Replicas"], 3);
        assert_eq!(
            v["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
            "any"
        );
        assert_eq!(
            v["Spec"]["TaskTemplate"]["RestartPolicy"]["Delay"],
            5_000_000_000u64
        );
        assert_eq!(v["Spec"]["UpdateConfig"]["Order"], "stop-first");
        assert_eq!(v["Spec"]["EndpointSpec"]["Mode"], "vip");
        assert_eq!(v["Endpoint"]["Ports"][0]["PublishedPort"], 5000);
        assert_eq!(v["Endpoint"]["Ports"][0]["PublishMode"], "ingress");
        assert_eq!(v["CreatedAt"], "2023-11-14T22:13:20Z");
    }
}
