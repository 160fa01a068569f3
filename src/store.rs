//! The sled database: stores the records of [`crate::model`], nothing else.
//!
//! Records are JSON values in these trees:
//! - `meta`: the schema version and the feature-id counter;
//! - `features`: [`Feature`] by id (big-endian `u64`);
//! - `turns`: the ordered transcript, keyed by feature id then sequence number;
//! - `sources`: feature id plus source message id to sequence number, so that a message seen
//!   twice (a gateway replay, a double submit) becomes one turn;
//! - `plans`: [`PlanVersion`] by feature id then version;
//! - `places`: where a feature lives (a Discord thread) to its id;
//! - `runs`: agent [`Run`]s by feature id then run number.
//!
//! Invariant: every mutating method flushes to disk before it returns, so whatever the caller
//! acknowledges survives `kill -9`. Mutations are serialised by one lock held only around the
//! synchronous sled calls, never across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use time::OffsetDateTime;

use crate::llm::Usage;
use crate::lock::LockExt;
use crate::model::{
    Author, Feature, FeatureId, Place, PlanConflict, PlanVersion, Priority, Run, Speaker, Status,
    Turn,
};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another featurebot process; stop that process or set store.path to another folder")]
    Locked { path: PathBuf },
    #[error("the store at {path} has schema version {found}, but this featurebot reads version {SCHEMA_VERSION}; run the featurebot release that wrote it, or point store.path at a new folder")]
    UnknownSchema { path: PathBuf, found: String },
    #[error("feature #{0} does not exist")]
    NoSuchFeature(FeatureId),
    #[error("feature #{id} is {from}; it cannot become {to}")]
    InvalidTransition {
        id: FeatureId,
        from: Status,
        to: Status,
    },
    #[error(
        "the store at {path} could not be opened: {source}; check that the folder is writable"
    )]
    Open { path: PathBuf, source: sled::Error },
    #[error("store error: {0}; check the disk and the store folder")]
    Db(#[from] sled::Error),
    #[error("a stored record is corrupt ({0}); restore the store from a backup")]
    Corrupt(String),
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    features: sled::Tree,
    turns: sled::Tree,
    sources: sled::Tree,
    plans: sled::Tree,
    places: sled::Tree,
    runs: sled::Tree,
    write: Arc<Mutex<()>>,
}

const SCHEMA_KEY: &[u8] = b"schema_version";
const NEXT_ID_KEY: &[u8] = b"next_feature_id";

