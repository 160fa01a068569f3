//! GitHub Actions, for the executor that runs agents on GitHub's runners: dispatching the
//! workflow, finding the run a dispatch started, following the run and its jobs, reading a
//! job's log, cancelling, and reading what the run left on its branch (a file, the pull
//! request).
//!
//! octocrab's typed Actions models are incomplete and strict about fields GitHub leaves out,
//! so these are raw routes read into the small structs below; every request still goes
//! through [`GitHub::call`], so retries, rate limits and token scrubbing are the same as for
//! the rest of the GitHub layer. The answers that mean something for Actions become their own
//! [`GithubError`] variants, each naming the fix: a workflow that is missing, has no
//! `workflow_dispatch` trigger, is disabled or takes other inputs, and a token without the
//! `actions` permission.
//!
//! A dispatch answers 204 without naming the run it starts, so the workflow puts a correlation
//! id into its `run-name`, and [`GitHub::find_workflow_run`] looks for it among the branch's
//! dispatched runs. Dispatching is not idempotent: a dispatch is sent again only after a rate
//! limit, never after a server error or a lost connection (GitHub may have started the run
//! anyway); those come back as [`GithubError::DispatchUnconfirmed`], and the caller looks for
//! the run before it dispatches again.

use base64::Engine as _;
use octocrab::params::State;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::{GitHub, GithubError, PullRequest, Resend};

/// One run of a workflow (GitHub's `workflow-run`, the fields featurebot reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkflowRun {
    pub id: u64,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested` or `pending`.
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    /// Once completed: `success`, `failure`, `cancelled`, `timed_out`, `skipped`,
    /// `action_required`, `neutral`, `stale` or `startup_failure`.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// The run's page.
    #[serde(default, deserialize_with = "nullable")]
    pub html_url: String,
    /// The workflow's `run-name` as evaluated for this run.
    #[serde(default, deserialize_with = "nullable")]
    pub display_title: String,
    /// 1, and more after a re-run.
    #[serde(default, deserialize_with = "nullable")]
    pub run_attempt: u32,
    /// ISO 8601, e.g. `2024-05-01T12:00:00Z`.
    #[serde(default, deserialize_with = "nullable")]
    pub created_at: String,
    #[serde(default, deserialize_with = "nullable")]
    pub updated_at: String,
    /// The workflow's name.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// `workflow_dispatch` for the runs featurebot starts.
    #[serde(default, deserialize_with = "nullable")]
    pub event: String,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub head_sha: String,
    #[serde(default, deserialize_with = "nullable")]
    pub run_number: u64,
}

impl WorkflowRun {
    /// Whether the run has finished, whatever its conclusion.
    pub fn is_completed(&self) -> bool {
        self.status == "completed"
    }
}

/// One job of a run (GitHub's `job`, the fields featurebot reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WorkflowJob {
    pub id: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub run_id: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested` or `pending`.
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub html_url: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub steps: Vec<JobStep>,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JobStep {
    /// From 1, in the order the steps run.
    #[serde(default, deserialize_with = "nullable")]
    pub number: u32,
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
}

impl GitHub {
    /// Dispatches `workflow` (a file name in `.github/workflows/`) on `git_ref` with `inputs`.
    pub async fn dispatch_workflow(
        &self,
        workflow: &str,
        git_ref: &str,
        inputs: &Map<String, Value>,
    ) -> Result<(), GithubError> {
        let route = format!(
            "{}/workflows/{}/dispatches",
            self.actions_route(),
            encode_segment(workflow)
        );
        let body = json!({"ref": git_ref, "inputs": inputs});
        let what = self.workflow_what(workflow);
        let (route, body) = (&route, &body);
        let sent = self
            .call_with(
                "POST workflow dispatch",
                &what,
                Resend::IfRefused,
                || async move {
                    let response = self.client._post(route.as_str(), Some(body)).await?;
                    octocrab::map_github_error(response).await.map(drop)
                },
            )
            .await;
        match sent {
            Ok(()) => {
                tracing::info!(workflow, git_ref, "dispatched workflow");
                Ok(())
            }
            Err(err) => Err(self.dispatch_error(err, workflow, git_ref)),
        }
    }

