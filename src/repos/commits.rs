//! What a build shows of its commit ([`CommitInfo`]: author and message),
//! read from the commit object and parsed here.

use std::path::Path;

use super::{RepoError, RepoFiles, validate_commit};
use crate::build::process::CommandError;

/// What a build shows of its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// `Name <email>`, or empty when the object names none.
    pub author: String,
    /// The message, trimmed, at most `MAX_MESSAGE_BYTES` (cut at a character
    /// boundary): a commit message is text for people, and the database keeps
    /// one per build.
    pub message: String,
}

/// Longest commit message kept with a build.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

impl CommitInfo {
    fn parse(object: &[u8]) -> CommitInfo {
        let text = String::from_utf8_lossy(object);
        // Headers end at the first empty line (continuation lines of a
        // signature start with a space, so they are never empty).
        let message = text
            .split_once("\n\n")
            .map(|(_, m)| m.trim())
            .unwrap_or_default();
        let mut end = message.len().min(MAX_MESSAGE_BYTES);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        CommitInfo {
            author: parse_author(object),
            message: message[..end].to_string(),
        }
    }
}

fn parse_author(object: &[u8]) -> String {
    String::from_utf8_lossy(object)
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("author "))
        .map(|a| match a.rfind('>') {
            Some(end) => a[..=end].to_string(),
            None => a.to_string(),
        })
        .unwrap_or_default()
}

impl RepoFiles {
    /// The author and message of `commit` when it is a commit object of
    /// `repo`; `None` when it does not exist there.
    pub fn commit_info(&self, repo: &Path, commit: &str) -> Result<Option<CommitInfo>, RepoError> {
        validate_commit(commit).map_err(|reason| RepoError::InvalidName {
            name: commit.to_string(),
            reason,
        })?;
        // The kept reader is the fast path; a one-shot git answers when it
        // cannot be had.
        if let Ok(found) = self.commits.commit(&self.tools, repo, commit) {
            return Ok(found.map(|object| CommitInfo::parse(&object)));
        }
        match self
            .tools
            .git(repo, &["cat-file", "--end-of-options", "commit", commit])
        {
            Ok(object) => Ok(Some(CommitInfo::parse(&object))),
            Err(CommandError::Failed { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn author_from_commit_object() {
        let object = b"tree abc\nauthor Ann Example <ann@example.org> 1700000000 +0000\ncommitter X <x> 1 +0000\n\nmsg\nauthor fake\n";
        assert_eq!(parse_author(object), "Ann Example <ann@example.org>");
        let info = CommitInfo::parse(object);
        assert_eq!(info.message, "msg\nauthor fake");
    }

    #[test]
    fn message_after_a_signature_and_capped() {
        let object = b"tree abc\nauthor A <a> 1 +0000\ngpgsig -----BEGIN\n \n -----END\n\n\nSubject line\n\nBody.\n";
        assert_eq!(CommitInfo::parse(object).message, "Subject line\n\nBody.");
        let long = format!("tree abc\n\n{}", "é".repeat(MAX_MESSAGE_BYTES));
        let info = CommitInfo::parse(long.as_bytes());
        assert!(info.message.len() <= MAX_MESSAGE_BYTES && info.message.starts_with('é'));
        assert_eq!(CommitInfo::parse(b"tree abc\n").message, "");
    }
}
