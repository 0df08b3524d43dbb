//! Git for the tests: work trees that commit flakes and push, refs made
//! in bulk, and the check scripts the flakes run.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

use super::{Daemon, NIX_CONFIG};

/// Creates branches (name, commit) in the bare repository `bare` with one
/// `git update-ref --stdin`, without hooks: the daemon builds only branches
/// a repository has, and thousands of pushes would take minutes.
pub fn create_branches<'a>(bare: &Path, branches: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut input = String::new();
    for (name, commit) in branches {
        input.push_str(&format!("create refs/heads/{name} {commit}\n"));
    }
    git_stdin(bare, &["update-ref", "--stdin"], &input);
}

/// Runs git on the bare repository `bare` with `input` on its stdin,
/// asserting success.
pub fn git_stdin(bare: &Path, args: &[&str], input: &str) {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "git {args:?} failed");
}

/// Runs git in `dir`, asserting success; returns stdout and stderr.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git {args:?} failed: {text}");
    text
}

/// A working clone of a managed repository.
pub struct Work {
    pub dir: TempDir,
}

impl Work {
    /// Clones `repo` (a bare repository path).
    pub fn clone(repo: &Path) -> Work {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(
            dir.path(),
            &["remote", "add", "origin", repo.to_str().unwrap()],
        );
        Work { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `flake.nix` with `checks` (name → shell script) and commits;
    /// returns the commit id.
    pub fn commit_flake(&self, checks: &[(&str, &str)]) -> String {
        std::fs::write(self.path().join("flake.nix"), flake(checks)).unwrap();
        self.commit("flake")
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(self.path(), &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Pushes and returns git's output (the hook's lines included).
    pub fn push(&self, args: &[&str]) -> String {
        let mut all = vec!["push", "origin"];
        all.extend_from_slice(args);
        git(self.path(), &all)
    }
}

/// A flake whose checks run the given shell scripts with /bin/sh, offline.
pub fn flake(checks: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, script) in checks {
        body.push_str(&format!(
            "      {name} = derivation {{ name = \"{name}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [ \"-c\" {script:?} ]; }};\n"
        ));
    }
    format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux = {{\n{body}    }};\n  }};\n}}\n"
    )
}

/// A passing check script: prints, then creates `$out`.
pub fn passing(text: &str) -> String {
    format!("echo {text}; echo ok > $out")
}

/// Something unique to this call, so a check's derivation is new to Nix.
pub fn nonce(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos}", std::process::id())
}

/// Commits a flake with one check running `script`, pushes it to `branch`,
/// waits for the build to end and returns it.
pub fn build_one(daemon: &Daemon, work: &Work, branch: &str, script: &str) -> Value {
    let commit = work.commit_flake(&[("check", script)]);
    work.push(&[&format!("HEAD:refs/heads/{branch}")]);
    daemon.wait_final(daemon.build_of(branch, &commit))
}

/// A passing check script whose derivation is new to Nix.
pub fn ok_script() -> String {
    passing(&nonce("ok"))
}

/// A failing check script whose derivation is new to Nix.
pub fn failing_script() -> String {
    format!("echo {}; exit 1", nonce("bad"))
}
