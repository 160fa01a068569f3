//! Button and menu clicks: plan, approve, request changes, runs, the dashboard's pages and the
//! priority menu. Each click is answered at once (the 3-second deadline) and then queued as an
//! input behind the feature's earlier ones.

use super::*;
use crate::config::Executor;
use crate::core::rules::{self, Intent};
use crate::lock::LockExt;

impl Bot {
    /// The priority menu on a feature card.
    pub(super) async fn priority_select(&self, ctx: &Context, click: &ComponentInteraction) {
        let roles = roles_of(click.member.as_ref());
        let chosen = match &click.data.kind {
            serenity::all::ComponentInteractionDataKind::StringSelect { values } => {
                values.first().cloned()
            }
            _ => None,
        };
        let feature = click
            .data
            .custom_id
            .strip_prefix("fbp:")
            .and_then(|id| id.parse::<u64>().ok())
            .map(FeatureId);
        if !self.is_admin(click.user.id, roles) {
            let refusal = ephemeral("only featurebot admins can change a feature");
            if let Err(err) = click.create_response(&ctx.http, refusal).await {
                tracing::warn!(error = %err, "answering the priority menu failed");
            }
            return;
        }
        let (Some(feature), Some(priority)) = (feature, chosen.and_then(|p| p.parse().ok())) else {
            return;
        };
        // The change may wait on git and GitHub: acknowledge within Discord's deadline first,
        // then show the updated card in place.
        if let Err(err) = click
            .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
            .await
        {
            tracing::warn!(error = %err, "acknowledging the priority menu failed; not acting on it");
            return;
        }
        self.app
            .handle(Input::SetPriority { feature, priority })
            .await;
        let edit = self.card_edit(feature);
        if let Err(err) = click.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %err, "showing the updated card failed");
        }
    }

    pub(super) async fn page_click(&self, ctx: &Context, click: &ComponentInteraction) {
        let roles = roles_of(click.member.as_ref());
        let response = match dashboard::parse_page_id(&click.data.custom_id) {
            _ if !self.is_admin(click.user.id, roles) => {
                ephemeral("only featurebot admins can see the features")
            }
            Some((page, filter)) => self.page_response(filter, page, true),
            None => return,
        };
        if let Err(err) = click.create_response(&ctx.http, response).await {
            tracing::warn!(error = %err, "turning a dashboard page failed");
        }
    }

    pub(super) fn page_response(
        &self,
        filter: queries::Filter,
        page: usize,
        update: bool,
    ) -> CreateInteractionResponse {
        match self.app.list(filter, page) {
            Ok(listing) => {
                let (embed, rows) = dashboard::page(&listing, filter);
                let message = CreateInteractionResponseMessage::new()
                    .embed(embed)
                    .components(rows);
                if update {
                    CreateInteractionResponse::UpdateMessage(message)
                } else {
                    CreateInteractionResponse::Message(message.ephemeral(true))
                }
            }
            Err(err) => ephemeral(&format!("reading the features failed: {err}")),
        }
    }

    pub(super) async fn click(&self, ctx: &Context, click: &ComponentInteraction) {
        let Ok(button) = click.data.custom_id.parse::<Button>() else {
            return;
        };
        let roles = roles_of(click.member.as_ref());
        let refusal = if !self.is_admin(click.user.id, roles) {
            Some("only featurebot admins can use these buttons".to_string())
        } else {
            match self.app.feature(button.feature) {
                Err(_) => Some(format!("feature #{} no longer exists", button.feature)),
                // Buttons are only posted in their feature's thread; one elsewhere (a store
                // that was lost and refilled) names some other feature.
                Ok(feature)
                    if !matches!(
                        feature.place,
                        Place::Discord { thread_id, .. } if thread_id == click.channel_id.get()
                    ) =>
                {
                    Some(format!(
                        "this button belongs to another thread; feature #{} has its own buttons there",
                        feature.id
                    ))
                }
                Ok(feature) => self.click_refusal(&feature, button),
            }
        };
        if let Some(message) = refusal {
            let _ = click
                .create_response(&ctx.http, ephemeral(&message))
                .await
                .map_err(|e| tracing::warn!(error = %e, "answering a click failed"));
            return;
        }
        let key = (button.feature, button.action);
        let fresh = self.in_flight.locked().insert(key);
        if !fresh {
            let message = match button.action {
                Action::GeneratePlan => "the plan is already being written; it will appear here",
                _ => "someone just did that; it is being handled",
            };
            let _ = click.create_response(&ctx.http, ephemeral(message)).await;
            return;
        }
        let who = format!("<@{}>", click.user.id.get());
        let (announcement, input) = announce(button, &who);
        let response = CreateInteractionResponse::Message(
            CreateInteractionResponseMessage::new()
                .content(announcement)
                .allowed_mentions(CreateAllowedMentions::new()),
        );
        if let Err(err) = click.create_response(&ctx.http, response).await {
            tracing::warn!(error = %err, interaction = click.id.get(), "answering a click failed; not acting on it");
            self.in_flight.locked().remove(&key);
            return;
        }
        tracing::info!(feature = button.feature.0, action = ?button.action, user = click.user.id.get(), "button");
        self.submit(button.feature, input, Some(key));
    }

    /// Why a click on `button` should not act, as a sentence for the clicker: the core's own
    /// rule ([`rules::may`]), asked early for the instant answer.
    pub(super) fn click_refusal(&self, feature: &Feature, button: Button) -> Option<String> {
        let last_run = self.app.last_run(feature.id).ok().flatten();
        let on_host = self.config.agent.executor == Executor::Local;
        rules::may(feature, last_run.as_ref(), intent(button, on_host))
            .err()
            .map(|refusal| refusal.message)
    }
}

