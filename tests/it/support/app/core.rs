//! Driving the core alone, as the console does: send an input, read what it emitted, and wait
//! for an agent run to end.

use std::time::Duration;

use featurebot::core::protocol::{Input, Output, OutputKind};
use featurebot::model::{FeatureId, Place, Run, Status};

use super::{alice, Running, TestApp};
use crate::support::outputs::reply;
use crate::support::scripts::{ask, export_run, script_to_plan};

impl TestApp {
    fn outputs(&mut self) -> &mut tokio::sync::mpsc::UnboundedReceiver<Output> {
        match &mut self.running {
            Running::Core { outputs, .. } => outputs,
            _ => panic!("the core's outputs are read only when it runs alone"),
        }
    }

    /// Handles `input` to the end and returns what it emitted so far.
    pub async fn send(&mut self, input: Input) -> Vec<Output> {
        self.app().clone().handle(input).await;
        let mut got = Vec::new();
        while let Ok(output) = self.outputs().try_recv() {
            got.push(output);
        }
        got
    }

    /// Waits for the run to end and returns its final record.
    pub async fn run_ended(&mut self) -> Run {
        self.until_run_ended().await.0
    }

    /// Waits for the run to end; returns its final record and what was emitted until then.
    pub async fn until_run_ended(&mut self) -> (Run, Vec<Output>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.outputs().recv()).await {
                Ok(Some(Output {
                    kind: OutputKind::RunEnded { run, .. },
                    ..
                })) => return (run, seen),
                Ok(Some(other)) => seen.push(other),
                Ok(None) => panic!("the core stopped: {seen:?}"),
                Err(_) => panic!("the run did not end: {seen:?}"),
            }
        }
    }

    /// Starts a feature called `title` from the console; returns its id and the outputs.
    pub async fn start_feature(&mut self, title: &str) -> (FeatureId, Vec<Output>) {
        let outputs = self
            .send(Input::Start {
                title: title.to_string(),
                requester: alice(),
                place: Place::Console,
                repo: None,
            })
            .await;
        let id = outputs
            .iter()
            .find_map(|o| match &o.kind {
                OutputKind::Started { feature } => Some(feature.id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no feature started: {outputs:?}"));
        (id, outputs)
    }

    /// Alice says `text` in the feature's conversation.
    pub async fn say(&mut self, feature: FeatureId, text: &str) -> Vec<Output> {
        self.send(Input::Message {
            feature,
            author: alice(),
            text: text.to_string(),
            source_id: None,
        })
        .await
    }

    /// Takes a new feature, "Export CSV" (#1 in a fresh store), to a committed plan.
    pub async fn planned(&mut self) -> FeatureId {
        script_to_plan(&self.llm);
        let (id, _) = self.start_feature("Export CSV").await;
        self.say(id, "CSV").await;
        let outputs = self
            .send(Input::GeneratePlan {
                feature: id,
                force: false,
            })
            .await;
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o.kind, OutputKind::PlanCommitted { .. })),
            "{outputs:?}"
        );
        id
    }

    /// Approves the plan with a run that writes a file in step 1, and waits for its end.
    pub async fn approve_and_run(&mut self, id: FeatureId) -> Run {
        export_run(&self.llm);
        self.send(Input::Approve {
            feature: id,
            version: 1,
        })
        .await;
        self.run_ended().await
    }

    /// A second feature gets its first answer.
    pub async fn second_feature_is_served(&mut self) {
        ask(&self.llm, "Which theme, dark or light?");
        let (_, outputs) = self.start_feature("Dark mode").await;
        assert_eq!(
            reply(&outputs),
            Some("Which theme, dark or light?"),
            "{outputs:?}"
        );
    }

    pub fn status(&self, id: FeatureId) -> Status {
        self.store().feature(id).unwrap().status
    }
}
