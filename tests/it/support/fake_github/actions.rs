//! The fake GitHub's Actions and contents routes, scriptable from tests.
//!
//! A workflow exists once a test adds it ([`FakeGithub::add_workflow`]); dispatching one that
//! does not is GitHub's 404. A dispatch is checked the way GitHub checks it (the trigger, a
//! disabled workflow, a `ref`, `missing-branch` as a ref that does not exist, declared inputs),
//! recorded ([`FakeGithub::dispatches`]) and creates a `queued` run whose `display_title` is the
//! workflow's run-name with the inputs put in: `{name}` or `${{ inputs.name }}`, empty for an
//! input not given. From there the test drives the run:
//!
//! - [`FakeWorkflow::autopilot`] gives each new run a list of states, one applied per
//!   `GET .../actions/runs/{id}` (the executor's poll), the last one kept;
//!   [`FakeGithub::set_run_status`] sets one at any time;
//! - [`FakeWorkflow::with_jobs`] and [`FakeGithub::set_jobs`] give a run its jobs, steps and
//!   logs; [`FakeGithub::set_job_log`] changes a log;
//! - [`FakeWorkflow::appearing_after`] keeps a new run out of the first N run lists (a run that
//!   appears late), [`FakeWorkflow::never_appearing`] out of all of them;
//! - a cancel is recorded ([`FakeGithub::cancels`]) and completes the run as `cancelled` (409
//!   when it is already completed);
//! - [`FakeGithub::rate_limit`] and [`FakeGithub::fail_route`] make requests matching a method
//!   and a path fragment fail N times; [`FakeGithub::deny_actions`] answers every Actions route
//!   with the 403 of a token without the `actions` permission.
//!
//! A job's log is a 302 to a signed address on the fake's log storage, a second port (another
//! host, as GitHub's is), which wants no token and refuses one (400), so a test notices if
//! the token leaks there.
//! [`FakeGithub::put_file`] puts a file on a branch for the contents API, and
//! [`FakeGithub::open_pull`] opens a pull request the way a runner would.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{
    not_found, pull_json, repository_json, user_json, Answer, FakeGithub, Recorded, State, SHA,
};

const DISPATCH_DOCS: &str =
    "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event";
const RUNS_DOCS: &str = "https://docs.github.com/rest/actions/workflow-runs";
const CONTENTS_DOCS: &str = "https://docs.github.com/rest/repos/contents#get-repository-content";
/// The contents API sends no content for larger files.
const CONTENTS_LIMIT: usize = 1024 * 1024;

/// A workflow file in the fake repository and how its runs behave.
#[derive(Debug, Clone)]
pub struct FakeWorkflow {
    /// The workflow's `name:`.
    pub name: String,
    /// The `run-name:` template; see the module's documentation.
    pub run_name: String,
    pub dispatch_trigger: bool,
    pub disabled: bool,
    /// The declared inputs; `None` accepts any.
    pub inputs: Option<Vec<String>>,
    /// Run lists that miss a new run before it shows; `None`: it never shows.
    pub appears_after: Option<u32>,
    /// The states a new run goes through, one per poll of the run.
    pub autopilot: Vec<(String, Option<String>)>,
    /// The jobs each new run gets.
    pub jobs: Vec<FakeJob>,
}

