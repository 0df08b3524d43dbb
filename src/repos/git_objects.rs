//! Long-lived `git cat-file --batch` readers, so that validating a pushed
//! commit costs a round trip on a pipe instead of starting a git process.
//! At most a few are kept, the most recently used; each ends with its
//! repository's entry, and exits by itself when the daemon goes away (its
//! stdin closes).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};

use crate::build::process::Tools;

/// Readers kept open at once.
const KEPT: usize = 8;

/// One `git cat-file --batch` process.
#[derive(Debug)]
struct Batch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Batch {
    fn spawn(tools: &Tools, repo: &Path) -> io::Result<Batch> {
        let mut cmd = tools.command(
            "git",
            [
                "--git-dir".as_ref(),
                repo.as_os_str(),
                "cat-file".as_ref(),
                "--batch".as_ref(),
            ],
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Batch {
            child,
            stdin,
            stdout,
        })
    }

    /// The commit `name` (a validated hex id or a full ref name) peels to,
    /// with its id, or `None` when the repository has no such commit.
    fn commit(&mut self, name: &str) -> io::Result<Option<(String, Vec<u8>)>> {
        writeln!(self.stdin, "{name}^{{commit}}")?;
        self.stdin.flush()?;
        let mut header = String::new();
        self.stdout.read_line(&mut header)?;
        match header.split_whitespace().collect::<Vec<_>>().as_slice() {
            [id, kind, size] => {
                let size: usize = size.parse().map_err(io::Error::other)?;
                let mut object = vec![0u8; size + 1];
                self.stdout.read_exact(&mut object)?;
                object.truncate(size);
                Ok((*kind == "commit").then(|| (id.to_string(), object)))
            }
            // "<name> missing" or "<name> ambiguous".
            [_, _] => Ok(None),
            _ => Err(io::Error::other("git cat-file --batch ended")),
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Slot = Arc<Mutex<Option<Batch>>>;

/// Commit readers by repository, least recently used first.
#[derive(Debug, Default)]
pub struct CommitReader {
    slots: Mutex<Vec<(PathBuf, Slot)>>,
}

impl CommitReader {
    fn slot(&self, repo: &Path) -> Slot {
        let mut slots = self.slots.lock().expect("commit readers");
        let slot = match slots.iter().position(|(path, _)| path == repo) {
            Some(i) => slots.remove(i).1,
            None => Slot::default(),
        };
        slots.push((repo.to_path_buf(), slot.clone()));
        if slots.len() > KEPT {
            slots.remove(0);
        }
        slot
    }

    /// Reads commit `sha` of `repo`; a broken reader is replaced once.
    /// Blocking.
    pub fn commit(&self, tools: &Tools, repo: &Path, sha: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.peel(tools, repo, sha)?.map(|(_, object)| object))
    }

    /// The head commit of `branch` (already validated) of `repo`, read
    /// afresh: git reads the ref's file for every request. Blocking.
    pub fn branch_head(
        &self,
        tools: &Tools,
        repo: &Path,
        branch: &str,
    ) -> io::Result<Option<String>> {
        Ok(self
            .peel(tools, repo, &format!("refs/heads/{branch}"))?
            .map(|(id, _)| id))
    }

    fn peel(
        &self,
        tools: &Tools,
        repo: &Path,
        name: &str,
    ) -> io::Result<Option<(String, Vec<u8>)>> {
        let slot = self.slot(repo);
        let mut batch = slot.lock().expect("commit reader");
        let mut last = io::Error::other("no reader");
        for _ in 0..2 {
            if batch.is_none() {
                *batch = Some(Batch::spawn(tools, repo)?);
            }
            match batch.as_mut().expect("just spawned").commit(name) {
                Ok(found) => return Ok(found),
                Err(e) => {
                    *batch = None;
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Ends the reader of `repo`, if any (the repository is going away).
    pub fn forget(&self, repo: &Path) {
        self.slots
            .lock()
            .expect("commit readers")
            .retain(|(path, _)| path != repo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=A", "-c", "user.email=a@b"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn reads_commits_sees_new_ones_and_keeps_few_readers() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        let tree = git(&repo, &["rev-parse", "HEAD^{tree}"]);
        let tools = Tools::new(dir.path().to_path_buf(), dir.path().join(".cache"));
        let reader = CommitReader::default();
        let git_dir = repo.join(".git");
        let object = reader.commit(&tools, &git_dir, &first).unwrap().unwrap();
        assert!(String::from_utf8_lossy(&object).contains("author A <a@b>"));
        assert_eq!(
            reader.commit(&tools, &git_dir, &"0".repeat(40)).unwrap(),
            None
        );
        assert_eq!(
            reader.commit(&tools, &git_dir, &tree).unwrap(),
            None,
            "a tree is no commit"
        );
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = git(&repo, &["rev-parse", "HEAD"]);
        assert!(
            reader.commit(&tools, &git_dir, &second).unwrap().is_some(),
            "a later commit is seen"
        );
        for n in 0..KEPT + 2 {
            let _ = reader.commit(&tools, &dir.path().join(format!("absent-{n}")), &first);
        }
        assert_eq!(reader.slots.lock().unwrap().len(), KEPT);
        reader.forget(&dir.path().join(format!("absent-{}", KEPT + 1)));
        assert_eq!(reader.slots.lock().unwrap().len(), KEPT - 1);
    }

    #[test]
    fn branch_heads_are_read_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("r");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        let tools = Tools::new(dir.path().to_path_buf(), dir.path().join(".cache"));
        let reader = CommitReader::default();
        let git_dir = repo.join(".git");
        let head = |branch: &str| reader.branch_head(&tools, &git_dir, branch).unwrap();
        assert_eq!(head("main"), Some(first.clone()));
        assert_eq!(head("feature/x"), None);
        // The reader is kept between requests: a ref created, moved, packed
        // or deleted since is seen as it is now.
        git(&repo, &["branch", "feature/x"]);
        assert_eq!(head("feature/x"), Some(first.clone()));
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = git(&repo, &["rev-parse", "HEAD"]);
        assert_eq!(head("main"), Some(second));
        git(&repo, &["pack-refs", "--all"]);
        assert_eq!(head("feature/x"), Some(first));
        git(&repo, &["branch", "-D", "feature/x"]);
        assert_eq!(head("feature/x"), None);
        // A tag of the same name is no branch.
        git(&repo, &["tag", "v1"]);
        assert_eq!(head("v1"), None);
    }
}
