//! Issue 25, item 2: the cache serves, signs, pushes and roots only what
//! the daemon built. A check's output is its derivation's, as the store
//! records it: an `outPath` pointed at another store path, or a
//! fixed-output derivation whose path was already in the store, claims
//! nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Daemon, NIX_CONFIG, Work, nonce};
use serde_json::Value;

fn nix(args: &[&str]) -> String {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn nix_store(args: &[&str]) -> String {
    let out = Command::new("nix-store")
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-store {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn hash_part(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

/// A daemon serving and pushing a cache signed with a fresh key; returns
/// it and the `file://` target's directory.
fn caching_daemon(dir: &Path) -> (Daemon, std::path::PathBuf) {
    let key = dir.join("key.secret");
    std::fs::write(&key, nix(&["key", "generate-secret", "--key-name", "ci-1"])).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pushed = dir.join("pushed");
    let mut daemon = Daemon::configure(
        dir,
        &format!(
            "cache_serve = true\ncache_secret_key_file = \"{}\"\ncache_push = [\"file://{}\"]\n",
            key.display(),
            pushed.display()
        ),
        &[],
    );
    daemon.spawn();
    (daemon, pushed)
}

/// Waits until build `id`'s outputs are recorded and pushed.
fn wait_cached(daemon: &Daemon, id: i64) -> Value {
    daemon.wait_build(id, Duration::from_secs(120), |b| {
        b["cache"]["pushes"]
            .as_array()
            .and_then(|p| p.first())
            .is_some_and(|p| p["status"] != "pending")
    })
}

/// What the daemon says of store path `path`: served, pushed, rooted.
fn claimed(daemon: &Daemon, pushed: &Path, build: &Value, path: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let (status, _) = daemon.get(&format!("/nix-cache/{}.narinfo", hash_part(path)));
    if status == 200 {
        found.push("served");
    }
    if pushed.join(format!("{}.narinfo", hash_part(path))).exists() {
        found.push("pushed");
    }
    let outputs = build["cache"]["outputs"].to_string();
    if outputs.contains(path) {
        found.push("recorded");
    }
    let roots = daemon
        .state()
        .join("gcroots")
        .join(build["id"].as_i64().unwrap().to_string());
    let rooted = std::fs::read_dir(&roots).into_iter().flatten().any(|link| {
        std::fs::read_link(link.unwrap().path()).is_ok_and(|target| target == Path::new(path))
    });
    if rooted {
        found.push("rooted");
    }
    found
}

#[test]
fn only_outputs_of_derivations_the_daemon_built_are_served_signed_pushed_or_rooted() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let (daemon, pushed) = caching_daemon(dir);
    // Paths that are in the store, built by nobody here: one added as it
    // is, one as a fixed-output derivation's result would be.
    let victim_file = dir.join("victim");
    std::fs::write(&victim_file, format!("victim-{}", nonce("v"))).unwrap();
    let victim = nix_store(&["--add", victim_file.to_str().unwrap()]);
    let fixed_name = format!("fixed-{}", nonce("f"));
    let fixed_file = dir.join(&fixed_name);
    std::fs::write(&fixed_file, format!("fixed-content-{}", nonce("c"))).unwrap();
    let fixed = nix_store(&["--add-fixed", "sha256", fixed_file.to_str().unwrap()]);
    let fixed_hash = nix(&[
        "hash",
        "file",
        "--base16",
        "--type",
        "sha256",
        fixed_file.to_str().unwrap(),
    ]);

    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let drv = |name: &str, script: &str| {
        format!(
            "derivation {{ name = \"{name}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [ \"-c\" \"{script}\" ]; }}"
        )
    };
    let flake = format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux = {{\n      \
         honest = {};\n      \
         forged = {} // {{ outPath = \"{victim}\"; }};\n      \
         fixed = derivation {{ name = \"{fixed_name}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"exit 1\" ]; outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; \
         outputHash = \"{fixed_hash}\"; }};\n    }};\n  }};\n}}\n",
        drv("honest", &format!("echo {} > $out", nonce("h"))),
        drv("forged", &format!("echo {} > $out", nonce("g"))),
    );
    std::fs::write(work.path().join("flake.nix"), flake).unwrap();
    let commit = work.commit("attack");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    let build = wait_cached(&daemon, id);
    let check = |name: &str| {
        build["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {build}"))
            .clone()
    };
    // Neither the path the forged outPath named nor the fixed-output path
    // that was there before the build is claimed.
    assert_eq!(check("fixed")["out_path"], fixed.as_str(), "{build}");
    for path in [&victim, &fixed] {
        assert_eq!(
            claimed(&daemon, &pushed, &build, path),
            Vec::<&str>::new(),
            "{path}: {build}"
        );
    }
    // The forged check's output is its derivation's, which was built.
    let forged = check("forged");
    let forged_out = forged["out_path"].as_str().unwrap();
    assert_ne!(forged_out, victim, "{forged}");
    let recorded = nix_store(&["--query", "--outputs", forged["drv_path"].as_str().unwrap()]);
    assert_eq!(forged_out, recorded, "{forged}");
    assert_eq!(
        claimed(&daemon, &pushed, &build, forged_out),
        ["served", "pushed", "recorded", "rooted"],
        "{build}"
    );
    let honest = check("honest");
    assert_eq!(
        claimed(
            &daemon,
            &pushed,
            &build,
            honest["out_path"].as_str().unwrap()
        ),
        ["served", "pushed", "recorded", "rooted"],
        "{build}"
    );
}
