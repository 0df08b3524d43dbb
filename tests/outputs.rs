//! Every output category nix reports is listed for a build, and a build
//! that passed without testing anything says so in every list (issue 24).
//! Real pushes of flakes shaped like flake-utils and nixpkgs.lib (written
//! inline: nothing can be fetched here) and real `nix flake check`.

mod common;

use common::{Daemon, Work, nonce};
use serde_json::Value;

/// A flake shaped like flake-utils: a `lib` of functions, templates,
/// overlays, a formatter, and no checks at all.
fn flake_utils_like(marker: &str) -> String {
    format!(
        r#"{{
  outputs = {{ self }}:
    let
      drv = derivation {{ name = "fmt-{marker}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo ok > $out" ]; }};
      eachSystem = systems: f: builtins.listToAttrs (map (s: {{ name = s; value = f s; }}) systems);
    in {{
      lib = {{ inherit eachSystem; defaultSystems = [ "x86_64-linux" "aarch64-linux" ]; }};
      templates.default = {{ path = ./.; description = "a template"; }};
      overlays.default = final: prev: {{ }};
      nixosModules.default = {{ }};
      formatter.x86_64-linux = drv;
    }};
}}
"#
    )
}

fn categories(build: &Value) -> Vec<String> {
    let mut keys: Vec<String> = build["outputs"]
        .as_object()
        .unwrap_or_else(|| panic!("no outputs: {build}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[test]
fn every_output_category_is_listed_and_nothing_tested_is_not_a_plain_pass() {
    let daemon = Daemon::start("");
    daemon.create_repo("utils");
    let work = Work::clone(&daemon.repo_path("utils"));
    std::fs::write(
        work.path().join("flake.nix"),
        flake_utils_like(&nonce("utils")),
    )
    .unwrap();
    let commit = work.commit("a flake like flake-utils");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(
        categories(&build),
        ["formatter", "lib", "nixosModules", "overlays", "templates"],
        "{build}"
    );
    assert_eq!(build["outputs"]["lib"], serde_json::json!([]), "{build}");
    assert_eq!(
        build["outputs"]["formatter"],
        serde_json::json!({"x86_64-linux": []})
    );
    assert_eq!(
        build["outputs"]["templates"],
        serde_json::json!(["default"])
    );
    // Passed, nothing tested: in the build, the builds list, the
    // repository's branches and the repository list.
    assert_eq!(build["nothing_tested"], true, "{build}");
    let listed = daemon.builds().into_iter().find(|b| b["id"] == id).unwrap();
    assert_eq!(listed["nothing_tested"], true, "{listed}");
    let (_, view) = daemon.get("/api/repos/utils");
    assert_eq!(
        view["default_branch"]["latest_build"]["nothing_tested"], true,
        "{view}"
    );
    assert_eq!(
        view["branches"][0]["latest_build"]["nothing_tested"], true,
        "{view}"
    );
    let (_, repos) = daemon.get("/api/repos");
    assert_eq!(
        repos["repos"][0]["last_build"]["nothing_tested"], true,
        "{repos}"
    );

    // A flake with a check for this host tested something.
    let commit = work.commit_flake(&[("ok", &common::ok_script())]);
    work.push(&["HEAD:main"]);
    let tested = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(tested["status"], "success", "{tested}");
    assert_eq!(tested["nothing_tested"], false, "{tested}");
    let (_, view) = daemon.get("/api/repos/utils");
    assert_eq!(
        view["default_branch"]["latest_build"]["nothing_tested"], false,
        "{view}"
    );
}

/// nixpkgs.lib's shape: `outputs = { self }: { lib = …; }`, nothing else.
/// It was "The flake has no outputs"; it has `lib`.
#[test]
fn a_flake_with_only_lib_lists_lib() {
    let daemon = Daemon::start("");
    daemon.create_repo("nixlib");
    let work = Work::clone(&daemon.repo_path("nixlib"));
    std::fs::write(
        work.path().join("flake.nix"),
        format!(
            "{{\n  description = \"{}\";\n  outputs = {{ self }}: {{ lib = {{ id = x: x; }}; }};\n}}\n",
            nonce("lib")
        ),
    )
    .unwrap();
    let commit = work.commit("lib only");
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(categories(&build), ["lib"], "{build}");
    assert_eq!(build["nothing_tested"], true, "{build}");
}
