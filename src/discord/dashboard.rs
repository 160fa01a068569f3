//! `/tasks` and `/task`: the dashboard as Discord embeds, with page buttons.
//!
//! Page buttons carry the page and the filter (`fbt:<page>:<status>:<priority>`, `*` for any),
//! so they keep working after a restart.

use serenity::all::{
    ButtonStyle, CreateActionRow, CreateButton, CreateEmbed, CreateEmbedFooter, CreateSelectMenu,
    CreateSelectMenuKind, CreateSelectMenuOption,
};

use crate::core::queries::{self, Card, Filter, Page};
use crate::model::{Feature, Priority, RunState, Status};

/// The custom id of a page button.
pub fn page_id(page: usize, filter: Filter) -> String {
    format!(
        "fbt:{page}:{}:{}",
        filter
            .status
            .map_or("*".to_string(), |s| s.as_str().replace(' ', "_")),
        filter.priority.map_or("*", Priority::as_str)
    )
}

/// Parses a page button's custom id.
pub fn parse_page_id(id: &str) -> Option<(usize, Filter)> {
    let mut parts = id.strip_prefix("fbt:")?.split(':');
    let page = parts.next()?.parse().ok()?;
    let status = match parts.next()? {
        "*" => None,
        s => Some(s.parse::<Status>().ok()?),
    };
    let priority = match parts.next()? {
        "*" => None,
        p => Some(p.parse::<Priority>().ok()?),
    };
    Some((page, Filter { status, priority }))
}

/// The embed and buttons of a page of `/tasks`.
pub fn page(page: &Page, filter: Filter) -> (CreateEmbed, Vec<CreateActionRow>) {
    let mut title = format!("Features ({})", page.total);
    if let Some(status) = filter.status {
        title.push_str(&format!(" · {status}"));
    }
    if let Some(priority) = filter.priority {
        title.push_str(&format!(" · {}", priority.as_str()));
    }
    let lines: Vec<String> = page
        .rows
        .iter()
        .map(|row| {
            let name: String = row.title.chars().take(60).collect();
            let mut line = format!(
                "**#{}** {name} · `{}` · {} · {}",
                row.id,
                row.status,
                row.priority.as_str(),
                queries::short_age(row.age)
            );
            if !row.labels.is_empty() {
                let labels: String = row.labels.join(", ").chars().take(60).collect();
                line.push_str(&format!(" · {labels}"));
            }
            if let Some(link) = &row.link {
                line.push_str(&format!(" · [thread]({link})"));
            }
            if let Some(pr) = &row.pr_url {
                line.push_str(&format!(" · [PR]({pr})"));
            }
            line
        })
        .collect();
    let description = if lines.is_empty() {
        "No feature matches.".to_string()
    } else {
        lines.join("\n")
    };
    let embed = CreateEmbed::new()
        .title(title)
        .description(description)
        .footer(CreateEmbedFooter::new(format!(
            "page {} of {} · newest first",
            page.page + 1,
            page.pages
        )));
    let mut rows = Vec::new();
    if page.pages > 1 {
        rows.push(CreateActionRow::Buttons(vec![
            CreateButton::new(page_id(page.page.saturating_sub(1), filter))
                .label("Previous")
                .style(ButtonStyle::Secondary)
                .disabled(page.page == 0),
            CreateButton::new(page_id(page.page + 1, filter))
                .label("Next")
                .style(ButtonStyle::Secondary)
                .disabled(page.page + 1 >= page.pages),
        ]));
    }
    (embed, rows)
}

/// The select menu that sets a feature's priority, with the current one chosen.
pub fn priority_menu(feature: &Feature) -> CreateActionRow {
    let options = [Priority::P0, Priority::P1, Priority::P2, Priority::P3]
        .into_iter()
        .map(|p| {
            CreateSelectMenuOption::new(p.as_str(), p.as_str())
                .default_selection(p == feature.priority)
        })
        .collect();
    CreateActionRow::SelectMenu(
        CreateSelectMenu::new(
            format!("fbp:{}", feature.id),
            CreateSelectMenuKind::String { options },
        )
        .placeholder("Priority"),
    )
}

/// The embed of `/task`: one feature's card.
pub fn card(card: &Card) -> CreateEmbed {
    let f = &card.feature;
    let title: String = format!("#{} {}", f.id, f.title).chars().take(250).collect();
    let plans = if card.plans.is_empty() {
        "none yet".to_string()
    } else {
        card.plans
            .iter()
            .map(|p| {
                format!(
                    "v{} · `{}` · {}",
                    p.version,
                    &p.commit[..p.commit.len().min(7)],
                    p.at.date()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let runs = if card.runs.is_empty() {
        "none yet".to_string()
    } else {
        card.runs
            .iter()
            .map(|r| {
                let done = r.steps.iter().filter(|s| s.green.is_some()).count();
                let state = match r.state {
                    RunState::Finished => "finished",
                    RunState::Stopped => "stopped by a limit",
                    RunState::Failed => "failed",
                    RunState::Cancelled => "cancelled",
                    RunState::Interrupted => "interrupted",
                    RunState::Queued => "queued",
                    RunState::Running => "running",
                };
                let mut line = format!(
                    "run {} · {state} · {done}/{} steps · `{}`",
                    r.number,
                    r.steps.len(),
                    r.branch
                );
                if let Some(pr) = &r.pr_url {
                    line.push_str(&format!(" · [PR]({pr})"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    CreateEmbed::new()
        .title(title)
        .field("Status", f.status.to_string(), true)
        .field("Priority", f.priority.as_str(), true)
        .field(
            "Labels",
            if f.labels.is_empty() {
                "none".to_string()
            } else {
                truncate(&f.labels.join(", "), 1_000)
            },
            true,
        )
        .field("Requested by", f.requester.name.clone(), true)
        .field("Plan versions", truncate(&plans, 1_000), false)
        .field("Agent runs", truncate(&runs, 1_000), false)
        .field(
            "Tokens",
            match card.cost {
                Some(cost) => format!(
                    "{} in · {} out · ≈ ${cost:.2}",
                    card.usage.input_tokens, card.usage.output_tokens
                ),
                None => format!(
                    "{} in · {} out",
                    card.usage.input_tokens, card.usage.output_tokens
                ),
            },
            true,
        )
        .field("Created", f.created_at.date().to_string(), true)
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
