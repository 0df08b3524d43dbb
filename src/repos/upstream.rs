//! Upstreams: a managed repository that mirrors a git URL. Here the rules
//! for the URL and the settings, where they are kept (the bare
//! repository's own git config, so that they travel with it), the
//! credentials, and the two git commands that talk to the upstream:
//! `ls-remote` (cheap: is anything new?) and `fetch` (only when a head
//! moved).
//!
//! Credentials never reach a command line, a URL or a log: a token goes to
//! git as an `http.<url>.extraHeader` in git's environment configuration
//! (`GIT_CONFIG_COUNT`), an SSH key as a private copy that
//! `GIT_SSH_COMMAND` names with `-i`. Host keys of SSH upstreams are pinned
//! on first use in `<state_dir>/upstream/known_hosts` (and any key already
//! in the host's `/etc/ssh/ssh_known_hosts` is honoured); a changed key
//! makes the upstream fail until an operator edits that file.
//!
//! Every git here runs in its own process group and is killed, group and
//! all, when it outlives its timeout. Blocking: callers run it off the
//! async executor.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;

use super::{RepoError, RepoFiles, io_error};
use crate::build::process::{Tools, describe_status, signal_group, tail};

/// Seconds between looks at an upstream unless `poll_interval_secs` says.
pub const DEFAULT_POLL_INTERVAL_SECS: u64 = 300;

/// The longest `poll_interval_secs` accepted (a day).
const MAX_POLL_INTERVAL_SECS: u64 = 86_400;

/// The remote's name in the bare repository's config.
const REMOTE: &str = "upstream";

/// How long `git ls-remote` may take.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `git fetch` may take (a first fetch of a large repository).
const FETCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Largest credentials or webhook secret file read.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// How much of a failed git's stderr an upstream error keeps.
const ERROR_TAIL: usize = 600;

/// What a repository's upstream is and how the daemon reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub url: String,
    pub credentials_file: Option<PathBuf>,
    pub poll_interval_secs: u64,
    pub webhook_secret_file: Option<PathBuf>,
    pub build_fork_pull_requests: bool,
}

/// Whether `url` is a git URL procurator-ci fetches from: `https://`,
/// `http://`, `ssh://`, scp form (`user@host:path`), `git://` or `file://`,
/// without a password or token in it (those go in
/// `upstream_credentials_file`, which never reaches a command line).
pub fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > 2048 {
        return Err("must be a git URL of 1 to 2048 characters".into());
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    if url.starts_with('-') {
        return Err("must not start with '-' (git would read it as an option)".into());
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https" | "http" | "ssh" | "git" | "git+ssh" | "ssh+git") => {
            let rest = &url[url.find("://").unwrap_or(0) + 3..];
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.is_empty() {
                return Err("names no host".into());
            }
            if let Some((userinfo, _)) = authority.rsplit_once('@')
                && userinfo.contains(':')
            {
                return Err("has a password or token in it: put the token in \
                     upstream_credentials_file instead, so that it never appears in a \
                     command line or a log"
                    .into());
            }
            if url.contains('?') || url.contains('#') {
                return Err("must not have a query or fragment".into());
            }
            Ok(())
        }
        Some("file") => {
            if !url["file://".len()..].starts_with('/') {
                return Err("a file:// URL must name an absolute path".into());
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "has scheme {other:?}; procurator-ci fetches https://, http://, ssh://, git://, \
             file:// and scp-form (user@host:path) URLs"
        )),
        None => {
            // git's scp form: `[user@]host:path`, with no slash before the colon.
            match url.split_once(':') {
                Some((host, path))
                    if !host.is_empty() && !host.contains('/') && !path.is_empty() =>
                {
                    Ok(())
                }
                _ => Err(
                    "is not a URL git fetches from (https://, ssh://, git://, file:// \
                     or user@host:path)"
                        .into(),
                ),
            }
        }
    }
}

/// Whether `secs` may be a `poll_interval_secs`.
pub fn validate_poll_interval(secs: u64) -> Result<(), String> {
    if secs > MAX_POLL_INTERVAL_SECS {
        return Err(format!(
            "must be at most {MAX_POLL_INTERVAL_SECS} (a day); 0 means webhooks only"
        ));
    }
    Ok(())
}

