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
        // Someone else's text on the remote is not replaced: the new version waits beside it.
        let guard = plan_file::guard(
            &feature.title,
            &self.store.plans(id)?,
            Some(BranchName::for_plan(id)),
        );
        let repo = self.repos.of(feature.repo.as_deref());
        let published = repo
            .publish(&path, contents.into_bytes(), &message, Some(guard))
            .await
            .context("committing the plan")?;
        let commit = published
            .commit
            .context("committing the plan: nothing was committed")?;
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
                    message: format!("the plan is committed locally but pushing it failed: {err}. It goes out with the next plan, or when featurebot starts again"),
                },
            );
        }
        self.show_new_plan(id, version, &path_text, commit.clone(), &markdown)?;
        let earlier = feature.plan_conflict.clone();
        match published.conflict {
            Some(Conflict {
                theirs,
                branch: Some(branch),
            }) => {
                self.store
                    .set_plan_conflict(
                        id,
                        Some(PlanConflict {
                            version,
                            theirs: theirs.clone(),
                            mine: commit.clone(),
                            branch: branch.clone(),
                        }),
                    )
                    .await?;
                self.emit(
                    id,
                    OutputKind::PlanConflict {
                        version,
                        path: path_text,
                        theirs,
                        mine: commit,
                        branch: branch.to_string(),
                    },
                );
            }
            _ if earlier.is_some() => self.conflict_gone(id, repo).await?,
            _ => {}
        }
        Ok(())
    }

    /// The admin's choice on a plan conflict (`rules::may` checked it is the pending one):
    /// keep the bot's version, committed on top of theirs on the base branch; or take theirs
    /// as the next plan version. Either way the side branch goes.
    pub(super) async fn settle_plan_conflict(
        &self,
        id: FeatureId,
        keep_mine: bool,
    ) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        let Some(latest) = self.store.plans(id)?.pop() else {
            return Ok(());
        };
        let repo = self.repos.of(feature.repo.as_deref());
        let path = PathBuf::from(&latest.path);
        let version = if keep_mine {
            let meta = plan::Meta {
                version: latest.version,
                created: latest.at,
                status: feature.status,
                pr: None,
            };
            let contents = plan::render_file(&feature, &meta, &latest.markdown);
            let message = format!(
                "plan: {} (version {} kept over a change on the remote)\n\nFeature-Id: {}\nPlan-Version: {}\n",
                feature.title, latest.version, id, latest.version
            );
            let published = repo
                .publish(&path, contents.into_bytes(), &message, None)
                .await
                .context("committing the plan")?;
            if let Some(err) = published.push_error {
                self.refuse(id, format!("the plan is committed locally but pushing it failed, so the conflict stays: {err}"));
                return Ok(());
            }
            let commit = published.commit.unwrap_or_default();
            self.store
                .add_plan(
                    id,
                    PlanVersion {
                        commit,
                        ..latest.clone()
                    },
                )
                .await?;
            latest.version
        } else {
            let Some((theirs, text)) = repo.remote_file(&path).await? else {
                self.refuse(
                    id,
                    format!(
                        "{} is no longer on the remote's base branch; generate the plan again",
                        latest.path
                    ),
                );
                return Ok(());
            };
            let body = plan_file::parse_plan_file(&text)
                .map_err(|e| anyhow::anyhow!("their plan file cannot be read: {e}"))?
                .markdown;
            let heading = format!("# {}", feature.title);
            let markdown = body
                .strip_prefix(&heading)
                .map(str::trim)
                .unwrap_or(&body)
                .to_string();
            let version = latest.version + 1;
            let markdown = self.redactor.redact(&markdown);
            self.store
                .add_plan(
                    id,
                    PlanVersion {
                        version,
                        path: latest.path.clone(),
                        commit: theirs.clone(),
                        markdown: markdown.clone(),
                        at: OffsetDateTime::now_utc(),
                    },
                )
                .await?;
            // Their text stays; the front matter now says which version it is.
            if let Some(why) = plan_file::refresh(
                repo,
                &self.store,
                id,
                &format!("version {version}, from {}", plan_file::short(&theirs)),
            )
            .await?
            {
                self.emit(
                    id,
                    OutputKind::Warning {
                        message: format!("their plan is version {version} now, but {why}"),
                    },
                );
            }
            self.show_new_plan(id, version, &latest.path, theirs, &markdown)?;
            version
        };
        self.conflict_gone(id, repo).await?;
        self.emit(
            id,
            OutputKind::PlanConflictSettled {
                version,
                kept_mine: keep_mine,
            },
        );
        Ok(())
    }

    /// Clears a settled plan conflict and deletes its side branch (a failure to delete it is
    /// only logged: the branch is the bot's own and harms nobody).
    async fn conflict_gone(&self, id: FeatureId, repo: &repo::Repo) -> anyhow::Result<()> {
        self.store.set_plan_conflict(id, None).await?;
        if let Err(err) = repo.delete_branch(&BranchName::for_plan(id)).await {
            tracing::warn!(feature = id.0, error = %err, "deleting the plan's side branch failed");
        }
        Ok(())
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
