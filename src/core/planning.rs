//! From confirmed requirements to an approved plan: writing and committing the plan, keeping
//! refining, approving (which starts a run), requesting changes, discarding.

use super::*;

impl App {
    // The inputs below act only once `App::allowed` has let them through (`rules::may`): the
    // feature's status and the plan version they name are the ones they expect.

    pub(super) async fn keep_refining(&self, id: FeatureId) -> anyhow::Result<()> {
        self.store.set_status(id, Status::Gathering).await?;
        self.emit(id, OutputKind::Refining);
        Ok(())
    }

    pub(super) async fn approve(&self, id: FeatureId, version: u32) -> anyhow::Result<()> {
        let feature = self.store.set_status(id, Status::Approved).await?;
        tracing::info!(feature = id.0, version, "plan approved");
        self.emit(id, OutputKind::Approved { version });
        let wants_issue = self
            .config
            .github_of(feature.repo.as_deref())
            .is_some_and(|g| g.issue_on_approval);
        if wants_issue && feature.issue.is_none() {
            if let Err(err) = self.create_issue(id).await {
                self.emit(
                    id,
                    OutputKind::Warning {
                        message: format!("{err:#}"),
                    },
                );
            }
        }
        self.runs.start(id, None, None).await
    }

    pub(super) async fn request_changes(&self, id: FeatureId, version: u32) -> anyhow::Result<()> {
        self.store.set_status(id, Status::Gathering).await?;
        self.emit(id, OutputKind::ChangesRequested { version });
        Ok(())
    }

    pub(super) async fn discard(&self, id: FeatureId) -> anyhow::Result<()> {
        self.store.set_status(id, Status::Discarded).await?;
        tracing::info!(feature = id.0, "feature discarded");
        self.emit(id, OutputKind::Discarded);
        Ok(())
    }

