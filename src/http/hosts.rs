//! The `Host` values the daemon serves. A browser sends the name in the
//! page's address, so a page on a name its author controls, resolved to
//! this daemon (DNS rebinding), is refused instead of reading the API as
//! its own origin.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::config::Config;

/// The names and addresses accepted in `Host` (ports aside: a port is
/// not what rebinding changes).
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: BTreeSet<String>,
    /// Bound to every address: any IP literal names this host (a literal
    /// cannot be rebound), names only as listed.
    any_address: bool,
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]:port`),
/// lower case and without a trailing dot; `None` when malformed.
fn host_part(value: &str) -> Option<String> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        inside
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => value,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

impl AllowedHosts {
    /// The bind address, the localhost names when bound to loopback (or to
    /// every address), and the host of `public_url`.
    pub fn of(config: &Config) -> AllowedHosts {
        AllowedHosts::new(config.bind_address.ip(), &config.public_url)
    }

    /// [`AllowedHosts::of`] from the two settings it reads.
    pub fn new(ip: IpAddr, public_url: &str) -> AllowedHosts {
        let mut names = BTreeSet::new();
        if !ip.is_unspecified() {
            names.insert(ip.to_string());
        }
        if ip.is_loopback() || ip.is_unspecified() {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        let authority = public_url
            .split_once("://")
            .map_or(public_url, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        if let Some(host) = host_part(authority) {
            names.insert(host);
        }
        AllowedHosts {
            names,
            any_address: ip.is_unspecified(),
        }
    }

    /// Accepts a `Host` value this daemon serves; otherwise says why not.
    pub fn check(&self, value: Option<&str>) -> Result<(), String> {
        let Some(value) = value else {
            return Err("send exactly one Host header, naming a host this daemon serves".into());
        };
        let served = host_part(value).is_some_and(|host| {
            self.names.contains(&host) || (self.any_address && host.parse::<IpAddr>().is_ok())
        });
        if served {
            return Ok(());
        }
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        Err(format!(
            "this daemon does not serve host {value:?}: it answers to {}{} (bind_address, \
             localhost when bound to loopback, the host of public_url); set public_url to \
             the address its users reach it by",
            names.join(", "),
            if self.any_address {
                " and any IP address"
            } else {
                ""
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bind: &str, public_url: &str) -> AllowedHosts {
        let bind: std::net::SocketAddr = bind.parse().unwrap();
        AllowedHosts::new(bind.ip(), public_url)
    }

    #[test]
    fn loopback_serves_its_address_localhost_and_the_public_host() {
        let h = hosts("127.0.0.1:3000", "https://ci.example.org/ci");
        for ok in [
            "127.0.0.1:3000",
            "127.0.0.1",
            "localhost:3000",
            "LOCALHOST",
            "[::1]:3000",
            "ci.example.org",
            "ci.example.org.:443",
            "CI.Example.org",
        ] {
            assert!(h.check(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:3000",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:3000",
            "ci.example.org:x",
            "[::1",
            "",
            ":3000",
        ] {
            let err = h.check(Some(bad)).unwrap_err();
            assert!(err.contains("does not serve host"), "{bad}: {err}");
        }
        assert!(h.check(None).is_err());
    }

    #[test]
    fn every_address_serves_ip_literals_but_only_listed_names() {
        let h = hosts("0.0.0.0:3000", "http://ci.internal:3000");
        for ok in [
            "192.0.2.7:3000",
            "[2001:db8::1]:3000",
            "ci.internal:3000",
            "localhost",
        ] {
            assert!(h.check(Some(ok)).is_ok(), "{ok}");
        }
        assert!(h.check(Some("rebound.example:3000")).is_err());
        let h = hosts("192.0.2.7:3000", "http://192.0.2.7:3000");
        assert!(h.check(Some("localhost:3000")).is_err());
        assert!(h.check(Some("192.0.2.8:3000")).is_err());
        assert!(h.check(Some("192.0.2.7:3000")).is_ok());
    }
}
