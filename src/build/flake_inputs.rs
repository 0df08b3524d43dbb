//! A flake's inputs as its `flake.nix` and `flake.lock` name them, to tell
//! which input a URL that nix could not fetch belongs to: the user wrote
//! `inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11"`, nix reports
//! `https://api.github.com/repos/NixOS/nixpkgs/tarball/…`.
//!
//! `flake.nix` is read as text, not evaluated: only the literal
//! `inputs.<name>.url = "…"` forms (in any nesting of attribute sets) and
//! the arguments of `outputs` are understood, which is how flakes declare
//! their inputs in practice.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// One input of a flake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Its name (`parent/child` for an input of an input).
    pub name: String,
    /// Its reference as `flake.nix` writes it, else as `flake.lock` keeps it.
    pub reference: String,
    /// Lower-case fragments of the URLs nix fetches it from.
    keys: Vec<String>,
    /// The host paths it is read from, when it is a local input (`path:`,
    /// `git+file:`, `file:`…), as written: relative ones are relative to
    /// the flake.
    local: Vec<String>,
}

/// The inputs of one flake at one commit.
#[derive(Debug, Default)]
pub struct Inputs(Vec<Input>);

/// What an input that `flake.nix` does not declare is looked up in.
const REGISTRY: &str = "not declared in `inputs`, so looked up in the flake registry";

impl Inputs {
    /// The inputs `flake_nix` and `flake_lock` (the files' texts, when the
    /// commit has them) name.
    pub fn read(flake_nix: Option<&str>, flake_lock: Option<&str>) -> Inputs {
        let mut inputs = Inputs::default();
        if let Some(lock) = flake_lock.and_then(|text| serde_json::from_str::<Value>(text).ok()) {
            for (name, node) in locked_nodes(&lock) {
                let original = node.get("original").unwrap_or(&Value::Null);
                let locked = node.get("locked").unwrap_or(&Value::Null);
                let mut keys = node_keys(original);
                keys.extend(node_keys(locked));
                let local = [original, locked]
                    .into_iter()
                    .filter_map(node_local)
                    .collect();
                inputs.add(
                    name,
                    render(original).or_else(|| render(locked)),
                    keys,
                    local,
                );
            }
        }
        if let Some(text) = flake_nix {
            let declared = declared(text);
            for (name, reference) in &declared.urls {
                let local = ref_local(reference).into_iter().collect();
                inputs.add(
                    name.clone(),
                    Some(reference.clone()),
                    ref_keys(reference),
                    local,
                );
            }
            for (name, path) in &declared.paths {
                inputs.add(name.clone(), None, Vec::new(), vec![path.clone()]);
            }
            for name in declared.arguments {
                if name != "self" && !declared.urls.iter().any(|(n, _)| *n == name) {
                    let keys = vec!["flake-registry".into()];
                    inputs.add(name, Some(REGISTRY.into()), keys, Vec::new());
                }
            }
        }
        inputs
    }

    /// Adds what is known of input `name`; what `flake.nix` writes replaces
    /// the lock's rendering of its reference.
    fn add(
        &mut self,
        name: String,
        reference: Option<String>,
        keys: Vec<String>,
        local: Vec<String>,
    ) {
        let keys = keys.into_iter().filter(|k| k.len() >= 3);
        match self.0.iter_mut().find(|input| input.name == name) {
            Some(input) => {
                if let Some(reference) = reference {
                    input.reference = reference;
                }
                input.keys.extend(keys);
                input.local.extend(local);
            }
            None => self.0.push(Input {
                reference: reference.unwrap_or_else(|| local.first().cloned().unwrap_or_default()),
                name,
                keys: keys.collect(),
                local,
            }),
        }
    }

