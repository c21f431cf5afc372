use super::*;
use shoal_manager::state::{Service, ServiceSpec, TaskStatus};

fn service(mode: ServiceMode, version: u64) -> ServiceView {
    ServiceView {
        service: Service {
            id: "s".repeat(25),
            spec: ServiceSpec {
                name: "web".into(),
                mode,
                ..ServiceSpec::default()
            },
            version,
            created_at: 0,
            updated_at: 0,
            previous_spec: None,
            redeploy_version: version,
            update_status: None,
            vips: vec![],
        },
        running: 0,
        desired: 0,
        vips: vec![],
    }
}

fn replicated(replicas: u64) -> ServiceView {
    service(ServiceMode::Replicated { replicas }, 1)
}

fn task(id: &str, slot: Option<u64>, node: Option<&str>, state: TaskState) -> TaskView {
    TaskView {
        task: Task {
            id: id.into(),
            service_id: "s".repeat(25),
            slot,
            node_id: node.map(str::to_string),
            desired_state: TaskState::Running,
            status: TaskStatus {
                state,
                message: String::new(),
                err: None,
                exit_code: None,
                timestamp: 0,
            },
            spec_version: 1,
            created_at: 0,
            networks: Vec::new(),
            restarts: 0,
        },
        name: String::new(),
        command: Vec::new(),
        image: None,
        node: None,
        ports: Vec::new(),
    }
}

fn slot(n: u64, state: TaskState) -> TaskView {
    task(&format!("t{n}"), Some(n), None, state)
}

const FULL: &str = "[==================================================>]";

#[test]
fn bars_follow_swarm_order_and_running_is_full() {
    let widths: Vec<usize> = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
    ]
    .into_iter()
    .map(bar_width)
    .collect();
    assert_eq!(widths, [6, 12, 18, 25, 31, 37, 43, 50]);
    assert_eq!(progress(TaskState::Running), format!("running   {FULL}"));
    assert_eq!(
        progress(TaskState::Preparing),
        format!("preparing [{}>{}]", "=".repeat(31), " ".repeat(19))
    );
}

#[test]
fn replicated_lines_are_keyed_by_slot_with_the_overall_count() {
    let tasks = [
        slot(1, TaskState::Running),
        slot(2, TaskState::Running),
        slot(3, TaskState::Pending),
    ];
    let f = frame(&replicated(3), &tasks, Current::Version, false);
    assert_eq!(f.overall, "overall progress: 2 out of 3 tasks");
    assert_eq!(
        f.tasks,
        [
            format!("1/3: running   {FULL}"),
            format!("2/3: running   {FULL}"),
            format!("3/3: {}", progress(TaskState::Pending)),
        ]
    );
    assert!(!f.all_running());
}

#[test]
fn a_slot_without_a_task_yet_is_new() {
    let f = frame(
        &replicated(2),
        &[slot(1, TaskState::Running)],
        Current::Version,
        false,
    );
    assert_eq!(f.tasks[1], format!("2/2: {}", progress(TaskState::New)));
    assert_eq!((f.running, f.expected), (1, 2));
}

#[test]
fn global_lines_are_keyed_by_node_id_prefix() {
    let view = service(ServiceMode::Global, 1);
    let tasks = [
        task("a", None, Some("abcdef0123456789"), TaskState::Running),
        task("b", None, Some("bbbbbbbbbbbbbbbb"), TaskState::Starting),
    ];
    let f = frame(&view, &tasks, Current::Version, false);
    assert_eq!(f.overall, "overall progress: 1 out of 2 tasks");
    assert_eq!(
        f.tasks,
        [
            format!("abcdef012345: running   {FULL}"),
            format!("bbbbbbbbbbbb: {}", progress(TaskState::Starting)),
        ]
    );
}

#[test]
fn old_versions_and_tasks_being_stopped_do_not_count() {
    let mut view = replicated(1);
    view.service.version = 2;
    view.service.redeploy_version = 2;
    let mut old = slot(1, TaskState::Running);
    old.task.desired_state = TaskState::Shutdown;
    old.task.spec_version = 1;
    let mut new = slot(1, TaskState::Assigned);
    new.task.id = "t1b".into();
    new.task.spec_version = 2;
    let f = frame(&view, &[old.clone(), new.clone()], Current::Version, false);
    assert_eq!(f.tasks, [format!("1/1: {}", progress(TaskState::Assigned))]);
    assert_eq!(f.running, 0);
    // An outdated task that still runs (not replaced yet) counts only when
    // any version will do.
    old.task.desired_state = TaskState::Running;
    assert_eq!(
        frame(&view, &[old.clone()], Current::Version, false).running,
        0
    );
    assert_eq!(frame(&view, &[old], Current::AnyVersion, false).running, 1);
}

#[test]
fn a_pending_reason_is_shown_on_the_task_line() {
    let mut t = slot(1, TaskState::Pending);
    t.task.status.err =
        Some("no suitable node (scheduling constraints not satisfied on 3 nodes)".into());
    let f = frame(&replicated(1), &[t], Current::Version, false);
    assert_eq!(
        f.tasks,
        ["1/1: no suitable node (scheduling constraints not satisfied on 3 nodes)"]
    );
}

