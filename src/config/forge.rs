//! Where a repository's commit statuses go: the forge (`forge`), its API
//! (`forge_api_url`), the repository there (`forge_repo`) and the token
//! (`forge_token_file`), given outright or inferred from an upstream URL.
//!
//! [`infer`] is pure: it reads a URL and nothing else, so the same rules
//! hold for `[repos.NAME]`, `POST /api/repos` and the NixOS module.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Per-check statuses a build posts unless `forge_check_statuses` says.
pub const DEFAULT_CHECK_STATUSES: u32 = 25;

/// The most `forge_check_statuses` may be: GitHub keeps at most 1,000
/// statuses per commit and context, and a build posts at most one
/// context per check.
pub const MAX_CHECK_STATUSES: u32 = 1000;

/// A forge whose commit status API procurator-ci speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Gitea,
    Forgejo,
    Gitlab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::Gitlab => "gitlab",
        }
    }

    pub fn parse(name: &str) -> Option<Forge> {
        [Forge::Github, Forge::Gitea, Forge::Forgejo, Forge::Gitlab]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

/// The forge keys of one repository, as written (`[repos.NAME]`, the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeKeys {
    pub forge: Option<Forge>,
    pub forge_api_url: Option<String>,
    pub forge_repo: Option<String>,
    pub forge_token_file: Option<PathBuf>,
    pub forge_check_statuses: Option<u32>,
}

/// Where statuses of one repository's builds are posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeTarget {
    pub forge: Forge,
    /// The API root, without a trailing slash (`https://api.github.com`,
    /// `https://codeberg.org/api/v1`, `https://gitlab.com/api/v4`).
    pub api_url: String,
    /// `owner/name` (GitLab: `group/subgroup/name`).
    pub repo: String,
    pub token_file: PathBuf,
    /// Per-check statuses at most; a build with more checks posts one
    /// summary status instead.
    pub check_statuses: u32,
}

/// What an upstream URL says about its forge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inferred {
    /// Known for github.com, gitlab.com and codeberg.org.
    pub forge: Option<Forge>,
    /// The URL's host, without user or port.
    pub host: Option<String>,
    /// The URL's path without its leading `/`, a trailing `/` or `.git`.
    pub repo: Option<String>,
}

/// Reads the forge, host and repository from an upstream git URL: a URL
/// with a scheme (`https://`, `ssh://`, `git://`, `file://`) or scp form
/// (`git@host:team/app.git`).
pub fn infer(upstream: Option<&str>) -> Inferred {
    let Some(url) = upstream.map(str::trim).filter(|u| !u.is_empty()) else {
        return Inferred::default();
    };
    let (authority, path) = match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        },
        // scp form: a colon before any slash.
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => (host, path),
            _ => ("", url),
        },
    };
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    }
    .to_ascii_lowercase();
    let repo = path.trim_matches('/');
    let repo = repo
        .strip_suffix(".git")
        .unwrap_or(repo)
        .trim_end_matches('/');
    let forge = match host.as_str() {
        "github.com" => Some(Forge::Github),
        "gitlab.com" => Some(Forge::Gitlab),
        "codeberg.org" => Some(Forge::Forgejo),
        _ => None,
    };
    Inferred {
        forge,
        host: (!host.is_empty()).then_some(host),
        repo: (!repo.is_empty()).then(|| repo.to_string()),
    }
}

/// The public API of `forge` for an upstream on `host`: GitHub's and
/// GitLab's well-known ones, or the same host's (GitHub Enterprise,
/// self-hosted GitLab, Gitea, Forgejo). Gitea and Forgejo have no public
/// default: without a host there is none.
pub fn default_api_url(forge: Forge, host: Option<&str>) -> Option<String> {
    match (forge, host) {
        (Forge::Github, None | Some("github.com")) => Some("https://api.github.com".into()),
        (Forge::Github, Some(host)) => Some(format!("https://{host}/api/v3")),
        (Forge::Gitlab, host) => Some(format!("https://{}/api/v4", host.unwrap_or("gitlab.com"))),
        (Forge::Gitea | Forge::Forgejo, Some(host)) => Some(format!("https://{host}/api/v1")),
        (Forge::Gitea | Forge::Forgejo, None) => None,
    }
}

/// A forge key that cannot be used: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: &'static str,
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> KeyError {
    KeyError {
        key,
        reason: reason.into(),
    }
}

