//! What front ends read: features listed with filters and pages, one feature's card, a
//! feature, its transcript and its last run.
//!
//! Pure reads of the store, shaped for any front end; the Discord front end renders them as
//! embeds (`/tasks`, `/task`). The `impl App` at the end is the front ends' only read API.

use std::time::Duration;

use time::OffsetDateTime;

use crate::core::App;
use crate::llm::Usage;
use crate::model::{Feature, FeatureId, Place, PlanVersion, Priority, Run, Status, Turn};
use crate::store::{Store, StoreError};

/// Rows per page of `/tasks`.
pub const PAGE_SIZE: usize = 10;

/// Which features to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<Status>,
    pub priority: Option<Priority>,
}

/// One feature in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: FeatureId,
    pub title: String,
    pub status: Status,
    pub priority: Priority,
    pub labels: Vec<String>,
    pub age: Duration,
    pub link: Option<String>,
    pub pr_url: Option<String>,
}

/// A page of rows, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub rows: Vec<Row>,
    /// 0-based.
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

/// The features matching `filter`, newest first, page `page` (clamped to the last).
pub fn list(store: &Store, filter: Filter, page: usize) -> Result<Page, StoreError> {
    let now = OffsetDateTime::now_utc();
    let matching: Vec<Feature> = store
        .features()?
        .into_iter()
        .filter(|f| filter.status.is_none_or(|s| f.status == s))
        .filter(|f| filter.priority.is_none_or(|p| f.priority == p))
        .collect();
    let total = matching.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = page.min(pages - 1);
    let mut rows = Vec::new();
    for feature in matching.into_iter().skip(page * PAGE_SIZE).take(PAGE_SIZE) {
        let pr_url = store
            .runs(feature.id)?
            .into_iter()
            .rev()
            .find_map(|r| r.pr_url);
        rows.push(Row {
            id: feature.id,
            age: (now - feature.created_at).try_into().unwrap_or_default(),
            link: feature.place.link(),
            title: feature.title,
            status: feature.status,
            priority: feature.priority,
            labels: feature.labels,
            pr_url,
        });
    }
    Ok(Page {
        rows,
        page,
        pages,
        total,
    })
}

/// Everything about one feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub feature: Feature,
    pub plans: Vec<PlanVersion>,
    pub runs: Vec<Run>,
    /// Tokens of the conversation and plans, plus every run's.
    pub usage: Usage,
    /// The estimated cost of `usage` in USD, when `llm.*_price_per_mtok` are set.
    pub cost: Option<f64>,
}

pub fn card(store: &Store, id: FeatureId, prices: Option<(f64, f64)>) -> Result<Card, StoreError> {
    let feature = store.feature(id)?;
    let plans = store.plans(id)?;
    let runs = store.runs(id)?;
    let mut usage = feature.usage;
    for run in &runs {
        usage.add(run.usage);
    }
    Ok(Card {
        feature,
        plans,
        runs,
        usage,
        cost: cost(usage, prices),
    })
}

/// The estimated cost of `usage` in USD, when prices are configured.
pub fn cost(usage: Usage, prices: Option<(f64, f64)>) -> Option<f64> {
    let (input, output) = prices?;
    Some((usage.input_tokens as f64 * input + usage.output_tokens as f64 * output) / 1_000_000.0)
}

/// A short age: `5m`, `3h`, `2d`.
pub fn short_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m", secs / 60),
        3_600..=86_399 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The front ends' read API: whatever a front end reads about features, it reads here, never
/// from the store itself.
impl App {
    pub fn feature(&self, id: FeatureId) -> Result<Feature, StoreError> {
        self.store.feature(id)
    }

    /// The feature whose conversation is at `place` (a Discord thread), if any.
    pub fn feature_at(&self, place: &Place) -> Result<Option<Feature>, StoreError> {
        match self.store.feature_at(place)? {
            Some(id) => self.store.feature(id).map(Some),
            None => Ok(None),
        }
    }

    /// Every feature, oldest first.
    pub fn features(&self) -> Result<Vec<Feature>, StoreError> {
        self.store.features()
    }

    pub fn transcript(&self, id: FeatureId) -> Result<Vec<Turn>, StoreError> {
        self.store.transcript(id)
    }

    /// The feature's latest run, if it had one.
    pub fn last_run(&self, id: FeatureId) -> Result<Option<Run>, StoreError> {
        Ok(self.store.runs(id)?.pop())
    }

    /// See [`list`].
    pub fn list(&self, filter: Filter, page: usize) -> Result<Page, StoreError> {
        list(&self.store, filter, page)
    }

    /// See [`card`].
    pub fn card(&self, id: FeatureId, prices: Option<(f64, f64)>) -> Result<Card, StoreError> {
        card(&self.store, id, prices)
    }
}
