//! Credentials out of everything the daemon shows: the one rule for URLs
//! in answers, events, logs, metrics and the page.
//!
//! A configured URL (a `cache_push` target, a `[[notify]] url`) may carry
//! credentials: `http://user:password@host/`, a token as the user
//! (`https://<token>@host/`), a token in the query (`?token=…`) or the
//! fragment. Whatever shows such a URL, or text that quotes it (nix's
//! error messages do), shows it through [`urls`]: the user information
//! becomes `***` (an ssh user without a password is kept: it is a login
//! name, not a secret), every query value becomes `***` except those of the
//! store settings known to hold none ([`PLAIN_PARAMETERS`]), and a fragment
//! becomes `***`. The daemon keeps the URL as configured where it uses it.

use std::borrow::Cow;

/// What a credential is replaced with.
pub const MASK: &str = "***";

/// Query parameters whose values are shown: nix store settings that name a
/// region, a compression or a file, never hold a secret themselves.
const PLAIN_PARAMETERS: &[&str] = &[
    "buffer-size",
    "compression",
    "compression-level",
    "endpoint",
    "index-debug-info",
    "log-compression",
    "ls-compression",
    "max-connections",
    "multipart-upload",
    "narinfo-compression",
    "parallel-compression",
    "priority",
    "profile",
    "region",
    "remote-program",
    "remote-store",
    "scheme",
    "secret-key",
    "ssh-key",
    "trusted",
    "want-mass-query",
    "write-nar-listing",
];

/// `text` with the credentials of every URL in it masked (see the module's
/// comment). Borrowed when there is nothing to mask.
pub fn urls(text: &str) -> Cow<'_, str> {
    masked(text, true)
}

/// `text` with the user information of every URL in it masked, queries and
/// fragments kept: for nix's messages about flake references, whose
/// queries (`?ref=…&rev=…`) say which revision failed and hold no secret,
/// while a private input's URL may carry a token as its user.
pub fn url_users(text: &str) -> Cow<'_, str> {
    masked(text, false)
}

fn masked(text: &str, queries: bool) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("://") {
        // Character by character: nix writes a source as `«git+file:…»`,
        // and the scheme starts after a character of two bytes.
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || "+-.".contains(*c)))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let after = at + 3;
        let end = rest[after..]
            .find(|c: char| c.is_whitespace() || c.is_control() || "'\"<>`".contains(c))
            .map_or(rest.len(), |i| after + i);
        out.push_str(&rest[..scheme_start]);
        let url = &rest[scheme_start..end];
        let masked = url_masked(&rest[scheme_start..at], &rest[after..end], queries);
        changed |= masked != url;
        out.push_str(&masked);
        rest = &rest[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// The parts of a URL after its `scheme://`: the user information (up to
/// the authority's last `@`), the host with its port, and the rest (path,
/// query, fragment).
pub fn authority(rest: &str) -> (Option<&str>, &str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host, tail),
        None => (None, authority, tail),
    }
}

/// `scheme://rest` with its credentials masked: the user information, and
/// with `queries` the query's values and the fragment.
fn url_masked(scheme: &str, rest: &str, queries: bool) -> String {
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some(_) if !queries => (rest, None),
        Some((before, fragment)) => (before, Some(fragment)),
        None => (rest, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((before, query)) if queries => (before, Some(query)),
        _ => (before_fragment, None),
    };
    let (userinfo, host, path) = authority(before_query);
    let mut out = format!("{scheme}://");
    match userinfo {
        Some(user) => {
            // `git+ssh` is ssh to nix's fetchers.
            let scheme = scheme.to_ascii_lowercase();
            let ssh = matches!(scheme.rsplit('+').next(), Some("ssh" | "ssh-ng"));
            if ssh && !user.contains(':') {
                out.push_str(user);
            } else {
                out.push_str(MASK);
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(host),
    }
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if PLAIN_PARAMETERS.contains(&name) => pair.to_string(),
                Some((name, "")) => format!("{name}="),
                Some((name, _)) => format!("{name}={MASK}"),
                None if pair.is_empty() => String::new(),
                None => MASK.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{url_users, urls};

    #[test]
    fn url_users_masks_the_user_information_and_keeps_the_rest() {
        assert_eq!(
            url_users(
                "unable to fetch 'git+https://x-access-token:ghp_secret@github.com/o/r?ref=main&rev=abc#frag' now"
            ),
            "unable to fetch 'git+https://***@github.com/o/r?ref=main&rev=abc#frag' now"
        );
        assert_eq!(
            url_users("git+ssh://git@host/r?ref=main"),
            "git+ssh://git@host/r?ref=main"
        );
        assert_eq!(
            url_users("path:/srv/x?narHash=sha256-A"),
            "path:/srv/x?narHash=sha256-A"
        );
        // Nix 2.34's sources, after a two-byte character.
        let source = "error: at «git+file:///srv/r.git?ref=refs/heads/main&rev=abc»/flake.nix:3:5";
        assert_eq!(url_users(source), source);
        assert_eq!(urls("«https://u:p@h/x»"), "«https://***@h/x»");
    }

    #[test]
    fn user_information_is_masked() {
        assert_eq!(
            urls("http://user:pass@cache.example:8080/x"),
            "http://***@cache.example:8080/x"
        );
        assert_eq!(
            urls("https://ghp_token@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        // A password may hold an @; the host is after the last one.
        assert_eq!(urls("http://u:p@ss@h/"), "http://***@h/");
        assert_eq!(urls("ssh-ng://nix@builder"), "ssh-ng://nix@builder");
        assert_eq!(urls("ssh://nix:pw@builder"), "ssh://***@builder");
    }

    #[test]
    fn query_values_and_fragments_are_masked_but_store_settings() {
        assert_eq!(
            urls("https://h.example/hook?token=abc&x"),
            "https://h.example/hook?token=***&***"
        );
        assert_eq!(
            urls("s3://bucket?region=eu-west-1&secret-key=/run/k&sig=zz"),
            "s3://bucket?region=eu-west-1&secret-key=/run/k&sig=***"
        );
        assert_eq!(urls("https://h/#access_token=t"), "https://h/#***");
        assert_eq!(urls("https://h/?a=&b"), "https://h/?a=&***");
    }

    #[test]
    fn urls_in_text_are_found_and_the_rest_is_kept() {
        let nix = "error: unable to download 'http://u:s3cret@127.0.0.1:9/nix-cache-info': \
                   Couldn't connect (7); see https://nixos.org/x";
        assert_eq!(
            urls(nix),
            "error: unable to download 'http://***@127.0.0.1:9/nix-cache-info': \
             Couldn't connect (7); see https://nixos.org/x"
        );
        assert!(matches!(
            urls("no secret in file:///srv/cache or /abs/path"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(urls("a\nhttp://u:p@h\nb"), "a\nhttp://***@h\nb");
        assert_eq!(urls("://x@y"), "://***@y");
        assert_eq!(urls("ünïcode http://ü:p@h ✓"), "ünïcode http://***@h ✓");
    }
}