/// The target `keys` (and the upstream URL, when the repository has one)
/// describe, or `None` when the repository reports to no forge (no forge
/// key is set). Checks the values' form; the token file is read by
/// [`read_token`].
pub fn resolve(keys: &ForgeKeys, upstream: Option<&str>) -> Result<Option<ForgeTarget>, KeyError> {
    let any = keys.forge.is_some()
        || keys.forge_api_url.is_some()
        || keys.forge_repo.is_some()
        || keys.forge_token_file.is_some()
        || keys.forge_check_statuses.is_some();
    if !any {
        return Ok(None);
    }
    let inferred = infer(upstream);
    let Some(token_file) = keys.forge_token_file.clone() else {
        return Err(bad(
            "forge_token_file",
            "statuses need a token: name the file holding it",
        ));
    };
    if !token_file.is_absolute() {
        return Err(bad("forge_token_file", "must be an absolute path"));
    }
    let forge = keys.forge.or(inferred.forge).ok_or_else(|| {
        bad(
            "forge",
            "name the forge (github, gitea, forgejo or gitlab); it is inferred only from an \
             upstream on github.com, gitlab.com or codeberg.org",
        )
    })?;
    let api_url = match &keys.forge_api_url {
        Some(url) => {
            let url = url.trim_end_matches('/');
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() <= "https://".len() || url.chars().any(char::is_whitespace) {
                return Err(bad(
                    "forge_api_url",
                    "must be an http:// or https:// URL without spaces",
                ));
            }
            url.to_string()
        }
        None => default_api_url(forge, inferred.host.as_deref()).ok_or_else(|| {
            bad(
                "forge_api_url",
                format!(
                    "{} has no public API to default to: give its URL (https://HOST/api/v1)",
                    forge.as_str()
                ),
            )
        })?,
    };
    let repo = keys.forge_repo.clone().or(inferred.repo).ok_or_else(|| {
        bad(
            "forge_repo",
            "give the repository on the forge as owner/name",
        )
    })?;
    check_repo(forge, &repo).map_err(|reason| bad("forge_repo", reason))?;
    let check_statuses = keys.forge_check_statuses.unwrap_or(DEFAULT_CHECK_STATUSES);
    if check_statuses > MAX_CHECK_STATUSES {
        return Err(bad(
            "forge_check_statuses",
            format!("must be at most {MAX_CHECK_STATUSES}"),
        ));
    }
    Ok(Some(ForgeTarget {
        forge,
        api_url,
        repo,
        token_file,
        check_statuses,
    }))
}

/// `owner/name`: two segments, GitLab's nested groups allowing more, of
/// the characters forges allow in names.
fn check_repo(forge: Forge, repo: &str) -> Result<(), String> {
    let segments: Vec<&str> = repo.split('/').collect();
    let count_ok = match forge {
        Forge::Gitlab => segments.len() >= 2,
        _ => segments.len() == 2,
    };
    if !count_ok {
        return Err(format!("{repo:?} is not owner/name"));
    }
    for segment in segments {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if segment.is_empty() || segment == "." || segment == ".." || !segment.chars().all(allowed)
        {
            return Err(format!(
                "{repo:?}: {segment:?} is not a name (letters, digits, '-', '_', '.')"
            ));
        }
    }
    Ok(())
}

/// A forge key of a declared repository that cannot be used, with its
/// value as the error shows it.
#[derive(Debug)]
pub(super) struct DeclError {
    pub key: &'static str,
    pub value: String,
    pub reason: String,
}

/// Checks the forge keys of `[repos.NAME]` and, with `read_files`, its
/// token file (readable by its owner only, holding one token). What the
/// keys leave out is read from the repository's `upstream`.
pub(super) fn check_declared(decl: &super::RepoDecl, read_files: bool) -> Result<(), DeclError> {
    let target = resolve(&decl.forge_keys(), decl.upstream.as_deref()).map_err(|e| DeclError {
        key: e.key,
        value: match e.key {
            "forge" => format!("{:?}", decl.forge.map(Forge::as_str)),
            "forge_api_url" => format!("{:?}", decl.forge_api_url),
            "forge_repo" => format!("{:?}", decl.forge_repo),
            "forge_token_file" => format!("{:?}", decl.forge_token_file),
            _ => format!("{:?}", decl.forge_check_statuses),
        },
        reason: e.reason,
    })?;
    let Some(target) = target.filter(|_| read_files) else {
        return Ok(());
    };
    let bad = |reason: String| DeclError {
        key: "forge_token_file",
        value: target.token_file.display().to_string(),
        reason,
    };
    if let Some(mode) = super::exposed_mode(&target.token_file) {
        return Err(bad(format!(
            "it is readable by group or others (mode {mode:04o}): chmod 600 it, or pass it as \
             a systemd credential"
        )));
    }
    read_token(&target.token_file).map(|_| ()).map_err(bad)
}