    /// The first input read from the host outside the repository at `repo`
    /// and outside every root of `allowed` (`allowed_local_inputs`), with
    /// the path it reads. Relative paths are the flake's own files unless
    /// they climb out of it.
    pub fn local_outside(&self, repo: &Path, allowed: &[PathBuf]) -> Option<(&Input, String)> {
        self.0.iter().find_map(|input| {
            let outside = input.local.iter().find(|path| {
                let Some(normal) = normalise(path) else {
                    return true;
                };
                if !normal.is_absolute() {
                    return false;
                }
                !normal.starts_with(repo) && !allowed.iter().any(|root| normal.starts_with(root))
            })?;
            Some((input, outside.clone()))
        })
    }

    /// The input an error message (naming a URL, a repository or a path)
    /// is about: the one with the longest key the message contains.
    pub fn owner_of(&self, message: &str) -> Option<&Input> {
        let message = message.to_lowercase();
        self.0
            .iter()
            .filter_map(|input| {
                let longest = input
                    .keys
                    .iter()
                    .filter(|key| message.contains(key.as_str()))
                    .map(String::len)
                    .max()?;
                Some((longest, input))
            })
            .fold(
                None,
                |best: Option<(usize, &Input)>, (len, input)| match best {
                    Some((best_len, _)) if best_len >= len => best,
                    _ => Some((len, input)),
                },
            )
            .map(|(_, input)| input)
    }
}

/// The lock's nodes reachable from its root, named by their path of input
/// names (`follows` links are the nodes they point to, named elsewhere).
fn locked_nodes(lock: &Value) -> Vec<(String, &Value)> {
    let nodes = &lock["nodes"];
    let root = lock["root"].as_str().unwrap_or("root");
    let mut found: Vec<(String, &Value)> = Vec::new();
    let mut seen = vec![root.to_string()];
    let mut queue = vec![(String::new(), root.to_string())];
    while let Some((prefix, key)) = queue.first().cloned() {
        queue.remove(0);
        let Some(inputs) = nodes[&key]["inputs"].as_object() else {
            continue;
        };
        for (name, target) in inputs {
            let Some(target) = target.as_str() else {
                continue;
            };
            if seen.iter().any(|s| s == target) || nodes.get(target).is_none() {
                continue;
            }
            seen.push(target.to_string());
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            found.push((path.clone(), &nodes[target]));
            queue.push((path, target.to_string()));
        }
    }
    found
}

/// A lock node's `original` or `locked` attributes as a flake reference.
fn render(attrs: &Value) -> Option<String> {
    let text = |key: &str| attrs.get(key).and_then(Value::as_str);
    let kind = text("type")?;
    let suffix = text("ref")
        .or(text("rev"))
        .map(|r| format!("/{r}"))
        .unwrap_or_default();
    Some(match kind {
        "github" | "gitlab" | "sourcehut" => {
            format!("{kind}:{}/{}{suffix}", text("owner")?, text("repo")?)
        }
        "git" | "hg" => {
            let reference = text("ref").map(|r| format!("?ref={r}")).unwrap_or_default();
            format!("{kind}+{}{reference}", text("url")?)
        }
        "tarball" | "file" => text("url")?.to_string(),
        "path" => format!("path:{}", text("path")?),
        "indirect" => format!("{}{suffix}", text("id")?),
        _ => return None,
    })
}

/// The host path a lock node's `original` or `locked` attributes read, if
/// they name a local input.
fn node_local(attrs: &Value) -> Option<String> {
    let text = |key: &str| attrs.get(key).and_then(Value::as_str);
    match text("type")? {
        "path" => text("path").map(str::to_string),
        "git" | "hg" | "tarball" | "file" => file_url_path(text("url")?),
        _ => None,
    }
}

