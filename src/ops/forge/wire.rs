//! Each forge's commit status request, as its API documents it: the path,
//! the headers, the JSON fields and the states it accepts.

use serde_json::{Value, json};

use crate::config::{Forge, ForgeTarget};

/// Longest description GitHub accepts (the others take more); longer ones
/// are cut, at a character boundary, with an ellipsis.
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The build context; a check's is `procurator-ci/<check>`.
pub const CONTEXT: &str = "procurator-ci";

/// The one status a build with more checks than its cap posts for them.
pub const SUMMARY_CONTEXT: &str = "procurator-ci/checks";

/// GitHub's REST API version the requests are written against.
pub const GITHUB_API_VERSION: &str = "2022-11-28";

/// A status in our terms; each forge has its own word for most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    Success,
    /// The code's fault: a check failed, the flake does not evaluate.
    Failure,
    /// Not the code's: the host, the network or the CI failed.
    Error,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Running,
            State::Success,
            State::Failure,
            State::Error,
            State::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The word `forge` has for it. GitHub, Gitea and Forgejo know no
    /// "running" (a running build stays pending) nor "cancelled" (an
    /// error: it was not tested); GitLab has both, and calls a failure
    /// "failed".
    pub fn on(self, forge: Forge) -> &'static str {
        match (forge, self) {
            (Forge::Gitlab, State::Running) => "running",
            (Forge::Gitlab, State::Failure | State::Error) => "failed",
            (Forge::Gitlab, State::Cancelled) => "canceled",
            (_, State::Pending | State::Running) => "pending",
            (_, State::Success) => "success",
            (_, State::Failure) => "failure",
            (_, State::Error | State::Cancelled) => "error",
        }
    }
}

