//! Where in a work tree the agent may read and write: one resolver for every path it touches
//! (the file tools, `AGENTS.md` and `CLAUDE.md`, the plan file it ticks off), reads and writes
//! alike.
//!
//! A path is resolved one component at a time from the work tree's real root. Each component
//! that exists is looked at with `lstat`; a symbolic link is replaced by its target, which is
//! resolved the same way (a link to a link too, up to [`MAX_LINKS`] of them). A link that stays
//! inside the tree is followed. The path is refused when it is absolute or holds `..`, when it
//! ends up outside the tree or inside a `.git` (the git dir, or the `.git` file of a worktree),
//! and when it goes through a link whose target does not exist (a dangling link: writing
//! through it would create a file wherever it points). Only the existing part of a path is
//! checked against the disk; what does not exist yet (a new file, new folders) is made of plain
//! names from the given path.
//!
//! What comes back is the real path, without a link in its existing part, so a read or a write
//! of it cannot be redirected by a link (the agent's commands, which could change the tree, do
//! not run while a file tool does). Refusals are sentences for the LLM: they go back to it as
//! tool results.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// The most symbolic links one path may go through (Linux's own limit); more is a loop.
pub const MAX_LINKS: usize = 40;

/// Resolves `relative`, a path the LLM (or the repository) named relative to the work tree at
/// `root`, to the real path of that file inside it; the error says why not, and what to do.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, String> {
    let given = relative.trim();
    let parts = given_parts(given)?;
    let root = root.canonicalize().map_err(|e| {
        format!(
            "the work tree {} cannot be read ({e}); the run cannot go on",
            root.display()
        )
    })?;
    let real = walk(&root, given, parts)?;
    match real.strip_prefix(&root) {
        Ok(rest) if rest.as_os_str().is_empty() => Err(format!(
            "{given:?} is the repository root itself; name a file inside it"
        )),
        Ok(_) => Ok(real),
        Err(_) => Err(format!(
            "{given:?} leads outside the repository through a symbolic link; use a path whose every part stays inside it"
        )),
    }
}

/// One step of a path: a name to enter, or `..` (only from a link's target).
enum Part {
    Name(OsString),
    Up,
}

/// The names of `given`, refused when it is empty, absolute, holds `..` or enters `.git`.
fn given_parts(given: &str) -> Result<Vec<Part>, String> {
    if given.is_empty() {
        return Err("the path is empty; name a file relative to the repository root".to_string());
    }
    let mut parts = Vec::new();
    for component in Path::new(given).components() {
        match component {
            Component::CurDir => {}
            Component::Normal(name) if is_git(name) => {
                return Err(format!(
                    "{given:?} is not allowed: files in .git belong to git; change files of the work tree instead"
                ))
            }
            Component::Normal(name) => parts.push(Part::Name(name.to_os_string())),
            Component::ParentDir => {
                return Err(format!(
                    "{given:?} is not allowed: `..` would leave the repository; use a path relative to the repository root"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{given:?} is not allowed: it is absolute; use a path relative to the repository root"
                ))
            }
        }
    }
    Ok(parts)
}

/// `.git`, in any case (a case-insensitive file system opens `.GIT` as `.git`).
fn is_git(name: &OsStr) -> bool {
    name.eq_ignore_ascii_case(".git")
}

