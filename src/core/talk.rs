//! The requirements conversation: starting a feature, a person's message (or an answer to the
//! agent's question, or a follow-up request), resuming after a restart, and the LLM's answer
//! streamed back.

use super::*;

impl App {
    pub(super) async fn start(
        &self,
        raw_title: &str,
        requester: Author,
        place: Place,
        repo: Option<String>,
    ) -> anyhow::Result<()> {
        if let Some(name) = &repo {
            if self.config.target(Some(name)).is_none() {
                let message = format!("there is no repository named {name:?} in [[repos]]");
                self.out.send_to(place, OutputKind::Rejected { message });
                return Ok(());
            }
        }
        let title = match Title::parse(raw_title) {
            Ok(title) => title,
            Err(message) => {
                self.out.send_to(place, OutputKind::Rejected { message });
                return Ok(());
            }
        };
        let feature = self
            .store
            .create_feature(title.as_str(), requester.clone(), place)
            .await
            .context("storing the new feature")?;
        let feature = match repo {
            Some(_) => self.store.set_repo(feature.id, repo).await?,
            None => feature,
        };
        tracing::info!(feature = feature.id.0, title = %title, "feature started");
        let lock = self.lock_for(feature.id);
        let _guard = lock.lock().await;
        self.store
            .append_turn(
                feature.id,
                Speaker::User,
                &requester.name,
                &conversation::opening_request(title.as_str(), &requester.name),
                None,
            )
            .await
            .context("storing the request")?;
        self.emit(
            feature.id,
            OutputKind::Started {
                feature: feature.clone(),
            },
        );
        self.answer(&feature).await
    }

    /// Follow up: the next message starts a run on the pull request, unless GitHub says it
    /// was merged or closed meanwhile (the feature then moves on, and the thread says what to
    /// do instead).
    pub(super) async fn follow_up(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        match self.check_pull_request(&feature).await? {
            Some((number, PrState::Merged)) => self.refuse(
                id,
                format!("pull request #{number} is merged, so there is nothing to follow up on; ask for the change as a new feature with /feature: its branch starts from the merged base"),
            ),
            Some((number, PrState::Closed)) => self.refuse(
                id,
                format!("pull request #{number} was closed without merging, so a follow-up has nothing to go on; reopen it on GitHub and press Follow up again, or ask for the change as a new feature with /feature"),
            ),
            _ => {
                self.lock_follow_ups().insert(id);
                self.emit(id, OutputKind::FollowUpReady);
            }
        }
        Ok(())
    }

    pub(super) async fn message(
        &self,
        id: FeatureId,
        author: &Author,
        text: &str,
        source_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut feature = self.store.feature(id)?;
        if matches!(feature.status, Status::Running | Status::Queued) {
            let answered = self.runs.answer(id, text);
            if answered {
                self.store
                    .append_turn(id, Speaker::User, &author.name, text, source_id)
                    .await
                    .context("storing your answer")?;
            } else {
                self.refuse(id, "the agent is working on this feature; it will ask here if it needs you, or press Cancel to stop it".to_string());
            }
            return Ok(());
        }
        if feature.status == Status::PrOpen && !text.trim().is_empty() {
            let wanted = self.lock_follow_ups().remove(&id);
            if wanted {
                let runs = &self.runs;
                let stored = self
                    .store
                    .append_turn(id, Speaker::User, &author.name, text, source_id)
                    .await
                    .context("storing your request")?;
                if stored.is_some() {
                    runs.start(id, None, Some(text.to_string())).await?;
                }
            } else {
                self.refuse(id, "the pull request is open; press Follow up, then say what to change, to run the agent on it again".to_string());
            }
            return Ok(());
        }
        if !matches!(
            feature.status,
            Status::Gathering | Status::Confirmed | Status::Planned
        ) {
            self.emit(
                id,
                OutputKind::Rejected {
                    message: format!(
                        "feature #{id} is {}; its requirements conversation is closed",
                        feature.status
                    ),
                },
            );
            return Ok(());
        }
        if text.trim().is_empty() {
            return Ok(());
        }
        let stored = self
            .store
            .append_turn(id, Speaker::User, &author.name, text, source_id)
            .await
            .context("storing your message")?;
        if stored.is_none() {
            tracing::debug!(feature = id.0, ?source_id, "duplicate message ignored");
            return Ok(());
        }
        if feature.status != Status::Gathering {
            // More talk after a confirmation or a plan reopens the requirements; the next plan
            // becomes a new version.
            feature = self.store.set_status(id, Status::Gathering).await?;
        }
        self.answer(&feature).await
    }

    pub(super) async fn resume(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        let transcript = self.store.transcript(id)?;
        let unanswered = transcript
            .last()
            .is_some_and(|t| t.speaker == Speaker::User);
        if unanswered && feature.status == Status::Gathering {
            self.answer(&feature).await?;
        }
        Ok(())
    }

    /// Asks the LLM for the next message of the conversation and stores it.
    pub(super) async fn answer(&self, feature: &Feature) -> anyhow::Result<()> {
        let id = feature.id;
        let transcript = self.store.transcript(id)?;
        let system = prompts::render(&self.prompts.requirements, &[("title", &feature.title)]);
        let budget = self.context_budget();
        let request = Request {
            messages: conversation::fit_transcript(&system, &transcript, budget),
            ..Request::default()
        };
        self.emit(id, OutputKind::Typing);
        let mut filter = MarkerFilter::default();
        // Released a word at a time, so a secret split between deltas is still masked whole.
        let mut words = self.redactor.words();
        let mut visible = String::new();
        let out = self.out.clone();
        let response = self
            .llm
            .stream(&request, &mut |delta: &str| {
                let shown = filter.push(delta);
                visible.push_str(&shown);
                let text = words.push(&shown);
                if !text.is_empty() {
                    out.send(id, OutputKind::ReplyDelta { text });
                }
            })
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context("the LLM could not answer; your messages are saved, send another message to try again")
            })?;
        let rest = filter.finish();
        visible.push_str(&rest);
        let text = words.push(&rest) + &words.finish();
        if !text.is_empty() {
            self.emit(id, OutputKind::ReplyDelta { text });
        }
        let reading = filter.reading(visible);
        self.store
            .append_answer(id, BOT_NAME, &response.text, response.usage)
            .await
            .context("storing the answer")?;
        self.emit(
            id,
            OutputKind::Reply {
                text: reading.visible.clone(),
            },
        );
        if let Some(summary) = reading.confirmed {
            self.store.confirm(id, &summary).await?;
            tracing::info!(feature = id.0, "requirements confirmed");
            let version = self.store.feature(id)?.plan_version;
            self.emit(id, OutputKind::Confirmed { summary, version });
        }
        Ok(())
    }
}