    /// The newest run of `workflow` dispatched on `branch` whose title (or name) mentions
    /// `correlation`, among the 50 newest; `None` while GitHub has not created it yet.
    ///
    /// `correlation` must stand on its own in the title: `run-7` is not found in
    /// `featurebot run-71`.
    pub async fn find_workflow_run(
        &self,
        workflow: &str,
        branch: &str,
        correlation: &str,
    ) -> Result<Option<WorkflowRun>, GithubError> {
        #[derive(Deserialize)]
        struct Runs {
            #[serde(default)]
            workflow_runs: Vec<WorkflowRun>,
        }
        let route = format!(
            "{}/workflows/{}/runs",
            self.actions_route(),
            encode_segment(workflow)
        );
        let query = [
            ("event", "workflow_dispatch"),
            ("branch", branch),
            ("per_page", "50"),
        ];
        let (route, query) = (&route, &query);
        let runs: Runs = self
            .call(
                "GET workflow runs",
                &self.workflow_what(workflow),
                || async move { self.client.get(route, Some(query)).await },
            )
            .await
            .map_err(|err| match err {
                GithubError::NotFound { .. } => GithubError::WorkflowMissing {
                    workflow: workflow.to_string(),
                    repo: self.full_name(),
                    git_ref: branch.to_string(),
                },
                other => self.actions_forbidden(other, "read"),
            })?;
        Ok(runs
            .workflow_runs
            .into_iter()
            .filter(|run| {
                mentions(&run.display_title, correlation) || mentions(&run.name, correlation)
            })
            .max_by_key(|run| run.id))
    }

    /// Run `run_id` as it stands.
    pub async fn workflow_run(&self, run_id: u64) -> Result<WorkflowRun, GithubError> {
        let route = format!("{}/runs/{run_id}", self.actions_route());
        let route = &route;
        self.call("GET workflow run", &self.run_what(run_id), || async move {
            self.client.get(route, None::<&()>).await
        })
        .await
        .map_err(|err| self.actions_forbidden(err, "read"))
    }

    /// The jobs of run `run_id`'s latest attempt (the first 100), with their steps.
    pub async fn workflow_jobs(&self, run_id: u64) -> Result<Vec<WorkflowJob>, GithubError> {
        #[derive(Deserialize)]
        struct Jobs {
            #[serde(default)]
            jobs: Vec<WorkflowJob>,
        }
        let route = format!("{}/runs/{run_id}/jobs", self.actions_route());
        let query = [("filter", "latest"), ("per_page", "100")];
        let (route, query) = (&route, &query);
        let jobs: Jobs = self
            .call("GET workflow jobs", &self.run_what(run_id), || async move {
                self.client.get(route, Some(query)).await
            })
            .await
            .map_err(|err| self.actions_forbidden(err, "read"))?;
        Ok(jobs.jobs)
    }

    /// The plain-text log of job `job_id`. GitHub answers with a redirect to short-lived
    /// storage, which is followed without the token (octocrab sends it to GitHub's API host
    /// only).
    pub async fn job_log(&self, job_id: u64) -> Result<String, GithubError> {
        let route = format!("{}/jobs/{job_id}/logs", self.actions_route());
        let what = format!("the log of job {job_id} of {}", self.full_name());
        let route = &route;
        self.call("GET job log", &what, || async move {
            let mut response = self.client._get(route.as_str()).await?;
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                if let Some(location) = location {
                    response = self.client._get(location.as_str()).await?;
                }
            }
            let response = octocrab::map_github_error(response).await?;
            self.client.body_to_string(response).await
        })
        .await
        .map_err(|err| self.actions_forbidden(err, "read"))
    }

    /// Asks GitHub to cancel run `run_id`; a run already completed is left as it is.
    pub async fn cancel_workflow_run(&self, run_id: u64) -> Result<(), GithubError> {
        let route = format!("{}/runs/{run_id}/cancel", self.actions_route());
        let route = &route;
        let cancelled = self
            .call(
                "POST cancel workflow run",
                &self.run_what(run_id),
                || async move {
                    let response = self.client._post(route.as_str(), None::<&()>).await?;
                    // 409: "Cannot cancel a workflow run that is completed."
                    if response.status().as_u16() == 409 {
                        return Ok(false);
                    }
                    octocrab::map_github_error(response).await.map(|_| true)
                },
            )
            .await
            .map_err(|err| self.actions_forbidden(err, "write"))?;
        tracing::info!(run_id, cancelled, "asked GitHub to cancel a workflow run");
        Ok(())
    }

    /// The text of the file at `path` on `branch`; `None` when the file or the branch is not
    /// there. Files over 1 MB, which the contents API does not send, are an error.
    pub async fn file_on_branch(
        &self,
        path: &str,
        branch: &str,
    ) -> Result<Option<String>, GithubError> {
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(encode_segment)
            .collect();
        let route = format!(
            "/repos/{}/{}/contents/{}",
            self.owner,
            self.repo,
            segments.join("/")
        );
        let what = format!("{path} on {branch} of {}", self.full_name());
        let query = [("ref", branch)];
        let (route, query) = (&route, &query);
        let found: Result<Value, GithubError> = self
            .call("GET contents", &what, || async move {
                self.client.get(route, Some(query)).await
            })
            .await;
        let file = match found {
            Ok(file) => file,
            Err(GithubError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        decode_contents(&file)
            .map(Some)
            .map_err(|problem| GithubError::Unexpected(format!("{what}: {problem}")))
    }

    /// The newest pull request (open, closed or merged) whose head is `branch` of this
    /// repository. Its `created` is false: featurebot did not open it just now.
    pub async fn pull_request_for_branch(
        &self,
        branch: &str,
    ) -> Result<Option<PullRequest>, GithubError> {
        let head = format!("{}:{branch}", self.owner);
        let head = &head;
        let page = self
            .call("GET pull requests", &self.repository(), || async move {
                self.client
                    .pulls(&self.owner, &self.repo)
                    .list()
                    .state(State::All)
                    .head(head.as_str())
                    .per_page(10)
                    .send()
                    .await
            })
            .await?;
        Ok(page
            .items
            .into_iter()
            .max_by_key(|pr| pr.number)
            .map(|pr| self.pull_request(pr, false)))
    }

    /// `/repos/{owner}/{repo}/actions`.
    fn actions_route(&self) -> String {
        format!("/repos/{}/{}/actions", self.owner, self.repo)
    }

    fn workflow_what(&self, workflow: &str) -> String {
        format!(
            "workflow .github/workflows/{workflow} of {}",
            self.full_name()
        )
    }

    fn run_what(&self, run_id: u64) -> String {
        format!("workflow run {run_id} of {}", self.full_name())
    }

    /// A failed dispatch as the caller should see it.
    fn dispatch_error(&self, err: GithubError, workflow: &str, git_ref: &str) -> GithubError {
        let workflow = workflow.to_string();
        let repo = self.full_name();
        match err {
            GithubError::NotFound { .. } => GithubError::WorkflowMissing {
                workflow,
                repo,
                git_ref: git_ref.to_string(),
            },
            GithubError::Unprocessable { message } => {
                let lower = message.to_lowercase();
                if lower.contains("'workflow_dispatch' trigger") && lower.contains("does not have")
                {
                    GithubError::NoDispatchTrigger { workflow, repo }
                } else if lower.contains("disabled workflow") {
                    GithubError::WorkflowDisabled { workflow, repo }
                } else if lower.contains("unexpected inputs") || lower.contains("required input") {
                    GithubError::WorkflowInputs {
                        workflow,
                        repo,
                        message,
                    }
                } else {
                    GithubError::Unprocessable { message }
                }
            }
            GithubError::Server { status } => GithubError::DispatchUnconfirmed {
                workflow,
                cause: format!("server error {status}"),
            },
            GithubError::Network(cause) => GithubError::DispatchUnconfirmed { workflow, cause },
            other => self.actions_forbidden(other, "write"),
        }
    }

    /// A 403 that is not a rate limit, on an Actions route: the token lacks the permission or
    /// Actions is off.
    fn actions_forbidden(&self, err: GithubError, access: &'static str) -> GithubError {
        match err {
            GithubError::Forbidden { message } => GithubError::ActionsForbidden {
                repo: self.full_name(),
                access,
                message,
            },
            other => other,
        }
    }
}

/// Whether `text` contains `word` with no letter, digit, `-` or `_` right before or after it.
fn mentions(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let joins = |c: char| c.is_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(joins) && !after.is_some_and(joins)
    })
}

