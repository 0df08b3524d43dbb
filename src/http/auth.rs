//! Who may change things: the API token for TCP clients (and, for reads
//! only, a cookie derived from it), and the Unix socket whose file
//! permissions (and the peer's uid) admit the git hook.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie that lets a browser read, and only read, once it has shown
/// the token (`POST /api/session`): event streams and links cannot send an
/// `Authorization` header.
pub const READ_COOKIE: &str = "procurator_ci_read";

/// The read cookie's attributes: the whole site, out of scripts' reach, and
/// never sent with requests that other sites start.
const READ_COOKIE_ATTRIBUTES: &str = "Path=/; HttpOnly; SameSite=Strict";

/// The `Set-Cookie` value that removes the read cookie.
pub fn clear_read_cookie() -> String {
    format!("{READ_COOKIE}=; {READ_COOKIE_ATTRIBUTES}; Max-Age=0")
}

/// The API token, compared in constant time.
#[derive(Clone)]
pub struct Token {
    secret: String,
    /// Derived from `secret` once: it is checked on every private read.
    read_cookie: String,
    /// Where it was read from, for logs (never the token itself).
    pub source: PathBuf,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The token could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("api token {path}: {reason}")]
pub struct TokenError {
    path: PathBuf,
    reason: String,
}

impl Token {
    /// Reads `configured`, or when none is configured reads `generated`,
    /// creating it (mode 0600, 256 random bits as hex) on first start.
    /// Returns the token and whether it was just created.
    pub fn load(configured: Option<&Path>, generated: &Path) -> Result<(Token, bool), TokenError> {
        let error = |path: &Path, reason: String| TokenError {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(path) = configured {
            if let Some(mode) = crate::config::exposed_mode(path) {
                return Err(error(
                    path,
                    format!(
                        "api_token_file is readable by group or others (mode {mode:04o}); \
                         chmod 600 it"
                    ),
                ));
            }
            let secret = fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
            return Ok((Token::from_secret(secret.trim(), path)?, false));
        }
        match fs::read_to_string(generated) {
            Ok(secret) => return Ok((Token::from_secret(secret.trim(), generated)?, false)),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(error(generated, e.to_string()));
            }
            Err(_) => {}
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| error(generated, e.to_string()))?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(generated)
            .map_err(|e| error(generated, e.to_string()))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(format!("{secret}\n").as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|e| error(generated, e.to_string()))?;
        Ok((Token::from_secret(&secret, generated)?, true))
    }

    fn from_secret(secret: &str, path: &Path) -> Result<Token, TokenError> {
        if secret.len() < 16 {
            return Err(TokenError {
                path: path.to_path_buf(),
                reason: "the token must be at least 16 characters".into(),
            });
        }
        // The read cookie: an HMAC of a fixed label under the token. It
        // proves the token was presented without being the token, and stops
        // working when the token changes.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"procurator-ci read cookie v1");
        let read_cookie = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Token {
            secret: secret.to_string(),
            read_cookie,
            source: path.to_path_buf(),
        })
    }

    /// The value of the read cookie ([`READ_COOKIE`]) for this token.
    pub fn read_cookie(&self) -> &str {
        &self.read_cookie
    }

    /// The `Set-Cookie` value that gives a browser the read cookie;
    /// `secure` when the daemon is reached over https.
    pub fn set_read_cookie(&self, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!(
            "{READ_COOKIE}={}; {READ_COOKIE_ATTRIBUTES}{secure}",
            self.read_cookie
        )
    }

    /// Whether a `Cookie` header value carries this token's read cookie.
    pub fn accepts_read_cookie(&self, header: Option<&str>) -> bool {
        let expected = self.read_cookie.as_bytes();
        header
            .into_iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| {
                name == READ_COOKIE && bool::from(value.as_bytes().ct_eq(expected))
            })
    }

    /// Whether an `Authorization: Basic` header value carries this token as
    /// its password (any user name), as nix sends it from a netrc file.
    pub fn accepts_basic(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        bool::from(decoded[colon + 1..].ct_eq(self.secret.as_bytes()))
    }

    /// Whether an `Authorization` header value is exactly `Bearer <token>`:
    /// no other spacing, nothing trimmed.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        bool::from(presented.as_bytes().ct_eq(self.secret.as_bytes()))
    }
}