impl FakeWorkflow {
    /// A dispatchable workflow called `featurebot` with this run-name template, e.g.
    /// `featurebot {correlation_id}`; its runs show at once and stay `queued`.
    pub fn new(run_name: &str) -> FakeWorkflow {
        FakeWorkflow {
            name: "featurebot".to_string(),
            run_name: run_name.to_string(),
            dispatch_trigger: true,
            disabled: false,
            inputs: None,
            appears_after: Some(0),
            autopilot: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// Only `on: push`, say: dispatches are GitHub's 422.
    pub fn without_dispatch_trigger(mut self) -> FakeWorkflow {
        self.dispatch_trigger = false;
        self
    }

    /// Disabled on the Actions tab: dispatches are GitHub's 422.
    pub fn disabled(mut self) -> FakeWorkflow {
        self.disabled = true;
        self
    }

    /// Declares these inputs; a dispatch with others is GitHub's 422.
    pub fn with_inputs(mut self, names: &[&str]) -> FakeWorkflow {
        self.inputs = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// A new run is missing from the first `lists` run lists.
    pub fn appearing_after(mut self, lists: u32) -> FakeWorkflow {
        self.appears_after = Some(lists);
        self
    }

    /// A new run is missing from every run list (GitHub never started it).
    pub fn never_appearing(mut self) -> FakeWorkflow {
        self.appears_after = None;
        self
    }

    /// Each new run takes these `(status, conclusion)` states, one per `GET` of the run, and
    /// keeps the last.
    pub fn autopilot(mut self, states: &[(&str, Option<&str>)]) -> FakeWorkflow {
        self.autopilot = states
            .iter()
            .map(|(status, conclusion)| (status.to_string(), conclusion.map(str::to_string)))
            .collect();
        self
    }

    /// Each new run gets these jobs.
    pub fn with_jobs(mut self, jobs: Vec<FakeJob>) -> FakeWorkflow {
        self.jobs = jobs;
        self
    }
}

/// A job as a test describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeJob {
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub steps: Vec<FakeStep>,
    /// The plain-text log; `None`: the logs route is a 404.
    pub log: Option<String>,
}

impl FakeJob {
    pub fn new(name: &str, status: &str, conclusion: Option<&str>) -> FakeJob {
        FakeJob {
            name: name.to_string(),
            status: status.to_string(),
            conclusion: conclusion.map(str::to_string),
            steps: Vec::new(),
            log: None,
        }
    }

    /// Adds a step, numbered after the others.
    pub fn step(mut self, name: &str, status: &str, conclusion: Option<&str>) -> FakeJob {
        self.steps.push(FakeStep {
            name: name.to_string(),
            status: status.to_string(),
            conclusion: conclusion.map(str::to_string),
        });
        self
    }

    pub fn log(mut self, text: &str) -> FakeJob {
        self.log = Some(text.to_string());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeStep {
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
}

/// A dispatch as the fake accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub workflow: String,
    pub git_ref: String,
    pub inputs: Map<String, Value>,
    /// The run it created.
    pub run_id: u64,
}

/// A rate limit as GitHub answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// 403 with `x-ratelimit-remaining: 0` and a reset this many seconds from now.
    Primary { reset_in_secs: u64 },
    /// 403 "secondary rate limit" with `retry-after`.
    Secondary { retry_after_secs: u64 },
}

/// The Actions side of the fake's state.
#[derive(Default)]
pub(super) struct Actions {
    workflows: Vec<Workflow>,
    runs: Vec<Run>,
    jobs: Vec<Job>,
    dispatches: Vec<Dispatch>,
    cancels: Vec<u64>,
    /// `(branch, path)` to text.
    files: BTreeMap<(String, String), String>,
    faults: Vec<Fault>,
    denied: bool,
    /// Ticks at every change, for ever later timestamps.
    clock: u64,
}

struct Workflow {
    id: u64,
    file: String,
    spec: FakeWorkflow,
}

struct Run {
    id: u64,
    workflow_id: u64,
    workflow_file: String,
    workflow_name: String,
    display_title: String,
    branch: String,
    status: String,
    conclusion: Option<String>,
    run_number: u64,
    created_at: String,
    updated_at: String,
    run_started_at: Option<String>,
    hidden_for: Option<u32>,
    autopilot: VecDeque<(String, Option<String>)>,
}

struct Job {
    id: u64,
    run_id: u64,
    spec: FakeJob,
    created_at: String,
    completed_at: Option<String>,
}

struct Fault {
    method: String,
    path_contains: String,
    remaining: u32,
    answer: Answer,
}

impl Actions {
    fn tick(&mut self) -> String {
        self.clock += 1;
        let n = self.clock;
        format!("2024-05-01T13:{:02}:{:02}Z", (n / 60) % 60, n % 60)
    }

    fn run_mut(&mut self, run_id: u64) -> &mut Run {
        self.runs
            .iter_mut()
            .find(|run| run.id == run_id)
            .unwrap_or_else(|| panic!("fake github: no workflow run {run_id}"))
    }

    /// Sets a run's state, as GitHub would stamp it.
    fn set_status(&mut self, run_id: u64, status: &str, conclusion: Option<String>) {
        let now = self.tick();
        let run = self.run_mut(run_id);
        if status != "queued" && run.run_started_at.is_none() {
            run.run_started_at = Some(now.clone());
        }
        run.status = status.to_string();
        run.conclusion = conclusion;
        run.updated_at = now;
    }

    fn add_jobs(&mut self, run_id: u64, jobs: Vec<FakeJob>) -> Vec<u64> {
        self.jobs.retain(|job| job.run_id != run_id);
        let mut ids = Vec::new();
        for spec in jobs {
            let now = self.tick();
            let id = 29_679_449_000 + self.clock;
            let completed_at = (spec.status == "completed").then(|| now.clone());
            self.jobs.push(Job {
                id,
                run_id,
                spec,
                created_at: now,
                completed_at,
            });
            ids.push(id);
        }
        ids
    }
}

impl FakeGithub {
    /// Adds `.github/workflows/{file}`.
    pub fn add_workflow(&self, file: &str, workflow: FakeWorkflow) {
        let mut actions = self.state.actions.lock().unwrap();
        let id = 161_335 + actions.workflows.len() as u64;
        actions.workflows.retain(|w| w.file != file);
        actions.workflows.push(Workflow {
            id,
            file: file.to_string(),
            spec: workflow,
        });
    }

    /// Every dispatch the fake accepted, oldest first.
    pub fn dispatches(&self) -> Vec<Dispatch> {
        self.state.actions.lock().unwrap().dispatches.clone()
    }

    /// Every run in GitHub's JSON, oldest first.
    pub fn runs(&self) -> Vec<Value> {
        let actions = self.state.actions.lock().unwrap();
        actions
            .runs
            .iter()
            .map(|run| run_json(&self.state, run))
            .collect()
    }

    /// Adds a run of `workflow` on `branch` as if dispatched with this title, without a
    /// dispatch: another person's run, or an older one. It shows at once.
    pub fn add_run(&self, workflow: &str, branch: &str, display_title: &str) -> u64 {
        let mut actions = self.state.actions.lock().unwrap();
        let Some(index) = actions.workflows.iter().position(|w| w.file == workflow) else {
            panic!("fake github: no workflow {workflow}; add it first");
        };
        let run_id = create_run(&mut actions, index, branch, display_title.to_string());
        actions.run_mut(run_id).hidden_for = Some(0);
        run_id
    }

    /// Sets run `run_id`'s `status` and `conclusion`, dropping what its autopilot had left.
    pub fn set_run_status(&self, run_id: u64, status: &str, conclusion: Option<&str>) {
        let mut actions = self.state.actions.lock().unwrap();
        actions.run_mut(run_id).autopilot.clear();
        actions.set_status(run_id, status, conclusion.map(str::to_string));
    }

    /// Gives run `run_id` these states, one per poll, as [`FakeWorkflow::autopilot`] does.
    pub fn script_run(&self, run_id: u64, states: &[(&str, Option<&str>)]) {
        let mut actions = self.state.actions.lock().unwrap();
        actions.run_mut(run_id).autopilot = states
            .iter()
            .map(|(status, conclusion)| (status.to_string(), conclusion.map(str::to_string)))
            .collect();
    }

    /// Replaces run `run_id`'s jobs; their ids, in order.
    pub fn set_jobs(&self, run_id: u64, jobs: Vec<FakeJob>) -> Vec<u64> {
        let mut actions = self.state.actions.lock().unwrap();
        actions.run_mut(run_id);
        actions.add_jobs(run_id, jobs)
    }

    /// Run `run_id`'s jobs in GitHub's JSON.
    pub fn jobs(&self, run_id: u64) -> Vec<Value> {
        let actions = self.state.actions.lock().unwrap();
        actions
            .jobs
            .iter()
            .filter(|job| job.run_id == run_id)
            .map(|job| job_json(&self.state, &actions, job))
            .collect()
    }

    pub fn set_job_log(&self, job_id: u64, text: &str) {
        let mut actions = self.state.actions.lock().unwrap();
        let job = actions
            .jobs
            .iter_mut()
            .find(|job| job.id == job_id)
            .unwrap_or_else(|| panic!("fake github: no job {job_id}"));
        job.spec.log = Some(text.to_string());
    }

    /// The run ids of every cancel request, accepted or not, in order.
    pub fn cancels(&self) -> Vec<u64> {
        self.state.actions.lock().unwrap().cancels.clone()
    }

    /// Every Actions route answers 403 from now on, as for a token without the `actions`
    /// permission.
    pub fn deny_actions(&self) {
        self.state.actions.lock().unwrap().denied = true;
    }

    /// The next `times` requests whose method is `method` and whose path (without the query)
    /// contains `path_contains` get this answer instead of the route's.
    pub fn fail_route(
        &self,
        method: &str,
        path_contains: &str,
        times: u32,
        status: u16,
        body: &str,
        headers: Vec<(String, String)>,
    ) {
        self.state.actions.lock().unwrap().faults.push(Fault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            remaining: times,
            answer: Answer {
                status,
                headers,
                body: body.to_string(),
            },
        });
    }

    /// [`FakeGithub::fail_route`] with GitHub's rate-limit answer.
    pub fn rate_limit(&self, method: &str, path_contains: &str, times: u32, limit: RateLimit) {
        let (body, headers) = match limit {
            RateLimit::Primary { reset_in_secs } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                (
                    json!({
                        "message": "API rate limit exceeded for user ID 583231. If you reach out to GitHub Support for help, please include the request ID FAKE:0001.",
                        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                        "status": "403",
                    }),
                    vec![
                        ("x-ratelimit-limit".to_string(), "5000".to_string()),
                        ("x-ratelimit-remaining".to_string(), "0".to_string()),
                        ("x-ratelimit-used".to_string(), "5000".to_string()),
                        (
                            "x-ratelimit-reset".to_string(),
                            (now + reset_in_secs).to_string(),
                        ),
                        ("x-ratelimit-resource".to_string(), "core".to_string()),
                    ],
                )
            }
            RateLimit::Secondary { retry_after_secs } => (
                json!({
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID FAKE:0001.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                    "status": "403",
                }),
                vec![("retry-after".to_string(), retry_after_secs.to_string())],
            ),
        };
        self.fail_route(
            method,
            path_contains,
            times,
            403,
            &body.to_string(),
            headers,
        );
    }

