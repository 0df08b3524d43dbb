//! Log lines cannot be forged (issue 25, item 7): a webhook receiver whose
//! refusal carries newlines, a carriage return and terminal escapes. In the
//! plain and pretty formats the daemon's log keeps it on the one line of
//! the refusal, escaped; no line of the log is the receiver's.

use crate::common::{self, Daemon, Work, nonce};

/// What the receiver answers: text that would read as the daemon's own
/// lines, then erase the terminal's line and colour what follows.
const FORGERY: &str = "refused\nFAKE 2026-01-01T00:00:00Z  INFO procurator_ci::app: Build #1 \
                       passed\r\n\u{1b}[2K\u{1b}[32mFORGED-TOO";

/// The daemon's log in `format` once a finished build's webhook has been
/// refused with [`FORGERY`].
fn log_of_a_refused_webhook(format: &str) -> String {
    let hook = super::receiver(400, FORGERY);
    let daemon = Daemon::start(&format!(
        "log_format = \"{format}\"\n[[notify]]\non = \"finished\"\n\
         url = \"http://127.0.0.1:{hook}/hook\"\n"
    ));
    daemon.create_repo("forged");
    let work = Work::clone(&daemon.repo_path("forged"));
    let commit = work.commit_flake(&[("ok", &common::passing(&nonce("forged")))]);
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &commit));
    super::secrets::log_with_refusals(&daemon)
}

fn assert_not_forged(log: &str) {
    for line in log.lines() {
        assert!(
            !line.starts_with("FAKE") && !line.contains("\u{1b}[2K") && !line.contains('\r'),
            "a forged line: {line:?}"
        );
    }
    let refusal = log
        .lines()
        .find(|l| l.contains("webhook receiver refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(
        refusal.contains("refused\\nFAKE 2026-01-01T00:00:00Z")
            && refusal.contains("passed\\r\\n\\u{1b}[2K\\u{1b}[32mFORGED-TOO"),
        "the receiver's answer is on the refusal's line, escaped: {refusal}"
    );
}

#[test]
fn a_remote_answer_cannot_forge_plain_log_lines() {
    let log = log_of_a_refused_webhook("auto");
    assert_not_forged(&log);
    assert!(!log.contains('\u{1b}'), "the plain format has no escapes");
}

#[test]
fn a_remote_answer_cannot_forge_pretty_log_lines() {
    assert_not_forged(&log_of_a_refused_webhook("pretty"));
}
