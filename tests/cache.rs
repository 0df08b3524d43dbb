//! The binary cache with real nix: signed pushes to a `file://` cache,
//! substitution from the daemon's `/nix-cache/` into an empty chroot store,
//! only what the daemon built, and a cache that is down.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Daemon, NIX_CONFIG, Work, nonce, run_ok};
use serde_json::Value;

fn nix(args: &[&str]) -> Command {
    let mut command = Command::new("nix");
    command.args(args).env("NIX_CONFIG", NIX_CONFIG);
    command
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// A fresh signing key under `dir`: (secret key file, public key).
fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = run_ok(&mut nix(&["key", "generate-secret", "--key-name", name]));
    let path = dir.join(format!("{name}.secret"));
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = run_ok(
        nix(&["key", "convert-secret-to-public"]).stdin(std::fs::File::open(&path).unwrap()),
    );
    (path, public.trim().to_string())
}

fn cache_config(key: &Path, extra: &str) -> String {
    format!("cache_secret_key_file = \"{}\"\n{extra}\n", key.display())
}

/// Pushes a flake whose one check writes a unique output; returns the
/// finished build and the output path.
fn build_unique(daemon: &Daemon, work: &Work, label: &str) -> (Value, String) {
    let n = nonce(label);
    let commit = work.commit_flake(&[("ok", &format!("echo {n} > $out"))]);
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "success", "{build}");
    let out = build["checks"][0]["out_path"]
        .as_str()
        .unwrap_or_else(|| panic!("no out_path: {build}"))
        .to_string();
    (build, out)
}

/// Waits until the build's push to its one target satisfies `done`.
fn wait_push(daemon: &Daemon, id: i64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    daemon.wait_build(id, timeout, |b| {
        b["cache"]["pushes"]
            .as_array()
            .and_then(|p| p.first())
            .is_some_and(&done)
    })
}

fn hash_of(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

fn metric(daemon: &Daemon, line_start: &str) -> f64 {
    let (_, text) = daemon.request_text("GET", "/metrics", None, None);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_green_build_is_pushed_signed_and_served_only_with_its_closure() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = key(tmp.path(), "ci-test-1");
    let (_, other_public) = key(tmp.path(), "ci-other-1");
    let pushed = tmp.path().join("pushed");
    let daemon = Daemon::start(&cache_config(
        &secret,
        &format!(
            "cache_serve = true\ncache_push = [\"file://{}\"]",
            pushed.display()
        ),
    ));
    let (_, health) = daemon.get("/api/health");
    assert_eq!(health["cache"]["public_key"], public.as_str(), "{health}");

    daemon.create_repo("cached");
    let work = Work::clone(&daemon.repo_path("cached"));
    let (build, out) = build_unique(&daemon, &work, "cache");
    let id = build["id"].as_i64().unwrap();
    let build = wait_push(&daemon, id, Duration::from_secs(60), |p| {
        p["status"] == "pushed"
    });
    assert_eq!(
        build["cache"]["outputs"][0]["path"],
        out.as_str(),
        "{build}"
    );
    assert_eq!(build["cache"]["rooted"], true);
    let root = daemon.state().join(format!("gcroots/{id}/ok.out"));
    assert_eq!(std::fs::read_link(&root).unwrap(), Path::new(&out));

    // In the pushed cache, signed by the configured key: nix checks it.
    let store = format!("file://{}", pushed.display());
    let verify = |key: &str| {
        output(&mut nix(&[
            "store",
            "verify",
            "--store",
            &store,
            "--trusted-public-keys",
            key,
            &out,
        ]))
    };
    let good = verify(&public);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = verify(&other_public);
    assert!(!bad.status.success(), "a wrong key must not verify");
    assert!(metric(&daemon, "procurator_cache_pushes_total{result=\"pushed\"}") >= 1.0);

    // An empty chroot store substitutes it from the daemon with the right
    // key, and refuses it with another.
    let substitute = |key: &str, store: &Path| {
        output(&mut nix(&[
            "build",
            "--no-link",
            "--store",
            store.to_str().unwrap(),
            "--substituters",
            &format!("{}/nix-cache", daemon.base()),
            "--trusted-public-keys",
            key,
            &out,
        ]))
    };
    let refused_store = tmp.path().join("refused");
    let refused = substitute(&other_public, &refused_store);
    assert!(
        !refused.status.success(),
        "substituted with the wrong key: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let chroot = tmp.path().join("chroot");
    let substituted = substitute(&public, &chroot);
    assert!(
        substituted.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&substituted.stderr),
        daemon.log()
    );
    let copy = chroot.join(out.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(copy).unwrap(),
        std::fs::read_to_string(&out).unwrap()
    );

    // A valid store path the daemon did not build is not served.
    let elsewhere = tmp.path().join("elsewhere.nix");
    std::fs::write(
        &elsewhere,
        format!(
            "derivation {{ name = \"elsewhere\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [ \"-c\" \"echo {} > $out\" ]; }}",
            nonce("elsewhere")
        ),
    )
    .unwrap();
    let other = run_ok(
        Command::new("nix-build")
            .args(["--no-out-link", elsewhere.to_str().unwrap()])
            .env("NIX_CONFIG", NIX_CONFIG),
    );
    let other = other.trim();
    assert!(Path::new(other).exists());
    for path in [
        format!("/nix-cache/{}.narinfo", hash_of(other)),
        format!("/nix-cache/nar/{}.nar.zst", hash_of(other)),
    ] {
        let (status, body) = daemon.get(&path);
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
    }
    let (status, text) = daemon.request_text(
        "GET",
        &format!("/nix-cache/{}.narinfo", hash_of(&out)),
        None,
        None,
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("StorePath: {out}\n")), "{text}");
    assert!(text.contains("Sig: ci-test-1:"), "{text}");
    // A proxy may keep a NAR for good (it never changes for its path), a
    // narinfo only briefly (its path may be collected).
    let nar = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("the narinfo names its NAR");
    for (path, expected) in [
        (
            format!("/nix-cache/{}.narinfo", hash_of(&out)),
            "public, max-age=300",
        ),
        (
            format!("/nix-cache/{nar}"),
            "public, max-age=31536000, immutable",
        ),
    ] {
        let response = ureq::get(&format!("{}{path}", daemon.base()))
            .call()
            .unwrap();
        let control = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok());
        assert_eq!(control, Some(expected), "{path}");
    }
    let (status, text) = daemon.request_text("GET", "/nix-cache/nix-cache-info", None, None);
    assert_eq!(status, 200);
    assert!(text.contains("StoreDir: /nix/store"), "{text}");
}

