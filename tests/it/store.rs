//! The sled store: records, transitions, de-duplication, restarts, locking, schema.

use featurebot::llm::Usage;
use featurebot::model::{Author, FeatureId, Place, PlanVersion, Speaker, Status};
use featurebot::store::{Store, StoreError};
use time::OffsetDateTime;

fn alice() -> Author {
    Author {
        id: "u1".to_string(),
        name: "alice".to_string(),
    }
}

#[tokio::test]
async fn features_get_dense_ids_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let place = Place::Discord {
        guild_id: 1,
        channel_id: 10,
        thread_id: 20,
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let a = store
            .create_feature("Dark mode", alice(), Place::Console)
            .await
            .unwrap();
        let b = store
            .create_feature("Export CSV", alice(), place.clone())
            .await
            .unwrap();
        assert_eq!((a.id, b.id), (FeatureId(1), FeatureId(2)));
        assert_eq!(a.status, Status::Gathering);
        store
            .append_turn(a.id, Speaker::User, "alice", "hello", Some("m1"))
            .await
            .unwrap();
        store
            .add_usage(
                a.id,
                Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                },
            )
            .await
            .unwrap();
    }
    let store = crate::support::reopen_store(dir.path());
    let titles: Vec<String> = store
        .features()
        .unwrap()
        .into_iter()
        .map(|f| f.title)
        .collect();
    assert_eq!(titles, ["Export CSV", "Dark mode"], "newest first");
    assert_eq!(store.feature_at(&place).unwrap(), Some(FeatureId(2)));
    assert_eq!(store.transcript(FeatureId(1)).unwrap()[0].text, "hello");
    assert_eq!(store.feature(FeatureId(1)).unwrap().usage.input_tokens, 10);
    let c = store
        .create_feature("Third", alice(), Place::Console)
        .await
        .unwrap();
    assert_eq!(c.id, FeatureId(3), "the counter survives a restart");
}

#[tokio::test]
async fn the_same_source_message_is_one_turn() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = store
        .create_feature("t", alice(), Place::Console)
        .await
        .unwrap();
    let first = store
        .append_turn(f.id, Speaker::User, "alice", "hi", Some("msg-1"))
        .await
        .unwrap();
    let again = store
        .append_turn(f.id, Speaker::User, "alice", "hi", Some("msg-1"))
        .await
        .unwrap();
    let other = store
        .append_turn(f.id, Speaker::User, "alice", "hi", Some("msg-2"))
        .await
        .unwrap();
    let unsourced = store
        .append_turn(f.id, Speaker::Assistant, "bot", "answer", None)
        .await
        .unwrap();
    assert!(first.is_some() && again.is_none() && other.is_some() && unsourced.is_some());
    let seqs: Vec<u64> = store
        .transcript(f.id)
        .unwrap()
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(seqs, [0, 1, 2]);

    // The same source id in another feature is another message.
    let g = store
        .create_feature("u", alice(), Place::Console)
        .await
        .unwrap();
    assert!(store
        .append_turn(g.id, Speaker::User, "alice", "hi", Some("msg-1"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn transcripts_stay_in_order_past_255_turns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = store
        .create_feature("t", alice(), Place::Console)
        .await
        .unwrap();
    for i in 0..300 {
        store
            .append_turn(f.id, Speaker::User, "alice", &i.to_string(), None)
            .await
            .unwrap();
    }
    let texts: Vec<String> = store
        .transcript(f.id)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(texts, expected);
}

#[tokio::test]
async fn status_changes_follow_the_allowed_edges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = store
        .create_feature("t", alice(), Place::Console)
        .await
        .unwrap();
    let err = store.set_status(f.id, Status::Running).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidTransition {
            from: Status::Gathering,
            to: Status::Running,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "feature #1 is gathering; it cannot become running"
    );
    let confirmed = store.confirm(f.id, "the summary").await.unwrap();
    assert_eq!(confirmed.status, Status::Confirmed);
    assert_eq!(confirmed.summary.as_deref(), Some("the summary"));
    // Setting the current status again is a harmless no-op.
    store.set_status(f.id, Status::Confirmed).await.unwrap();
    store.set_status(f.id, Status::Discarded).await.unwrap();
    assert!(store.set_status(f.id, Status::Gathering).await.is_err());
    assert!(store.confirm(f.id, "again").await.is_err());
    assert_eq!(store.feature(f.id).unwrap().status, Status::Discarded);
}

#[test]
fn transition_table() {
    use Status::*;
    let check = |from: Status, to: Status, allowed: bool| {
        assert_eq!(from.can_move_to(to), allowed, "{from} -> {to}");
    };
    check(Gathering, Confirmed, true);
    check(Gathering, Planned, true);
    check(Gathering, Approved, false);
    check(Confirmed, Gathering, true);
    check(Planned, Planned, true);
    check(Planned, Approved, true);
    check(Approved, Gathering, false);
    check(Running, PrOpen, true);
    check(Merged, Gathering, false);
    check(Discarded, Gathering, false);
    check(Discarded, Planned, false);
}

#[tokio::test]
async fn plan_versions_are_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = store
        .create_feature("t", alice(), Place::Console)
        .await
        .unwrap();
    for version in 1..=2 {
        let feature = store
            .add_plan(
                f.id,
                PlanVersion {
                    version,
                    path: "tasks/x.md".to_string(),
                    commit: format!("c{version}"),
                    markdown: format!("plan {version}"),
                    at: OffsetDateTime::now_utc(),
                },
            )
            .await
            .unwrap();
        assert_eq!(feature.status, Status::Planned);
        assert_eq!(feature.plan_version, version);
    }
    let plans = store.plans(f.id).unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].commit, "c2");
    assert_eq!(
        store.feature(f.id).unwrap().plan_path.as_deref(),
        Some("tasks/x.md")
    );
}

