//! The Nix binary cache formats the daemon writes itself: signing keys in
//! `nix key generate-secret` form, store path metadata as `nix path-info
//! --json` prints it, and `.narinfo` files with their ed25519 signatures.
//!
//! The NAR itself is never produced here: `nix store dump-path` writes it
//! and the cache only streams it (see `serve`), so the byte format that
//! `NarHash` describes stays nix's own.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Where store paths live; the only store the daemon caches from.
pub const STORE_DIR: &str = "/nix/store";

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not `<name>:<base64 of 64 bytes>`.
    #[error("not a Nix secret key (`<name>:<base64>` as `nix key generate-secret` writes it): {0}")]
    Format(String),
}

/// A binary cache signing key.
pub struct CacheKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CacheKey {
    /// Parses the contents of a secret key file: `<name>:<base64>`, where
    /// the 64 bytes are the ed25519 seed followed by the public key.
    pub fn parse(text: &str) -> Result<CacheKey, KeyError> {
        let text = text.trim();
        let (name, encoded) = text
            .split_once(':')
            .ok_or_else(|| KeyError::Format("no `:` after the key's name".into()))?;
        if name.is_empty() {
            return Err(KeyError::Format("the key's name is empty".into()));
        }
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| KeyError::Format(format!("the key is not base64: {e}")))?;
        let pair: [u8; 64] = bytes.as_slice().try_into().map_err(|_| {
            KeyError::Format(format!(
                "the key has {} bytes, a secret key has 64 (is this the public key?)",
                bytes.len()
            ))
        })?;
        let key = SigningKey::from_keypair_bytes(&pair).map_err(|_| {
            KeyError::Format("its public half does not belong to its secret half".into())
        })?;
        Ok(CacheKey {
            name: name.to_string(),
            key,
        })
    }

    /// The public key as `trusted-public-keys` takes it.
    pub fn public(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            STANDARD.encode(self.key.verifying_key().as_bytes())
        )
    }

    /// `<name>:<base64 signature>` of `fingerprint`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, STANDARD.encode(signature.to_bytes()))
    }
}

/// One store path as `nix path-info --json` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    pub path: String,
    /// `sha256-<base64>` (nix 2.8) or `sha256:<nix32>`.
    pub nar_hash: String,
    pub nar_size: u64,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub deriver: Option<String>,
    #[serde(default)]
    pub ca: Option<String>,
}

/// Reads `nix path-info --json` output: an array of objects (nix 2.8) or
/// an object keyed by path (newer nix).
pub fn parse_path_infos(json: &[u8]) -> Result<Vec<PathInfo>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("unreadable path-info: {e}"))?;
    let entries: Vec<serde_json::Value> = match value {
        serde_json::Value::Array(entries) => entries,
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(path, mut info)| {
                if let Some(object) = info.as_object_mut() {
                    object.insert("path".into(), path.into());
                }
                info
            })
            .collect(),
        _ => return Err("path-info is neither a list nor an object".into()),
    };
    entries
        .into_iter()
        .map(|entry| {
            serde_json::from_value::<PathInfo>(entry)
                .map_err(|e| format!("unreadable path-info entry: {e}"))
        })
        .collect()
}

/// The 32-character hash part of a store path (`/nix/store/<hash>-name`).
pub fn hash_part(path: &str) -> Option<&str> {
    let base = path.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
    let hash = base.get(..32)?;
    (is_hash_part(hash) && base.as_bytes().get(32) == Some(&b'-')).then_some(hash)
}

/// Whether `hash` is a store path hash: 32 characters of Nix's base32.
pub fn is_hash_part(hash: &str) -> bool {
    hash.len() == 32 && hash.bytes().all(|b| NIX32.contains(&b))
}

/// Nix's base32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base32 encoding, which reads the bytes from the end.
pub fn nix32(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    (0..len)
        .rev()
        .map(|n| {
            let bit = n * 5;
            let (i, j) = (bit / 8, bit % 8);
            let low = u16::from(bytes[i]) >> j;
            let high = bytes.get(i + 1).map_or(0, |b| u16::from(*b) << (8 - j));
            NIX32[usize::from((low | high) & 0x1f)] as char
        })
        .collect()
}

/// A NAR hash as narinfo files and signatures spell it: `sha256:<nix32>`.
pub fn nar_hash_nix32(hash: &str) -> Result<String, String> {
    if let Some(rest) = hash.strip_prefix("sha256:") {
        return Ok(format!("sha256:{rest}"));
    }
    let encoded = hash
        .strip_prefix("sha256-")
        .ok_or_else(|| format!("unsupported NAR hash {hash:?}"))?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| format!("unreadable NAR hash {hash:?}: {e}"))?;
    if bytes.len() != 32 {
        return Err(format!("NAR hash {hash:?} is not SHA-256"));
    }
    Ok(format!("sha256:{}", nix32(&bytes)))
}

