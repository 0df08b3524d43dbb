//! Scaling out on Nix's remote builders (issue 22): eight checks that each
//! wait 5 s, built on one builder with one job slot, on two builders with
//! one slot each, and here with two slots. The checks wait rather than
//! compute, so the figure measures how builds are spread, not this
//! machine's two cores.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, ms, ratio};

const CHECKS: usize = 8;
const WAIT_SECS: u32 = 5;

/// Builder hosts of scripts/nix-builders, killed when dropped.
struct Hosts(Vec<Child>);

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn builders(ctx: &Ctx) -> Res<Vec<Row>> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root: the builder hosts are namespaces (scripts/nix-builders)".into());
    }
    let dir = ctx.root.join("builders");
    std::fs::create_dir_all(&dir).map_err(err("bench dir"))?;
    let key = dir.join("key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .map_err(err("ssh-keygen"))?;
    if !keygen.success() {
        return Err(format!("ssh-keygen failed: {keygen}"));
    }
    let addresses = [
        format!("127.201.{}.2", std::process::id() % 250),
        format!("127.201.{}.3", std::process::id() % 250),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nix-builders");
    let mut hosts = Hosts(Vec::new());
    for (i, address) in addresses.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("host{i}.log"))).map_err(err("log"))?;
        hosts.0.push(
            Command::new(&script)
                .arg("host")
                .arg(dir.join(format!("host{i}")))
                .arg(address)
                .arg(key.with_extension("pub"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(err("scripts/nix-builders"))?,
        );
    }
    for address in &addresses {
        let deadline = Instant::now() + Duration::from_secs(600);
        while TcpStream::connect((address.as_str(), 22)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("the builder on {address} does not listen"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let machine = |i: usize| -> Res<String> {
        let public = std::fs::read_to_string(dir.join(format!("host{i}/ssh_host_ed25519_key.pub")))
            .map_err(err("host key"))?;
        let host_key: Vec<&str> = public.split_whitespace().take(2).collect();
        use base64::Engine;
        let host_key = base64::engine::general_purpose::STANDARD.encode(host_key.join(" "));
        Ok(format!(
            "ssh-ng://root@{} x86_64-linux {} 1 1 - - {host_key}\n",
            addresses[i],
            key.display()
        ))
    };
    let one = dir.join("machines-one");
    std::fs::write(&one, machine(0)?).map_err(err("machines"))?;
    let two = dir.join("machines-two");
    std::fs::write(&two, machine(0)? + &machine(1)?).map_err(err("machines"))?;

    // Nix asks busy machines again every build-poll-interval seconds (5
    // by default): measured with its default and with 1 s.
    let remote = |machines: &Path, poll: u32| {
        format!(
            "{NIX_CONFIG}max-jobs = 0\nbuilders = @{}\nbuild-poll-interval = {poll}\n",
            machines.display()
        )
    };
    let one_builder = wall(&dir.join("one"), remote(&one, 5))?;
    let two_builders = wall(&dir.join("two"), remote(&two, 5))?;
    let one_polling = wall(&dir.join("one-1s"), remote(&one, 1))?;
    let two_polling = wall(&dir.join("two-1s"), remote(&two, 1))?;
    let local = wall(&dir.join("local"), format!("{NIX_CONFIG}max-jobs = 2\n"))?;
    drop(hosts);
    let spread = two_builders / one_builder;
    let ideal = f64::from(WAIT_SECS) * 1000.0 * (CHECKS / 2) as f64;
    Ok(vec![Row {
        figure: format!("remote builders ({CHECKS} checks waiting {WAIT_SECS} s)"),
        measured: format!("{} on 2 builders × 1 slot", ms(two_builders)),
        floor: format!("{} on 1 builder × 1 slot", ms(one_builder)),
        ratio: ratio(two_builders, one_builder),
        goal: "≤ 0.6×".into(),
        met: Some(spread <= 0.6),
        note: format!(
            "one build each, enqueue → finished, nix's default build-poll-interval (5 s); with \
             build-poll-interval = 1: {} on 2 builders, {} on 1 ({}); the same checks built \
             here with 2 slots: {} (remote overhead {} by default, {} polling every second); \
             the waits alone: {} on 2 slots; builders are scripts/nix-builders hosts (Nix 2.26) \
             over ssh-ng on loopback",
            ms(two_polling),
            ms(one_polling),
            ratio(two_polling, one_polling),
            ms(local),
            ms(two_builders - local),
            ms(two_polling - local),
            ms(ideal)
        ),
        load: 0.0,
        data: json!({
            "one_builder_ms": one_builder,
            "two_builders_ms": two_builders,
            "one_builder_poll_1s_ms": one_polling,
            "two_builders_poll_1s_ms": two_polling,
            "local_two_slots_ms": local,
        }),
    }])
}

/// Enqueue → finished of one build of the checks, by a daemon whose nix
/// has `nix_config`.
fn wall(root: &Path, nix_config: String) -> Res<f64> {
    let mut d = Daemon::configure(root, "")?;
    d.env.push(("NIX_CONFIG".into(), nix_config));
    d.spawn()?;
    let repo = d.create_repo("farm")?;
    let nonce = format!("farm-{}", epoch_ms() as u64);
    let checks: String = (0..CHECKS)
        .map(|i| {
            let script = format!("/bin/sleep {WAIT_SECS}; echo {nonce} > $out");
            format!(
                "      c{i} = derivation {{ name = \"c{i}\"; system = \"x86_64-linux\"; \
                 builder = \"/bin/sh\"; args = [ \"-c\" {script:?} ]; }};\n"
            )
        })
        .collect();
    let flake = format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux = {{\n{checks}    }};\n  }};\n}}\n"
    );
    let commit = fast_import(&repo, "main", 1, &flake)?.remove(0);
    let (status, body) = d.post(
        "/api/builds",
        &json!({"repo": "farm", "branch": "main", "commit": commit}),
    )?;
    let id = body["id"]
        .as_i64()
        .ok_or_else(|| format!("enqueue answered {status}: {body}"))?;
    let build = d.wait_final(id, Duration::from_secs(300))?;
    d.stop();
    if build["status"] != "success" {
        return Err(format!("the build failed: {build}"));
    }
    let created = build["created_ms"].as_f64().unwrap_or(f64::NAN);
    let started = build["started_ms"].as_f64().unwrap_or(f64::NAN);
    let duration = build["duration_ms"].as_f64().unwrap_or(f64::NAN);
    Ok(started + duration - created)
}