/// Reads a credentials or webhook secret file: non-empty, at most 64 KiB.
/// The error names the problem, never the contents.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!("is larger than {MAX_SECRET_BYTES} bytes"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("is empty".into());
    }
    Ok(bytes)
}

/// How the daemon proves itself to an upstream.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Nothing (a public upstream, `git://`, `file://`).
    #[default]
    None,
    /// HTTP basic credentials sent with every request to the upstream.
    Token { user: String, token: String },
    /// An SSH private key, copied where only the daemon reads it.
    SshKey(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Token { .. } => "Token(***)",
            Credentials::SshKey(_) => "SshKey(***)",
        })
    }
}

/// The user name sent with a bare token: GitHub wants it for app tokens
/// and ignores it for personal ones; Gitea, Forgejo and GitLab accept any.
const TOKEN_USER: &str = "x-access-token";

/// Reads the credentials in `file`: an OpenSSH private key (kept as a copy
/// at `key_copy`, mode 600) or a token (`token`, or `user:token` for a
/// server that wants a particular user).
pub fn load_credentials(file: &Path, key_copy: &Path) -> Result<Credentials, String> {
    let bytes = read_secret_file(file)?;
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN") {
        if let Some(dir) = key_copy.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot keep a copy: {e}"))?;
            let _ =
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        // ssh refuses a key others may read, and wants its final newline.
        super::atomic_write(key_copy, format!("{trimmed}\n").as_bytes(), 0o600)
            .map_err(|e| format!("cannot keep a copy: {e}"))?;
        return Ok(Credentials::SshKey(key_copy.to_path_buf()));
    }
    if trimmed.lines().count() != 1 {
        return Err(
            "is neither an SSH private key nor a one-line token (`token` or `user:token`)".into(),
        );
    }
    let (user, token) = match trimmed.split_once(':') {
        Some((user, token)) if !user.is_empty() && !token.is_empty() => (user, token),
        _ => (TOKEN_USER, trimmed),
    };
    Ok(Credentials::Token {
        user: user.to_string(),
        token: token.to_string(),
    })
}

/// Why talking to an upstream failed; the text is safe to show (no
/// credentials: they never reach git's arguments or messages).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// The heads an upstream has, from `git ls-remote`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHeads {
    /// The branch the upstream's `HEAD` names, when it says.
    pub head: Option<String>,
    /// Branch name → commit.
    pub branches: BTreeMap<String, String>,
}

/// One repository's upstream, ready to be asked.
#[derive(Debug, Clone)]
pub struct Remote {
    pub repo: PathBuf,
    pub url: String,
    pub credentials: Credentials,
    /// Where SSH host keys are pinned.
    pub known_hosts: PathBuf,
}

