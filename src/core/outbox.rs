//! Where the core's outputs go. Every output of the core, the run queue's included, passes
//! through one [`Outbox`], which redacts it on the way: front ends show only redacted text.

use tokio::sync::mpsc;

use crate::agent::Event;
use crate::core::protocol::Output;
use crate::redact::Redactor;

/// The sending end of the core's outputs. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Output>,
    redactor: Redactor,
}

impl Outbox {
    /// An outbox and the receiver a front end reads.
    pub fn new(redactor: Redactor) -> (Outbox, mpsc::UnboundedReceiver<Output>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Outbox { tx, redactor }, rx)
    }

    /// Sends `output`, redacted. The receiver is gone only when the front end is shutting
    /// down, and then there is nobody left to tell.
    pub fn send(&self, output: Output) {
        let _ = self.tx.send(redact_output(&self.redactor, output));
    }
}

/// `output` with every text a person will see passed through the redactor: the one place
/// where what the core shows is redacted, for every front end.
fn redact_output(redactor: &Redactor, output: Output) -> Output {
    let r = |text: String| redactor.redact(&text);
    match output {
        Output::Reply { feature, text } => Output::Reply {
            feature,
            text: r(text),
        },
        Output::ReplyDelta { feature, text } => Output::ReplyDelta {
            feature,
            text: r(text),
        },
        Output::RunEnded { feature, mut run } => {
            run.message = run.message.map(r);
            Output::RunEnded { feature, run }
        }
        Output::RunInterrupted { feature, mut run } => {
            run.message = run.message.map(r);
            Output::RunInterrupted { feature, run }
        }
        Output::RunEvent {
            feature,
            event: Event::StepPushFailed { step, message },
        } => Output::RunEvent {
            feature,
            event: Event::StepPushFailed {
                step,
                message: r(message),
            },
        },
        Output::Confirmed { feature, summary } => Output::Confirmed {
            feature,
            summary: r(summary),
        },
        Output::PlanDiff {
            feature,
            from,
            to,
            diff,
        } => Output::PlanDiff {
            feature,
            from,
            to,
            diff: r(diff),
        },
        Output::PlanCommitted {
            feature,
            version,
            path,
            commit,
            markdown,
            again,
        } => Output::PlanCommitted {
            feature,
            version,
            path,
            commit,
            markdown: r(markdown),
            again,
        },
        Output::Rejected { feature, message } => Output::Rejected {
            feature,
            message: r(message),
        },
        Output::Warning { feature, message } => Output::Warning {
            feature,
            message: r(message),
        },
        Output::Failed { feature, message } => Output::Failed {
            feature,
            message: r(message),
        },
        Output::RunEvent {
            feature,
            event: Event::Question { text },
        } => Output::RunEvent {
            feature,
            event: Event::Question { text: r(text) },
        },
        Output::RunEvent {
            feature,
            event:
                Event::ChecksFailed {
                    step,
                    attempt,
                    command,
                    tail,
                    log,
                },
        } => Output::RunEvent {
            feature,
            event: Event::ChecksFailed {
                step,
                attempt,
                command: r(command),
                tail: r(tail),
                log,
            },
        },
        other => other,
    }
}
