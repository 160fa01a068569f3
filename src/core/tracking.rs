//! Keeping the feature and the world in step: the GitHub issue, the pull request's state, and
//! the plan file's front matter after a priority or label change.

use super::*;

impl App {
    pub(super) async fn create_issue(&self, id: FeatureId) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        let Some(github) = self.github_for(&feature) else {
            self.refuse(
                id,
                "GitHub is not configured for this feature's repository; add a [github] section (or github_owner and github_repo in [[repos]]) to open issues".to_string(),
            );
            return Ok(());
        };
        if let Some((number, url)) = &feature.issue {
            self.refuse(
                id,
                format!("issue #{number} already mirrors this feature: {url}"),
            );
            return Ok(());
        }
        let Some(plan) = self.store.plans(id)?.pop() else {
            self.refuse(
                id,
                format!("feature #{id} has no plan to put in an issue yet"),
            );
            return Ok(());
        };
        let spec = IssueSpec {
            title: feature.title.clone(),
            body: self.redactor.redact(&format!(
                "{}\n\n---\nPlan version {} · `{}` · Feature-Id: {}",
                plan.markdown, plan.version, plan.path, id
            )),
            labels: issue_labels(&feature),
        };
        let issue = github
            .create_issue(&spec)
            .await
            .map_err(|e| anyhow::Error::new(e).context("opening the GitHub issue"))?;
        self.store.set_issue(id, issue.number, &issue.url).await?;
        tracing::info!(feature = id.0, issue = issue.number, "issue opened");
        self.emit(
            id,
            OutputKind::IssueCreated {
                number: issue.number,
                url: issue.url,
            },
        );
        Ok(())
    }

    /// Moves features whose pull request was merged or closed on GitHub.
    pub(super) async fn refresh_pull_requests(&self) -> anyhow::Result<()> {
        for feature in self.store.features()? {
            if feature.status == Status::PrOpen {
                self.check_pull_request(&feature).await?;
            }
        }
        Ok(())
    }

    /// Asks GitHub for the state of `feature`'s pull request; a merged or closed one moves the
    /// feature (and its plan file) on and is said in the thread. Returns the state and the
    /// pull request's number, `None` when there is no pull request or GitHub to ask, or GitHub
    /// could not say (logged).
    pub(super) async fn check_pull_request(
        &self,
        feature: &Feature,
    ) -> anyhow::Result<Option<(u64, PrState)>> {
        let Some(github) = self.github_for(feature) else {
            return Ok(None);
        };
        let Some(url) = self
            .store
            .runs(feature.id)?
            .into_iter()
            .rev()
            .find_map(|r| r.pr_url)
        else {
            return Ok(None);
        };
        let Some(number) = crate::github::pr_number_from_url(&url) else {
            return Ok(None);
        };
        let state = match github.pull_request_state(number).await {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(feature = feature.id.0, error = %err, "reading a pull request's state failed");
                return Ok(None);
            }
        };
        let status = match state {
            PrState::Open => return Ok(Some((number, state))),
            PrState::Merged => Status::Merged,
            PrState::Closed => Status::Closed,
        };
        self.store.set_status(feature.id, status).await?;
        match plan_file::refresh(
            self.repos.of(feature.repo.as_deref()),
            &self.store,
            feature.id,
            status.as_str(),
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(feature = feature.id.0, %why, "the plan file is not up to date on the remote")
            }
            Err(err) => {
                tracing::warn!(feature = feature.id.0, error = %format!("{err:#}"), "updating the plan file failed")
            }
        }
        self.emit(feature.id, OutputKind::PullRequestChanged { status });
        Ok(Some((number, state)))
    }

    /// After a priority or label change: the plan file's front matter follows, the GitHub issue's
    /// labels too, and people see it.
    pub(super) async fn feature_changed(&self, id: FeatureId, what: &str) -> anyhow::Result<()> {
        let feature = self.store.feature(id)?;
        if let (Some(github), Some((number, _))) = (self.github_for(&feature), &feature.issue) {
            if let Err(err) = github
                .set_issue_labels(*number, &issue_labels(&feature))
                .await
            {
                tracing::warn!(feature = id.0, error = %err, "mirroring labels to the issue failed");
                self.emit(id, OutputKind::Warning { message: format!("the change is saved, but the GitHub issue's labels could not be updated: {err}") });
            }
        }
        let refreshed = plan_file::refresh(
            self.repos.of(feature.repo.as_deref()),
            &self.store,
            id,
            what,
        )
        .await;
        let problem = match refreshed {
            Ok(None) => None,
            Ok(Some(why)) => Some(format!("the change is saved, but {why}")),
            Err(err) => Some(format!(
                "the change is saved, but the plan file could not be updated: {err:#}"
            )),
        };
        if let Some(message) = problem {
            tracing::warn!(feature = id.0, %message, "updating the plan file failed");
            self.emit(id, OutputKind::Warning { message });
        }
        let feature = self.store.feature(id)?;
        self.emit(id, OutputKind::FeatureUpdated { feature });
        Ok(())
    }
}
