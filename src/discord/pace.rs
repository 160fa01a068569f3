//! Pacing of the renderer's REST calls, shared by every thread's worker, so that the bot holds
//! Discord's limits by itself whatever `discord.api_base` is (serenity's own rate limiter is off
//! when a base is set, and a proxy may not limit at all).
//!
//! Two budgets, as sliding windows: [`GLOBAL`] calls per second over all threads (Discord allows
//! a bot 50; the rest is left to the gateway handler's calls), and [`CHANNEL`] calls per
//! [`CHANNEL_WINDOW`] per channel for message creates and, separately, message edits (Discord's
//! message routes). A call counts from the moment it is sent until its window has passed since
//! its *answer*, so a slow answer can never let two calls land in one of Discord's windows.
//!
//! A call is required ([`Pacer::required`]: a new message, the final edit of a reply; it waits
//! for budget and is retried after a 429) or optional ([`Pacer::optional`]: an intermediate edit
//! of a streamed reply, the typing indicator; skipped when no budget is free, so the latest text
//! wins at the next try instead of a queue of stale edits). Optional calls leave part of each
//! budget to required ones ([`OPTIONAL_GLOBAL`], [`OPTIONAL_CHANNEL`]) and, per channel, come at
//! most one per `CHANNEL_WINDOW / CHANNEL`, so a stream's edits spread over the window instead
//! of using it up in its first second.
//!
//! A 429 can still happen (the gateway handler's calls are not paced, nor another process with
//! the same token). serenity drops a 429's body when its limiter is off, so `retry_after` is not
//! known: the channel's budget is held for [`BACKOFF`], doubled for each further 429 in a row
//! (up to 8 s, more than any of Discord's message windows), and a required call is tried again,
//! up to [`RETRIES`] times.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serenity::all::ChannelId;
use tokio::time::Instant;

/// Calls per second over all threads: Discord allows 50 per bot.
const GLOBAL: usize = 40;
/// Message creates (and, separately, message edits) per channel per [`CHANNEL_WINDOW`].
const CHANNEL: usize = 5;
const CHANNEL_WINDOW: Duration = Duration::from_secs(5);
/// The part of each budget optional calls may use; the rest is kept for required ones.
const OPTIONAL_GLOBAL: usize = 30;
const OPTIONAL_CHANNEL: usize = 4;
/// How long a bucket is held after a 429 (doubled for each further one in a row), and how many
/// times a required call is retried.
const BACKOFF: Duration = Duration::from_secs(1);
const RETRIES: u32 = 5;
/// How soon to look again when only calls in flight hold a budget.
const RECHECK: Duration = Duration::from_millis(20);
/// Past this many channel budgets, those with nothing left to count are forgotten.
const FORGET_PAST: usize = 1_000;

/// Which of a channel's budgets a call takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /channels/{id}/messages`.
    Create,
    /// `PATCH /channels/{id}/messages/{id}`.
    Edit,
    /// Anything else in the channel (typing, the thread itself): the global budget only.
    Other,
}

/// Whether a call may be skipped when no budget is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// The budgets of all workers; one per renderer, shared behind an `Arc`.
#[derive(Default)]
pub struct Pacer {
    state: Mutex<State>,
}

/// What an optional call came to.
pub enum Paced<T> {
    Done(serenity::Result<T>),
    /// No budget was free, or the answer was a 429: try again at this instant at the earliest.
    Skipped(Instant),
}

impl Pacer {
    /// Makes `call` once the budgets of `channel` and `route` allow it, and again after a 429
    /// (up to [`RETRIES`] times); the last answer is returned.
    pub async fn required<T, F, Fut>(
        self: &Arc<Self>,
        channel: ChannelId,
        route: Route,
        mut call: F,
    ) -> serenity::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = serenity::Result<T>>,
    {
        let key = (channel, route);
        let mut retries = 0;
        loop {
            let permit = loop {
                match self.try_take(key, Need::Required, Instant::now()) {
                    Ok(permit) => break permit,
                    Err(at) => tokio::time::sleep_until(at).await,
                }
            };
            let result = call().await;
            drop(permit);
            if self.settle(key, &result).is_none() || retries == RETRIES {
                return result;
            }
            retries += 1;
        }
    }

    /// Makes `call` if the budgets of `channel` and `route` allow it now; otherwise, or when
    /// the answer is a 429, says when to try again.
    pub async fn optional<T, F, Fut>(
        self: &Arc<Self>,
        channel: ChannelId,
        route: Route,
        call: F,
    ) -> Paced<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = serenity::Result<T>>,
    {
        let key = (channel, route);
        let permit = match self.try_take(key, Need::Optional, Instant::now()) {
            Ok(permit) => permit,
            Err(at) => return Paced::Skipped(at),
        };
        let result = call().await;
        drop(permit);
        match self.settle(key, &result) {
            Some(held_until) => Paced::Skipped(held_until),
            None => Paced::Done(result),
        }
    }

