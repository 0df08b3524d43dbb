//! Names: the oracles written from the documented rules (README, git's
//! `check-ref-format`), and the validators checked against them.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use crate::{config, hex_like, name_like};
use procurator_ci::repos::{validate_branch, validate_commit, validate_repo_name};

/// README: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, not ending in `.git`, no `..`.
pub(crate) fn repo_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !name.contains("..")
        && !name.to_ascii_lowercase().ends_with(".git")
}

/// git's ref-name rules for `refs/heads/<branch>`, as `git check-ref-format
/// --branch` applies them (so also: not `HEAD`, not starting with `-`).
fn git_branch_ok(branch: &str) -> bool {
    !branch.is_empty()
        && branch != "HEAD"
        && !branch.starts_with('-')
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.ends_with('.')
        && branch.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && !c.ends_with(".lock")
                && c.bytes().all(|b| {
                    b >= 0x20
                        && b != 0x7f
                        && !matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
                })
        })
}

/// Ours on top (README): printable ASCII, at most 255 bytes, no component
/// starting with `-`, not `@` (git reads it as HEAD), not spelled as a full
/// ref.
fn stricter_ok(branch: &str) -> bool {
    branch.len() <= 255
        && branch.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !branch.split('/').any(|c| c.starts_with('-'))
        && branch != "@"
        && !branch.starts_with("refs/")
}

fn branch_ok(branch: &str) -> bool {
    git_branch_ok(branch) && stricter_ok(branch)
}

fn commit_ok(commit: &str) -> bool {
    (commit.len() == 40 || commit.len() == 64)
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The real `git check-ref-format --branch`, outside any repository.
fn git_accepts_branch(name: &str) -> bool {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .current_dir(dir.path())
        .env("GIT_CEILING_DIRECTORIES", dir.path())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How many cases so far also asked git (bounded: a process per case would
/// make the long pass take days).
static GIT_ASKED: AtomicUsize = AtomicUsize::new(0);
const GIT_SAMPLE: usize = 500;

// ---------------------------------------------------------------------------
// Validation

proptest! {
    #![proptest_config(config())]

    #[test]
    fn repo_names_are_exactly_the_documented_grammar(name in name_like()) {
        let accepted = validate_repo_name(&name).is_ok();
        prop_assert_eq!(accepted, repo_name_ok(&name), "{:?}", name);
        if accepted {
            // Safe as one path component under the repositories directory.
            let base = Path::new("/base");
            let joined = base.join(format!("{name}.git"));
            prop_assert_eq!(joined.parent(), Some(base));
            prop_assert!(joined.components().count() == 3);
        }
    }

    #[test]
    fn branches_are_never_accepted_against_the_rules(branch in name_like()) {
        let accepted = validate_branch(&branch).is_ok();
        prop_assert_eq!(accepted, branch_ok(&branch), "{:?}", branch);
        // The oracle agrees with git on a sample (git reads arguments as C
        // strings, so no NUL bytes; and `@{-N}` depends on the reflog).
        if !branch.contains('\0') && GIT_ASKED.fetch_add(1, Ordering::Relaxed) < GIT_SAMPLE {
            let git = git_accepts_branch(&branch);
            prop_assert_eq!(git_branch_ok(&branch), git, "oracle and git disagree on {:?}", branch);
        }
    }

    #[test]
    fn commits_are_full_lowercase_hex(commit in hex_like()) {
        prop_assert_eq!(validate_commit(&commit).is_ok(), commit_ok(&commit), "{:?}", commit);
    }
}