impl Remote {
    /// `git <args>` against this upstream, with its credentials and host key
    /// policy in the environment only.
    fn command(&self, tools: &Tools, args: &[&str]) -> std::process::Command {
        let mut all = vec!["--git-dir", self.repo.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let mut cmd = tools.command("git", &all);
        // Nothing may print a header or prompt on a terminal that is not there.
        for var in [
            "GIT_TRACE",
            "GIT_TRACE_CURL",
            "GIT_TRACE_PACKET",
            "GIT_CURL_VERBOSE",
            "GIT_ASKPASS",
            "SSH_ASKPASS",
            "GIT_CONFIG_PARAMETERS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        let mut config: Vec<(String, String)> = vec![
            // No helper of the host's answers for this upstream.
            ("credential.helper".into(), String::new()),
            // The objects arrive in the repository; the pusher's hook is
            // not run by a fetch, and an automatic gc would hold a fetch.
            ("gc.auto".into(), "0".into()),
        ];
        if let Credentials::Token { user, token } = &self.credentials {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
            config.push((
                format!("http.{}.extraHeader", self.url),
                format!("Authorization: Basic {basic}"),
            ));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        let mut ssh = format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={} \
             -o ConnectTimeout=30",
            shell_quote(&self.known_hosts.to_string_lossy())
        );
        if let Credentials::SshKey(key) = &self.credentials {
            ssh.push_str(&format!(
                " -o IdentitiesOnly=yes -i {}",
                shell_quote(&key.to_string_lossy())
            ));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        cmd
    }

    /// The upstream's branches and default branch.
    pub fn ls_remote(&self, tools: &Tools) -> Result<RemoteHeads, UpstreamError> {
        let out = run(
            self.command(
                tools,
                &["ls-remote", "--symref", REMOTE, "HEAD", "refs/heads/*"],
            ),
            LS_REMOTE_TIMEOUT,
            "git ls-remote",
        )?;
        Ok(parse_ls_remote(&String::from_utf8_lossy(&out)))
    }

    /// Fetches a pull request's head ref (see [`super::is_pull_ref`]) into
    /// the same ref of the repository.
    pub fn fetch_pull(&self, tools: &Tools, head_ref: &str) -> Result<(), UpstreamError> {
        if !super::is_pull_ref(head_ref) {
            return Err(UpstreamError(format!(
                "{head_ref} is not a pull request's head"
            )));
        }
        let refspec = format!("+{head_ref}:{head_ref}");
        run(
            self.command(
                tools,
                &[
                    "fetch",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--quiet",
                    REMOTE,
                    &refspec,
                ],
            ),
            FETCH_TIMEOUT,
            "git fetch",
        )?;
        Ok(())
    }

    /// Fetches the upstream's branches into the repository's, deleting
    /// those the upstream no longer has.
    pub fn fetch(&self, tools: &Tools) -> Result<(), UpstreamError> {
        run(
            self.command(
                tools,
                &[
                    "fetch",
                    "--prune",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--quiet",
                    REMOTE,
                    "+refs/heads/*:refs/heads/*",
                ],
            ),
            FETCH_TIMEOUT,
            "git fetch",
        )?;
        Ok(())
    }
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `git ls-remote --symref` output: `ref: refs/heads/main\tHEAD`, then
/// `<sha>\t<ref>` lines.
fn parse_ls_remote(text: &str) -> RemoteHeads {
    let mut heads = RemoteHeads::default();
    for line in text.lines() {
        let Some((left, name)) = line.split_once('\t') else {
            continue;
        };
        if let Some(target) = left.strip_prefix("ref: ") {
            if name == "HEAD" {
                heads.head = target.strip_prefix("refs/heads/").map(String::from);
            }
        } else if let Some(branch) = name.strip_prefix("refs/heads/") {
            heads.branches.insert(branch.to_string(), left.to_string());
        }
    }
    heads
}

/// Runs `cmd` (its own process group) to the end or to `timeout`, when its
/// whole group is killed; stdout on success.
fn run(
    mut cmd: std::process::Command,
    timeout: Duration,
    what: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| UpstreamError(format!("cannot start {what}: {e}")))?;
    let pgid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    let timed_out = finished.recv_timeout(timeout).is_err();
    if timed_out {
        signal_group(pgid, rustix::process::Signal::KILL);
    }
    let output = waiter
        .join()
        .map_err(|_| UpstreamError(format!("{what} could not be waited for")))?
        .map_err(|e| UpstreamError(format!("{what} failed: {e}")))?;
    if timed_out {
        return Err(UpstreamError(format!(
            "{what} took longer than {} s and was stopped",
            timeout.as_secs()
        )));
    }
    if !output.status.success() {
        let stderr = tail(&output.stderr, ERROR_TAIL);
        return Err(UpstreamError(format!(
            "{what} failed ({}): {}",
            describe_status(output.status),
            crate::redact::urls(stderr.trim())
        )));
    }
    Ok(output.stdout)
}

impl RepoFiles {
    /// Records `settings` (or their absence) in the bare repository's
    /// config: the `upstream` remote and procurator-ci's own keys.
    pub fn write_upstream(
        &self,
        repo: &Path,
        settings: Option<&UpstreamSettings>,
    ) -> Result<(), RepoError> {
        if self.read_upstream(repo)?.as_ref() == settings {
            return Ok(());
        }
        let file = repo.join("config");
        let file = file.to_string_lossy();
        let config = |args: &[&str]| -> Result<(), RepoError> {
            let mut all = vec!["config", "--file", &file];
            all.extend_from_slice(args);
            self.tools.output("git", &all).map(drop).map_err(Into::into)
        };
        // Absent sections are no error to remove.
        let _ = config(&["--remove-section", "remote.upstream"]);
        let _ = config(&["--remove-section", "procurator"]);
        let Some(s) = settings else { return Ok(()) };
        config(&["remote.upstream.url", &s.url])?;
        config(&["remote.upstream.tagOpt", "--no-tags"])?;
        config(&[
            "procurator.pollIntervalSecs",
            &s.poll_interval_secs.to_string(),
        ])?;
        if let Some(f) = &s.credentials_file {
            config(&["procurator.credentialsFile", &f.to_string_lossy()])?;
        }
        if let Some(f) = &s.webhook_secret_file {
            config(&["procurator.webhookSecretFile", &f.to_string_lossy()])?;
        }
        if s.build_fork_pull_requests {
            config(&["procurator.buildForkPullRequests", "true"])?;
        }
        Ok(())
    }

    /// The upstream recorded in the bare repository's config, if any.
    pub fn read_upstream(&self, repo: &Path) -> Result<Option<UpstreamSettings>, RepoError> {
        let file = repo.join("config");
        let text = std::fs::read_to_string(&file)
            .map_err(io_error(format!("cannot read {}", file.display())))?;
        if !text.contains("[remote \"upstream\"]") {
            return Ok(None);
        }
        let out = self
            .tools
            .output(
                "git",
                &[
                    "config",
                    "--file",
                    &file.to_string_lossy(),
                    "--null",
                    "--get-regexp",
                    r"^(remote\.upstream\.url|procurator\.)",
                ],
            )
            .unwrap_or_default();
        let mut values = BTreeMap::new();
        for entry in out.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            if let Some((key, value)) = entry.split_once('\n') {
                values.insert(key.to_ascii_lowercase(), value.to_string());
            }
        }
        let Some(url) = values.remove("remote.upstream.url") else {
            return Ok(None);
        };
        Ok(Some(UpstreamSettings {
            url,
            credentials_file: values
                .remove("procurator.credentialsfile")
                .map(PathBuf::from),
            poll_interval_secs: values
                .get("procurator.pollintervalsecs")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_POLL_INTERVAL_SECS),
            webhook_secret_file: values
                .remove("procurator.webhooksecretfile")
                .map(PathBuf::from),
            build_fork_pull_requests: values
                .get("procurator.buildforkpullrequests")
                .is_some_and(|v| v == "true"),
        }))
    }