    /// Puts `text` at `path` on `branch`, for the contents API.
    pub fn put_file(&self, branch: &str, path: &str, text: &str) {
        self.state
            .actions
            .lock()
            .unwrap()
            .files
            .insert((branch.to_string(), path.to_string()), text.to_string());
    }

    /// Opens a pull request from `head` into `base`, as a runner would; its number.
    pub fn open_pull(&self, head: &str, base: &str, title: &str) -> u64 {
        let number = self
            .state
            .last_number
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let pr = pull_json(&self.state, number, title, None, head, base, false);
        self.state.pulls.lock().unwrap().push(pr);
        number
    }
}

/// A fault's answer for `request`, if one is armed for it.
pub(super) fn fault(state: &State, request: &Recorded) -> Option<Answer> {
    let path = request.path.split('?').next().unwrap_or_default();
    let mut actions = state.actions.lock().unwrap();
    let fault = actions.faults.iter_mut().find(|f| {
        f.remaining > 0 && f.method == request.method && path.contains(&f.path_contains)
    })?;
    fault.remaining -= 1;
    Some(fault.answer.clone())
}

/// The log storage a job's log redirects to (its own port): signed addresses, no token.
pub(super) fn log_storage(state: &State, request: &Recorded) -> Answer {
    let text = |status: u16, body: &str| Answer {
        status,
        headers: vec![text_plain()],
        body: body.to_string(),
    };
    let path = request.path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["_apis", "pipelines", "1", "runs", _, "signedlogcontent", job_id] = segments.as_slice()
    else {
        return text(404, "BlobNotFound");
    };
    if request.header("authorization").is_some() {
        return text(
            400,
            "fake log storage: the request carried an Authorization header; signed URLs take no token",
        );
    }
    let actions = state.actions.lock().unwrap();
    let log = actions
        .jobs
        .iter()
        .find(|job| job_id.parse() == Ok(job.id))
        .and_then(|job| job.spec.log.as_deref());
    match log {
        Some(log) => text(200, log),
        None => text(404, "BlobNotFound"),
    }
}

