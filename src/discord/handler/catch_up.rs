//! After a (re)start, the catch-up feeds the core what was said in open feature threads while
//! the bot was away, [`CATCH_UP_AT_ONCE`] features at a time. A thread's catch-up holds a place
//! in its queue, so a live message there waits behind the messages posted before it.

use super::*;
use crate::lock::LockExt;

/// How many features the catch-up works on at once. Each fetches its thread's missed messages
/// (a REST call per page, plus one per author for the roles) and waits until the core has
/// answered them (an LLM call when a message is unanswered). Four keep the catch-up to a small
/// share of what Discord allows a bot (about 50 requests a second) and of the LLM provider's
/// rate limit, so live conversations keep the rest, while one thread's network waits still
/// overlap another's.
pub(super) const CATCH_UP_AT_ONCE: usize = 4;

impl Bot {
    /// The features whose threads the catch-up looks at: open conversations in Discord.
    pub(super) fn open_features(&self) -> Vec<Feature> {
        match self.app.features() {
            Ok(features) => features
                .into_iter()
                .rev()
                .filter(|f| matches!(f.place, Place::Discord { .. }))
                .filter(|f| {
                    matches!(
                        f.status,
                        Status::Gathering | Status::Confirmed | Status::Planned
                    )
                })
                .collect(),
            Err(err) => {
                tracing::error!(error = %err, "reading features for the catch-up failed");
                Vec::new()
            }
        }
    }

    /// After a (re)start: feeds the messages posted in open feature threads while the bot was
    /// away, in order, then answers any message left without an answer; [`CATCH_UP_AT_ONCE`]
    /// features at a time, each finished (answered) before the next one starts. A feature
    /// that a live message caught up first is skipped.
    pub(super) async fn catch_up(&self, ctx: &Context, features: Vec<Feature>) {
        let count = features.len();
        // Fetched messages carry no member, so the authors' roles are asked for, once each.
        let roles = Mutex::new(HashMap::new());
        futures_util::stream::iter(features)
            .for_each_concurrent(CATCH_UP_AT_ONCE, |feature| {
                let roles = &roles;
                async move {
                    if self.shutdown.is_cancelled() {
                        return;
                    }
                    let Some(gate) = self.queues.claim_catch_up(feature.id) else {
                        return;
                    };
                    let missed = self.missed(ctx, &feature, roles).await;
                    let _ = gate.inputs.send(missed);
                    let _ = gate.handled.await;
                    // Answered is not yet shown: Discord takes about 40 calls a second, so the
                    // next thread waits until this one's answer is out. Otherwise thousands of
                    // answers would wait in memory, and live threads behind them.
                    tokio::select! {
                        () = self.outbox.delivered(feature.id) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                }
            })
            .await;
        tracing::info!(features = count, "catch-up done");
    }

    /// The inputs that catch a feature up: each admin's message posted in its thread after the
    /// last one the transcript holds, oldest first, then a resume (which answers the last
    /// message if nothing did).
    pub(super) async fn missed(
        &self,
        ctx: &Context,
        feature: &Feature,
        roles_of: &Mutex<HashMap<UserId, Vec<RoleId>>>,
    ) -> Vec<Input> {
        let resume = Input::Resume {
            feature: feature.id,
        };
        let Place::Discord { thread_id, .. } = feature.place else {
            return vec![resume];
        };
        let thread = ChannelId::new(thread_id);
        let transcript = self.app.transcript(feature.id).unwrap_or_default();
        let mut after = transcript
            .iter()
            .filter(|t| t.speaker == Speaker::User)
            .filter_map(|t| t.source_id.as_deref()?.parse::<u64>().ok())
            .max()
            .unwrap_or(thread_id);
        drop(transcript);
        let mut missed = Vec::new();
        loop {
            let fetch = || {
                thread.messages(
                    &ctx.http,
                    GetMessages::new().after(MessageId::new(after)).limit(100),
                )
            };
            let page = match self.pacer.required(thread, Route::Other, fetch).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(feature = feature.id.0, error = %err, "fetching missed messages failed");
                    break;
                }
            };
            let count = page.len();
            let newest = page.iter().map(|m| m.id.get()).max();
            missed.extend(page.into_iter().filter(|m| !m.author.bot));
            match newest {
                Some(newest) if count == 100 => after = newest,
                _ => break,
            }
        }
        missed.sort_by_key(|m| m.id.get());
        let mut inputs = Vec::new();
        for msg in missed {
            let known = roles_of.locked().get(&msg.author.id).cloned();
            let roles = match known {
                Some(roles) => roles,
                // Admin users need no lookup. A failed lookup is not cached as "no roles",
                // which would pass over that admin's messages in every thread.
                None if self.is_admin(msg.author.id, &[]) => Vec::new(),
                None => {
                    let guild = GuildId::new(self.discord.guild_id);
                    let lookup = || guild.member(&ctx.http, msg.author.id);
                    match self.pacer.required(thread, Route::Other, lookup).await {
                        Ok(member) => {
                            roles_of
                                .locked()
                                .insert(msg.author.id, member.roles.clone());
                            member.roles
                        }
                        Err(err) => {
                            tracing::warn!(feature = feature.id.0, user = msg.author.id.get(), error = %err, "looking up a member's roles failed; their missed message is not answered");
                            Vec::new()
                        }
                    }
                }
            };
            if !self.is_admin(msg.author.id, &roles) || msg.content.trim().is_empty() {
                continue;
            }
            tracing::info!(
                feature = feature.id.0,
                message = msg.id.get(),
                "answering a message posted while offline"
            );
            inputs.push(Input::Message {
                feature: feature.id,
                author: Author {
                    id: msg.author.id.get().to_string(),
                    name: display_name(&msg.author, None),
                },
                text: msg.content,
                source_id: Some(msg.id.get().to_string()),
            });
        }
        inputs.push(resume);
        inputs
    }
}