/// The token in `path`, surrounding whitespace trimmed. Errors name the
/// file, never its content.
pub fn read_token(path: &Path) -> Result<String, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = String::from_utf8(raw)
        .map_err(|_| format!("{} is not text", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{} holds more than one token (spaces or lines inside)",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::super::testing::{clear_config_env, load_in};
    use super::super::{Config, RuntimeFiles};
    use super::*;

    #[test]
    fn forge_and_repo_come_from_every_url_form() {
        let cases = [
            (
                "https://github.com/team/app.git",
                Some(Forge::Github),
                "github.com",
                "team/app",
            ),
            (
                "https://github.com/team/app",
                Some(Forge::Github),
                "github.com",
                "team/app",
            ),
            (
                "git@github.com:team/app.git",
                Some(Forge::Github),
                "github.com",
                "team/app",
            ),
            (
                "ssh://git@gitlab.com:22/grp/sub/app.git",
                Some(Forge::Gitlab),
                "gitlab.com",
                "grp/sub/app",
            ),
            (
                "https://user:pw@codeberg.org/team/app/",
                Some(Forge::Forgejo),
                "codeberg.org",
                "team/app",
            ),
            ("git://host/team/app.git", None, "host", "team/app"),
            ("ssh://[::1]:2222/team/app.git", None, "::1", "team/app"),
            (
                "https://GitHub.com/Team/App.git",
                Some(Forge::Github),
                "github.com",
                "Team/App",
            ),
        ];
        for (url, forge, host, repo) in cases {
            let got = infer(Some(url));
            assert_eq!(got.forge, forge, "{url}");
            assert_eq!(got.host.as_deref(), Some(host), "{url}");
            assert_eq!(got.repo.as_deref(), Some(repo), "{url}");
        }
        let file = infer(Some("file:///srv/git/app.git"));
        assert_eq!((file.forge, file.host), (None, None));
        assert_eq!(file.repo.as_deref(), Some("srv/git/app"));
        assert_eq!(infer(None), Inferred::default());
        assert_eq!(infer(Some("  ")), Inferred::default());
    }

    fn keys(forge: Option<Forge>) -> ForgeKeys {
        ForgeKeys {
            forge,
            forge_token_file: Some("/run/credentials/x/forge-token".into()),
            ..ForgeKeys::default()
        }
    }

    #[test]
    fn each_forge_defaults_to_its_public_api() {
        let github = resolve(&keys(None), Some("git@github.com:o/r.git"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (github.forge, github.api_url.as_str(), github.repo.as_str()),
            (Forge::Github, "https://api.github.com", "o/r")
        );
        let gitlab = resolve(&keys(None), Some("https://gitlab.com/g/s/r"))
            .unwrap()
            .unwrap();
        assert_eq!(gitlab.api_url, "https://gitlab.com/api/v4");
        let codeberg = resolve(&keys(None), Some("https://codeberg.org/o/r"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (codeberg.forge, codeberg.api_url.as_str()),
            (Forge::Forgejo, "https://codeberg.org/api/v1")
        );
        let gitea = resolve(
            &keys(Some(Forge::Gitea)),
            Some("ssh://git@git.example.org/o/r.git"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(gitea.api_url, "https://git.example.org/api/v1");
        let ghe = resolve(&keys(Some(Forge::Github)), Some("https://ghe.corp/o/r"))
            .unwrap()
            .unwrap();
        assert_eq!(ghe.api_url, "https://ghe.corp/api/v3");
        assert_eq!(ghe.check_statuses, DEFAULT_CHECK_STATUSES);
    }

    #[test]
    fn explicit_keys_win_and_missing_ones_are_named() {
        let mut explicit = keys(Some(Forge::Gitea));
        explicit.forge_api_url = Some("http://127.0.0.1:3000/api/v1/".into());
        explicit.forge_repo = Some("team/app".into());
        let target = resolve(&explicit, None).unwrap().unwrap();
        assert_eq!(target.api_url, "http://127.0.0.1:3000/api/v1");
        assert_eq!(target.repo, "team/app");

        assert_eq!(
            resolve(&ForgeKeys::default(), Some("https://github.com/o/r")),
            Ok(None)
        );
        let err = |k: &ForgeKeys| resolve(k, None).unwrap_err().key;
        assert_eq!(err(&keys(None)), "forge");
        assert_eq!(err(&keys(Some(Forge::Forgejo))), "forge_api_url");
        assert_eq!(err(&keys(Some(Forge::Github))), "forge_repo");
        let no_token = ForgeKeys {
            forge: Some(Forge::Github),
            ..ForgeKeys::default()
        };
        assert_eq!(err(&no_token), "forge_token_file");
        let mut bad_repo = keys(Some(Forge::Github));
        bad_repo.forge_repo = Some("a/b/c".into());
        assert_eq!(err(&bad_repo), "forge_repo");
        let mut nested = keys(Some(Forge::Gitlab));
        nested.forge_repo = Some("a/b/c".into());
        assert!(resolve(&nested, None).is_ok());
        bad_repo.forge_repo = Some("o/../x".into());
        assert_eq!(err(&bad_repo), "forge_repo");
        let mut too_many = keys(Some(Forge::Gitlab));
        too_many.forge_repo = Some("a/b".into());
        too_many.forge_check_statuses = Some(MAX_CHECK_STATUSES + 1);
        assert_eq!(err(&too_many), "forge_check_statuses");
        let mut bad_url = keys(Some(Forge::Github));
        bad_url.forge_repo = Some("a/b".into());
        bad_url.forge_api_url = Some("ftp://x".into());
        assert_eq!(err(&bad_url), "forge_api_url");
    }

    #[test]
    fn tokens_are_one_trimmed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, " ghp_abc\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "ghp_abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).unwrap_err().contains("empty"));
        std::fs::write(&path, "a\nb\n").unwrap();
        let err = read_token(&path).unwrap_err();
        assert!(err.contains("more than one"), "{err}");
    }

    #[test]
    fn forge_keys_are_validated_naming_the_repository_and_key() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            let token = jail.directory().join("forge-token");
            std::fs::write(&token, "ghp_0123456789\n").unwrap();
            std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let repo = |extra: &str| {
                format!(
                    "[repos.app]\nforge_token_file = \"{}\"\n{extra}",
                    token.display()
                )
            };
            jail.create_file(
                "ok.toml",
                &repo("forge = \"gitlab\"\nforge_repo = \"g/s/app\"\n"),
            )?;
            let config = load_in(jail, Some("ok.toml")).unwrap();
            assert_eq!(config.repos["app"].forge, Some(Forge::Gitlab));

            let cases = [
                (
                    "forge = \"gitea\"\nforge_repo = \"o/r\"\n",
                    "repos.app.forge_api_url",
                ),
                ("forge = \"github\"\n", "repos.app.forge_repo"),
                ("forge_repo = \"o/r\"\n", "repos.app.forge"),
                (
                    "forge = \"github\"\nforge_repo = \"o/r\"\nforge_check_statuses = 5000\n",
                    "repos.app.forge_check_statuses",
                ),
            ];
            for (extra, key) in cases {
                jail.create_file("bad.toml", &repo(extra))?;
                let err = load_in(jail, Some("bad.toml")).unwrap_err().to_string();
                assert!(err.contains(&format!("`{key}`")), "{extra}: {err}");
            }
            jail.create_file("enum.toml", &repo("forge = \"bitbucket\"\n"))?;
            let err = load_in(jail, Some("enum.toml")).unwrap_err().to_string();
            assert!(err.contains("bitbucket"), "{err}");

            std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            jail.create_file(
                "exposed.toml",
                &repo("forge = \"github\"\nforge_repo = \"o/r\"\n"),
            )?;
            let err = load_in(jail, Some("exposed.toml")).unwrap_err().to_string();
            assert!(
                err.contains("repos.app.forge_token_file") && err.contains("0644"),
                "{err}"
            );
            assert!(!err.contains("ghp_0123456789"), "{err}");
            // Built elsewhere (the module's build): the file is not read.
            let path = jail.directory().join("exposed.toml");
            assert!(Config::load_checking(Some(&path), RuntimeFiles::Skip).is_ok());
            Ok(())
        });
    }
}
