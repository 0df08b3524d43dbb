//! Property-based fuzzing of everything that parses input from outside:
//! repository names, branch names and commit ids, the hook's stdin, the API's
//! JSON bodies and query strings (through the real router, in process),
//! configuration files, and the read cookie's `Cookie` header.
//!
//! Each target runs `PROCURATOR_FUZZ_CASES` cases (default 2000, the short
//! pass CI runs). The long pass is documented in docs/reliability.md:
//!
//! ```sh
//! PROCURATOR_FUZZ_CASES=1000000 cargo test --release --test fuzz
//! ```
//!
//! The variable deliberately does not start with `PROCURATOR_CI_`: the
//! configuration reads every such variable as a key.
//!
//! Every property is checked against an oracle written here from the
//! documented rules (README.md "Repositories and the hook", git's
//! `check-ref-format`), not against the code under test; the branch oracle
//! is itself cross-checked against the real `git check-ref-format`.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

mod api;
#[path = "../common/mod.rs"]
mod common;
mod config_files;
mod cookie;
mod hook;
mod names;

/// Cases per target: `PROCURATOR_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("PROCURATOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fuzz.regressions",
        ))),
        // Shrinking a million-case run may take long; a failure is reported
        // with its (shrunk) input either way.
        max_shrink_iters: 10_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators

/// Pieces that make the interesting structures of names and refs.
const TOKENS: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    ".",
    "..",
    "/",
    "//",
    ".git",
    ".GIT",
    ".lock",
    "@",
    "@{",
    "{",
    "}",
    "HEAD",
    "refs/",
    "refs/heads/",
    "~",
    "^",
    ":",
    "?",
    "*",
    "[",
    "\\",
    " ",
    "\t",
    "\n",
    "\r",
    "\0",
    "\u{7f}",
    "é",
    "е",
    "Ａ",
    "%2e",
    "%2F",
    "'",
    "\"",
    ";",
    "$(id)",
    "`",
    "&",
    "|",
    "#",
    "=",
    "+",
    ",",
    "!",
];

/// Strings biased towards the edges of the grammars: token soup, the
/// grammar's own alphabet, printable ASCII, and any Unicode.
pub(crate) fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(TOKENS), 0..10).prop_map(|t| t.concat()),
        3 => "[A-Za-z0-9._-]{0,110}",
        2 => "[ -~]{0,40}",
        1 => "[a-z0-9./@{}~^:-]{0,300}",
        1 => any::<String>(),
        1 => "\\PC{0,130}",
    ]
}

pub(crate) fn hex_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9a-f]{38,42}",
        2 => "[0-9a-f]{62,66}",
        2 => "[0-9a-fA-F]{40}",
        1 => "[0-9a-g]{40}",
        1 => "0{40}",
        1 => name_like(),
    ]
}