/// The Actions and contents routes of the fake repository, after the token is checked.
pub(super) fn route(
    state: &State,
    request: &Recorded,
    segments: &[&str],
    param: &dyn Fn(&str) -> Option<String>,
) -> Option<Answer> {
    let ["repos", _, _, area, rest @ ..] = segments else {
        return None;
    };
    match (request.method.as_str(), *area, rest) {
        (_, "actions", _) if state.actions.lock().unwrap().denied => Some(Answer::error(
            403,
            "Resource not accessible by personal access token",
            RUNS_DOCS,
        )),
        ("GET", "actions", ["workflows", workflow]) => Some(get_workflow(state, workflow)),
        ("POST", "actions", ["workflows", workflow, "dispatches"]) => {
            Some(dispatch(state, workflow, &request.body))
        }
        ("GET", "actions", ["workflows", workflow, "runs"]) => {
            Some(list_runs(state, workflow, param))
        }
        ("GET", "actions", ["runs", run_id]) => Some(get_run(state, run_id)),
        ("GET", "actions", ["runs", run_id, "jobs"]) => Some(list_jobs(state, run_id)),
        ("POST", "actions", ["runs", run_id, "cancel"]) => Some(cancel(state, run_id)),
        ("GET", "actions", ["jobs", job_id, "logs"]) => Some(job_logs(state, job_id)),
        ("GET", "contents", path) if !path.is_empty() => {
            let branch = param("ref").unwrap_or_else(|| "main".to_string());
            let path: Vec<String> = path.iter().map(|s| percent_decode(s)).collect();
            Some(contents(state, &branch, &path.join("/")))
        }
        _ => None,
    }
}

