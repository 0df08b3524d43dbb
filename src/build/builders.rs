//! Nix's remote build machines (its `builders` setting), as the pre-flight
//! checks them: each machine read from the setting or the file it names,
//! and asked by nix itself (`nix store ping`) whether it answers over SSH
//! with the key and host key nix would use, so that a machine that is down
//! or has changed its host key is named before anyone pushes.

use std::time::Duration;

use crate::build::process::Tools;

/// Longest a machine may take to answer the pre-flight: nix asks the next
/// machine after ssh gives up, so one that hangs only costs time, but the
/// pre-flight must say so within bounds.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest a machine may take to answer once a build on it went silent or
/// overran its time: a machine that answers is not to blame.
pub const LOST_TIMEOUT: Duration = Duration::from_secs(10);

/// One line of nix's machines format: `URI systems key max-jobs speed
/// supported-features mandatory-features base64-host-key`, `-` for none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub uri: String,
    pub key: Option<String>,
    pub host_key: Option<String>,
}

impl Machine {
    /// The store URL nix opens for this machine, with its key and host key.
    pub fn store_url(&self) -> String {
        let mut params = Vec::new();
        if let Some(key) = &self.key {
            params.push(format!("ssh-key={key}"));
        }
        if let Some(host_key) = &self.host_key {
            params.push(format!("base64-ssh-public-host-key={host_key}"));
        }
        if params.is_empty() {
            self.uri.clone()
        } else {
            format!("{}?{}", self.uri, params.join("&"))
        }
    }
}

/// The machines of a `builders` value whose lines are given (`;` or
/// newlines between machines, `#` comments); `@FILE` is read by the caller
/// and its text passed here. Only SSH machines: a local store in the list
/// needs no probe.
pub fn parse(text: &str) -> Vec<Machine> {
    text.split(['\n', ';'])
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| {
                fields
                    .get(i)
                    .filter(|f| **f != "-" && !f.is_empty())
                    .map(|f| f.to_string())
            };
            let uri = fields[0].to_string();
            // A bare host name is ssh:// to nix; a path or one of the
            // words of the local stores is not.
            let store_word = ["auto", "daemon", "local"]
                .iter()
                .any(|w| uri == *w || uri.starts_with(&format!("{w}?")));
            let uri = if uri.contains("://") || uri.contains('/') || store_word {
                uri
            } else {
                format!("ssh://{uri}")
            };
            (uri.starts_with("ssh://") || uri.starts_with("ssh-ng://")).then(|| Machine {
                uri,
                key: field(2),
                host_key: field(7),
            })
        })
        .collect()
}

/// The text of a `builders` setting: itself, or the file it names with
/// `@` (blocking). A file that cannot be read is an error naming it.
pub fn read_setting(value: &str) -> Result<String, String> {
    match value.trim().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).or_else(|e| match e.kind() {
            // Nix ignores a missing machines file: no machines.
            std::io::ErrorKind::NotFound => Ok(String::new()),
            _ => Err(format!("cannot read the machines file {path}: {e}")),
        }),
        None => Ok(value.to_string()),
    }
}

/// Whether `machine` answers, asked by nix with the key and host key it
/// would build with; why not, in ssh's words where it gave any.
pub async fn ping(
    tools: &Tools,
    nix_bin: &str,
    machine: &Machine,
    timeout: Duration,
) -> Result<(), String> {
    let url = machine.store_url();
    let args = [
        "store",
        "ping",
        "--extra-experimental-features",
        "nix-command",
        "--store",
        url.as_str(),
    ];
    let mut command = tokio::process::Command::from(tools.command(nix_bin, args));
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => return Err(format!("no answer within {} s", timeout.as_secs())),
        Ok(Err(e)) => return Err(format!("cannot run {nix_bin}: {e}")),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    Err(reason(&String::from_utf8_lossy(&output.stderr)))
}