#[test]
fn a_private_cache_needs_the_token_which_nix_sends_from_netrc() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = key(tmp.path(), "ci-private-1");
    let daemon = Daemon::start(&cache_config(
        &secret,
        "cache_serve = true\npublic_read = false",
    ));
    daemon.create_repo("private");
    let work = Work::clone(&daemon.repo_path("private"));
    let token = daemon.token();
    let n = nonce("private");
    let commit = work.commit_flake(&[("ok", &format!("echo {n} > $out"))]);
    work.push(&["HEAD:main"]);
    let (_, builds) = daemon.request("GET", "/api/builds", None, Some(&token));
    let id = builds["builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["commit"] == commit.as_str())
        .map(|b| b["id"].as_i64().unwrap());
    let id = id.unwrap_or_else(|| panic!("no build: {builds}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let out = loop {
        let (_, build) = daemon.request("GET", &format!("/api/builds/{id}"), None, Some(&token));
        if build["cache"]["outputs"][0]["path"].is_string() {
            break build["cache"]["outputs"][0]["path"]
                .as_str()
                .unwrap()
                .to_string();
        }
        assert!(std::time::Instant::now() < deadline, "{build}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let narinfo = format!("/nix-cache/{}.narinfo", hash_of(&out));
    let (status, _) = daemon.get(&narinfo);
    assert_eq!(status, 401);
    let (status, _) = daemon.request("GET", &narinfo, None, Some(&token));
    assert_eq!(status, 200);

    let substitute = |netrc: &Path, store: &Path| {
        output(&mut nix(&[
            "build",
            "--no-link",
            "--store",
            store.to_str().unwrap(),
            "--substituters",
            &format!("{}/nix-cache", daemon.base()),
            "--trusted-public-keys",
            &public,
            "--netrc-file",
            netrc.to_str().unwrap(),
            &out,
        ]))
    };
    let wrong = tmp.path().join("wrong-netrc");
    std::fs::write(
        &wrong,
        "machine 127.0.0.1 login ci password not-the-token-at-all\n",
    )
    .unwrap();
    assert!(
        !substitute(&wrong, &tmp.path().join("denied"))
            .status
            .success()
    );
    let netrc = tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login ci password {token}\n"),
    )
    .unwrap();
    let chroot = tmp.path().join("chroot");
    let done = substitute(&netrc, &chroot);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(chroot.join(out.trim_start_matches('/')).exists());
}

#[test]
fn a_cache_that_is_down_is_retried_and_blocks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public) = key(tmp.path(), "ci-down-1");
    // A regular file where the cache's directory should be: every write
    // fails (even as root) until it is removed.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let cache_dir = blocker.join("cache");
    let daemon = Daemon::start(&cache_config(
        &secret,
        &format!(
            "cache_push = [\"file://{}\"]\ncache_keep_builds = 1",
            cache_dir.display()
        ),
    ));
    daemon.create_repo("down");
    let work = Work::clone(&daemon.repo_path("down"));
    let (first, first_out) = build_unique(&daemon, &work, "down-a");
    let first_id = first["id"].as_i64().unwrap();
    let failed = wait_push(&daemon, first_id, Duration::from_secs(60), |p| {
        p["status"] == "pending" && p["attempts"].as_i64() >= Some(1)
    });
    let push = &failed["cache"]["pushes"][0];
    assert!(
        push["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert_eq!(
        failed["status"], "success",
        "a push never changes the result"
    );
    assert!(metric(&daemon, "procurator_cache_pushes_total{result=\"retry\"}") >= 1.0);
    assert!(metric(&daemon, "procurator_cache_pushes_pending ") >= 1.0);

    // The next build runs and ends while the cache is still down.
    let (second, second_out) = build_unique(&daemon, &work, "down-b");
    let second_id = second["id"].as_i64().unwrap();
    // Only the newest build of the branch keeps its GC roots.
    daemon.wait_build(second_id, Duration::from_secs(30), |b| {
        b["cache"]["rooted"] == true
    });
    daemon.wait_build(first_id, Duration::from_secs(30), |b| {
        b["cache"]["rooted"] == false
    });
    assert!(!daemon.state().join(format!("gcroots/{first_id}")).exists());
    assert!(
        daemon
            .state()
            .join(format!("gcroots/{second_id}/ok.out"))
            .exists()
    );

    // The cache comes back: both pushes succeed on their next attempt.
    std::fs::remove_file(&blocker).unwrap();
    for id in [first_id, second_id] {
        wait_push(&daemon, id, Duration::from_secs(90), |p| {
            p["status"] == "pushed"
        });
    }
    let store = format!("file://{}", cache_dir.display());
    for out in [&first_out, &second_out] {
        run_ok(&mut nix(&[
            "store",
            "verify",
            "--store",
            &store,
            "--trusted-public-keys",
            &public,
            out,
        ]));
    }
    assert_eq!(daemon.build(first_id)["status"], "success");
}
