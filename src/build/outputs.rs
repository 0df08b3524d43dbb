//! A derivation's outputs as the Nix store records them. A check's
//! evaluated `outPath` is whatever the flake says (`drv // { outPath =
//! "/nix/store/<anything>"; }`), so what a build shows, roots, signs and
//! pushes as a check's output comes from its derivation here instead.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::build::process::{self, Tools};

/// Longest a store query may take before it counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `drv` looks like a derivation's store path (and cannot be read
/// as an option by the command it is given to).
fn is_drv_path(drv: &str) -> bool {
    drv.starts_with('/')
        && drv.ends_with(".drv")
        && !drv.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The output paths of derivation `drv`, as `nix-store --query --outputs`
/// reads them from the store (nix_bin runs as `nix-store`, as the
/// multi-call binary it is). Blocking, bounded by `timeout`.
pub fn of_derivation(
    tools: &Tools,
    nix_bin: &str,
    drv: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    if !is_drv_path(drv) {
        return Err(format!("{drv:?} is not a derivation's store path"));
    }
    let args = ["--query", "--outputs", drv];
    let mut cmd = tools.command(nix_bin, args);
    cmd.arg0("nix-store")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = format!("nix-store --query --outputs {drv}");
    let mut child = cmd
        .spawn()
        .map_err(|e| process::spawn_error(nix_bin, &command, e).to_string())?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{command}` gave no answer within {} s",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).map_err(|e| e.to_string())?;
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_end(&mut stderr);
    }
    if !status.success() {
        return Err(format!(
            "`{command}` failed ({}): {}",
            process::describe_status(status),
            process::tail(&stderr, 300)
        ));
    }
    let outputs: Vec<String> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(str::to_string)
        .collect();
    if outputs.is_empty() {
        return Err(format!("`{command}` named no output"));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_derivation_paths_are_queried() {
        assert!(is_drv_path("/nix/store/aaaa-x.drv"));
        for bad in ["--help.drv", "/nix/store/x", "/nix/store/a b.drv", "x.drv"] {
            assert!(!is_drv_path(bad), "{bad}");
        }
    }
}