/// A connection on the daemon's Unix socket. Who may connect is decided by
/// the file system alone: the socket is mode 0660 in the state directory, so
/// our user, root and the members of our group reach it, and they may queue
/// builds without a token (that is what the group is for). The peer's
/// credentials cannot decide it: under systemd's `PrivateUsers=` every uid
/// and gid but ours and root's reads as the overflow id, group members
/// included.
#[derive(Debug, Clone, Copy)]
pub struct LocalPeer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_cookie_is_derived_from_the_token_and_checked_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (token, _) = Token::load(None, &dir.path().join("a")).unwrap();
        let (other, _) = Token::load(None, &dir.path().join("b")).unwrap();
        let cookie = token.read_cookie();
        assert_eq!(cookie.len(), 64);
        assert_ne!(cookie, token.secret, "the cookie is not the token");
        assert_ne!(cookie, other.read_cookie());
        let header = format!("theme=dark; {READ_COOKIE}={cookie}; x=y");
        assert!(token.accepts_read_cookie(Some(&header)));
        assert!(!other.accepts_read_cookie(Some(&header)));
        for wrong in [
            None,
            Some(String::new()),
            Some(format!("{READ_COOKIE}={}", &cookie[..63])),
            Some(format!("{READ_COOKIE}={cookie}0")),
            Some(format!("other={cookie}")),
            Some(format!("{READ_COOKIE}={}", token.secret)),
        ] {
            assert!(!token.accepts_read_cookie(wrong.as_deref()), "{wrong:?}");
        }
    }

    #[test]
    fn generated_once_with_mode_0600_and_checked_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        let (token, created) = Token::load(None, &path).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = Token::load(None, &path).unwrap();
        assert!(!created);
        let secret = fs::read_to_string(&path).unwrap().trim().to_string();
        assert_eq!(secret.len(), 64);
        assert!(again.accepts(Some(&format!("Bearer {secret}"))));
        assert!(token.accepts(Some(&format!("Bearer {secret}"))));
        assert!(!token.accepts(Some(&format!("Bearer {secret}x"))));
        assert!(!token.accepts(Some(&format!("Basic {secret}"))));
        use base64::Engine;
        let basic = |credentials: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        };
        assert!(token.accepts_basic(Some(&basic(&format!("ci:{secret}")))));
        assert!(token.accepts_basic(Some(&basic(&format!(":{secret}")))));
        assert!(!token.accepts_basic(Some(&basic(&format!("ci:{secret}x")))));
        assert!(!token.accepts_basic(Some(&basic(&secret))));
        assert!(!token.accepts_basic(Some(&format!("Bearer {secret}"))));
        assert!(!token.accepts(Some(&basic(&format!("ci:{secret}")))));
        assert!(!token.accepts(Some("Bearer ")));
        assert!(!token.accepts(Some(&format!("Bearer  {secret}"))));
        assert!(!token.accepts(Some(&format!("Bearer {secret} "))));
        assert!(!token.accepts(Some(&format!("bearer {secret}"))));
        assert!(!token.accepts(None));
    }

    #[test]
    fn configured_file_must_hold_a_real_token() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        fs::write(&short, "abc\n").unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Token::load(Some(&short), &dir.path().join("gen"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let open = dir.path().join("open");
        fs::write(&open, "a-token-of-sixteen-chars\n").unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Token::load(Some(&open), &dir.path().join("gen"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("readable by group or others (mode 0640)"),
            "{err}"
        );
        assert!(err.contains(&open.display().to_string()), "{err}");
        assert!(Token::load(Some(&short), &dir.path().join("gen")).is_err());
        assert!(!dir.path().join("gen").exists());
    }
}