    /// After an answer: on a 429, holds the budget of `key` for the back-off and returns its
    /// end; otherwise ends any back-off.
    fn settle<T>(&self, key: (ChannelId, Route), result: &serenity::Result<T>) -> Option<Instant> {
        let limited = matches!(
            result,
            Err(serenity::Error::Http(e)) if e.status_code().map(|s| s.as_u16()) == Some(429)
        );
        let mut state = self.lock();
        let window = state.channel(key);
        if !limited {
            window.strikes = 0;
            return None;
        }
        let hold = BACKOFF * 2u32.pow(window.strikes.min(3));
        window.strikes += 1;
        let until = Instant::now() + hold;
        window.held_until = Some(until);
        tracing::warn!(
            channel = key.0.get(),
            route = ?key.1,
            hold_ms = hold.as_millis() as u64,
            "Discord answered 429 Too Many Requests; holding the channel's budget"
        );
        Some(until)
    }

    /// A permit for one call now, or the instant to try again.
    fn try_take(
        self: &Arc<Self>,
        key: (ChannelId, Route),
        need: Need,
        now: Instant,
    ) -> Result<Permit, Instant> {
        let optional = need == Need::Optional;
        let mut state = self.lock();
        if state.channels.len() > FORGET_PAST {
            state.channels.retain(|_, w| w.busy(now));
        }
        let global_limit = if optional { OPTIONAL_GLOBAL } else { GLOBAL };
        let mut at = state.global.free_at(now, global_limit, None);
        let channel = state.channel(key);
        if key.1 != Route::Other {
            let limit = if optional { OPTIONAL_CHANNEL } else { CHANNEL };
            let spacing = optional.then(|| CHANNEL_WINDOW / CHANNEL as u32);
            at = at.max(channel.free_at(now, limit, spacing));
        }
        if let Some(held) = channel.held_until.filter(|h| *h > now) {
            at = at.max(held);
        }
        if at > now {
            return Err(at);
        }
        channel.in_flight += 1;
        state.global.in_flight += 1;
        Ok(Permit {
            pacer: self.clone(),
            key,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters only; a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    global: Window,
    channels: HashMap<(ChannelId, Route), Window>,
}

impl State {
    fn channel(&mut self, key: (ChannelId, Route)) -> &mut Window {
        let window = if key.1 == Route::Other {
            Duration::from_secs(1)
        } else {
            CHANNEL_WINDOW
        };
        self.channels.entry(key).or_insert_with(|| Window {
            window,
            ..Window::default()
        })
    }
}

/// The calls of one budget: those in flight and the answers within the last window.
struct Window {
    window: Duration,
    in_flight: usize,
    answered: VecDeque<Instant>,
    held_until: Option<Instant>,
    /// 429s in a row, for the back-off.
    strikes: u32,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            window: Duration::from_secs(1),
            in_flight: 0,
            answered: VecDeque::new(),
            held_until: None,
            strikes: 0,
        }
    }
}

impl Window {
    /// Whether the window still counts anything: a call in flight, a recent answer, a hold.
    fn busy(&self, now: Instant) -> bool {
        self.in_flight > 0
            || self.answered.back().is_some_and(|t| *t + self.window > now)
            || self.held_until.is_some_and(|h| h > now)
    }

    /// Records an answer, forgetting those that no longer count.
    fn answer(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        while self
            .answered
            .front()
            .is_some_and(|t| *t + self.window <= now)
        {
            self.answered.pop_front();
        }
        self.answered.push_back(now);
    }

    /// When a call may go out under a budget of `limit` per window (now when it may), at least
    /// `spacing` after the latest answer.
    fn free_at(&mut self, now: Instant, limit: usize, spacing: Option<Duration>) -> Instant {
        while self
            .answered
            .front()
            .is_some_and(|t| *t + self.window <= now)
        {
            self.answered.pop_front();
        }
        let mut at = now;
        if let (Some(spacing), Some(last)) = (spacing, self.answered.back()) {
            at = at.max(*last + spacing);
        }
        let used = self.in_flight + self.answered.len();
        if used >= limit {
            // The answer whose end of window brings the count under the limit; when calls in
            // flight alone fill the budget, look again shortly.
            at = at.max(match self.answered.get(used - limit) {
                Some(t) => *t + self.window,
                None => now + RECHECK,
            });
        }
        at
    }
}

/// One call taken from a global and a channel budget; dropping it records the answer.
struct Permit {
    pacer: Arc<Pacer>,
    key: (ChannelId, Route),
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.pacer.lock();
        // Taken under the lock, so that answers are recorded in order.
        let now = Instant::now();
        state.global.answer(now);
        state.channel(self.key).answer(now);
    }
}
