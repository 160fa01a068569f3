//! Driving the Discord front end the way people do: `/feature`, messages and clicks in the fake
//! Discord, and reading the threads the bot left behind.

use featurebot::discord::Action;
use serde_json::{json, Value};

use super::{TestApp, ADMIN};
use crate::support::fake_discord::{contents, id_of, Interaction, CHANNEL_ID};
use crate::support::ids::{self, custom_ids, Pick};
use crate::support::scripts::{plan_reply, script_conversation};

impl TestApp {
    /// The one thread there is.
    pub fn thread_id(&self) -> u64 {
        let threads = self.discord().threads();
        assert_eq!(threads.len(), 1, "{threads:?}");
        id_of(&threads[0]["id"])
    }

    /// The thread called `name`, if there is one.
    pub fn thread_named(&self, name: &str) -> Option<u64> {
        self.discord()
            .threads()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| id_of(&t["id"]))
    }

    /// The bot's messages in the one thread, in order.
    pub fn bot_messages(&self) -> Vec<Value> {
        self.bot_messages_in(self.thread_id())
    }

    /// The bot's messages in `channel`, in order.
    pub fn bot_messages_in(&self, channel: u64) -> Vec<Value> {
        self.discord()
            .messages(channel)
            .into_iter()
            .filter(|m| m["author"]["bot"] == true)
            .collect()
    }

    /// The texts of the bot's messages in `channel`.
    pub fn texts_in(&self, channel: u64) -> Vec<String> {
        contents(&self.bot_messages_in(channel))
    }

    /// Waits until one of the bot's messages in `thread` contains `part`.
    pub async fn wait_for_text(&self, thread: u64, part: &str) {
        self.wait_for(&format!("{part:?} in the thread"), |a| {
            a.texts_in(thread).iter().any(|t| t.contains(part))
        })
        .await;
    }

    /// The newest message in the one thread with a button `pick` picks: its id and the button's.
    pub fn message_with_button(&self, pick: impl Pick) -> Option<(u64, String)> {
        self.button_in(self.thread_id(), pick)
    }

    /// Like [`TestApp::message_with_button`], in `thread`.
    pub fn button_in(&self, thread: u64, pick: impl Pick) -> Option<(u64, String)> {
        self.bot_messages_in(thread).iter().rev().find_map(|m| {
            let id = custom_ids(m).into_iter().find(|c| pick.picks(c))?;
            Some((id_of(&m["id"]), id))
        })
    }

    /// `/feature title:<title>` by `user` in the feature channel.
    pub async fn feature(&self, user: u64, title: &str) -> Interaction {
        self.discord()
            .slash_command(
                user,
                CHANNEL_ID,
                "feature",
                json!([{"name": "title", "type": 3, "value": title}]),
            )
            .await
    }

    /// Runs `/feature` and waits for the first question in the new thread, the only one.
    pub async fn started(&self, title: &str) -> u64 {
        self.feature(ADMIN, title).await;
        self.wait_for("the thread", |a| a.discord().threads().len() == 1)
            .await;
        self.wait_for("the first question", |a| {
            a.bot_messages()
                .iter()
                .any(|m| m["content"].as_str().unwrap_or("").contains("Which format"))
        })
        .await;
        self.thread_id()
    }

    /// Runs `/feature` as an admin and returns the new thread once `first_answer` is in it.
    pub async fn started_thread(&self, title: &str, first_answer: &str) -> u64 {
        self.feature(ADMIN, title).await;
        self.wait_for("the thread", |a| a.thread_named(title).is_some())
            .await;
        let thread = self.thread_named(title).unwrap();
        self.wait_for_text(thread, first_answer).await;
        thread
    }

    /// Takes a started feature to confirmed: the Generate plan button is there.
    pub async fn confirmed(&self, thread: u64) {
        self.discord()
            .user_message(ADMIN, thread, "CSV, from the dashboard")
            .await;
        self.wait_for("the confirmation buttons", |a| {
            a.message_with_button(Action::GeneratePlan).is_some()
        })
        .await;
    }

    /// Takes feature #1 to a committed plan in its thread; returns the plan message's id.
    pub async fn planned_in_discord(&self) -> u64 {
        script_conversation(&self.llm);
        let thread = self.started("Export CSV").await;
        self.confirmed(thread).await;
        plan_reply(&self.llm);
        let (message, id) = self.message_with_button(Action::GeneratePlan).unwrap();
        self.discord().click(ADMIN, message, &id).await;
        self.wait_for("the plan", |a| {
            a.message_with_button(ids::approve(1, 1)).is_some()
        })
        .await;
        self.message_with_button(ids::approve(1, 1)).unwrap().0
    }
}