/// What the signature covers: path, NAR hash, NAR size and references.
pub fn fingerprint(info: &PathInfo, nar_hash: &str) -> String {
    let mut references = info.references.clone();
    references.sort();
    format!(
        "1;{};{};{};{}",
        info.path,
        nar_hash,
        info.nar_size,
        references.join(",")
    )
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The `.narinfo` of `info`, whose NAR is at `url` (relative to the cache)
/// compressed with `compression`, signed with `key`.
pub fn render(
    info: &PathInfo,
    url: &str,
    compression: &str,
    key: &CacheKey,
) -> Result<String, String> {
    let nar_hash = nar_hash_nix32(&info.nar_hash)?;
    let mut references: Vec<&str> = info.references.iter().map(|r| base_name(r)).collect();
    references.sort_unstable();
    let mut text = format!(
        "StorePath: {}\nURL: {url}\nCompression: {compression}\nNarHash: {nar_hash}\n\
         NarSize: {}\nReferences: {}\n",
        info.path,
        info.nar_size,
        references.join(" ")
    );
    if let Some(deriver) = &info.deriver {
        text.push_str(&format!("Deriver: {}\n", base_name(deriver)));
    }
    if let Some(ca) = &info.ca {
        text.push_str(&format!("CA: {ca}\n"));
    }
    text.push_str(&format!(
        "Sig: {}\n",
        key.sign(&fingerprint(info, &nar_hash))
    ));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        let seed = [7u8; 32];
        let key = SigningKey::from_bytes(&seed);
        let mut pair = [0u8; 64];
        pair[..32].copy_from_slice(&seed);
        pair[32..].copy_from_slice(key.verifying_key().as_bytes());
        CacheKey::parse(&format!("k-1:{}\n", STANDARD.encode(pair))).unwrap()
    }

    #[test]
    fn nix32_matches_nix() {
        // `nix hash to-base32 sha256-g1HiRulr0xE96dZ5VNTdh5W/5BpEyekBQ5kiA9VYWNs=`
        assert_eq!(
            nar_hash_nix32("sha256-g1HiRulr0xE96dZ5VNTdh5W/5BpEyekBQ5kiA9VYWNs=").unwrap(),
            "sha256:1nsqb3ah68lr8c0ykja43bjbz5c7vpa58yfnx4yi3lvbx53f4lc3"
        );
        assert_eq!(nix32(&[]), "");
        assert_eq!(nix32(&[0xff]), "7z");
        assert!(nar_hash_nix32("md5-AAAA").is_err());
    }

    #[test]
    fn keys_are_checked() {
        let public = key().public();
        assert!(public.starts_with("k-1:"), "{public}");
        for bad in [
            "nocolon",
            ":AAAA",
            "k:!!!",
            "k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(CacheKey::parse(bad).is_err(), "{bad}");
        }
        let err = CacheKey::parse(&public).unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
    }

    #[test]
    fn narinfo_is_signed_over_the_fingerprint() {
        let info = PathInfo {
            path: "/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16".into(),
            nar_hash: "sha256-g1HiRulr0xE96dZ5VNTdh5W/5BpEyekBQ5kiA9VYWNs=".into(),
            nar_size: 128,
            references: vec![
                "/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16".into(),
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-dep".into(),
            ],
            deriver: Some("/nix/store/sqv5sf7m2h33z3c62z7v6ghsdmwm50nf-t16.drv".into()),
            ca: None,
        };
        let key = key();
        let text = render(&info, "nar/x.nar.zst", "zstd", &key).unwrap();
        let fingerprint = fingerprint(
            &info,
            "sha256:1nsqb3ah68lr8c0ykja43bjbz5c7vpa58yfnx4yi3lvbx53f4lc3",
        );
        assert_eq!(
            fingerprint,
            "1;/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16;\
             sha256:1nsqb3ah68lr8c0ykja43bjbz5c7vpa58yfnx4yi3lvbx53f4lc3;128;\
             /nix/store/0123456789abcdfghijklmnpqrsvwxyz-dep,\
             /nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16"
        );
        assert!(text.contains(&format!("Sig: {}\n", key.sign(&fingerprint))));
        assert!(text.contains(
            "References: 0123456789abcdfghijklmnpqrsvwxyz-dep x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16\n"
        ));
        assert!(text.contains("Deriver: sqv5sf7m2h33z3c62z7v6ghsdmwm50nf-t16.drv\n"));
    }

    #[test]
    fn path_info_in_both_shapes_and_hash_parts() {
        let old = br#"[{"path":"/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16","narHash":"sha256-g1HiRulr0xE96dZ5VNTdh5W/5BpEyekBQ5kiA9VYWNs=","narSize":128,"references":[],"deriver":"/nix/store/sqv5sf7m2h33z3c62z7v6ghsdmwm50nf-t16.drv","registrationTime":1,"ultimate":true}]"#;
        let new = br#"{"/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16":{"narHash":"sha256-g1HiRulr0xE96dZ5VNTdh5W/5BpEyekBQ5kiA9VYWNs=","narSize":128,"references":[],"deriver":"/nix/store/sqv5sf7m2h33z3c62z7v6ghsdmwm50nf-t16.drv"}}"#;
        assert_eq!(
            parse_path_infos(old).unwrap(),
            parse_path_infos(new).unwrap()
        );
        assert_eq!(
            hash_part("/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16"),
            Some("x8fwam2fi9gafjwfzd2bfxawnmzi3dhy")
        );
        assert_eq!(
            hash_part("/nix/store/x8fwam2fi9gafjwfzd2bfxawnmzi3dhe-t"),
            None
        );
        assert_eq!(hash_part("/tmp/x8fwam2fi9gafjwfzd2bfxawnmzi3dhy-t16"), None);
        assert!(!is_hash_part("../../../../etc/passwd00000000000"));
    }
}
