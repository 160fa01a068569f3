//! Readers of the core's outputs: the reply, the streamed text, the failure.

use featurebot::core::protocol::{Output, OutputKind};

/// The final visible reply among `outputs`.
pub fn reply(outputs: &[Output]) -> Option<&str> {
    outputs.iter().find_map(|o| match &o.kind {
        OutputKind::Reply { text, .. } => Some(text.as_str()),
        _ => None,
    })
}

/// The concatenated streamed deltas among `outputs`.
pub fn streamed(outputs: &[Output]) -> String {
    outputs
        .iter()
        .filter_map(|o| match &o.kind {
            OutputKind::ReplyDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The failure message among `outputs`.
pub fn failure(outputs: &[Output]) -> Option<&str> {
    outputs.iter().find_map(|o| match &o.kind {
        OutputKind::Failed { message, .. } | OutputKind::Rejected { message, .. } => {
            Some(message.as_str())
        }
        _ => None,
    })
}