#[tokio::test]
async fn a_store_held_by_another_opener_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("the second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains("in use by another featurebot process"));
}

#[tokio::test]
async fn an_unknown_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "99")
            .unwrap();
        db.flush().unwrap();
    }
    let err = reopen_schema_error(dir.path());
    assert!(matches!(err, StoreError::UnknownSchema { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("schema version 99") && text.contains("reads version 1"),
        "{text}"
    );
}

#[test]
fn feature_numbers_parse_with_or_without_a_hash() {
    assert_eq!("#12".parse::<FeatureId>().unwrap(), FeatureId(12));
    assert_eq!(" 7 ".parse::<FeatureId>().unwrap(), FeatureId(7));
    assert!("0".parse::<FeatureId>().is_err());
    assert!("abc".parse::<FeatureId>().is_err());
}

/// Opens a store expected to fail for a reason other than the lock of a handle just dropped.
fn reopen_schema_error(path: &std::path::Path) -> StoreError {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Ok(_) => panic!("the store opened"),
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(err) => return err,
        }
    }
}

#[tokio::test]
async fn an_answer_and_its_tokens_are_stored_together() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path()).unwrap();
        let f = store
            .create_feature("t", alice(), Place::Console)
            .await
            .unwrap();
        let usage = Usage {
            input_tokens: 12,
            output_tokens: 3,
        };
        let turn = store
            .append_answer(f.id, "featurebot", "a question?", usage)
            .await
            .unwrap();
        assert_eq!(turn.unwrap().speaker, Speaker::Assistant);
        store
            .append_answer(f.id, "featurebot", "another?", usage)
            .await
            .unwrap();
        f.id
    };
    let store = crate::support::reopen_store(dir.path());
    assert_eq!(store.transcript(id).unwrap().len(), 2);
    assert_eq!(
        store.feature(id).unwrap().usage,
        Usage {
            input_tokens: 24,
            output_tokens: 6
        }
    );
}

/// The one mapping from a run's outcome to its feature's status (the bot's run queue and
/// `featurebot agent` both use it).
#[test]
fn a_finished_run_moves_its_feature_along_one_mapping() {
    use featurebot::model::{Run, RunState};
    fn check(state: RunState, pull_request: bool, expected: Status) {
        let now = OffsetDateTime::now_utc();
        let run = Run {
            feature: FeatureId(1),
            number: 1,
            plan_version: 1,
            branch: featurebot::model::BranchName::parse("featurebot/1-x").unwrap(),
            worktree: String::new(),
            steps: Vec::new(),
            next_step: 0,
            state,
            pr_url: pull_request.then(|| "https://github.com/acme/shop/pull/1".to_string()),
            message: None,
            usage: Default::default(),
            follow_up: None,
            remote: None,
            started_at: now,
            updated_at: now,
        };
        assert_eq!(
            Status::after_run(&run),
            expected,
            "{state:?}, pull request: {pull_request}"
        );
    }
    check(RunState::Finished, true, Status::PrOpen);
    check(RunState::Stopped, true, Status::PrOpen);
    check(RunState::Failed, true, Status::PrOpen);
    check(RunState::Finished, false, Status::Closed);
    check(RunState::Stopped, false, Status::Closed);
    check(RunState::Cancelled, false, Status::Cancelled);
    check(RunState::Failed, false, Status::Failed);
    check(RunState::Interrupted, false, Status::Failed);
}

/// Branch names are checked once, where they come in; what `BranchName::parse` accepts is what
/// git accepts and nothing that could be read as an option or a path out.
#[test]
fn branch_names_are_parsed_once() {
    use featurebot::model::BranchName;
    fn check(name: &str, ok: bool) {
        assert_eq!(BranchName::parse(name).is_ok(), ok, "{name:?}");
    }
    check("main", true);
    check("featurebot/12-export-csv", true);
    check("release/v1.2_rc", true);
    check("", false);
    check("-rf", false);
    check("/abs", false);
    check(".hidden", false);
    check("a/", false);
    check("a.", false);
    check("topic.lock", false);
    check("a..b", false);
    check("a//b", false);
    check("a@{1}", false);
    check("with space", false);
    check("semi;colon", false);
    check(&"x".repeat(201), false);
    // Built from a feature, the name is valid whatever the slug holds.
    for slug in ["export-csv", "", "--", "Ünïcode ../..", "a.lock"] {
        let name = BranchName::for_feature(FeatureId(7), slug);
        assert!(
            BranchName::parse(name.as_str()).is_ok(),
            "{name} from {slug:?}"
        );
    }
    // Stored names are checked when read back.
    assert!(serde_json::from_str::<BranchName>("\"ok/name\"").is_ok());
    assert!(serde_json::from_str::<BranchName>("\"../evil\"").is_err());
}
