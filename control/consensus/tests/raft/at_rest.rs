//! Encryption at rest: no replicated secret is readable from a store directory, the state still
//! reads back through the directory's own key, and a directory without that key is refused.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftLogReader};
use shoal_consensus::openraft;
use shoal_consensus::store::{Store, DB_FILE, KEY_FILE};

use crate::support::{addr_of, fast_config, set, Cluster, Kv, KvCmd, WAIT};

/// What a cluster CA private key or a join token would be: recognisable if it leaks.
const SECRET: &str = "SWMKEY-1-at-rest-canary-5f0d9c1e7a2b";

/// Every file of a (closed) store directory, by name, with its raw bytes.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("read store dir")
        .map(|entry| {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).expect("read store file"))
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A secret reaches every place a store keeps state: the log (replicated by AppendEntries),
/// the applied state, a snapshot built locally and a snapshot installed from the leader.
/// None of them shows it in clear on disk, and each manager reads it all back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_readable_on_disk_and_the_state_reads_back() {
    let mut config = fast_config();
    // Only the forced snapshot below, and the log purged right behind it.
    config.max_in_snapshot_log_to_keep = 0;
    let mut c = Cluster::voters(2, config).await;
    let voters = BTreeSet::from([1, 2]);
    c.agreed_leader(&voters).await;

    // In the applied state and, once taken, the snapshot.
    let index = c.write(set("ca-key", SECRET)).await;
    c.sync(&voters, index).await;
    let leader = c.agreed_leader(&voters).await;
    for id in &voters {
        c.node(*id).trigger_snapshot().await.unwrap();
        c.node(*id)
            .wait_until(WAIT, "snapshot taken and log purged", |m| {
                m.snapshot_index.is_some_and(|s| s >= index)
                    && m.purged_index.is_some_and(|p| p >= index)
            })
            .await
            .unwrap();
    }

    // A learner added now gets the secret only through InstallSnapshot.
    c.start(3).await;
    c.node(leader).add_learner(3, addr_of(3)).await.unwrap();
    c.wait_applied(3, index).await;
    assert!(
        c.node(3).metrics().snapshot_index.is_some(),
        "learner did not install a snapshot: {:?}",
        c.node(3).metrics()
    );

    // In the log of every node.
    let token = format!("{SECRET}-join-token");
    let index = c.write(set("join-token", token.clone())).await;
    c.sync(&BTreeSet::from([1, 2, 3]), index).await;
    c.stop_all().await;

    let mut keys = BTreeSet::new();
    for id in 1..=3 {
        let dir = c.dir(id);
        let files = files_of(&dir);
        let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, BTreeSet::from([DB_FILE, KEY_FILE]), "node {id}");
        for (name, bytes) in &files {
            assert!(
                !contains(bytes, SECRET.as_bytes()),
                "node {id}: {name} shows the secret in clear"
            );
        }
        let key_file = dir.join(KEY_FILE);
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "node {id}: {KEY_FILE} mode {mode:o}");
        keys.insert(std::fs::read(&key_file).unwrap());

        // Reopened, the store reads its state, its log and its snapshot back.
        let mut store = Store::<Kv>::open(&dir).unwrap();
        let state = store.shared_state().read().unwrap().state.clone();
        // The state as of the snapshot; the later join-token entry is in the log, which
        // openraft re-applies on start.
        assert_eq!(state.map["ca-key"], SECRET, "node {id}");
        let logged = store
            .log
            .try_get_log_entries(index..=index)
            .await
            .unwrap()
            .into_iter()
            .any(|e| {
                matches!(e.payload,
                    EntryPayload::Normal(KvCmd::Set { ref value, .. }) if *value == token)
            });
        assert!(logged, "node {id}: the join-token entry is not in the log");
        let snap = store
            .state_machine
            .get_current_snapshot()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("node {id}: no stored snapshot"));
        // What get_current_snapshot hands to openraft (and the network) is plain: each manager
        // seals with its own key only when it stores a snapshot.
        assert!(
            contains(snap.snapshot.get_ref(), SECRET.as_bytes()),
            "node {id}: the snapshot handed to openraft is not the plain state"
        );
    }
    assert_eq!(keys.len(), 3, "managers share a data-encryption key");
}

/// Writes one applied entry into a fresh store in `dir` and closes it.
async fn store_with_state(dir: &Path) {
    let mut store = Store::<Kv>::open(dir).unwrap();
    let entry = openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(set("ca-key", SECRET)),
    };
    store.state_machine.apply(vec![entry]).await.unwrap();
    // The applied state reaches the disk with a snapshot.
    let mut builder = store.state_machine.get_snapshot_builder().await;
    openraft::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_key_file_is_gone_refuses_to_open() {
    let dir = tempfile::TempDir::new().unwrap();
    store_with_state(dir.path()).await;
    std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();

    let err = Store::<Kv>::open(dir.path()).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains(KEY_FILE), "{msg}");
    assert!(msg.contains("missing"), "{msg}");
    // Above all, no new key was made for the old data.
    assert!(!dir.path().join(KEY_FILE).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_key_file_is_damaged_refuses_to_open() {
    let dir = tempfile::TempDir::new().unwrap();
    store_with_state(dir.path()).await;
    std::fs::write(dir.path().join(KEY_FILE), [7u8; 31]).unwrap();

    let msg = Store::<Kv>::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains(KEY_FILE), "{msg}");
    assert!(msg.contains("31 bytes"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_with_another_stores_key_names_the_record_it_cannot_open() {
    let dir = tempfile::TempDir::new().unwrap();
    let other = tempfile::TempDir::new().unwrap();
    store_with_state(dir.path()).await;
    drop(Store::<Kv>::open(other.path()).unwrap());
    std::fs::copy(other.path().join(KEY_FILE), dir.path().join(KEY_FILE)).unwrap();

    let msg = Store::<Kv>::open(dir.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("state_machine/applied"), "{msg}");
    assert!(msg.contains(KEY_FILE), "{msg}");
}
