//! The hook's stdin: git's post-receive lines, disturbed.

use std::path::Path;

use proptest::prelude::*;

use crate::{config, hex_like, name_like};

/// git's post-receive input: `<old> <new> <ref>` lines, with the separators
/// and fields disturbed.
fn hook_input() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        3 => hex_like(),
        1 => Just("0".repeat(40)),
        1 => Just(String::new()),
    ];
    let refname = prop_oneof![
        3 => name_like().prop_map(|b| format!("refs/heads/{b}")),
        1 => name_like().prop_map(|b| format!("refs/tags/{b}")),
        1 => name_like(),
    ];
    let sep = prop_oneof![5 => Just(" "), 1 => Just("  "), 1 => Just("\t"), 1 => Just("")];
    let end = prop_oneof![5 => Just("\n"), 1 => Just("\r\n"), 1 => Just(""), 1 => Just(" \n")];
    let line = (field.clone(), sep.clone(), field, sep, refname, end)
        .prop_map(|(a, s1, b, s2, r, e)| format!("{a}{s1}{b}{s2}{r}{e}"));
    prop_oneof![
        4 => prop::collection::vec(line, 0..8).prop_map(|l| l.concat()),
        1 => any::<String>(),
    ]
}

/// The documented parse: lines of exactly three space-separated fields,
/// branches only, no deletions.
fn expected_updates(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in input.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() != 3 {
            continue;
        }
        let Some(branch) = fields[2].strip_prefix("refs/heads/") else {
            continue;
        };
        if fields[1].is_empty() || fields[1].chars().all(|c| c == '0') {
            continue;
        }
        out.push((branch.to_string(), fields[1].to_string()));
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hook_input_parses_to_exactly_the_branch_updates(input in hook_input()) {
        let got: Vec<(String, String)> = procurator_ci::repos::hook::parse_updates(&input)
            .into_iter()
            .map(|u| (u.branch, u.commit))
            .collect();
        prop_assert_eq!(got, expected_updates(&input));
    }

    /// The whole hook with any bytes on stdin and no daemon: it returns,
    /// and tells the pusher about each update it could not queue and each
    /// tag it does not build.
    #[test]
    fn hook_never_fails_on_any_input(raw in prop_oneof![
        3 => hook_input().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]) {
        let socket = Path::new("/nonexistent/procurator-ci-fuzz.sock");
        let mut out = Vec::new();
        procurator_ci::repos::hook::post_receive(socket, "repo", &mut raw.as_slice(), &mut out);
        let text = String::from_utf8(out).expect("the hook prints UTF-8");
        let updates = procurator_ci::repos::hook::parse_updates(&String::from_utf8_lossy(&raw));
        let tags = procurator_ci::repos::hook::pushed_tags(&String::from_utf8_lossy(&raw));
        prop_assert_eq!(text.lines().count(), updates.len() + tags.len(), "{}", text);
        for line in text.lines() {
            prop_assert!(
                line.starts_with("procurator-ci: warning: cannot reach")
                    || line.starts_with("procurator-ci: tag "),
                "{}",
                line
            );
        }
    }
}