#[test]
fn a_failed_task_shows_its_error_until_its_replacement_runs() {
    let mut failed = slot(1, TaskState::Failed);
    failed.task.status.err = Some("task: non-zero exit (1)\nmore".into());
    failed.task.status.exit_code = Some(1);
    let f = frame(&replicated(1), &[failed.clone()], Current::Version, false);
    assert_eq!(f.tasks, ["1/1: task: non-zero exit (1) more"]);
    // Retired for its replacement: the replacement's state is shown.
    failed.task.desired_state = TaskState::Shutdown;
    let mut next = slot(1, TaskState::Running);
    next.task.id = "t1b".into();
    next.task.created_at = 5;
    let f = frame(
        &replicated(1),
        &[failed.clone(), next],
        Current::Version,
        false,
    );
    assert_eq!(f.tasks, [format!("1/1: running   {FULL}")]);
    // The restart policy gave up: the last task says why.
    failed.task.desired_state = TaskState::Complete;
    failed.task.status.err = None;
    let f = frame(&replicated(1), &[failed], Current::Version, false);
    assert_eq!(f.tasks, ["1/1: failed (exit code 1)"]);
}

#[test]
fn long_errors_are_cut() {
    let mut t = slot(1, TaskState::Rejected);
    t.task.status.err = Some("x".repeat(200));
    let f = frame(&replicated(1), &[t], Current::Version, false);
    assert_eq!(f.tasks[0].chars().count(), "1/1: ".len() + MAX_ERR);
    assert!(f.tasks[0].ends_with('…'));
}

#[test]
fn stalled_tasks_show_their_status_message() {
    let mut t = slot(1, TaskState::Assigned);
    t.task.status.message = "scheduler assigned task to node".into();
    let f = frame(&replicated(1), &[t], Current::Version, true);
    assert_eq!(
        f.tasks,
        [format!(
            "1/1: {} scheduler assigned task to node",
            progress(TaskState::Assigned)
        )]
    );
}

#[test]
fn many_replicas_show_only_the_overall_line() {
    let f = frame(&replicated(MAX_BARS + 1), &[], Current::Version, false);
    assert!(f.tasks.is_empty());
    assert_eq!(f.overall, "overall progress: 0 out of 101 tasks");
}

#[test]
fn converges_after_the_tasks_stay_running_for_the_check_period() {
    let view = replicated(1);
    let up = [slot(1, TaskState::Running)];
    let mut w = Watch::new(Current::Version);
    let ms = Duration::from_millis;
    let s = w.step(&view, &[slot(1, TaskState::Starting)], ms(0));
    assert!(!s.done);
    assert_eq!(s.lines.len(), 2);
    let s = w.step(&view, &up, ms(300));
    assert_eq!(
        s.lines.last().unwrap(),
        "verify: Waiting 1 second to verify that tasks are stable..."
    );
    assert!(!s.done);
    // A failure during the check: shown, and the check starts again.
    let mut failed = slot(1, TaskState::Failed);
    failed.task.status.err = Some("exit status 2".into());
    let s = w.step(&view, &[failed], ms(600));
    assert_eq!(s.lines[1], "1/1: exit status 2");
    assert_eq!(s.lines[2], "verify: Detected task failure");
    assert!(!w.step(&view, &up, ms(900)).done);
    assert!(!w.step(&view, &up, ms(1800)).done);
    let s = w.step(&view, &up, ms(1900));
    assert!(s.done);
    assert_eq!(
        s.lines,
        [
            "overall progress: 1 out of 1 tasks".to_string(),
            format!("1/1: running   {FULL}"),
            "verify: Service converged".into(),
        ]
    );
}

#[test]
fn a_stalled_wait_says_it_keeps_waiting() {
    let mut w = Watch::new(Current::Version);
    let s = w.step(
        &replicated(1),
        &[slot(1, TaskState::Pending)],
        STALLED_AFTER,
    );
    assert!(!s.done);
    assert!(s.lines[2].starts_with("verify: Not converged after 120 seconds; still waiting"));
}

fn lines(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_pipe_gets_each_changed_line_once() {
    let mut screen = Screen::new(false);
    let mut out = Vec::new();
    screen
        .draw(
            &lines(&["overall progress: 0 out of 2 tasks", "1/2: new", "2/2: new"]),
            &mut out,
        )
        .unwrap();
    screen
        .draw(
            &lines(&[
                "overall progress: 0 out of 2 tasks",
                "1/2: running",
                "2/2: new",
            ]),
            &mut out,
        )
        .unwrap();
    screen
        .draw(
            &lines(&[
                "overall progress: 0 out of 2 tasks",
                "1/2: running",
                "2/2: new",
            ]),
            &mut out,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "overall progress: 0 out of 2 tasks\n1/2: new\n2/2: new\n1/2: running\n"
    );
}

#[test]
fn a_terminal_is_redrawn_in_place() {
    let mut screen = Screen::new(true);
    let mut out = Vec::new();
    screen
        .draw(&lines(&["a: 1", "b: 1", "verify: x"]), &mut out)
        .unwrap();
    screen.draw(&lines(&["a: 1", "b: 2"]), &mut out).unwrap();
    screen.draw(&lines(&["a: 1", "b: 2"]), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\x1b[2Ka: 1\n\x1b[2Kb: 1\n\x1b[2Kverify: x\n\
         \x1b[3A\x1b[2Ka: 1\n\x1b[2Kb: 2\n\x1b[2K\n"
    );
}