fn find_workflow(actions: &Actions, workflow: &str) -> Option<usize> {
    actions
        .workflows
        .iter()
        .position(|w| w.file == workflow || w.id.to_string() == workflow)
}

fn get_workflow(state: &State, workflow: &str) -> Answer {
    let actions = state.actions.lock().unwrap();
    match find_workflow(&actions, workflow) {
        Some(index) => Answer::json(200, workflow_json(state, &actions.workflows[index])),
        None => not_found(),
    }
}

fn dispatch(state: &State, workflow: &str, body: &Value) -> Answer {
    let mut actions = state.actions.lock().unwrap();
    let Some(index) = find_workflow(&actions, workflow) else {
        return Answer::error(404, "Not Found", DISPATCH_DOCS);
    };
    let spec = &actions.workflows[index].spec;
    if spec.disabled {
        return Answer::error(
            422,
            "Cannot trigger a 'workflow_dispatch' on a disabled workflow",
            DISPATCH_DOCS,
        );
    }
    if !spec.dispatch_trigger {
        return Answer::error(
            422,
            "Workflow does not have 'workflow_dispatch' trigger",
            DISPATCH_DOCS,
        );
    }
    let Some(git_ref) = body["ref"].as_str() else {
        return Answer::error(
            422,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
            DISPATCH_DOCS,
        );
    };
    if git_ref == "missing-branch" {
        return Answer::error(422, &format!("No ref found for: {git_ref}"), DISPATCH_DOCS);
    }
    let inputs = match &body["inputs"] {
        Value::Null => Map::new(),
        Value::Object(inputs) => inputs.clone(),
        _ => {
            return Answer::error(
                422,
                "Invalid request.\n\nFor 'properties/inputs', is not an object.",
                DISPATCH_DOCS,
            )
        }
    };
    if let Some(declared) = &spec.inputs {
        let unexpected: Vec<&String> = inputs
            .keys()
            .filter(|name| !declared.contains(name))
            .collect();
        if !unexpected.is_empty() {
            return Answer::error(
                422,
                &format!("Unexpected inputs provided: {unexpected:?}"),
                DISPATCH_DOCS,
            );
        }
    }
    let title = substitute(&spec.run_name, &inputs);
    let title = if title.trim().is_empty() {
        spec.name.clone()
    } else {
        title
    };
    let run_id = create_run(&mut actions, index, git_ref, title);
    actions.dispatches.push(Dispatch {
        workflow: workflow.to_string(),
        git_ref: git_ref.to_string(),
        inputs,
        run_id,
    });
    Answer {
        status: 204,
        headers: Vec::new(),
        body: String::new(),
    }
}

/// A new `queued` run of workflow `index`, with the workflow's jobs and autopilot.
fn create_run(actions: &mut Actions, index: usize, branch: &str, display_title: String) -> u64 {
    let now = actions.tick();
    let workflow = &actions.workflows[index];
    let run_number = actions
        .runs
        .iter()
        .filter(|run| run.workflow_id == workflow.id)
        .count() as u64
        + 1;
    let id = 10_000_000_000 + actions.runs.len() as u64 * 7 + 1;
    let run = Run {
        id,
        workflow_id: workflow.id,
        workflow_file: workflow.file.clone(),
        workflow_name: workflow.spec.name.clone(),
        display_title,
        branch: branch.to_string(),
        status: "queued".to_string(),
        conclusion: None,
        run_number,
        created_at: now.clone(),
        updated_at: now,
        run_started_at: None,
        hidden_for: workflow.spec.appears_after,
        autopilot: workflow.spec.autopilot.iter().cloned().collect(),
    };
    let jobs = workflow.spec.jobs.clone();
    actions.runs.push(run);
    actions.add_jobs(id, jobs);
    id
}

/// The run-name with the inputs put in: `{name}` and `${{ inputs.name }}`.
fn substitute(template: &str, inputs: &Map<String, Value>) -> String {
    let value = |name: &str| {
        let name = name.trim();
        let name = name
            .strip_prefix("github.event.inputs.")
            .or_else(|| name.strip_prefix("inputs."))
            .unwrap_or(name);
        match inputs.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    };
    let mut out = String::new();
    let mut rest = template;
    loop {
        let (open, close) = match (rest.find("${{"), rest.find('{')) {
            (Some(at), _) if rest[..at].find('{').is_none() => (at, "}}"),
            (_, Some(at)) => (at, "}"),
            _ => break,
        };
        let start = open + if close == "}}" { 3 } else { 1 };
        let Some(end) = rest[start..].find(close) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&value(&rest[start..start + end]));
        rest = &rest[start + end + close.len()..];
    }
    out.push_str(rest);
    out
}