/// The host path of a flake reference as `flake.nix` writes it, if it
/// names a local input: `path:…`, a bare path, or a `file:` URL under any
/// scheme (`git+file:`, `tarball+file:`…).
fn ref_local(reference: &str) -> Option<String> {
    let reference = reference.split(['?', '#']).next().unwrap_or_default();
    if reference.starts_with('/')
        || reference == "."
        || reference.starts_with("./")
        || reference.starts_with("..")
    {
        return Some(reference.to_string());
    }
    if let Some(path) = reference.strip_prefix("path:") {
        return Some(path.to_string());
    }
    let (scheme, _) = reference.split_once(':')?;
    let transport = scheme.rsplit('+').next().unwrap_or(scheme);
    (transport == "file")
        .then(|| file_url_path(&format!("file:{}", &reference[scheme.len() + 1..])))
        .flatten()
}

/// `/x` of `file:///x`, `file://localhost/x` or `file:/x`.
fn file_url_path(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let rest = url.strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority) => &authority[authority.find('/').unwrap_or(authority.len())..],
        None => rest,
    };
    Some(path.to_string())
}

/// `path` with `.` and `..` resolved without the file system; `None` when
/// a relative path climbs above where it starts.
fn normalise(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for part in Path::new(path).components() {
        match part {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if depth == 0 {
                    if !out.has_root() {
                        return None;
                    }
                } else {
                    out.pop();
                    depth -= 1;
                }
            }
            Component::Normal(part) => {
                out.push(part);
                depth += 1;
            }
        }
    }
    Some(out)
}

/// The keys of a lock node's `original` or `locked` attributes.
fn node_keys(attrs: &Value) -> Vec<String> {
    let text = |key: &str| attrs.get(key).and_then(Value::as_str).unwrap_or_default();
    match text("type") {
        "github" | "gitlab" | "sourcehut" => repo_keys(text("owner"), text("repo")),
        "git" | "hg" | "tarball" | "file" => url_keys(text("url")),
        "path" => vec![text("path").to_lowercase()],
        "indirect" => vec!["flake-registry".into()],
        _ => Vec::new(),
    }
}

