//! Titles, slugs, file names, the section check and the plan file.

use std::path::Path;

use featurebot::model::{Author, Feature, FeatureId, Place, Priority, Status};
use featurebot::plan::file::parse_plan_file;
use featurebot::plan::{self, Slug, Title};
use time::macros::datetime;

fn check_title(raw: &str, expected: Result<&str, &str>) {
    match (Title::parse(raw), expected) {
        (Ok(title), Ok(want)) => assert_eq!(title.as_str(), want),
        (Err(err), Err(want)) => assert!(err.contains(want), "{err:?} should mention {want:?}"),
        (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn titles_are_cleaned_or_refused() {
    check_title("  Dark   mode\n", Ok("Dark mode"));
    check_title("Export\tCSV\u{0}now", Ok("Export CSV now"));
    check_title("hid\u{200b}den", Ok("hidden"));
    check_title("\u{2060}\u{61c}\u{ad}\u{e0041}", Err("needs a title"));
    check_title("🚀 Rocket launch", Ok("🚀 Rocket launch"));
    check_title("", Err("needs a title"));
    check_title("   \n\t", Err("needs a title"));
    check_title(&"x".repeat(10_000), Err("10000 characters"));
    check_title(&"é".repeat(200), Ok(&"é".repeat(200)));
}

fn check_slug(title: &str, expected: &str) {
    let slug = Slug::new(title, FeatureId(42));
    assert_eq!(slug.as_str(), expected, "slug of {title:?}");
    assert!(slug.as_str().len() <= plan::MAX_SLUG_CHARS);
    assert!(slug
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
}

#[test]
fn slugs_are_short_ascii_and_never_empty() {
    check_slug("Dark mode", "dark-mode");
    check_slug("Export CSV (v2)!", "export-csv-v2");
    check_slug("../../etc/passwd", "etc-passwd");
    check_slug("..", "feature-42");
    check_slug("!!! ??? ...", "feature-42");
    check_slug("🚀🚀🚀", "rocket-rocket-rocket");
    check_slug("\u{200b}", "feature-42");
    check_slug("Crème brûlée für Straße", "creme-brulee-fur-strasse");
    check_slug("日本語のタイトル", "ri-ben-yu-notaitoru");
    check_slug(
        "a very long title that keeps going well past the sixty character limit of slugs",
        "a-very-long-title-that-keeps-going-well-past-the-sixty",
    );
    check_slug(&"x".repeat(100), &"x".repeat(60));
}

#[test]
fn plan_paths_are_timestamped_inside_the_tasks_folder() {
    let at = datetime!(2026-11-26 14:03:09 UTC);
    let slug = Slug::new("Dark mode", FeatureId(1));
    assert_eq!(
        plan::plan_path(Path::new("tasks"), at, &slug, 1),
        Path::new("tasks/20261126-140309-dark-mode.md")
    );
    assert_eq!(
        plan::plan_path(Path::new("docs/tasks"), at, &slug, 2),
        Path::new("docs/tasks/20261126-140309-dark-mode-2.md")
    );
    // Local offsets are converted to UTC.
    let local = datetime!(2026-11-26 23:30:00 +02:00);
    assert_eq!(
        plan::plan_path(Path::new("tasks"), local, &slug, 1),
        Path::new("tasks/20261126-213000-dark-mode.md")
    );
}

const GOOD_PLAN: &str = "## Summary & goal\nExport.\n\n## User stories / acceptance criteria\n- [ ] a\n\n## Implementation steps\n### Backend\n1. Add the endpoint\n2. Add the query\n### Frontend\n3. Add the button\n\n## Test plan\n- unit tests\n";

#[test]
fn the_section_check_names_what_is_missing() {
    assert!(plan::missing_sections(GOOD_PLAN).is_empty());
    assert_eq!(
        plan::missing_sections("## Summary\nx\n## Test plan\ny"),
        ["User stories / acceptance criteria", "Implementation steps"]
    );
    // Steps without numbers do not count.
    let unnumbered = GOOD_PLAN
        .replace("1. ", "- ")
        .replace("2. ", "- ")
        .replace("3. ", "- ");
    assert_eq!(
        plan::missing_sections(&unnumbered),
        ["Implementation steps"]
    );
    assert_eq!(plan::missing_sections("").len(), 4);
    // Headings in other cases and levels count.
    assert!(plan::missing_sections(&GOOD_PLAN.replace("## ", "# ").to_uppercase()).is_empty());
}

#[test]
fn steps_are_read_in_order_across_layers() {
    assert_eq!(
        plan::steps(GOOD_PLAN),
        ["Add the endpoint", "Add the query", "Add the button"]
    );
}

#[test]
fn a_fence_around_the_whole_answer_is_removed() {
    assert_eq!(plan::clean_markdown("```markdown\n# Plan\n```\n"), "# Plan");
    assert_eq!(plan::clean_markdown("\n\n# Plan\n\n"), "# Plan");
    let inner = "# Plan\n```rust\nfn x() {}\n```\nmore";
    assert_eq!(plan::clean_markdown(inner), inner);
}

fn feature(title: &str) -> Feature {
    let at = datetime!(2026-11-26 14:03:09 UTC);
    Feature {
        id: FeatureId(7),
        title: title.to_string(),
        requester: Author {
            id: "u1".to_string(),
            name: "Ann \"the boss\"".to_string(),
        },
        place: Place::Console,
        status: Status::Confirmed,
        priority: Priority::P2,
        created_at: at,
        updated_at: at,
        summary: None,
        plan_version: 0,
        plan_path: None,
        usage: Default::default(),
        labels: Vec::new(),
        issue: None,
        repo: None,
        plan_conflict: None,
    }
}

fn meta(version: u32, status: Status, pr: Option<&str>) -> plan::Meta {
    plan::Meta {
        version,
        created: datetime!(2026-11-26 14:03:09 UTC),
        status,
        pr: pr.map(str::to_string),
    }
}

#[test]
fn the_plan_file_has_front_matter_then_the_plan() {
    let file = plan::render_file(
        &feature("Dark: mode"),
        &meta(2, Status::Planned, None),
        "## Summary & goal\nx\n",
    );
    let expected = "---\nfeature_id: 7\ntitle: \"Dark: mode\"\nrequester: \"Ann \\\"the boss\\\"\"\nversion: 2\ncreated: 2026-11-26T14:03:09Z\nstatus: planned\npriority: p2\n---\n\n# Dark: mode\n\n## Summary & goal\nx\n";
    assert_eq!(file, expected);
}

#[test]
fn the_front_matter_follows_status_labels_and_the_pull_request() {
    let mut f = feature("Dark mode");
    f.labels = vec!["ui".to_string(), "a \"quoted\" one".to_string()];
    let file = plan::render_file(
        &f,
        &meta(
            1,
            Status::PrOpen,
            Some("https://github.com/acme/shop/pull/7"),
        ),
        "x",
    );
    assert!(
        file.contains("status: pr_open\npriority: p2\nlabels: [\"ui\",\"a \\\"quoted\\\" one\"]\npr: \"https://github.com/acme/shop/pull/7\"\n---\n"),
        "{file}"
    );
}

#[test]
fn the_commit_message_has_the_title_and_trailers() {
    assert_eq!(
        plan::commit_message(&feature("Dark mode"), 1),
        "plan: Dark mode\n\nFeature-Id: 7\nPlan-Version: 1\n"
    );
}

#[test]
fn acceptance_criteria_are_the_checklist_of_their_section() {
    assert_eq!(plan::acceptance_criteria(GOOD_PLAN), ["a"]);
    let bullets = "## User stories / acceptance criteria\nAs a user...\n- exports work\n* errors show\n## Test plan\n- not this\n";
    assert_eq!(
        plan::acceptance_criteria(bullets),
        ["exports work", "errors show"]
    );
    assert!(plan::acceptance_criteria("## Summary\n- x\n").is_empty());
}

#[test]
fn steps_are_ticked_in_place_and_still_read_back() {
    let ticked = plan::tick_step(GOOD_PLAN, 1);
    assert!(
        ticked.contains("1. Add the endpoint\n2. [x] Add the query\n"),
        "{ticked}"
    );
    assert_eq!(
        plan::tick_step(&ticked, 1),
        ticked,
        "ticking twice changes nothing"
    );
    assert_eq!(plan::tick_step(GOOD_PLAN, 9), GOOD_PLAN, "no such step");
    let all = plan::tick_step(&plan::tick_step(&ticked, 0), 2);
    assert_eq!(plan::steps(&all), plan::steps(GOOD_PLAN));
    assert!(all.contains("3. [x] Add the button"));
    // An unticked checkbox the LLM wrote is ticked, not doubled.
    let boxed = GOOD_PLAN.replace("1. Add the endpoint", "1. [ ] Add the endpoint");
    assert!(plan::tick_step(&boxed, 0).contains("1. [x] Add the endpoint"));
    // What is ticked reads back, an unticked checkbox included.
    assert_eq!(plan::ticked_steps(GOOD_PLAN), [false, false, false]);
    assert_eq!(plan::ticked_steps(&ticked), [false, true, false]);
    assert_eq!(plan::ticked_steps(&all), [true, true, true]);
    assert_eq!(plan::ticked_steps(&boxed), [false, false, false]);
}

#[test]
fn the_fingerprint_is_the_plans_text_whatever_the_front_matter_and_ticks_say() {
    let f = feature("Dark mode");
    let approved = plan::fingerprint(&plan::file_body(&f.title, GOOD_PLAN));
    assert_eq!(approved.len(), 64);
    assert!(approved.bytes().all(|b| b.is_ascii_hexdigit()));
    // What a runner reads back from the file, whatever its front matter says by then.
    for meta in [
        meta(1, Status::Planned, None),
        meta(
            1,
            Status::PrOpen,
            Some("https://github.com/acme/shop/pull/7"),
        ),
    ] {
        let written = plan::render_file(&f, &meta, GOOD_PLAN);
        let read = parse_plan_file(&written).unwrap();
        assert_eq!(plan::fingerprint(&read.markdown), approved);
        // A run ticks its steps off in the file: still the approved plan.
        let ticked = plan::tick_step(&plan::tick_step(&written, 0), 2);
        let read = parse_plan_file(&ticked).unwrap();
        assert_eq!(plan::fingerprint(&read.markdown), approved);
    }
    // A checkbox the LLM wrote, ticked or not, is the same step.
    let boxed = GOOD_PLAN.replace("1. Add the endpoint", "1. [ ] Add the endpoint");
    assert_eq!(
        plan::fingerprint(&plan::file_body(&f.title, &boxed)),
        approved
    );
    // One word changed, a step added, a title changed: another plan.
    for other in [
        GOOD_PLAN.replace("Add the query", "Add the queries"),
        GOOD_PLAN.replace("3. Add the button", "3. Add the button\n4. Drop the table"),
    ] {
        assert_ne!(
            plan::fingerprint(&plan::file_body(&f.title, &other)),
            approved
        );
    }
    assert_ne!(
        plan::fingerprint(&plan::file_body("Light mode", GOOD_PLAN)),
        approved
    );
}