fn list_runs(state: &State, workflow: &str, param: &dyn Fn(&str) -> Option<String>) -> Answer {
    let mut actions = state.actions.lock().unwrap();
    let Some(index) = find_workflow(&actions, workflow) else {
        return Answer::error(404, "Not Found", RUNS_DOCS);
    };
    let workflow_id = actions.workflows[index].id;
    let per_page: usize = param("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .min(100);
    let mut found = Vec::new();
    for run in actions.runs.iter_mut().rev() {
        let wanted = run.workflow_id == workflow_id
            && param("event").is_none_or(|e| e == "workflow_dispatch")
            && param("branch").is_none_or(|b| b == run.branch)
            && param("status")
                .is_none_or(|s| s == run.status || Some(&s) == run.conclusion.as_ref());
        if !wanted {
            continue;
        }
        match run.hidden_for {
            Some(0) => found.push(run.id),
            Some(n) => run.hidden_for = Some(n - 1),
            None => {}
        }
    }
    let total = found.len();
    let runs: Vec<Value> = found
        .iter()
        .take(per_page)
        .filter_map(|id| actions.runs.iter().find(|run| run.id == *id))
        .map(|run| run_json(state, run))
        .collect();
    Answer::json(200, json!({"total_count": total, "workflow_runs": runs}))
}

fn get_run(state: &State, run_id: &str) -> Answer {
    let mut actions = state.actions.lock().unwrap();
    let Some(id) = actions
        .runs
        .iter()
        .find(|run| run_id.parse() == Ok(run.id))
        .map(|run| run.id)
    else {
        return not_found();
    };
    if let Some((status, conclusion)) = actions.run_mut(id).autopilot.pop_front() {
        actions.set_status(id, &status, conclusion);
    }
    let run = actions.runs.iter().find(|run| run.id == id);
    match run {
        Some(run) => Answer::json(200, run_json(state, run)),
        None => not_found(),
    }
}

fn list_jobs(state: &State, run_id: &str) -> Answer {
    let actions = state.actions.lock().unwrap();
    let Some(run) = actions.runs.iter().find(|run| run_id.parse() == Ok(run.id)) else {
        return not_found();
    };
    let jobs: Vec<Value> = actions
        .jobs
        .iter()
        .filter(|job| job.run_id == run.id)
        .map(|job| job_json(state, &actions, job))
        .collect();
    Answer::json(200, json!({"total_count": jobs.len(), "jobs": jobs}))
}

fn cancel(state: &State, run_id: &str) -> Answer {
    let mut actions = state.actions.lock().unwrap();
    let Some(id) = actions
        .runs
        .iter()
        .find(|run| run_id.parse() == Ok(run.id))
        .map(|run| run.id)
    else {
        return not_found();
    };
    actions.cancels.push(id);
    if actions.run_mut(id).status == "completed" {
        return Answer::error(
            409,
            "Cannot cancel a workflow run that is completed.",
            "https://docs.github.com/rest/actions/workflow-runs#cancel-a-workflow-run",
        );
    }
    actions.run_mut(id).autopilot.clear();
    actions.set_status(id, "completed", Some("cancelled".to_string()));
    let now = actions.tick();
    for job in actions.jobs.iter_mut().filter(|job| job.run_id == id) {
        if job.spec.status != "completed" {
            job.spec.status = "completed".to_string();
            job.spec.conclusion = Some("cancelled".to_string());
            job.completed_at = Some(now.clone());
        }
    }
    Answer::json(202, json!({}))
}

fn job_logs(state: &State, job_id: &str) -> Answer {
    let actions = state.actions.lock().unwrap();
    let Some(job) = actions
        .jobs
        .iter()
        .find(|job| job_id.parse() == Ok(job.id) && job.spec.log.is_some())
    else {
        return not_found();
    };
    Answer {
        status: 302,
        headers: vec![(
            "location".to_string(),
            format!(
                "{}/_apis/pipelines/1/runs/{}/signedlogcontent/{}?urlExpires=2024-05-01T13%3A01%3A00Z&urlSigningMethod=HMACV1&urlSignature=ZmFrZQ%3D%3D",
                state.storage_base, job.run_id, job.id
            ),
        )],
        body: String::new(),
    }
}

fn contents(state: &State, branch: &str, path: &str) -> Answer {
    let actions = state.actions.lock().unwrap();
    let on_branch: Vec<(&String, &String)> = actions
        .files
        .iter()
        .filter(|((b, _), _)| b == branch)
        .map(|((_, p), text)| (p, text))
        .collect();
    if on_branch.is_empty() && branch != "main" {
        return Answer::error(
            404,
            &format!("No commit found for the ref {branch}"),
            CONTENTS_DOCS,
        );
    }
    if let Some((_, text)) = on_branch.iter().find(|(p, _)| p.as_str() == path) {
        return Answer::json(200, file_json(state, branch, path, text));
    }
    let prefix = format!("{path}/");
    let mut entries: Vec<Value> = Vec::new();
    for (p, text) in &on_branch {
        let Some(rest) = p.strip_prefix(&prefix) else {
            continue;
        };
        let (name, kind) = match rest.split_once('/') {
            Some((dir, _)) => (dir, "dir"),
            None => (rest, "file"),
        };
        if entries.iter().any(|e| e["name"] == name) {
            continue;
        }
        let mut entry = file_json(state, branch, &format!("{prefix}{name}"), text);
        entry["type"] = json!(kind);
        if let Some(entry) = entry.as_object_mut() {
            entry.remove("content");
            entry.remove("encoding");
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        Answer::error(404, "Not Found", CONTENTS_DOCS)
    } else {
        Answer::json(200, Value::Array(entries))
    }
}

/// A file as the contents API returns it: base64 in lines of 60, as GitHub sends it.
fn file_json(state: &State, branch: &str, path: &str, text: &str) -> Value {
    let api = format!(
        "{}/repos/{}/{}/contents/{path}?ref={branch}",
        state.base, state.owner, state.repo
    );
    let html = format!(
        "{}/{}/{}/blob/{branch}/{path}",
        state.base, state.owner, state.repo
    );
    let git = format!(
        "{}/repos/{}/{}/git/blobs/{SHA}",
        state.base, state.owner, state.repo
    );
    let (encoding, content) = if text.len() > CONTENTS_LIMIT {
        ("none", String::new())
    } else {
        let packed = base64::engine::general_purpose::STANDARD.encode(text);
        let mut lines = String::new();
        for chunk in packed.as_bytes().chunks(60) {
            lines.push_str(&String::from_utf8_lossy(chunk));
            lines.push('\n');
        }
        ("base64", lines)
    };
    json!({
        "type": "file",
        "encoding": encoding,
        "size": text.len(),
        "name": path.rsplit('/').next().unwrap_or(path),
        "path": path,
        "content": content,
        "sha": SHA,
        "url": api,
        "git_url": git,
        "html_url": html,
        "download_url": format!("{}/raw/{}/{}/{branch}/{path}", state.base, state.owner, state.repo),
        "_links": {"self": api, "git": git, "html": html},
    })
}

fn workflow_json(state: &State, workflow: &Workflow) -> Value {
    let repo_api = format!("{}/repos/{}/{}", state.base, state.owner, state.repo);
    let html = format!("{}/{}/{}", state.base, state.owner, state.repo);
    json!({
        "id": workflow.id,
        "node_id": format!("W_kwDOAAAAAM4{:08}", workflow.id),
        "name": workflow.spec.name,
        "path": format!(".github/workflows/{}", workflow.file),
        "state": if workflow.spec.disabled { "disabled_manually" } else { "active" },
        "created_at": super::CREATED_AT,
        "updated_at": super::UPDATED_AT,
        "url": format!("{repo_api}/actions/workflows/{}", workflow.id),
        "html_url": format!("{html}/blob/main/.github/workflows/{}", workflow.file),
        "badge_url": format!("{html}/workflows/{}/badge.svg", workflow.spec.name),
    })
}

/// A run as GitHub returns it (`workflow-run`).
fn run_json(state: &State, run: &Run) -> Value {
    let repo_api = format!("{}/repos/{}/{}", state.base, state.owner, state.repo);
    let api = format!("{repo_api}/actions/runs/{}", run.id);
    let check_suite_id = 20_000_000_000 + run.id;
    let mut json = json!({
        "id": run.id,
        "name": run.workflow_name,
        "node_id": format!("WFR_kwLOAAAAAM8{}", run.id),
        "head_branch": run.branch,
        "head_sha": SHA,
        "path": format!(".github/workflows/{}", run.workflow_file),
        "display_title": run.display_title,
        "run_number": run.run_number,
        "event": "workflow_dispatch",
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": run.workflow_id,
        "check_suite_id": check_suite_id,
        "check_suite_node_id": format!("CS_kwDOAAAAAM8{check_suite_id}"),
        "url": api,
        "html_url": format!("{}/{}/{}/actions/runs/{}", state.base, state.owner, state.repo, run.id),
        "pull_requests": [],
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "run_attempt": 1,
        "referenced_workflows": [],
        "run_started_at": run.run_started_at.as_ref().unwrap_or(&run.created_at),
    });
    // In two parts: one json! for all would pass the macro recursion limit.
    let rest = json!({
        "actor": user_json(state, &state.owner),
        "triggering_actor": user_json(state, &state.owner),
        "jobs_url": format!("{api}/jobs"),
        "logs_url": format!("{api}/logs"),
        "check_suite_url": format!("{repo_api}/check-suites/{check_suite_id}"),
        "artifacts_url": format!("{api}/artifacts"),
        "cancel_url": format!("{api}/cancel"),
        "rerun_url": format!("{api}/rerun"),
        "previous_attempt_url": null,
        "workflow_url": format!("{repo_api}/actions/workflows/{}", run.workflow_id),
        "head_commit": {
            "id": SHA,
            "tree_id": SHA,
            "message": "Plan: dark mode",
            "timestamp": run.created_at,
            "author": {"name": "featurebot", "email": "featurebot@example.com"},
            "committer": {"name": "featurebot", "email": "featurebot@example.com"},
        },
        "repository": repository_json(state),
        "head_repository": repository_json(state),
    });
    if let (Some(json), Value::Object(rest)) = (json.as_object_mut(), rest) {
        json.extend(rest);
    }
    json
}

/// A job as GitHub returns it (`job`).
fn job_json(state: &State, actions: &Actions, job: &Job) -> Value {
    let repo_api = format!("{}/repos/{}/{}", state.base, state.owner, state.repo);
    let run = actions.runs.iter().find(|run| run.id == job.run_id);
    let started = job.spec.status != "queued";
    let steps: Vec<Value> = job
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            json!({
                "name": step.name,
                "status": step.status,
                "conclusion": step.conclusion,
                "number": i + 1,
                "started_at": (step.status != "queued" && step.status != "pending").then_some(&job.created_at),
                "completed_at": (step.status == "completed").then_some(&job.created_at),
            })
        })
        .collect();
    let mut json = json!({
        "id": job.id,
        "run_id": job.run_id,
        "workflow_name": run.map(|r| r.workflow_name.as_str()),
        "head_branch": run.map(|r| r.branch.as_str()),
        "run_url": format!("{repo_api}/actions/runs/{}", job.run_id),
        "run_attempt": 1,
        "node_id": format!("CR_kwDOAAAAAM8{}", job.id),
        "head_sha": SHA,
        "url": format!("{repo_api}/actions/jobs/{}", job.id),
        "html_url": format!(
            "{}/{}/{}/actions/runs/{}/job/{}",
            state.base, state.owner, state.repo, job.run_id, job.id
        ),
        "status": job.spec.status,
        "conclusion": job.spec.conclusion,
        "created_at": job.created_at,
        "started_at": started.then_some(&job.created_at),
        "completed_at": job.completed_at,
        "name": job.spec.name,
        "steps": steps,
    });
    let rest = json!({
        "check_run_url": format!("{repo_api}/check-runs/{}", job.id),
        "labels": ["ubuntu-latest"],
        "runner_id": if started { json!(1) } else { Value::Null },
        "runner_name": if started { json!("GitHub Actions 1") } else { Value::Null },
        "runner_group_id": if started { json!(1) } else { Value::Null },
        "runner_group_name": if started { json!("GitHub Actions") } else { Value::Null },
    });
    if let (Some(json), Value::Object(rest)) = (json.as_object_mut(), rest) {
        json.extend(rest);
    }
    json
}

fn text_plain() -> (String, String) {
    (
        "content-type".to_string(),
        "text/plain; charset=utf-8".to_string(),
    )
}

/// `%XX` sequences decoded; anything else as it is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn run_names_take_the_inputs() {
    let inputs: Map<String, Value> =
        serde_json::from_value(json!({"correlation_id": "run-7", "attempt": 2})).unwrap();
    let check = |template: &str, expected: &str| {
        assert_eq!(substitute(template, &inputs), expected, "{template:?}");
    };
    check("featurebot {correlation_id}", "featurebot run-7");
    check(
        "featurebot ${{ inputs.correlation_id }}",
        "featurebot run-7",
    );
    check("{correlation_id} #{attempt}", "run-7 #2");
    check("featurebot {missing}!", "featurebot !");
    check("no placeholders", "no placeholders");
    check("unclosed {correlation_id", "unclosed {correlation_id");
}