/// The keys of a flake reference as `flake.nix` writes it.
fn ref_keys(reference: &str) -> Vec<String> {
    let Some((scheme, rest)) = reference.split_once(':') else {
        // `nixpkgs`, `nixpkgs/nixos-25.11`: the registry names it.
        return vec!["flake-registry".into()];
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match scheme {
        "github" | "gitlab" | "sourcehut" => {
            let mut parts = rest.split('/');
            let owner = parts.next().unwrap_or_default();
            repo_keys(owner, parts.next().unwrap_or_default())
        }
        "flake" => vec!["flake-registry".into()],
        "path" => vec![rest.to_lowercase()],
        _ => url_keys(reference),
    }
}

/// `owner/repo` as the forges' URLs spell it.
fn repo_keys(owner: &str, repo: &str) -> Vec<String> {
    if owner.is_empty() || repo.is_empty() {
        return Vec::new();
    }
    let bare = owner.trim_start_matches('~');
    [
        format!("{owner}/{repo}"),
        format!("{bare}/{repo}"),
        format!("{bare}%2f{repo}"),
    ]
    .map(|k| k.to_lowercase())
    .into()
}

/// A URL without its scheme, query and `.git`: what nix's and git's
/// messages about it contain.
fn url_keys(url: &str) -> Vec<String> {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    let place = url.split_once("://").map_or(url, |(_, rest)| rest);
    let place = place.trim_end_matches('/');
    let mut keys = vec![place.to_lowercase()];
    if let Some(short) = place.strip_suffix(".git") {
        keys.push(short.to_lowercase());
    }
    keys
}

/// What `flake.nix` declares.
#[derive(Debug, Default, PartialEq)]
struct Declared {
    /// `inputs.<name>.url` values, in order.
    urls: Vec<(String, String)>,
    /// `inputs.<name>.path` values (of `type = "path"` inputs).
    paths: Vec<(String, String)>,
    /// The names `outputs` takes.
    arguments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier or a string: both name attributes.
    Name(String),
    Punct(char),
}

/// Nix source as names, strings and punctuation, without comments.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let mut value = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    value.push(c);
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Name(value));
        } else if c == '\'' && chars.get(i + 1) == Some(&'\'') {
            // An indented string: nix takes one without interpolation as a
            // literal input URL too.
            i += 2;
            let start = i;
            while i < chars.len() && !(chars[i] == '\'' && chars.get(i + 1) == Some(&'\'')) {
                i += 1;
            }
            let value: String = chars[start..i.min(chars.len())].iter().collect();
            i += 2;
            out.push(Token::Name(value.trim().to_string()));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '\'' | '-'))
            {
                i += 1;
            }
            out.push(Token::Name(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// The attribute path (`a.b."c"`) ending just before token `end`.
fn path_before(tokens: &[Token], end: usize) -> Vec<String> {
    let mut path = Vec::new();
    let mut i = end;
    while i > 0 {
        let Token::Name(name) = &tokens[i - 1] else {
            break;
        };
        path.insert(0, name.clone());
        if i >= 2 && tokens[i - 2] == Token::Punct('.') {
            i -= 2;
        } else {
            break;
        }
    }
    path
}

/// Reads the inputs' URLs and the outputs' arguments of a `flake.nix`.
fn declared(text: &str) -> Declared {
    let tokens = tokens(text);
    let mut found = Declared::default();
    // The attribute path each open brace stands for (empty when it opens
    // anything but an attribute set assigned to a path).
    let mut open: Vec<Vec<String>> = Vec::new();
    let mut assigned: Option<Vec<String>> = None;
    // The depth of the brace of `outputs`' arguments while it is open.
    let mut arguments_at: Option<usize> = None;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct('{') => {
                // A brace not assigned to a path (a function's body or
                // arguments) hides what it holds from the flake's own
                // attributes; only the file's outermost one does not.
                let path = assigned.take().unwrap_or_else(|| {
                    if open.is_empty() {
                        Vec::new()
                    } else {
                        vec!["{".to_string()]
                    }
                });
                if open.len() == 1 && path == ["outputs"] {
                    arguments_at = Some(open.len() + 1);
                }
                open.push(path);
            }
            Token::Punct('}') => {
                if arguments_at == Some(open.len()) {
                    arguments_at = None;
                }
                open.pop();
            }
            Token::Punct('=') => {
                let path = path_before(&tokens, i);
                if path.is_empty() {
                    continue;
                }
                match tokens.get(i + 1) {
                    Some(Token::Punct('{')) => assigned = Some(path),
                    Some(Token::Name(value)) if tokens.get(i + 2) == Some(&Token::Punct(';')) => {
                        let full: Vec<&String> = open.iter().flatten().chain(&path).collect();
                        if let [inputs, name, url] = full.as_slice()
                            && *inputs == "inputs"
                            && *url == "url"
                            && !found.urls.iter().any(|(n, _)| n == *name)
                        {
                            found.urls.push(((*name).clone(), value.clone()));
                        }
                        if let [inputs, name, path] = full.as_slice()
                            && *inputs == "inputs"
                            && *path == "path"
                        {
                            found.paths.push(((*name).clone(), value.clone()));
                        }
                    }
                    _ => {}
                }
            }
            Token::Name(name) if arguments_at == Some(open.len()) => {
                let next = tokens.get(i + 1);
                let previous = i.checked_sub(1).map(|p| &tokens[p]);
                if matches!(next, Some(Token::Punct(',' | '}' | '?')))
                    && matches!(previous, Some(Token::Punct('{' | ',')))
                {
                    found.arguments.push(name.clone());
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIX: &str = r#"{
  description = "a flake"; # inputs.fake.url = "github:no/no";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
  inputs = {
    utils.url = "git+https://git.example.org/utils.git?ref=main";
    data = { url = "https://example.org/data.tar.gz"; flake = false; };
  };
  /* inputs.other.url = "github:x/y"; */
  outputs = { self, nixpkgs, utils, data, extra ? null, ... }@all: {
    checks.x86_64-linux = { };
    inputs.bogus.url = "github:in/outputs";
  };
}
"#;

    #[test]
    fn local_inputs_outside_the_repository_and_the_allowed_roots_are_found() {
        let repo = Path::new("/var/lib/ci/repos/r.git");
        let allowed = [PathBuf::from("/srv/shared")];
        let outside = |nix: &str, lock: Option<&str>| {
            Inputs::read(Some(nix), lock)
                .local_outside(repo, &allowed)
                .map(|(input, path)| (input.name.clone(), path))
        };
        let with = |url: &str| {
            format!("{{ inputs.dep.url = \"{url}\"; outputs = {{ self, dep }}: {{ }}; }}")
        };
        for (url, path) in [
            ("path:/var/lib/ci/api-token", "/var/lib/ci/api-token"),
            ("/etc/passwd", "/etc/passwd"),
            ("git+file:///home/x/repo?ref=main", "/home/x/repo"),
            ("file:///etc/shadow", "/etc/shadow"),
            ("tarball+file:///x.tar.gz", "/x.tar.gz"),
            ("git+file:/srv/other", "/srv/other"),
            ("path:../../../../etc", "../../../../etc"),
            ("path:/srv/shared/../../etc", "/srv/shared/../../etc"),
        ] {
            let indented = with(url).replace(&format!("\"{url}\""), &format!("''\n  {url}\n''"));
            assert_eq!(
                outside(&indented, None),
                Some(("dep".into(), path.into())),
                "{indented}"
            );
            assert_eq!(
                outside(&with(url), None),
                Some(("dep".into(), path.into())),
                "{url}"
            );
        }
        for url in [
            "path:/srv/shared/flakes/a",
            "git+file:///srv/shared/b",
            "path:./sub",
            "./sub/../other",
            "git+file:///var/lib/ci/repos/r.git?ref=main",
            "github:NixOS/nixpkgs",
            "git+https://example.org/x.git",
        ] {
            assert_eq!(outside(&with(url), None), None, "{url}");
        }
        // The attribute form and the lock are read too.
        let attrs = "{ inputs.k = { type = \"path\"; path = \"/run/credentials/x/key\"; flake = false; }; outputs = { self, k }: { }; }";
        assert_eq!(
            outside(attrs, None),
            Some(("k".into(), "/run/credentials/x/key".into()))
        );
        let lock = r#"{"nodes": {"s": {"locked": {"type": "path", "path": "/var/lib/ci/ci.db", "narHash": "sha256-x"}, "original": {"type": "path", "path": "/var/lib/ci/ci.db"}},
            "g": {"locked": {"type": "git", "url": "file:///var/lib/ci/repos/other.git", "rev": "a"}, "original": {"type": "git", "url": "file:///var/lib/ci/repos/other.git"}},
            "root": {"inputs": {"s": "s", "g": "g"}}}, "root": "root", "version": 7}"#;
        let no_nix = "{ outputs = { self }: { }; }";
        let only_git = lock.replace("/var/lib/ci/ci.db", "/srv/shared/db");
        assert_eq!(
            outside(no_nix, Some(&only_git)),
            Some(("g".into(), "/var/lib/ci/repos/other.git".into()))
        );
        let only_path = lock.replace("file:///var/lib/ci/repos/other.git", "file:///srv/shared/g");
        assert_eq!(
            outside(no_nix, Some(&only_path)),
            Some(("s".into(), "/var/lib/ci/ci.db".into()))
        );
    }

    #[test]
    fn flake_nix_declares_urls_and_the_outputs_take_arguments() {
        let found = declared(NIX);
        assert_eq!(
            found.urls,
            [
                ("nixpkgs", "github:NixOS/nixpkgs/nixos-25.11"),
                ("utils", "git+https://git.example.org/utils.git?ref=main"),
                ("data", "https://example.org/data.tar.gz"),
            ]
            .map(|(n, u)| (n.to_string(), u.to_string()))
        );
        assert_eq!(
            found.arguments,
            ["self", "nixpkgs", "utils", "data", "extra"]
        );
    }

    #[test]
    fn nix_urls_and_git_messages_find_the_input_they_are_about() {
        let inputs = Inputs::read(
            Some(NIX.replace("extra ? null", "registered").as_str()),
            None,
        );
        let owner = |message: &str| inputs.owner_of(message).map(|i| i.name.as_str());
        assert_eq!(
            owner(
                "unable to download 'https://api.github.com/repos/NixOS/nixpkgs/commits/nixos-25.11': Couldn't resolve host name (6)"
            ),
            Some("nixpkgs")
        );
        assert_eq!(
            owner(
                "program 'git' failed with exit code 128 (fatal: unable to access 'https://git.example.org/utils.git/': Could not resolve host)"
            ),
            Some("utils")
        );
        assert_eq!(
            owner("unable to download 'https://example.org/data.tar.gz': HTTP error 404"),
            Some("data")
        );
        assert_eq!(
            owner(
                "unable to download 'https://github.com/NixOS/flake-registry/raw/master/flake-registry.json': Couldn't resolve host name (6)"
            ),
            Some("registered")
        );
        assert_eq!(
            inputs.owner_of("unable to download 'https://x/y'"),
            None,
            "no guess"
        );
        let nixpkgs = inputs
            .owner_of("api.github.com/repos/nixos/nixpkgs")
            .unwrap();
        assert_eq!(nixpkgs.reference, "github:NixOS/nixpkgs/nixos-25.11");
    }

    #[test]
    fn a_lock_names_its_nodes_inputs_of_inputs_too() {
        let lock = r#"{
  "nodes": {
    "nixpkgs": {
      "locked": { "owner": "NixOS", "repo": "nixpkgs", "rev": "0123456789abcdef0123456789abcdef01234567", "type": "github" },
      "original": { "owner": "NixOS", "ref": "nixos-25.11", "repo": "nixpkgs", "type": "github" }
    },
    "dep": {
      "inputs": { "nixpkgs": ["nixpkgs"], "inner": "inner" },
      "locked": { "type": "git", "url": "file:///srv/dep", "rev": "abc" },
      "original": { "type": "git", "url": "file:///srv/dep" }
    },
    "inner": {
      "locked": { "type": "gitlab", "owner": "grp", "repo": "inner", "rev": "def" },
      "original": { "type": "gitlab", "owner": "grp", "repo": "inner" }
    },
    "root": { "inputs": { "nixpkgs": "nixpkgs", "dep": "dep" } }
  },
  "root": "root",
  "version": 7
}"#;
        let inputs = Inputs::read(None, Some(lock));
        let owner = |message: &str| {
            inputs
                .owner_of(message)
                .map(|i| (i.name.as_str(), i.reference.as_str()))
        };
        assert_eq!(
            owner(
                "unable to download 'https://api.github.com/repos/NixOS/nixpkgs/tarball/0123456789abcdef0123456789abcdef01234567': Couldn't resolve host name (6)"
            ),
            Some(("nixpkgs", "github:NixOS/nixpkgs/nixos-25.11"))
        );
        assert_eq!(
            owner(
                "program 'git' failed with exit code 128 (fatal: '/srv/dep' does not appear to be a git repository)"
            ),
            Some(("dep", "git+file:///srv/dep"))
        );
        assert_eq!(
            owner(
                "unable to download 'https://gitlab.com/api/v4/projects/grp%2Finner/repository/archive.tar.gz?sha=def': HTTP error 401"
            ),
            Some(("dep/inner", "gitlab:grp/inner"))
        );
        // A lock that is not JSON names nothing, and breaks nothing.
        assert_eq!(
            Inputs::read(None, Some("{")).owner_of("nixos/nixpkgs"),
            None
        );
    }
}