impl Store {
    /// Opens (or creates) the store at `path`. Fails at once, without waiting, when another
    /// process holds it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(path).open().map_err(|e| {
            if is_lock_error(&e) {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        let store = Store {
            meta: db.open_tree("meta")?,
            features: db.open_tree("features")?,
            turns: db.open_tree("turns")?,
            sources: db.open_tree("sources")?,
            plans: db.open_tree("plans")?,
            places: db.open_tree("places")?,
            runs: db.open_tree("runs")?,
            db,
            write: Arc::new(Mutex::new(())),
        };
        match store.meta.get(SCHEMA_KEY)? {
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::UnknownSchema {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                })
            }
            None if store.features.is_empty() => {
                store
                    .meta
                    .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
                store.db.flush()?;
            }
            None => {
                return Err(StoreError::UnknownSchema {
                    path: path.to_path_buf(),
                    found: "none".to_string(),
                })
            }
        }
        Ok(store)
    }

    /// Creates a feature in the `gathering` status.
    pub async fn create_feature(
        &self,
        title: &str,
        requester: Author,
        place: Place,
    ) -> Result<Feature, StoreError> {
        let created = self.insert_feature(None, title, requester, place).await?;
        created.ok_or_else(|| StoreError::Corrupt("a new feature number was in use".to_string()))
    }

    /// Creates a feature in the `gathering` status under `id`, a number given elsewhere (the
    /// `feature_id` of a plan file run on a machine whose store is new, such as a GitHub Actions
    /// runner), so that the run's work tree and pull request carry the bot's number. `None`
    /// when the store has a feature of that number already.
    pub async fn adopt_feature(
        &self,
        id: FeatureId,
        title: &str,
        requester: Author,
        place: Place,
    ) -> Result<Option<Feature>, StoreError> {
        self.insert_feature(Some(id), title, requester, place).await
    }

    async fn insert_feature(
        &self,
        id: Option<FeatureId>,
        title: &str,
        requester: Author,
        place: Place,
    ) -> Result<Option<Feature>, StoreError> {
        let feature = {
            let _guard = self.lock();
            let counter = match self.meta.get(NEXT_ID_KEY)? {
                Some(v) => decode_u64(&v)?,
                None => 1,
            };
            let next = id.map_or(counter, |id| id.0);
            if self.features.contains_key(next.to_be_bytes())? {
                return Ok(None);
            }
            let now = OffsetDateTime::now_utc();
            let feature = Feature {
                id: FeatureId(next),
                title: title.to_string(),
                requester,
                place: place.clone(),
                status: Status::Gathering,
                priority: Priority::default(),
                created_at: now,
                updated_at: now,
                summary: None,
                plan_version: 0,
                plan_path: None,
                usage: Usage::default(),
                labels: Vec::new(),
                issue: None,
                repo: None,
                plan_conflict: None,
            };
            self.meta
                .insert(NEXT_ID_KEY, &counter.max(next + 1).to_be_bytes())?;
            self.features
                .insert(next.to_be_bytes(), encode(&feature)?)?;
            if let Some(key) = place_key(&place) {
                self.places.insert(key, &next.to_be_bytes())?;
            }
            feature
        };
        self.flush().await?;
        Ok(Some(feature))
    }

    pub fn feature(&self, id: FeatureId) -> Result<Feature, StoreError> {
        match self.features.get(id.0.to_be_bytes())? {
            Some(v) => decode(&v),
            None => Err(StoreError::NoSuchFeature(id)),
        }
    }

    /// The feature that lives in a Discord thread, if any.
    pub fn feature_at(&self, place: &Place) -> Result<Option<FeatureId>, StoreError> {
        let Some(key) = place_key(place) else {
            return Ok(None);
        };
        match self.places.get(key)? {
            Some(v) => Ok(Some(FeatureId(decode_u64(&v)?))),
            None => Ok(None),
        }
    }

    /// Every feature, newest first.
    pub fn features(&self) -> Result<Vec<Feature>, StoreError> {
        self.features
            .iter()
            .rev()
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// Appends a turn, unless a turn with the same `source_id` exists: then returns `None` and
    /// stores nothing.
    pub async fn append_turn(
        &self,
        id: FeatureId,
        speaker: Speaker,
        author: &str,
        text: &str,
        source_id: Option<&str>,
    ) -> Result<Option<Turn>, StoreError> {
        self.append(id, speaker, author, text, source_id, None)
            .await
    }

    /// Appends an assistant turn and adds the tokens it cost, in one write and one flush.
    pub async fn append_answer(
        &self,
        id: FeatureId,
        author: &str,
        text: &str,
        usage: Usage,
    ) -> Result<Option<Turn>, StoreError> {
        self.append(id, Speaker::Assistant, author, text, None, Some(usage))
            .await
    }

    async fn append(
        &self,
        id: FeatureId,
        speaker: Speaker,
        author: &str,
        text: &str,
        source_id: Option<&str>,
        usage: Option<Usage>,
    ) -> Result<Option<Turn>, StoreError> {
        let turn = {
            let _guard = self.lock();
            let mut feature = self.feature(id)?;
            let source_key = source_id.map(|s| [&id.0.to_be_bytes()[..], s.as_bytes()].concat());
            if let Some(key) = &source_key {
                if self.sources.contains_key(key)? {
                    return Ok(None);
                }
            }
            let prefix = id.0.to_be_bytes();
            let seq = match self.turns.scan_prefix(prefix).next_back() {
                Some(kv) => decode_u64(&kv?.0[8..])? + 1,
                None => 0,
            };
            let now = OffsetDateTime::now_utc();
            let turn = Turn {
                seq,
                speaker,
                author: author.to_string(),
                text: text.to_string(),
                source_id: source_id.map(str::to_string),
                at: now,
            };
            let key = pair_key(id, seq);
            let value = encode(&turn)?;
            let feature_value = match usage {
                Some(usage) => {
                    feature.usage.add(usage);
                    feature.updated_at = now;
                    Some(encode(&feature)?)
                }
                None => None,
            };
            (&self.turns, &self.sources, &self.features)
                .transaction(|(turns, sources, features)| {
                    turns.insert(&key[..], value.as_slice())?;
                    if let Some(k) = &source_key {
                        sources.insert(k.as_slice(), &seq.to_be_bytes())?;
                    }
                    if let Some(f) = &feature_value {
                        features.insert(&id.0.to_be_bytes(), f.as_slice())?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Corrupt("transcript append aborted".to_string())
                    }
                })?;
            turn
        };
        self.flush().await?;
        Ok(Some(turn))
    }

    /// The transcript in order.
    pub fn transcript(&self, id: FeatureId) -> Result<Vec<Turn>, StoreError> {
        self.turns
            .scan_prefix(id.0.to_be_bytes())
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// Moves a feature to `to`, refusing transitions that [`Status::can_move_to`] forbids.
    /// Setting the status it already has is a no-op that succeeds, so repeated clicks are
    /// harmless.
    pub async fn set_status(&self, id: FeatureId, to: Status) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            if f.status == to {
                return Ok(());
            }
            if !f.status.can_move_to(to) {
                return Err(StoreError::InvalidTransition {
                    id,
                    from: f.status,
                    to,
                });
            }
            f.status = to;
            Ok(())
        })
        .await
    }

    /// Records the confirmed summary and moves the feature to `confirmed`.
    pub async fn confirm(&self, id: FeatureId, summary: &str) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            if f.status != Status::Confirmed && !f.status.can_move_to(Status::Confirmed) {
                return Err(StoreError::InvalidTransition {
                    id,
                    from: f.status,
                    to: Status::Confirmed,
                });
            }
            f.status = Status::Confirmed;
            f.summary = Some(summary.to_string());
            Ok(())
        })
        .await
    }

    pub async fn set_priority(
        &self,
        id: FeatureId,
        priority: Priority,
    ) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            f.priority = priority;
            Ok(())
        })
        .await
    }

    /// Adds labels the feature does not have yet, keeping their order.
    pub async fn add_labels(
        &self,
        id: FeatureId,
        labels: &[String],
    ) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            for label in labels {
                if !f.labels.contains(label) {
                    f.labels.push(label.clone());
                }
            }
            Ok(())
        })
        .await
    }

    /// Sends the feature to a named target repository.
    pub async fn set_repo(
        &self,
        id: FeatureId,
        repo: Option<String>,
    ) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            f.repo = repo;
            Ok(())
        })
        .await
    }

    /// Records the GitHub issue that mirrors the feature.
    pub async fn set_issue(
        &self,
        id: FeatureId,
        number: u64,
        url: &str,
    ) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            f.issue = Some((number, url.to_string()));
            Ok(())
        })
        .await
    }

    /// Adds tokens to the feature's running total.
    pub async fn add_usage(&self, id: FeatureId, usage: Usage) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            f.usage.add(usage);
            Ok(())
        })
        .await
    }

    /// Records (or, with `None`, clears) a conflict over the feature's plan file.
    pub async fn set_plan_conflict(
        &self,
        id: FeatureId,
        conflict: Option<PlanConflict>,
    ) -> Result<Feature, StoreError> {
        self.update(id, |f| {
            f.plan_conflict = conflict;
            Ok(())
        })
        .await
    }

    /// Stores a committed plan version and moves the feature to `planned`. A version stored
    /// again (the same number) replaces the earlier record, as when its commit moved.
    pub async fn add_plan(&self, id: FeatureId, plan: PlanVersion) -> Result<Feature, StoreError> {
        let key = plan_key(id, plan.version);
        let value = encode(&plan)?;
        let feature = {
            let _guard = self.lock();
            let mut f = self.feature(id)?;
            if !f.status.can_move_to(Status::Planned) {
                return Err(StoreError::InvalidTransition {
                    id,
                    from: f.status,
                    to: Status::Planned,
                });
            }
            f.status = Status::Planned;
            f.plan_version = plan.version;
            f.plan_path = Some(plan.path.clone());
            f.updated_at = OffsetDateTime::now_utc();
            let fvalue = encode(&f)?;
            (&self.features, &self.plans)
                .transaction(|(features, plans)| {
                    plans.insert(&key[..], value.as_slice())?;
                    features.insert(&id.0.to_be_bytes(), fvalue.as_slice())?;
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                    sled::transaction::TransactionError::Abort(()) => {
                        StoreError::Corrupt("plan insert aborted".to_string())
                    }
                })?;
            f
        };
        self.flush().await?;
        Ok(feature)
    }

    /// Every plan version of a feature, oldest first.
    pub fn plans(&self, id: FeatureId) -> Result<Vec<PlanVersion>, StoreError> {
        self.plans
            .scan_prefix(id.0.to_be_bytes())
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// Stores `run` (new or updated), refreshing its `updated_at`.
    pub async fn save_run(&self, run: &Run) -> Result<Run, StoreError> {
        let mut run = run.clone();
        run.updated_at = OffsetDateTime::now_utc();
        {
            let _guard = self.lock();
            self.runs
                .insert(plan_key(run.feature, run.number), encode(&run)?)?;
        }
        self.flush().await?;
        Ok(run)
    }

    /// A feature's runs, oldest first.
    pub fn runs(&self, id: FeatureId) -> Result<Vec<Run>, StoreError> {
        self.runs
            .scan_prefix(id.0.to_be_bytes())
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// Every run still queued or running, for the start-up check.
    pub fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        let mut active = Vec::new();
        for kv in self.runs.iter() {
            let run: Run = decode(&kv?.1)?;
            if run.state.is_active() {
                active.push(run);
            }
        }
        Ok(active)
    }

    /// Applies `change` to a feature record and stores it, refreshing `updated_at`.
    async fn update(
        &self,
        id: FeatureId,
        change: impl FnOnce(&mut Feature) -> Result<(), StoreError>,
    ) -> Result<Feature, StoreError> {
        let feature = {
            let _guard = self.lock();
            let mut f = self.feature(id)?;
            let before = f.clone();
            change(&mut f)?;
            if f == before {
                return Ok(f);
            }
            f.updated_at = OffsetDateTime::now_utc();
            self.features.insert(id.0.to_be_bytes(), encode(&f)?)?;
            f
        };
        self.flush().await?;
        Ok(feature)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock guards no data of its own, so it is safe to keep using it.
        self.write.locked()
    }

    /// Writes everything to disk. Runs on tokio's blocking pool rather than through sled's
    /// `flush_async`, whose worker thread may keep the database (and its file lock) alive for
    /// a moment after the future completes; here the clone is gone when the call returns.
    async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Corrupt(format!("the flush task failed: {e}")))??;
        Ok(())
    }
}

fn is_lock_error(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("lock")
                || io.raw_os_error() == Some(11)
        }
        _ => false,
    }
}

fn place_key(place: &Place) -> Option<Vec<u8>> {
    match place {
        Place::Console => None,
        Place::Discord { thread_id, .. } => Some(format!("discord:{thread_id}").into_bytes()),
    }
}

fn pair_key(id: FeatureId, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.0.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn plan_key(id: FeatureId, version: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&id.0.to_be_bytes());
    key[8..].copy_from_slice(&version.to_be_bytes());
    key
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}
