//! Log paging and the log's life after the task.

use shoal_runtime::Runtime;

use crate::fixture::Fixture;

#[test]
fn log_cursor_pages_through_the_output() {
    let f = Fixture::new();
    let spec = f.spec(&[
        "sh",
        "-c",
        "i=1; while [ $i -le 25 ]; do echo line$i; i=$((i+1)); done",
    ]);
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);

    let mut since = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let chunk = f.rt().logs(&spec.id, since, 10).unwrap();
        if chunk.lines.is_empty() {
            assert_eq!(chunk.next, since, "an empty page keeps the cursor");
            break;
        }
        assert!(chunk.lines.len() <= 10);
        assert!(chunk.next > since);
        since = chunk.next;
        seen.extend(chunk.lines.into_iter().map(|l| l.line));
        pages += 1;
    }
    assert_eq!(pages, 3);
    let want: Vec<_> = (1..=25).map(|i| format!("line{i}")).collect();
    assert_eq!(seen, want);

    // The log outlives the task until remove_logs, which needs remove first.
    let err = f.rt().remove_logs(&spec.id).unwrap_err().to_string();
    assert!(err.contains("remove it"), "{err}");
    f.rt().remove(&spec.id).unwrap();
    assert_eq!(f.rt().logs(&spec.id, 20, 100).unwrap().lines.len(), 5);
    f.rt().remove_logs(&spec.id).unwrap();
    assert!(f.rt().logs(&spec.id, 0, 100).is_err());
}

#[test]
fn logs_rotate_at_the_cap() {
    let f = Fixture::with(|c| c.log_max_bytes = 4096);
    let spec = f.spec(&[
        "sh",
        "-c",
        "i=1; while [ $i -le 500 ]; do echo line$i; i=$((i+1)); done",
    ]);
    f.run(&spec);
    assert_eq!(f.wait(&spec.id).code, 0);
    let chunk = f.rt().logs(&spec.id, 0, usize::MAX).unwrap();
    assert_eq!(chunk.next, 500);
    assert_eq!(chunk.lines.last().unwrap().line, "line500");
    assert!(chunk.lines.len() < 500, "old lines were rotated away");
    let size = |name: &str| {
        std::fs::metadata(f.dir.join("logs").join(name))
            .unwrap()
            .len()
    };
    assert!(size(&format!("{}.log", spec.id)) <= 4096);
    assert!(size(&format!("{}.log.1", spec.id)) <= 4096);
}
