//! Where the core's outputs go. Every output of the core, the run queue's included, passes
//! through one [`Outbox`], which redacts it and addresses it to its feature's place on the way:
//! front ends show only redacted text, and never look a feature up to know where to show it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::agent::Event;
use crate::core::protocol::{Output, OutputKind};
use crate::lock::LockExt;
use crate::model::{FeatureId, Place};
use crate::redact::Redactor;
use crate::store::Store;

/// The sending end of the core's outputs. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Output>,
    redactor: Redactor,
    store: Store,
    /// Where each feature lives, read from the store once per feature: places never change.
    places: Arc<Mutex<HashMap<FeatureId, Place>>>,
}

impl Outbox {
    /// An outbox and the receiver a front end reads.
    pub fn new(redactor: Redactor, store: Store) -> (Outbox, mpsc::UnboundedReceiver<Output>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            redactor,
            store,
            places: Arc::default(),
        };
        (outbox, rx)
    }

    /// Sends `kind` about `feature`, redacted, to the feature's place.
    pub fn send(&self, feature: FeatureId, kind: OutputKind) {
        let Some(place) = self.place(feature) else {
            tracing::warn!(
                feature = feature.0,
                "an output for a feature that cannot be read was dropped"
            );
            return;
        };
        self.deliver(Output {
            feature: Some(feature),
            place,
            kind,
        });
    }

    /// Sends `kind`, redacted, to `place`, about no feature (a refused start).
    pub fn send_to(&self, place: Place, kind: OutputKind) {
        self.deliver(Output {
            feature: None,
            place,
            kind,
        });
    }

    fn deliver(&self, output: Output) {
        let output = Output {
            kind: redact(&self.redactor, output.kind),
            ..output
        };
        // The receiver is gone only when the front end is shutting down, and then there is
        // nobody left to tell.
        let _ = self.tx.send(output);
    }

    fn place(&self, feature: FeatureId) -> Option<Place> {
        let mut places = self.places.locked();
        if let Some(place) = places.get(&feature) {
            return Some(place.clone());
        }
        let place = self.store.feature(feature).ok()?.place;
        places.insert(feature, place.clone());
        Some(place)
    }
}

/// `kind` with every text a person will see passed through the redactor: the one place where
/// what the core shows is redacted, for every front end.
fn redact(redactor: &Redactor, mut kind: OutputKind) -> OutputKind {
    let r = |text: &mut String| *text = redactor.redact(text);
    match &mut kind {
        OutputKind::Reply { text } | OutputKind::ReplyDelta { text } => r(text),
        OutputKind::Confirmed { summary, .. } => r(summary),
        OutputKind::PlanDiff { diff, .. } => r(diff),
        OutputKind::PlanCommitted { markdown, .. } => r(markdown),
        OutputKind::Rejected { message }
        | OutputKind::Warning { message }
        | OutputKind::Failed { message } => r(message),
        OutputKind::RunEnded { run, .. } | OutputKind::RunInterrupted { run } => {
            if let Some(message) = &mut run.message {
                r(message);
            }
        }
        OutputKind::RunEvent { event } => match event {
            Event::Question { text } => r(text),
            Event::StepPushFailed { message, .. } => r(message),
            Event::SecretsLeftOut { files, .. } => files.iter_mut().for_each(r),
            Event::ChecksFailed { command, tail, .. } => {
                r(command);
                r(tail);
            }
            _ => {}
        },
        _ => {}
    }
    kind
}
