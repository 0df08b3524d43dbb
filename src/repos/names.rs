//! The naming rules: which repository names, branch names and commit ids
//! procurator-ci accepts (everything that reaches git or the filesystem
//! passes here first).

/// Checks a repository name: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, not ending
/// in `.git`, without `..`.
pub fn validate_repo_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 100 {
        return Err("must be at most 100 characters".into());
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err("must start with an ASCII letter or digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may only contain ASCII letters, digits, '.', '_' and '-' (found {bad:?})"
        ));
    }
    if name.contains("..") {
        return Err("must not contain '..'".into());
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Err("must not end in '.git' (it is added on disk)".into());
    }
    Ok(())
}

/// Checks a branch name by git's ref-name rules, stricter in three ways: no
/// component may start with '-', only printable ASCII is accepted (so that a
/// look-alike of another branch cannot be pushed to CI), and at most 255
/// bytes.
pub fn validate_branch(branch: &str) -> Result<(), String> {
    if branch.is_empty() {
        return Err("must not be empty".into());
    }
    if branch.len() > 255 {
        return Err("must be at most 255 characters".into());
    }
    if let Some(bad) = branch
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control())
    {
        let shown = if bad.is_control() {
            String::new()
        } else {
            format!("'{bad}' ")
        };
        return Err(format!(
            "must be printable ASCII, so that no branch can pass for another (found {shown}U+{:04X})",
            bad as u32
        ));
    }
    if let Some(bad) = branch
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!("must not contain {bad:?}"));
    }
    if branch == "@" || branch.contains("@{") {
        return Err("must not be '@' or contain '@{'".into());
    }
    if branch == "HEAD" {
        // git refuses it as a branch name: `HEAD` would be ambiguous.
        return Err("must not be 'HEAD'".into());
    }
    if branch.contains("..") {
        return Err("must not contain '..'".into());
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.contains("//") {
        return Err("must not start or end with '/' or contain '//'".into());
    }
    if branch.ends_with('.') {
        return Err("must not end with '.'".into());
    }
    if branch.starts_with("refs/") {
        return Err("is a branch name, not a ref: leave out 'refs/heads/'".into());
    }
    for component in branch.split('/') {
        if component.starts_with('.') {
            return Err("must not have a path component starting with '.'".into());
        }
        if component.starts_with('-') {
            return Err(
                "must not have a path component starting with '-' (git and other tools would \
                 read it as an option)"
                    .into(),
            );
        }
        if component.ends_with(".lock") {
            return Err("must not have a path component ending in '.lock'".into());
        }
    }
    Ok(())
}

/// Whether `name` is the head ref of a pull or merge request as forges
/// publish it: `refs/pull/<n>/head` (GitHub, Gitea, Forgejo) or
/// `refs/merge-requests/<n>/head` (GitLab). A build of one carries the
/// whole ref as its branch: no branch name starts with `refs/`.
pub fn is_pull_ref(name: &str) -> bool {
    let number = name
        .strip_prefix("refs/pull/")
        .or_else(|| name.strip_prefix("refs/merge-requests/"))
        .and_then(|rest| rest.strip_suffix("/head"));
    number.is_some_and(|n| {
        (1..=12).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0')
    })
}

/// Checks what a build may be of: a branch, or a pull request's head ref.
pub fn validate_build_ref(name: &str) -> Result<(), String> {
    if is_pull_ref(name) {
        return Ok(());
    }
    validate_branch(name)
}

/// Checks a commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if !(commit.len() == 40 || commit.len() == 64) {
        return Err("must be a full commit id of 40 or 64 hex digits".into());
    }
    if !commit
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("must be lowercase hexadecimal".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "demo", "A-b_c.d", "x1", &"a".repeat(100)] {
            assert!(validate_repo_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../b",
            "x.git",
            "X.GIT",
            "-h",
            ".hidden",
            "a..b",
            "a/b",
            "--upload-pack=touch /tmp/p",
            "ext::sh -c id",
            "a\0b",
            "a\nb",
            "dеmo",
            &"a".repeat(101),
        ] {
            assert!(validate_repo_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branches() {
        for ok in [
            "main",
            "feature/x",
            "release-1.0",
            "a.b",
            "v1@2",
            "user/fix_3",
        ] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-h",
            "feature/-x",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            "@",
            "a@{1}",
            "/a",
            "a/",
            "a//b",
            "a.",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
            "a\0b",
            "a\nb",
            "mаin",
            "refs/heads/main",
            "--upload-pack=x",
            &"a".repeat(256),
        ] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commits() {
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        assert!(validate_commit(&"0".repeat(64)).is_ok());
        for bad in [
            "",
            "abc1234",
            &"A".repeat(40),
            &"g".repeat(40),
            &"a".repeat(41),
            "-h",
        ] {
            assert!(validate_commit(bad).is_err(), "{bad:?}");
        }
    }

    /// git's own `check-ref-format --branch` is the grammar; ours may only be
    /// stricter.
    fn git_accepts_branch(name: &str) -> bool {
        std::process::Command::new("git")
            .args(["check-ref-format", "--branch", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn accepted_branches_are_valid_git_refs(name in "[ -~]{1,20}") {
            if validate_branch(&name).is_ok() {
                prop_assert!(git_accepts_branch(&name), "accepted {:?}", name);
                prop_assert!(!name.split('/').any(|c| c.starts_with('-')));
            }
        }

        #[test]
        fn accepted_branch_grammar_sample(name in "[a-z0-9._/@{}~^:-]{1,16}") {
            if validate_branch(&name).is_ok() {
                prop_assert!(git_accepts_branch(&name), "accepted {:?}", name);
            }
        }

        #[test]
        fn accepted_repo_names_match_the_grammar(name in "\\PC{0,120}") {
            if validate_repo_name(&name).is_ok() {
                let bytes = name.as_bytes();
                prop_assert!(bytes[0].is_ascii_alphanumeric());
                prop_assert!(name.len() <= 100);
                prop_assert!(bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b)));
                prop_assert!(!name.contains(".."));
                prop_assert!(!name.to_ascii_lowercase().ends_with(".git"));
            }
        }

        #[test]
        fn accepted_commits_are_lower_hex(s in "[0-9a-fA-Fg-z]{38,66}") {
            if validate_commit(&s).is_ok() {
                prop_assert!(s.len() == 40 || s.len() == 64);
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
    }
}