/// `text` on one line (runs of whitespace, newlines included, made one
/// space) and cut to [`MAX_DESCRIPTION_CHARS`] characters, never inside
/// one.
pub fn description(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = text.as_str();
    if text.chars().count() <= MAX_DESCRIPTION_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// One status to post.
#[derive(Debug, Clone)]
pub struct Status<'a> {
    pub sha: &'a str,
    pub context: &'a str,
    pub state: State,
    pub description: &'a str,
    pub target_url: &'a str,
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    /// Headers besides `Content-Type: application/json` and `User-Agent`;
    /// the token is among them, so they are never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// A path segment with everything but unreserved characters escaped
/// (GitLab names a project by its URL-encoded path: `owner%2Fname`).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request that posts `status` to `target` with `token`.
pub fn request(target: &ForgeTarget, token: &str, status: &Status<'_>) -> Request {
    let api = target.api_url.trim_end_matches('/');
    let state = status.state.on(target.forge);
    match target.forge {
        Forge::Github => Request {
            url: format!("{api}/repos/{}/statuses/{}", target.repo, status.sha),
            headers: vec![
                ("Accept", "application/vnd.github+json".into()),
                ("Authorization", format!("Bearer {token}")),
                ("X-GitHub-Api-Version", GITHUB_API_VERSION.into()),
            ],
            body: json!({
                "state": state,
                "target_url": status.target_url,
                "description": status.description,
                "context": status.context,
            }),
        },
        Forge::Gitea | Forge::Forgejo => Request {
            url: format!("{api}/repos/{}/statuses/{}", target.repo, status.sha),
            headers: vec![
                ("Accept", "application/json".into()),
                ("Authorization", format!("token {token}")),
            ],
            body: json!({
                "state": state,
                "target_url": status.target_url,
                "description": status.description,
                "context": status.context,
            }),
        },
        Forge::Gitlab => Request {
            url: format!(
                "{api}/projects/{}/statuses/{}",
                encode_segment(&target.repo),
                status.sha
            ),
            headers: vec![
                ("Accept", "application/json".into()),
                ("PRIVATE-TOKEN", token.to_string()),
            ],
            body: json!({
                "state": state,
                "target_url": status.target_url,
                "description": status.description,
                "name": status.context,
            }),
        },
    }
}

/// Whether GitLab refused a status because the context is in that state
/// already (it answers 400 "Cannot transition status via :run from
/// :running"): what a retry of a post that arrived looks like, so it
/// counts as delivered.
pub fn already_in_state(forge: Forge, http_status: u16, body: &str) -> bool {
    forge == Forge::Gitlab && http_status == 400 && body.contains("Cannot transition status")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(forge: Forge, api: &str, repo: &str) -> ForgeTarget {
        ForgeTarget {
            forge,
            api_url: api.into(),
            repo: repo.into(),
            token_file: "/t".into(),
            check_statuses: 25,
        }
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn status(state: State) -> Status<'static> {
        Status {
            sha: SHA,
            context: "procurator-ci/fmt",
            state,
            description: "A check failed",
            target_url: "http://ci/#/builds/3",
        }
    }

    #[test]
    fn every_state_maps_to_one_the_forge_accepts() {
        let all = [
            State::Pending,
            State::Running,
            State::Success,
            State::Failure,
            State::Error,
            State::Cancelled,
        ];
        for state in all {
            assert!(["pending", "success", "failure", "error"].contains(&state.on(Forge::Github)));
            assert!(
                ["pending", "success", "failure", "error", "warning"]
                    .contains(&state.on(Forge::Forgejo))
            );
            assert!(
                ["pending", "running", "success", "failed", "canceled"]
                    .contains(&state.on(Forge::Gitlab))
            );
            assert_eq!(State::parse(state.as_str()), Some(state));
        }
        assert_eq!(State::Running.on(Forge::Gitlab), "running");
        assert_eq!(State::Running.on(Forge::Github), "pending");
        assert_eq!(State::Failure.on(Forge::Gitlab), "failed");
        assert_eq!(State::Cancelled.on(Forge::Gitea), "error");
    }

    #[test]
    fn requests_follow_each_forges_documentation() {
        let github = request(
            &target(Forge::Github, "https://api.github.com", "o/r"),
            "tok",
            &status(State::Failure),
        );
        assert_eq!(
            github.url,
            format!("https://api.github.com/repos/o/r/statuses/{SHA}")
        );
        assert!(
            github
                .headers
                .contains(&("Authorization", "Bearer tok".into()))
        );
        assert_eq!(github.body["context"], "procurator-ci/fmt");
        assert_eq!(github.body["state"], "failure");

        let gitea = request(
            &target(Forge::Gitea, "https://git.example/api/v1", "o/r"),
            "tok",
            &status(State::Running),
        );
        assert_eq!(
            gitea.url,
            format!("https://git.example/api/v1/repos/o/r/statuses/{SHA}")
        );
        assert!(
            gitea
                .headers
                .contains(&("Authorization", "token tok".into()))
        );
        assert_eq!(gitea.body["state"], "pending");

        let gitlab = request(
            &target(Forge::Gitlab, "https://gitlab.com/api/v4", "g/sub/r"),
            "tok",
            &status(State::Cancelled),
        );
        assert_eq!(
            gitlab.url,
            format!("https://gitlab.com/api/v4/projects/g%2Fsub%2Fr/statuses/{SHA}")
        );
        assert!(gitlab.headers.contains(&("PRIVATE-TOKEN", "tok".into())));
        assert_eq!(gitlab.body["name"], "procurator-ci/fmt");
        assert!(gitlab.body.get("context").is_none());
        assert_eq!(gitlab.body["state"], "canceled");
    }

    #[test]
    fn descriptions_are_cut_at_a_character() {
        assert_eq!(description(" short "), "short");
        assert_eq!(description("two\nlines\t here"), "two lines here");
        let long = "é".repeat(200);
        let cut = description(&long);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(MAX_DESCRIPTION_CHARS);
        assert_eq!(description(&exact), exact);
    }

    #[test]
    fn gitlab_repeats_are_recognised() {
        let body = r#"{"message":"Cannot transition status via :run from :running"}"#;
        assert!(already_in_state(Forge::Gitlab, 400, body));
        assert!(!already_in_state(Forge::Github, 400, body));
        assert!(!already_in_state(Forge::Gitlab, 422, body));
    }
}
