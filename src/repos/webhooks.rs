//! Forge webhooks: which forge sent a delivery, whether its signature holds
//! (GitHub's `X-Hub-Signature-256`, Forgejo's and Gitea's bare-hex
//! HMAC-SHA256, GitLab's `X-Gitlab-Token`), its delivery id and its event.
//! Pure: the secret and the headers in, a verdict out. A delivery only
//! tells the daemon to look at the upstream now; nothing in its body is
//! trusted or read.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The forge a delivery claims to come from, by its signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Forgejo,
    Gitea,
    GitLab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Forgejo => "forgejo",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }

    /// The headers of this forge: signature, delivery id, event.
    fn headers(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Forge::GitHub => ("x-hub-signature-256", "x-github-delivery", "x-github-event"),
            Forge::Forgejo => (
                "x-forgejo-signature",
                "x-forgejo-delivery",
                "x-forgejo-event",
            ),
            Forge::Gitea => ("x-gitea-signature", "x-gitea-delivery", "x-gitea-event"),
            Forge::GitLab => ("x-gitlab-token", "x-gitlab-event-uuid", "x-gitlab-event"),
        }
    }
}

/// A delivery whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub forge: Forge,
    /// The forge's id of this delivery (a redelivery repeats it).
    pub id: Option<String>,
    /// The event's name as the forge sends it (`push`, `pull_request`,
    /// `Push Hook`, `ping`, …).
    pub event: String,
}

impl Delivery {
    /// A forge's test delivery, answered and otherwise ignored.
    pub fn is_ping(&self) -> bool {
        self.event == "ping"
    }
}

/// What a pull (merge) request event asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    /// Opened, updated or reopened: build its head as the upstream has it.
    Build,
    /// Closed or merged: its queued and running builds are cancelled.
    Close,
}

/// A pull or merge request event, read from a verified delivery's body:
/// which request, what happened, and whether its head lives in a fork.
/// Never a commit: the head is fetched from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullEvent {
    pub number: u64,
    /// `refs/pull/<n>/head`, or GitLab's `refs/merge-requests/<n>/head`.
    pub head_ref: String,
    pub action: PullAction,
    /// The head is in another repository than the base (or in one that is
    /// gone): its code is not the project's.
    pub fork: bool,
}

/// The pull request event in `body`, when `delivery` is one this daemon
/// acts on (opened, updated, reopened, closed); `None` for anything else.
pub fn pull_event(delivery: &Delivery, body: &[u8]) -> Option<PullEvent> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    match delivery.forge {
        Forge::GitLab => {
            if delivery.event != "Merge Request Hook" {
                return None;
            }
            let attributes = &json["object_attributes"];
            let action = match attributes["action"].as_str()? {
                "open" | "reopen" | "update" => PullAction::Build,
                "close" | "merge" => PullAction::Close,
                _ => return None,
            };
            let number = attributes["iid"].as_u64()?;
            let (source, target) = (
                &attributes["source_project_id"],
                &attributes["target_project_id"],
            );
            Some(PullEvent {
                number,
                head_ref: format!("refs/merge-requests/{number}/head"),
                action,
                fork: source.is_null() || source != target,
            })
        }
        Forge::GitHub | Forge::Gitea | Forge::Forgejo => {
            if !matches!(
                delivery.event.as_str(),
                "pull_request" | "pull_request_sync"
            ) {
                return None;
            }
            let action = match json["action"].as_str()? {
                // GitHub says `synchronize`, Gitea and Forgejo `synchronized`.
                "opened" | "synchronize" | "synchronized" | "reopened" => PullAction::Build,
                "closed" => PullAction::Close,
                _ => return None,
            };
            let pull = &json["pull_request"];
            let number = json["number"]
                .as_u64()
                .or_else(|| pull["number"].as_u64())?;
            let repo_of = |side: &str| {
                let repo = &pull[side]["repo"];
                repo["full_name"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| repo["id"].as_u64().map(|id| id.to_string()))
            };
            let (head, base) = (repo_of("head"), repo_of("base"));
            Some(PullEvent {
                number,
                head_ref: format!("refs/pull/{number}/head"),
                action,
                fork: head.is_none() || head != base,
            })
        }
    }
}

/// Why a delivery is refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "no signature: send X-Hub-Signature-256 (GitHub), X-Forgejo-Signature (Forgejo), \
         X-Gitea-Signature (Gitea) or X-Gitlab-Token (GitLab)"
    )]
    Unsigned,
    #[error("the {0} signature does not match the repository's webhook secret")]
    BadSignature(&'static str),
}

/// Checks a delivery of `body` with `headers` (lookup by lower-case name)
/// against `secret`. The first signature header present decides: Forgejo
/// and Gitea also send GitHub's header, which then decides for them.
pub fn verify<'a>(
    headers: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    secret: &[u8],
) -> Result<Delivery, Refused> {
    for forge in [Forge::GitHub, Forge::Forgejo, Forge::Gitea, Forge::GitLab] {
        let (signature, delivery, event) = forge.headers();
        let Some(given) = headers(signature) else {
            continue;
        };
        let holds = match forge {
            Forge::GitHub => given
                .strip_prefix("sha256=")
                .is_some_and(|hex| hmac_matches(secret, body, hex)),
            Forge::Forgejo | Forge::Gitea => hmac_matches(secret, body, given),
            Forge::GitLab => bool::from(given.as_bytes().ct_eq(trim_secret(secret))),
        };
        if !holds {
            return Err(Refused::BadSignature(forge.as_str()));
        }
        // Forgejo and Gitea send GitHub's headers too; their own name the
        // forge best.
        let forge = if forge == Forge::GitHub && headers("x-forgejo-event").is_some() {
            Forge::Forgejo
        } else if forge == Forge::GitHub && headers("x-gitea-event").is_some() {
            Forge::Gitea
        } else {
            forge
        };
        let (_, delivery_header, event_header) = forge.headers();
        let id = headers(delivery_header)
            .or_else(|| headers(delivery))
            .map(|id| id.chars().take(128).collect());
        let event = headers(event_header)
            .or_else(|| headers(event))
            .unwrap_or_default()
            .chars()
            .take(64)
            .collect();
        return Ok(Delivery { forge, id, event });
    }
    Err(Refused::Unsigned)
}