    pub(super) async fn generate_plan(&self, id: FeatureId, force: bool) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        if !self.plan_may_start(&feature, force)? {
            return Ok(());
        }
        let version = feature.plan_version + 1;
        self.emit(id, OutputKind::PlanStarted { version });
        // No secret goes into a commit, even one the LLM repeated from the conversation.
        let markdown = self.redactor.redact(&self.write_plan(&feature).await?);
        let now = OffsetDateTime::now_utc();
        let path = match &feature.plan_path {
            Some(path) => PathBuf::from(path),
            None => self.new_plan_path(&feature, now)?,
        };
        let meta = plan::Meta {
            version,
            created: now,
            status: Status::Planned,
            pr: None,
        };
        let contents = plan::render_file(&feature, &meta, &markdown);
        let message = plan::commit_message(&feature, version);
        let published = self
            .repos
            .of(feature.repo.as_deref())
            .publish(&path, contents.into_bytes(), &message)
            .await
            .context("committing the plan")?;
        let commit = published.commit;
        let path_text = path.to_string_lossy().into_owned();
        tracing::info!(feature = id.0, version, path = %path_text, %commit, "plan committed");
        self.store
            .add_plan(
                id,
                PlanVersion {
                    version,
                    path: path_text.clone(),
                    commit: commit.clone(),
                    markdown: markdown.clone(),
                    at: now,
                },
            )
            .await
            .context("storing the plan")?;
        if let Some(err) = published.push_error {
            tracing::warn!(feature = id.0, error = %err, "pushing the plan failed");
            self.emit(
                id,
                OutputKind::Warning {
                    message: format!("the plan is committed locally but pushing it failed: {err}"),
                },
            );
        }
        self.show_new_plan(id, version, &path_text, commit, &markdown)
    }

    /// Whether a plan may be written for `feature` now; says why not when it may not. A
    /// planned feature with nothing said since gets its plan shown again instead.
    fn plan_may_start(&self, feature: &Feature, force: bool) -> anyhow::Result<bool> {
        let id = feature.id;
        match feature.status {
            Status::Confirmed => {}
            Status::Gathering if force => self.emit(
                id,
                OutputKind::Warning {
                    message: "the requirements are not confirmed yet; the plan may have gaps"
                        .to_string(),
                },
            ),
            Status::Gathering => {
                self.refuse(
                    id,
                    "the requirements are not confirmed yet; answer the open questions first"
                        .to_string(),
                );
                return Ok(false);
            }
            Status::Planned => {
                // Nothing was said since the last plan: show it again instead of paying for
                // the same plan twice.
                let plans = self.store.plans(id)?;
                if let Some(latest) = plans.last() {
                    let feature = self.store.feature(id)?;
                    self.emit(
                        id,
                        OutputKind::PlanCommitted {
                            feature,
                            version: latest.version,
                            path: latest.path.clone(),
                            commit: latest.commit.clone(),
                            markdown: latest.markdown.clone(),
                            again: true,
                        },
                    );
                    return Ok(false);
                }
            }
            other => {
                self.refuse(
                    id,
                    format!("feature #{id} is {other}; its plan can no longer change"),
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Shows a newly committed plan version, and what changed from the one before.
    fn show_new_plan(
        &self,
        id: FeatureId,
        version: u32,
        path_text: &str,
        commit: String,
        markdown: &str,
    ) -> anyhow::Result<()> {
        let previous = self
            .store
            .plans(id)?
            .into_iter()
            .find(|p| p.version + 1 == version);
        let feature = self.store.feature(id)?;
        let title = feature.title.clone();
        self.emit(
            id,
            OutputKind::PlanCommitted {
                feature,
                version,
                path: path_text.to_string(),
                commit,
                markdown: markdown.to_string(),
                again: false,
            },
        );
        if let Some(previous) = previous {
            match repo::worktree::unified_diff(&previous.markdown, markdown, path_text) {
                Ok(diff) => self.emit(
                    id,
                    OutputKind::PlanDiff {
                        title,
                        from: previous.version,
                        to: version,
                        diff,
                    },
                ),
                Err(err) => {
                    tracing::warn!(feature = id.0, error = %err, "diffing plan versions failed")
                }
            }
        }
        Ok(())
    }

    /// Asks the LLM for the plan, and once more to repair it when sections are missing.
    pub(super) async fn write_plan(&self, feature: &Feature) -> anyhow::Result<String> {
        let transcript = self.store.transcript(feature.id)?;
        let instruction = prompts::render(&self.prompts.plan, &[("title", &feature.title)]);
        // The instruction is repeated after the transcript, where models follow it best.
        let budget = self
            .context_budget()
            .saturating_sub(conversation::estimate_tokens(&instruction));
        let mut messages = conversation::fit_transcript(&instruction, &transcript, budget);
        messages.push(Message::user(instruction.clone()));
        let mut request = Request {
            messages,
            ..Request::default()
        };
        let first = self.plan_request(feature.id, &request).await?;
        let draft = plan::clean_markdown(&first);
        let missing = plan::missing_sections(&draft);
        if missing.is_empty() {
            return Ok(draft);
        }
        tracing::info!(
            feature = feature.id.0,
            ?missing,
            "plan lacks sections, asking for a repair"
        );
        request.messages.push(Message::assistant(first));
        request.messages.push(Message::user(prompts::render(
            &self.prompts.plan_repair,
            &[("missing", &missing.join(", "))],
        )));
        let repaired = plan::clean_markdown(&self.plan_request(feature.id, &request).await?);
        let still_missing = plan::missing_sections(&repaired);
        if still_missing.is_empty() {
            return Ok(repaired);
        }
        bail!(
            "the LLM's plan still lacks these sections after one repair: {}; press Generate plan again, or refine the requirements first",
            still_missing.join(", ")
        )
    }

    pub(super) async fn plan_request(
        &self,
        id: FeatureId,
        request: &Request,
    ) -> anyhow::Result<String> {
        let response = self
            .llm
            .complete(request)
            .await
            .map_err(|e| anyhow::Error::new(e).context("the LLM could not write the plan"))?;
        self.store.add_usage(id, response.usage).await?;
        Ok(response.text)
    }

    /// A path for a first plan that no other plan uses.
    pub(super) fn new_plan_path(
        &self,
        feature: &Feature,
        now: OffsetDateTime,
    ) -> anyhow::Result<PathBuf> {
        let slug = Slug::new(&feature.title, feature.id);
        let taken: HashSet<String> = self
            .store
            .features()?
            .into_iter()
            .filter_map(|f| f.plan_path)
            .collect();
        let repo_cfg = self.config.repo_of(feature.repo.as_deref());
        let tasks_dir: &Path = &repo_cfg.tasks_dir;
        let path = (1..)
            .map(|n| plan::plan_path(tasks_dir, now, &slug, n))
            .find(|p| !taken.contains(&*p.to_string_lossy()) && !repo_cfg.path.join(p).exists())
            .unwrap_or_else(|| plan::plan_path(tasks_dir, now, &slug, 1));
        Ok(path)
    }

    /// The tokens the transcript may take: the context window less room for the answer.
    pub(super) fn context_budget(&self) -> usize {
        let llm = &self.config.llm;
        llm.max_context_tokens
            .saturating_sub(llm.max_output_tokens as usize)
    }
}
