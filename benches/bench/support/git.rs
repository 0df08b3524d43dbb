//! Git repositories filled fast, and the flakes the benches build.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Res, err};

/// Runs git, returning stdout; fails on a non-zero exit.
pub fn git(dir: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.org",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(err("git"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `n` commits onto `branch` of the repository at `git_dir` with
/// `git fast-import` (the first holds `flake.nix` = `flake`); returns their
/// ids, oldest first.
pub fn fast_import(git_dir: &Path, branch: &str, n: usize, flake: &str) -> Res<Vec<String>> {
    let marks = git_dir.join(format!("bench-marks-{branch}"));
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(err("git fast-import"))?;
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        for i in 1..=n {
            let message = format!("bench commit {i}\n");
            write!(
                stdin,
                "commit refs/heads/{branch}\nmark :{i}\ncommitter Bench <bench@example.org> {now} +0000\ndata {}\n{message}",
                message.len()
            )
            .map_err(err("fast-import input"))?;
            if i == 1 {
                write!(
                    stdin,
                    "M 644 inline flake.nix\ndata {}\n{flake}\n",
                    flake.len()
                )
                .map_err(err("fast-import input"))?;
            }
            writeln!(stdin).map_err(err("fast-import input"))?;
        }
        stdin.flush().map_err(err("fast-import input"))?;
    }
    let status = child.wait().map_err(err("git fast-import"))?;
    if !status.success() {
        return Err(format!("git fast-import failed: {status}"));
    }
    let text = std::fs::read_to_string(&marks).map_err(err("marks"))?;
    let _ = std::fs::remove_file(&marks);
    let mut commits = vec![String::new(); n];
    for line in text.lines() {
        if let Some((mark, sha)) = line.split_once(' ')
            && let Ok(i) = mark.trim_start_matches(':').parse::<usize>()
            && (1..=n).contains(&i)
        {
            commits[i - 1] = sha.to_string();
        }
    }
    if commits.iter().any(String::is_empty) {
        return Err("fast-import lost a mark".into());
    }
    Ok(commits)
}

/// Creates the branch `{prefix}/{i}` at `commits[i]` for every `i`, with one
/// `git update-ref --stdin` (no hooks): the daemon builds only branches a
/// repository has, and a push per branch would dwarf what is measured.
pub fn make_branches(git_dir: &Path, prefix: &str, commits: &[String]) -> Res<Vec<String>> {
    let names: Vec<String> = (0..commits.len())
        .map(|i| format!("{prefix}/{i}"))
        .collect();
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(err("git update-ref"))?;
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        for (name, commit) in names.iter().zip(commits) {
            writeln!(stdin, "create refs/heads/{name} {commit}")
                .map_err(err("update-ref input"))?;
        }
        stdin.flush().map_err(err("update-ref input"))?;
    }
    let status = child.wait().map_err(err("git update-ref"))?;
    if !status.success() {
        return Err(format!("git update-ref --stdin failed: {status}"));
    }
    Ok(names)
}

/// A flake whose one check runs `script` with /bin/sh (absolute paths:
/// builders get no PATH), with `nonce` making the derivation unique.
pub fn flake(script: &str, nonce: &str) -> String {
    format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux.bench = derivation {{ name = \"bench\"; \
         system = \"x86_64-linux\"; builder = \"/bin/sh\"; nonce = \"{nonce}\"; args = [ \"-c\" {script:?} ]; }};\n  }};\n}}\n"
    )
}