/// What a click on `button` asks of the core, with what the button was posted under;
/// `on_host` says whether runs go to the bot's host.
fn intent(button: Button, on_host: bool) -> Intent {
    let version = button.version;
    match button.action {
        Action::GeneratePlan => Intent::GeneratePlan { version },
        Action::KeepRefining => Intent::KeepRefining { version },
        Action::Approve => Intent::Approve { version },
        Action::RequestChanges => Intent::RequestChanges { version },
        Action::Discard => Intent::Discard { version },
        Action::CancelRun => Intent::CancelRun,
        Action::ResumeRun => Intent::ResumeRun { run: version },
        Action::AbortRun => Intent::AbortRun { run: version },
        Action::StepContinue | Action::StepChange | Action::StepAbort => {
            Intent::DecideStep { step: version }
        }
        Action::FollowUp => Intent::FollowUp { on_host },
        Action::CreateIssue => Intent::CreateIssue,
        Action::KeepMine | Action::TakeTheirs => Intent::SettlePlanConflict { version },
    }
}

/// What a click on `button` by `who` says in the thread, and the input it becomes.
fn announce(button: Button, who: &str) -> (String, Input) {
    match button.action {
        Action::GeneratePlan => (
            format!("{who} asked for the plan: writing the plan..."),
            Input::GeneratePlan {
                feature: button.feature,
                force: false,
            },
        ),
        Action::KeepRefining => (
            format!("{who} wants to keep refining: tell me what to add or change"),
            Input::KeepRefining {
                feature: button.feature,
            },
        ),
        Action::Approve => (
            format!("{who} approved plan version {}", button.version),
            Input::Approve {
                feature: button.feature,
                version: button.version,
            },
        ),
        Action::RequestChanges => (
            format!(
                "{who} requested changes to plan version {}: say what to change, and the next plan will be version {}",
                button.version,
                button.version + 1
            ),
            Input::RequestChanges {
                feature: button.feature,
                version: button.version,
            },
        ),
        Action::Discard => (
            format!("{who} discarded this feature; the thread will be archived"),
            Input::Discard {
                feature: button.feature,
            },
        ),
        Action::CancelRun => (
            format!("{who} cancelled the agent run; stopping it..."),
            Input::CancelRun {
                feature: button.feature,
            },
        ),
        Action::ResumeRun => (
            format!("{who} resumed the agent run"),
            Input::ResumeRun {
                feature: button.feature,
            },
        ),
        Action::AbortRun => (
            format!("{who} aborted the interrupted run"),
            Input::AbortRun {
                feature: button.feature,
            },
        ),
        Action::StepContinue | Action::StepChange | Action::StepAbort => {
            let (decision, text) = match button.action {
                Action::StepContinue => (StepDecision::Continue, format!("{who}: continue with the next step")),
                Action::StepChange => (
                    StepDecision::Change,
                    format!("{who} wants step {} changed: the next admin message says how", button.version),
                ),
                _ => (StepDecision::Abort, format!("{who} stopped the run after step {}", button.version)),
            };
            (
                text,
                Input::StepDecision {
                    feature: button.feature,
                    step: button.version,
                    decision,
                },
            )
        }
        Action::FollowUp => (
            format!("{who} wants a follow-up: write what to change, and your next message runs the agent again on the same branch"),
            Input::FollowUp {
                feature: button.feature,
            },
        ),
        Action::CreateIssue => (
            format!("{who} asked for a GitHub issue: opening it..."),
            Input::CreateIssue {
                feature: button.feature,
            },
        ),
        Action::KeepMine | Action::TakeTheirs => {
            let keep_mine = button.action == Action::KeepMine;
            let text = match keep_mine {
                true => format!("{who} keeps plan version {} on top of the remote's change", button.version),
                false => format!("{who} takes the remote's version of the plan"),
            };
            (
                text,
                Input::SettlePlanConflict {
                    feature: button.feature,
                    version: button.version,
                    keep_mine,
                },
            )
        }
    }
}
