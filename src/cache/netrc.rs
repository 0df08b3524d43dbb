//! A push target's credentials kept off nix's command line: `nix copy --to
//! https://user:token@cache.example/` would show the token to every local
//! user in `/proc/<pid>/cmdline` for as long as the copy runs. The user
//! information moves into a netrc file that only the daemon's user can read
//! and that nix's HTTP client reads (`netrc-file`); the URL nix is given
//! carries none. The file lives as long as the copy.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A netrc file written for one copy, removed when dropped.
#[derive(Debug)]
pub struct NetrcFile(PathBuf);

impl NetrcFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for NetrcFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `target` as nix should be given it, and the netrc file holding its
/// credentials when it had any: for `http://` and `https://` targets with
/// user information that a netrc file can hold. Other targets come back
/// unchanged (an `s3://` store reads its credentials from the environment,
/// `ssh://` from its key).
pub fn split(target: &str, dir: &Path) -> std::io::Result<(String, Option<NetrcFile>)> {
    let Some(entry) = Entry::of(target) else {
        return Ok((target.to_string(), None));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "push-{}-{}.netrc",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let netrc = NetrcFile(path);
    writeln!(
        file,
        "machine {} login {} password {}",
        entry.host, entry.login, entry.password
    )?;
    Ok((entry.url, Some(netrc)))
}

/// A target's URL without user information, and that information as a
/// netrc entry.
struct Entry {
    url: String,
    host: String,
    login: String,
    password: String,
}

impl Entry {
    fn of(target: &str) -> Option<Entry> {
        let (scheme, rest) = target.split_once("://")?;
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return None;
        }
        let (userinfo, host_port, tail) = crate::redact::authority(rest);
        let userinfo = userinfo?;
        // curl looks a netrc entry up by the host name alone; a bracketed
        // IPv6 address it names differently, so such a URL is left as it is.
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host);
        let (login, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (login, password) = (percent_decode(login)?, percent_decode(password)?);
        // A netrc token ends at white space; quoting is not read alike by
        // every netrc reader.
        let plain = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '"');
        if host.starts_with('[') || !plain(host) || !plain(&login) || !plain(&password) {
            return None;
        }
        Some(Entry {
            url: format!("{scheme}://{host_port}{tail}"),
            host: host.to_string(),
            login,
            password,
        })
    }
}

/// `%XX` sequences decoded; `None` when the result is not UTF-8 or a
/// sequence is malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_move_from_the_url_into_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let (url, netrc) = split(
            "https://ci:p%40ss@cache.example:8443/prefix?compression=zstd",
            &credentials,
        )
        .unwrap();
        assert_eq!(url, "https://cache.example:8443/prefix?compression=zstd");
        let netrc = netrc.unwrap();
        assert_eq!(
            std::fs::read_to_string(netrc.path()).unwrap(),
            "machine cache.example login ci password p@ss\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(netrc.path()), 0o600);
        assert_eq!(mode(&credentials), 0o700);
        let path = netrc.path().to_path_buf();
        drop(netrc);
        assert!(!path.exists(), "removed with the copy");
    }

    #[test]
    fn targets_without_credentials_a_netrc_can_hold_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for target in [
            "https://cache.example/",
            "s3://bucket?region=eu-west-1",
            "ssh://nix@builder",
            "file:///srv/cache",
            "http://u:with%20space@cache.example/",
            "http://u:p@[::1]:8080/",
        ] {
            let (url, netrc) = split(target, dir.path()).unwrap();
            assert_eq!(url, target);
            assert!(netrc.is_none(), "{target}");
        }
    }

    #[test]
    fn a_token_as_the_user_is_the_login() {
        let dir = tempfile::tempdir().unwrap();
        let (url, netrc) = split("https://tok3n@cache.example/x", dir.path()).unwrap();
        assert!(
            netrc.is_none(),
            "an empty password cannot be written: {url}"
        );
    }
}