/// Follows `parts` from `root`, replacing every link by its target, and returns the real path
/// reached: no link in its existing part, plain names after it. A `.git` in a link's target is
/// refused on the way (the given path's own were refused before).
fn walk(root: &Path, given: &str, parts: Vec<Part>) -> Result<PathBuf, String> {
    // Each part, and whether it came from a link's target.
    let mut queue: VecDeque<(Part, bool)> = parts.into_iter().map(|p| (p, false)).collect();
    let mut current = root.to_path_buf();
    let mut links = 0;
    // Once a part does not exist, neither does anything under it.
    let mut missing = false;
    while let Some((part, from_link)) = queue.pop_front() {
        let name = match part {
            Part::Up => {
                current.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        if from_link && is_git(&name) {
            return Err(format!(
                "{given:?} leads into .git through a symbolic link; files in .git belong to git, change files of the work tree instead"
            ));
        }
        let next = current.join(&name);
        if missing {
            current = next;
            continue;
        }
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "{given:?} goes through more than {MAX_LINKS} symbolic links (a loop?); use a path without links"
                    ));
                }
                let target = std::fs::read_link(&next)
                    .map_err(|e| format!("cannot read the symbolic link in {given:?}: {e}"))?;
                if target.is_absolute() {
                    current = PathBuf::from(std::path::MAIN_SEPARATOR_STR);
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(name) => {
                            queue.push_front((Part::Name(name.to_os_string()), true))
                        }
                        Component::ParentDir => queue.push_front((Part::Up, true)),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if from_link {
                    return Err(format!(
                        "{given:?} goes through a symbolic link whose target does not exist; such a link could lead anywhere, so use a path that is not a link"
                    ));
                }
                missing = true;
                current = next;
            }
            Err(e) => return Err(format!("cannot open {given:?}: {e}")),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A work tree with `src/main.rs`, a `.git` folder, and a file outside it; returns the tree
    /// and the outside file. The temporary folder holds both.
    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
        let outside = dir.path().join("secret.txt");
        std::fs::write(&outside, "outside\n").unwrap();
        (dir, root, outside)
    }

    fn check(root: &Path, path: &str, expected: Result<&str, &str>) {
        let real_root = root.canonicalize().unwrap();
        match (resolve(root, path), expected) {
            (Ok(real), Ok(want)) => assert_eq!(real, real_root.join(want), "resolving {path:?}"),
            (Err(why), Err(want)) => assert!(why.contains(want), "resolving {path:?}: {why}"),
            (got, want) => panic!("resolving {path:?}: got {got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn plain_paths_resolve_inside_the_tree_existing_or_not() {
        let (_dir, root, _) = tree();
        for (path, expected) in [
            ("src/main.rs", "src/main.rs"),
            ("./src/main.rs", "src/main.rs"),
            (" src/main.rs\n", "src/main.rs"),
            ("src/new.rs", "src/new.rs"),
            ("docs/guide/new.md", "docs/guide/new.md"),
            ("src/./main.rs", "src/main.rs"),
            (".gitignore", ".gitignore"),
            ("src/.github/x.yml", "src/.github/x.yml"),
        ] {
            check(&root, path, Ok(expected));
        }
    }

    #[test]
    fn given_paths_that_leave_or_enter_git_are_refused() {
        let (_dir, root, _) = tree();
        for (path, why) in [
            ("", "the path is empty"),
            ("  ", "the path is empty"),
            (
                "/etc/passwd",
                "\"/etc/passwd\" is not allowed: it is absolute",
            ),
            ("../secret.txt", "`..` would leave the repository"),
            ("src/../../secret.txt", "`..` would leave"),
            ("src/../main.rs", "`..` would leave"),
            (
                ".git/config",
                "\".git/config\" is not allowed: files in .git",
            ),
            (".GIT/config", "files in .git belong to git"),
            ("sub/.git", "files in .git belong to git"),
            (".", "is the repository root itself"),
            ("src/main.rs/x", "cannot open"),
        ] {
            check(&root, path, Err(why));
        }
    }

    #[test]
    fn links_inside_the_tree_are_followed_to_their_real_path() {
        let (_dir, root, _) = tree();
        symlink("src/main.rs", root.join("main.rs")).unwrap();
        symlink("src", root.join("code")).unwrap();
        symlink("../main.rs", root.join("src/up.rs")).unwrap();
        symlink("main.rs", root.join("link-to-link.rs")).unwrap();
        symlink(
            root.canonicalize().unwrap().join("src"),
            root.join("absolute"),
        )
        .unwrap();
        symlink("..", root.join("back")).unwrap();
        for (path, expected) in [
            ("main.rs", "src/main.rs"),
            ("code/main.rs", "src/main.rs"),
            ("code/new.rs", "src/new.rs"),
            ("src/up.rs", "src/main.rs"),
            ("link-to-link.rs", "src/main.rs"),
            ("absolute/main.rs", "src/main.rs"),
            // Out of the tree and back in: where it lands is what counts.
            ("back/tree/src/main.rs", "src/main.rs"),
        ] {
            check(&root, path, Ok(expected));
        }
    }

    #[test]
    fn links_leading_out_dangling_or_into_git_are_refused() {
        let (dir, root, outside) = tree();
        symlink(&outside, root.join("notes.txt")).unwrap();
        symlink("../secret.txt", root.join("relative.txt")).unwrap();
        symlink("notes.txt", root.join("chain.txt")).unwrap();
        symlink(dir.path(), root.join("up")).unwrap();
        symlink(dir.path().join("new.txt"), root.join("dangling.txt")).unwrap();
        symlink("missing/x", root.join("dangling-inside.txt")).unwrap();
        symlink(".git", root.join("git")).unwrap();
        symlink(".git/config", root.join("config")).unwrap();
        symlink(root.join(".git/config"), root.join("absolute-config")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        symlink(".", root.join("here")).unwrap();
        for (path, why) in [
            ("notes.txt", "\"notes.txt\" leads outside the repository"),
            ("relative.txt", "leads outside the repository"),
            ("chain.txt", "leads outside the repository"),
            ("up/secret.txt", "leads outside the repository"),
            ("dangling.txt", "whose target does not exist"),
            ("dangling-inside.txt", "whose target does not exist"),
            ("git/config", "leads into .git"),
            ("config", "leads into .git"),
            ("absolute-config", "leads into .git"),
            ("git/hooks/post-commit", "leads into .git"),
            ("loop-a", "more than 40 symbolic links"),
            ("here", "the repository root itself"),
        ] {
            check(&root, path, Err(why));
        }
        assert!(!dir.path().join("new.txt").exists());
    }

    #[test]
    fn a_worktrees_git_file_is_refused_like_a_git_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".git"),
            "gitdir: /elsewhere/.git/worktrees/x\n",
        )
        .unwrap();
        check(dir.path(), ".git", Err("files in .git belong to git"));
        symlink(".git", dir.path().join("gitfile")).unwrap();
        check(dir.path(), "gitfile", Err("leads into .git"));
    }
}
