//! The read cookie's `Cookie` header.

use std::sync::OnceLock;

use proptest::prelude::*;

use crate::config;

fn read_token() -> &'static procurator_ci::http::auth::Token {
    // Its own directory: the configuration target checks that loading
    // creates nothing in scratch(), while this one may be creating the token.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static TOKEN: OnceLock<procurator_ci::http::auth::Token> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        procurator_ci::http::auth::Token::load(None, &dir.path().join("api-token"))
            .unwrap()
            .0
    })
}

/// One `name=value` of a `Cookie` header: names near ours, values of
/// printable ASCII (hex among them), stray spaces and `=`.
fn cookie_pair() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("procurator_ci_read".to_string()),
        Just("procurator_ci_read ".to_string()),
        Just("Procurator_ci_read".to_string()),
        Just("procurator_ci_rea".to_string()),
        "[a-z_]{1,20}",
    ];
    let value = prop_oneof!["[0-9a-f]{0,70}", "[ -:<-~]{0,40}"];
    (name, value, any::<bool>()).prop_map(|(n, v, spaced)| {
        if spaced {
            format!(" {n}= {v} ")
        } else {
            format!("{n}={v}")
        }
    })
}

/// The documented rule: some `;`-separated pair of the header is exactly
/// `procurator_ci_read=<the token's cookie>`, give or take the spaces
/// around the pair.
fn cookie_ok(header: &str, expected: &str) -> bool {
    header
        .split(';')
        .any(|pair| pair.trim() == format!("procurator_ci_read={expected}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cookie_headers_admit_only_the_exact_read_cookie(
        before in prop::collection::vec(cookie_pair(), 0..4),
        after in prop::collection::vec(cookie_pair(), 0..4),
        change in prop::option::of((any::<prop::sample::Index>(), "[ -~]")),
        noise in "\\PC{0,120}",
    ) {
        let token = read_token();
        let expected = token.read_cookie();
        // The right value, or one with a character replaced.
        let mut value = expected.to_string();
        if let Some((at, with)) = change {
            let i = at.index(value.len());
            value.replace_range(i..=i, &with);
        }
        let mut pairs = before;
        pairs.push(format!("procurator_ci_read={value}"));
        pairs.extend(after);
        for header in [pairs.join(";"), pairs.join("; "), noise] {
            prop_assert_eq!(
                token.accepts_read_cookie(Some(&header)),
                cookie_ok(&header, expected),
                "{:?}", header
            );
        }
        if value == expected {
            prop_assert!(token.accepts_read_cookie(Some(&pairs.join("; "))));
        }
    }
}