/// The text of a contents-API file: base64 with line breaks, UTF-8 inside.
fn decode_contents(file: &Value) -> Result<String, String> {
    if file.is_array() {
        return Err("is a directory, not a file".to_string());
    }
    match (file["type"].as_str(), file["encoding"].as_str()) {
        (Some("file"), Some("base64")) => {}
        (Some("file"), Some("none")) => {
            return Err("is over 1 MB, which the contents API does not send".to_string())
        }
        (kind, encoding) => {
            return Err(format!(
                "is not a file we can read (type {kind:?}, encoding {encoding:?})"
            ))
        }
    }
    let packed: String = file["content"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed)
        .map_err(|err| format!("has content that is not base64 ({err})"))?;
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())
}

/// `segment` percent-encoded for a URL path: everything but `A-Z a-z 0-9 - . _ ~`.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A field GitHub may send as `null`, read as its default.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correlation_id_must_stand_on_its_own() {
        let check = |text: &str, word: &str, expected: bool| {
            assert_eq!(mentions(text, word), expected, "{word:?} in {text:?}");
        };
        check("featurebot run-7", "run-7", true);
        check("run-7", "run-7", true);
        check("featurebot (run-7) dark mode", "run-7", true);
        check("featurebot run-71", "run-7", false);
        check("featurebot xrun-7", "run-7", false);
        check("featurebot run-71 then run-7", "run-7", true);
        check("featurebot é", "é", true);
        check("featurebot", "", false);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_segment("featurebot.yml"), "featurebot.yml");
        assert_eq!(encode_segment("dark mode #2.md"), "dark%20mode%20%232.md");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn contents_are_decoded_across_line_breaks() {
        let file = json!({"type": "file", "encoding": "base64", "content": "aGVs\nbG8K\n"});
        assert_eq!(decode_contents(&file).unwrap(), "hello\n");
        let big = json!({"type": "file", "encoding": "none", "content": ""});
        assert!(decode_contents(&big).unwrap_err().contains("1 MB"));
        assert!(decode_contents(&json!([]))
            .unwrap_err()
            .contains("directory"));
    }
}