/// The machines of nix's `builders` setting as nix reads it now (`nix
/// show-config`); none when it cannot say.
pub async fn configured(tools: &Tools, nix_bin: &str) -> Vec<Machine> {
    let args = [
        "show-config",
        "--extra-experimental-features",
        "nix-command",
    ];
    let mut command = tokio::process::Command::from(tools.command(nix_bin, args));
    command
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let Ok(Ok(output)) = tokio::time::timeout(LOST_TIMEOUT, command.output()).await else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(setting) = text.lines().find_map(|l| l.strip_prefix("builders = ")) else {
        return Vec::new();
    };
    let setting = setting.to_string();
    tokio::task::spawn_blocking(move || read_setting(&setting))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// Which of the machines named by `uris` (as nix names them in its log)
/// do not answer within [`LOST_TIMEOUT`], with why.
pub async fn not_answering(tools: &Tools, nix_bin: &str, uris: &[String]) -> Vec<(String, String)> {
    let machines: Vec<Machine> = configured(tools, nix_bin)
        .await
        .into_iter()
        .filter(|m| uris.contains(&m.uri))
        .collect();
    silent(tools, nix_bin, &machines, LOST_TIMEOUT).await
}

/// Which of `machines` do not answer within `timeout`, with why, asked at
/// once.
pub async fn silent(
    tools: &Tools,
    nix_bin: &str,
    machines: &[Machine],
    timeout: Duration,
) -> Vec<(String, String)> {
    let pings = machines
        .iter()
        .map(|machine| ping(tools, nix_bin, machine, timeout));
    futures_util::future::join_all(pings)
        .await
        .into_iter()
        .zip(machines)
        .filter_map(|(answer, machine)| answer.err().map(|e| (machine.uri.clone(), e)))
        .collect()
}

/// Why a machine did not answer, from what `nix store ping` printed: ssh's
/// own last line (`Host key verification failed.`, `ssh: connect to host …:
/// Connection refused`), then nix's error.
fn reason(stderr: &str) -> String {
    let text = crate::build::nix::strip_ansi(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let ssh = lines
        .iter()
        .rev()
        .find(|l| !l.is_empty() && !l.starts_with("error:") && !l.starts_with("Store URL:"));
    let nix = crate::build::nix::first_error(stderr.as_bytes());
    match ssh {
        Some(ssh) => format!("{ssh} ({nix})"),
        None => nix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_are_read_as_nix_reads_them() {
        let machines = parse(
            "ssh-ng://root@127.77.0.2 x86_64-linux /k 1 1 - - SE9TVEtFWQ==\n\
             # a comment\n\
             builder.example.org x86_64-linux ; local ; ssh://b?x=1 x86_64-linux - 2",
        );
        assert_eq!(
            machines,
            [
                Machine {
                    uri: "ssh-ng://root@127.77.0.2".into(),
                    key: Some("/k".into()),
                    host_key: Some("SE9TVEtFWQ==".into()),
                },
                Machine {
                    uri: "ssh://builder.example.org".into(),
                    key: None,
                    host_key: None,
                },
                Machine {
                    uri: "ssh://b?x=1".into(),
                    key: None,
                    host_key: None,
                },
            ]
        );
        assert_eq!(
            machines[0].store_url(),
            "ssh-ng://root@127.77.0.2?ssh-key=/k&base64-ssh-public-host-key=SE9TVEtFWQ=="
        );
        assert_eq!(machines[1].store_url(), "ssh://builder.example.org");
    }

    /// What nix 2.8's `nix store ping` printed for a builder of
    /// scripts/nix-builders with another host's key, and for an address
    /// nothing listens on.
    #[test]
    fn the_reason_is_sshs_words_and_nixs() {
        let wrong_key = "Store URL: ssh-ng://root@127.77.0.2\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            Host key for 127.77.0.2 has changed and you have requested strict checking.\n\
            Host key verification failed.\n\
            \u{1b}[31;1merror:\u{1b}[0m cannot open connection to remote store 'ssh-ng://root@127.77.0.2': \u{1b}[31;1merror:\u{1b}[0m unexpected end-of-file\n";
        assert_eq!(
            reason(wrong_key),
            "Host key verification failed. (cannot open connection to remote store \
             'ssh-ng://root@127.77.0.2': error: unexpected end-of-file)"
        );
        let refused = "Store URL: ssh-ng://root@127.77.0.9\n\
            ssh: connect to host 127.77.0.9 port 22: Connection refused\n\
            error: cannot open connection to remote store 'ssh-ng://root@127.77.0.9': error: unexpected end-of-file\n";
        assert!(
            reason(refused)
                .starts_with("ssh: connect to host 127.77.0.9 port 22: Connection refused ("),
            "{}",
            reason(refused)
        );
    }
}