    /// The repository's branch heads, from its refs alone.
    pub fn local_heads(&self, repo: &Path) -> Result<BTreeMap<String, String>, RepoError> {
        Ok(self
            .branches(repo)?
            .into_iter()
            .map(|b| (b.name, b.commit))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_git_fetches_from() {
        for ok in [
            "https://github.com/team/app.git",
            "http://127.0.0.1:8080/git/app.git",
            "ssh://git@host:2222/team/app.git",
            "git@github.com:team/app.git",
            "git://127.0.0.1:9418/app.git",
            "file:///srv/git/app.git",
            "https://user@host/app.git",
        ] {
            assert_eq!(validate_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (
                "https://user:hunter2@host/app.git",
                "upstream_credentials_file",
            ),
            ("ftp://host/app", "scheme"),
            ("file://relative/path", "absolute"),
            ("-uoops", "option"),
            ("https:///app.git", "no host"),
            ("/srv/git/app.git", "not a URL"),
            ("https://host/app.git?token=x", "query"),
            ("", "1 to 2048"),
        ] {
            let err = validate_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn ls_remote_output_is_read() {
        let heads = parse_ls_remote(
            "ref: refs/heads/trunk\tHEAD\naaa\tHEAD\nbbb\trefs/heads/trunk\nccc\trefs/heads/a/b\n",
        );
        assert_eq!(heads.head.as_deref(), Some("trunk"));
        assert_eq!(heads.branches.len(), 2);
        assert_eq!(heads.branches["a/b"], "ccc");
    }

    #[test]
    fn credentials_are_a_token_or_a_key_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let creds = load_credentials(&file, &dir.path().join("k/key")).unwrap();
        assert!(
            matches!(&creds, Credentials::Token { user, token } if user == TOKEN_USER && token == "s3cret-token")
        );
        assert!(!format!("{creds:?}").contains("s3cret"));
        std::fs::write(&file, "ci:s3cret\n").unwrap();
        let creds = load_credentials(&file, &dir.path().join("k/key")).unwrap();
        assert!(matches!(&creds, Credentials::Token { user, .. } if user == "ci"));
        std::fs::write(
            &file,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        let key = dir.path().join("k/key");
        let creds = load_credentials(&file, &key).unwrap();
        assert!(matches!(&creds, Credentials::SshKey(p) if p == &key));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&file, " \n").unwrap();
        assert!(load_credentials(&file, &key).unwrap_err().contains("empty"));
    }
}