/// A secret file's final newline is not part of the secret the forge
/// was given.
fn trim_secret(secret: &[u8]) -> &[u8] {
    let end = secret
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &secret[..end]
}

/// Whether `hex` is the HMAC-SHA256 of `body` under `secret`, compared in
/// constant time.
fn hmac_matches(secret: &[u8], body: &[u8], hex: &str) -> bool {
    let Some(given) = decode_hex(hex.trim()) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(trim_secret(secret)).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The HMAC-SHA256 of `body` under `secret`, as lower-case hex: what a
/// forge signs a delivery with.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(trim_secret(secret)).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn each_forge_signature_is_checked() {
        let secret = b"It's a Secret to Everybody\n";
        let body = b"Hello, World!";
        let hex = sign(secret, body);
        // GitHub's documented example of this secret and body.
        assert_eq!(
            hex,
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let gh = format!("sha256={hex}");
        let ok = [
            (
                vec![
                    ("x-hub-signature-256", gh.as_str()),
                    ("x-github-event", "push"),
                    ("x-github-delivery", "d1"),
                ],
                Forge::GitHub,
            ),
            (
                vec![
                    ("x-gitea-signature", hex.as_str()),
                    ("x-gitea-event", "push"),
                ],
                Forge::Gitea,
            ),
            (
                vec![
                    ("x-forgejo-signature", hex.as_str()),
                    ("x-forgejo-event", "push"),
                ],
                Forge::Forgejo,
            ),
            (
                vec![
                    ("x-gitlab-token", "It's a Secret to Everybody"),
                    ("x-gitlab-event", "Push Hook"),
                ],
                Forge::GitLab,
            ),
        ];
        for (headers, forge) in ok {
            let delivery = verify(lookup(&headers), body, secret).unwrap();
            assert_eq!(delivery.forge, forge);
        }
        let bad = format!("sha256={}", "0".repeat(64));
        for headers in [
            vec![("x-hub-signature-256", bad.as_str())],
            vec![("x-hub-signature-256", hex.as_str())],
            vec![("x-gitea-signature", &bad[7..])],
            vec![("x-forgejo-signature", "zz")],
            vec![("x-gitlab-token", "It's a Secret")],
        ] {
            assert!(
                matches!(
                    verify(lookup(&headers), body, secret),
                    Err(Refused::BadSignature(_))
                ),
                "{headers:?}"
            );
        }
        assert_eq!(verify(lookup(&[]), body, secret), Err(Refused::Unsigned));
        // The body signed is the body checked.
        let headers = [("x-hub-signature-256", gh.as_str())];
        assert!(verify(lookup(&headers), b"Hello, World?", secret).is_err());
    }

    #[test]
    fn pull_request_events_name_their_ref_action_and_fork() {
        let github = Delivery {
            forge: Forge::GitHub,
            id: None,
            event: "pull_request".into(),
        };
        let body = br#"{"action":"synchronize","number":7,"pull_request":{"head":{"repo":{"full_name":"me/app"}},"base":{"repo":{"full_name":"team/app"}}}}"#;
        assert_eq!(
            pull_event(&github, body),
            Some(PullEvent {
                number: 7,
                head_ref: "refs/pull/7/head".into(),
                action: PullAction::Build,
                fork: true
            })
        );
        let same = br#"{"action":"closed","number":8,"pull_request":{"head":{"repo":{"full_name":"team/app"}},"base":{"repo":{"full_name":"team/app"}}}}"#;
        let event = pull_event(&github, same).unwrap();
        assert_eq!((event.action, event.fork), (PullAction::Close, false));
        let gone = br#"{"action":"opened","number":9,"pull_request":{"head":{"repo":null},"base":{"repo":{"full_name":"team/app"}}}}"#;
        assert!(pull_event(&github, gone).unwrap().fork);
        let labeled = br#"{"action":"labeled","number":9}"#;
        assert_eq!(pull_event(&github, labeled), None);
        let gitlab = Delivery {
            forge: Forge::GitLab,
            id: None,
            event: "Merge Request Hook".into(),
        };
        let body = br#"{"object_kind":"merge_request","object_attributes":{"iid":3,"action":"open","source_project_id":15,"target_project_id":15}}"#;
        let event = pull_event(&gitlab, body).unwrap();
        assert_eq!(
            (event.head_ref.as_str(), event.fork),
            ("refs/merge-requests/3/head", false)
        );
    }

    #[test]
    fn forgejo_sending_githubs_header_is_forgejo() {
        let hex = sign(b"k", b"{}");
        let gh = format!("sha256={hex}");
        let headers = [
            ("x-hub-signature-256", gh.as_str()),
            ("x-forgejo-event", "push"),
            ("x-forgejo-delivery", "f-1"),
            ("x-github-delivery", "f-1"),
        ];
        let d = verify(lookup(&headers), b"{}", b"k").unwrap();
        assert_eq!(
            (d.forge, d.id.as_deref(), d.event.as_str()),
            (Forge::Forgejo, Some("f-1"), "push")
        );
    }
}
