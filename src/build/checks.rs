//! Per-check results of `nix flake check`.
//!
//! Nix runs with `--log-format internal-json`; [`Renderer`] turns that back
//! into the plain log a person reads while following every build activity
//! (which derivation, where its output starts in the log, when it ended, its
//! last lines). The flake's checks are mapped to derivations by evaluating
//! their `drvPath`s at the same revision, and [`results`] combines the two
//! into one result per check. `nix flake check` itself stays the authority on
//! the build's status.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::build::nixlog::{
    ACT_BUILD, ACT_BUILDS, Event, LEVEL_INFO, RES_BUILD_LOG_LINE, RES_PROGRESS,
};

/// Lines of a failed check's own log kept as its excerpt.
const EXCERPT_LINES: usize = 25;

/// What was seen of one derivation's build.
#[derive(Debug, Clone, Default)]
pub struct DrvBuild {
    /// Byte offset in the log where its build starts.
    pub log_offset: u64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// Its last lines of output.
    pub excerpt: VecDeque<String>,
    /// The remote machine nix built it on (`ssh-ng://…`), `None` when it
    /// was built on this host.
    pub machine: Option<String>,
}

impl DrvBuild {
    /// Where it was built, as the API says it: the machine's URI, or
    /// [`LOCAL`].
    pub fn machine_name(&self) -> &str {
        self.machine.as_deref().unwrap_or(LOCAL)
    }
}

/// The machine name of a build on the CI host itself.
pub const LOCAL: &str = "local";

/// Renders internal-json lines as plain text and tracks builds.
#[derive(Debug, Default)]
pub struct Renderer {
    /// Activity id → derivation path, for build activities.
    activities: HashMap<u64, String>,
    /// Derivation path → its build.
    pub builds: HashMap<String, DrvBuild>,
    /// Derivations whose build started or stopped since [`Renderer::take_changed`].
    changed: Vec<String>,
    /// The activity of the whole set of builds.
    builds_activity: Option<u64>,
    /// Its counts, when they changed since [`Renderer::take_counts`].
    counts: Option<BuildCounts>,
}

/// How many derivations nix has built, expects to build, is building and
/// has failed to build. Nix 2.8 stops a derivation's build activity only
/// when every build has ended, so a change of these counts is the first
/// sign that one ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildCounts {
    pub done: u64,
    pub expected: u64,
    pub running: u64,
    pub failed: u64,
    /// Where in the log nix gave them: a build that starts later (even in
    /// the same read) is not counted in them.
    pub log_offset: u64,
}

impl Renderer {
    /// The derivations whose build started or stopped since the last call,
    /// with their builds now, for live progress.
    pub fn take_changed(&mut self) -> impl Iterator<Item = (&str, &DrvBuild)> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed.into_iter().filter_map(|drv| {
            self.builds
                .get_key_value(&drv)
                .map(|(drv, build)| (drv.as_str(), build))
        })
    }

    /// The builds' counts, when they changed since the last call.
    pub fn take_counts(&mut self) -> Option<BuildCounts> {
        self.counts.take()
    }

    /// Appends a line that is not nix's JSON to `out`, unchanged.
    pub fn plain(&mut self, line: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }

    /// Renders one event of nix's log that starts at byte `offset` of the
    /// log, appending its text (if it has any to show) to `out`.
    pub fn event(&mut self, event: &Event, offset: u64, now_ms: i64, out: &mut Vec<u8>) {
        match event {
            Event::Start {
                id,
                kind,
                level,
                text,
                fields,
            } => {
                if *kind == ACT_BUILDS {
                    self.builds_activity = Some(*id);
                }
                if *kind == ACT_BUILD
                    && let Some(drv) = fields.first().and_then(Value::as_str)
                {
                    self.activities.insert(*id, drv.to_string());
                    self.changed.push(drv.to_string());
                    // A remote build is announced twice: by this nix with
                    // the machine, then by the builder's own nix (relayed
                    // over ssh-ng) without one; the machine is kept.
                    let machine = fields
                        .get(1)
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .or_else(|| self.builds.get(drv).and_then(|b| b.machine.clone()));
                    self.builds.insert(
                        drv.to_string(),
                        DrvBuild {
                            log_offset: offset,
                            started_ms: now_ms,
                            machine,
                            ..DrvBuild::default()
                        },
                    );
                }
                if !text.is_empty() && (*kind == ACT_BUILD || *level <= LEVEL_INFO) {
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(b"...\n");
                }
            }
            Event::Stop { id } => {
                if let Some(drv) = self.activities.get(id)
                    && let Some(build) = self.builds.get_mut(drv)
                {
                    build.finished_ms = Some(now_ms);
                    self.changed.push(drv.clone());
                }
            }
            Event::Result { id, kind, fields }
                if *kind == RES_PROGRESS && self.builds_activity == Some(*id) =>
            {
                let count = |i: usize| fields.get(i).and_then(Value::as_u64).unwrap_or_default();
                self.counts = Some(BuildCounts {
                    done: count(0),
                    expected: count(1),
                    running: count(2),
                    failed: count(3),
                    log_offset: offset,
                });
            }
            Event::Result { id, kind, fields } if *kind == RES_BUILD_LOG_LINE => {
                let text = fields.first().and_then(Value::as_str).unwrap_or_default();
                let Some(drv) = self.activities.get(id) else {
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'\n');
                    return;
                };
                let line = format!("{}> {text}", drv_name(drv));
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
                if let Some(build) = self.builds.get_mut(drv) {
                    if build.excerpt.len() == EXCERPT_LINES {
                        build.excerpt.pop_front();
                    }
                    build.excerpt.push_back(line);
                }
            }
            Event::Msg(message) if message.level <= LEVEL_INFO => {
                let text = crate::build::nixlog::publishable(&message.text);
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            _ => {}
        }
    }
}

/// `/nix/store/<hash>-name.drv` → `name`.
pub fn drv_name(drv: &str) -> &str {
    let base = drv.rsplit('/').next().unwrap_or(drv);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name,
        _ => base,
    }
}

/// The derivation and output of a check, as evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckPaths {
    pub drv: String,
    pub out: String,
}

/// Each check of `checks.<system>`: its paths, or why it did not evaluate.
pub type CheckMap = BTreeMap<String, Result<CheckPaths, String>>;

/// The Nix function applied to `checks.<system>` to read every check's
/// paths; a check whose evaluation throws becomes `null`.
pub const PATHS_EXPR: &str = "checks: builtins.mapAttrs (name: check: \
    let drv = builtins.tryEval check.drvPath; in \
    if drv.success then { drv = drv.value; out = check.outPath; } else null) checks";

/// The state of one check after a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Already valid in the store: nothing to build.
    Cached,
    /// Not built: evaluation failed or stopped first, or the build stopped.
    NotBuilt,
}

/// One check's result, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub system: String,
    pub status: CheckStatus,
    pub drv_path: Option<String>,
    /// Its output path, as evaluated.
    pub out_path: Option<String>,
    pub duration_ms: Option<i64>,
    /// Where its build output starts in the build's log.
    pub log_offset: Option<u64>,
    /// Where nix built it: a remote builder's URI, or `local`; `None` when
    /// it was not built.
    pub machine: Option<String>,
    /// The end of its own log, for failed checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_excerpt: Option<String>,
    /// Why it did not evaluate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is known of a build's derivations when it ends, for [`results`].
#[derive(Debug)]
pub struct Ended<'a> {
    /// Every derivation whose build nix started, as the log showed it.
    pub builds: &'a HashMap<String, DrvBuild>,
    /// Derivations nix named as failed in its errors.
    pub failed_drvs: &'a [String],
    /// Derivations the live tracker saw end before nix stopped their
    /// activity (nix 2.8 stops them all at the end): when, and whether
    /// they failed.
    pub seen_ending: &'a HashMap<String, (i64, bool)>,
    /// When the build was stopped (cancel, timeout, silence), if it was:
    /// an activity nix stopped after that was cut short, not finished.
    pub stopped_at: Option<i64>,
}

/// Combines the evaluated checks with what the build did, asking the store
/// where the log cannot tell (`output_exists`: whether an output path is
/// valid in the store, checked by the caller; nix removes the output of a
/// build that failed). A check whose output is in the store passed (or was
/// already there: cached); one whose build started and ended without it
/// failed; one never started, or cut short by a stop, was not built. The
/// same on every Nix, whatever its messages say.
pub fn results(
    system: &str,
    map: &CheckMap,
    ended: &Ended,
    output_exists: impl Fn(&str) -> bool,
) -> Vec<CheckResult> {
    map.iter()
        .map(|(name, paths)| {
            let mut result = CheckResult {
                name: name.clone(),
                system: system.to_string(),
                status: CheckStatus::NotBuilt,
                drv_path: None,
                out_path: None,
                duration_ms: None,
                log_offset: None,
                machine: None,
                log_excerpt: None,
                error: None,
            };
            let paths = match paths {
                Ok(paths) => paths,
                Err(error) => {
                    result.error = Some(error.clone());
                    return result;
                }
            };
            result.drv_path = Some(paths.drv.clone());
            result.out_path = Some(paths.out.clone());
            let build = ended.builds.get(&paths.drv);
            let seen = ended.seen_ending.get(&paths.drv).copied();
            // The earliest sign of its end: nix's stop, unless it came
            // after the build was stopped, or the tracker's sighting.
            let finished = build
                .and_then(|b| b.finished_ms)
                .filter(|at| ended.stopped_at.is_none_or(|stop| *at < stop));
            let ended_at = match (finished, seen.map(|(at, _)| at)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(build) = build {
                result.log_offset = Some(build.log_offset);
                result.machine = Some(build.machine_name().to_string());
                result.duration_ms = ended_at.map(|at| (at - build.started_ms).max(0));
            }
            let failed =
                ended.failed_drvs.contains(&paths.drv) || seen.is_some_and(|(_, failed)| failed);
            result.status = if output_exists(&paths.out) {
                if build.is_some() {
                    CheckStatus::Passed
                } else {
                    CheckStatus::Cached
                }
            } else if failed || (build.is_some() && ended_at.is_some()) {
                result.log_excerpt = build.map(|b| Vec::from(b.excerpt.clone()).join("\n"));
                CheckStatus::Failed
            } else {
                CheckStatus::NotBuilt
            };
            result
        })
        .collect()
}

/// The names of the failed checks, for the build's summary.
pub fn failed_names(results: &[CheckResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| r.status == CheckStatus::Failed)
        .map(|r| r.name.clone())
        .chain(
            results
                .iter()
                .filter(|r| r.error.is_some())
                .map(|r| format!("{} (evaluation)", r.name)),
        )
        .collect()
}

/// The Nix system name of this machine, for `checks.<system>`.
pub fn host_system() -> String {
    let os = if cfg!(target_os = "macos") {
        "darwin"
    } else {
        "linux"
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV_PASS: &str = "/nix/store/yybzxjz307qfd2qy7230zig0pfcwsnw8-pass.drv";
    const DRV_FAIL: &str = "/nix/store/gdlxca7a9gwpkmnbc1rnn6xrkyx7zii7-fail.drv";

    fn render(lines: &[&str]) -> (Renderer, String) {
        let mut renderer = Renderer::default();
        let mut out = Vec::new();
        for (t, line) in lines.iter().enumerate() {
            let offset = out.len() as u64;
            match crate::build::nixlog::parse(line.as_bytes()) {
                Some(event) => renderer.event(&event, offset, t as i64 * 10, &mut out),
                None => renderer.plain(line.as_bytes(), &mut out),
            }
        }
        (renderer, String::from_utf8(out).unwrap())
    }

    #[test]
    fn internal_json_renders_like_the_plain_log() {
        let (mut renderer, text) = render(&[
            r#"@nix {"action":"start","id":1,"level":3,"text":"evaluating flake","type":0}"#,
            r#"@nix {"action":"start","id":2,"level":5,"text":"checking flake output 'checks'","type":0}"#,
            r#"@nix {"action":"start","id":4,"level":0,"text":"","type":104}"#,
            r#"@nix {"action":"msg","level":0,"msg":"error (ignored): error: bad check"}"#,
            &format!(
                r#"@nix {{"action":"start","fields":["{DRV_FAIL}","",1,1],"id":11,"level":3,"text":"building '{DRV_FAIL}'","type":105}}"#
            ),
            r#"@nix {"action":"result","fields":["failing line"],"id":11,"type":101}"#,
            r#"@nix {"action":"result","fields":[0,1,0,1],"id":8,"type":105}"#,
            r#"@nix {"action":"result","fields":[0,1,0,1],"id":4,"type":105}"#,
            r#"@nix {"action":"stop","id":11}"#,
            "plain output",
            "@nix {not json",
        ]);
        assert_eq!(
            text,
            format!(
                "evaluating flake...\nerror (ignored): error: bad check\nbuilding '{DRV_FAIL}'...\n\
                 fail> failing line\nplain output\n@nix {{not json\n"
            )
        );
        let build = &renderer.builds[DRV_FAIL];
        assert_eq!(
            build.log_offset as usize,
            "evaluating flake...\nerror (ignored): error: bad check\n".len()
        );
        assert_eq!(build.finished_ms, Some(80));
        assert_eq!(build.excerpt, ["fail> failing line"]);
        let changed: Vec<_> = renderer
            .take_changed()
            .map(|(drv, _)| drv.to_string())
            .collect();
        assert_eq!(changed, [DRV_FAIL]);
        assert!(renderer.take_changed().next().is_none());
        assert_eq!(
            renderer.take_counts(),
            Some(BuildCounts {
                done: 0,
                expected: 1,
                running: 0,
                failed: 1,
                // Where the next rendered line starts.
                log_offset: text.find("plain output").unwrap() as u64,
            })
        );
        assert_eq!(renderer.take_counts(), None);
    }

    #[test]
    fn starts_and_stops_are_handed_on_once() {
        let mut renderer = Renderer::default();
        let mut out = Vec::new();
        let mut feed = |renderer: &mut Renderer, line: &str, now| {
            let event = crate::build::nixlog::parse(line.as_bytes()).unwrap();
            renderer.event(&event, 0, now, &mut out);
        };
        feed(
            &mut renderer,
            &format!(
                r#"@nix {{"action":"start","fields":["{DRV_PASS}"],"id":1,"level":3,"text":"b","type":105}}"#
            ),
            5,
        );
        let started: Vec<_> = renderer
            .take_changed()
            .map(|(d, b)| (d.to_string(), b.finished_ms))
            .collect();
        assert_eq!(started, [(DRV_PASS.to_string(), None)]);
        feed(
            &mut renderer,
            r#"@nix {"action":"result","fields":["x"],"id":1,"type":101}"#,
            6,
        );
        assert!(
            renderer.take_changed().next().is_none(),
            "output is no change"
        );
        feed(&mut renderer, r#"@nix {"action":"stop","id":1}"#, 9);
        let stopped: Vec<_> = renderer
            .take_changed()
            .map(|(d, b)| (d.to_string(), b.finished_ms))
            .collect();
        assert_eq!(stopped, [(DRV_PASS.to_string(), Some(9))]);
    }

    /// What nix 2.8 printed building on a remote builder over ssh-ng
    /// (scripts/nix-builders, Nix 2.26 on the builder): its own start naming
    /// the machine, then the builder's, relayed, naming none.
    const REMOTE_BUILD: [&str; 5] = [
        r#"@nix {"action":"start","fields":["/nix/store/0h5457i01phzl28wwyyqkggjjcd4gggb-rb-a.drv","ssh-ng://root@127.77.0.2",1,1],"id":57732950392838,"level":3,"text":"building '/nix/store/0h5457i01phzl28wwyyqkggjjcd4gggb-rb-a.drv' on 'ssh-ng://root@127.77.0.2'","type":105}"#,
        r#"@nix {"action":"start","fields":["/nix/store/0h5457i01phzl28wwyyqkggjjcd4gggb-rb-a.drv","",1,1],"id":57732950392846,"level":3,"text":"building '/nix/store/0h5457i01phzl28wwyyqkggjjcd4gggb-rb-a.drv'","type":105}"#,
        r#"@nix {"action":"result","fields":["start a"],"id":57732950392846,"type":101}"#,
        r#"@nix {"action":"stop","id":57732950392846}"#,
        r#"@nix {"action":"stop","id":57732950392838}"#,
    ];

    #[test]
    fn the_machine_a_derivation_is_built_on_is_kept() {
        let (renderer, text) = render(&REMOTE_BUILD);
        let drv = "/nix/store/0h5457i01phzl28wwyyqkggjjcd4gggb-rb-a.drv";
        let build = &renderer.builds[drv];
        assert_eq!(build.machine_name(), "ssh-ng://root@127.77.0.2");
        assert!(
            text.contains("on 'ssh-ng://root@127.77.0.2'...\n"),
            "{text}"
        );
        assert!(text.ends_with("\nrb-a> start a\n"), "{text}");
        // Built here: nix names no machine.
        let (renderer, _) = render(&REMOTE_BUILD[1..]);
        assert_eq!(renderer.builds[drv].machine_name(), LOCAL);
    }

    #[test]
    fn results_per_check() {
        let (renderer, _) = render(&[
            &format!(
                r#"@nix {{"action":"start","fields":["{DRV_FAIL}"],"id":1,"level":3,"text":"b","type":105}}"#
            ),
            r#"@nix {"action":"result","fields":["boom"],"id":1,"type":101}"#,
            r#"@nix {"action":"stop","id":1}"#,
            &format!(
                r#"@nix {{"action":"start","fields":["{DRV_PASS}"],"id":2,"level":3,"text":"b","type":105}}"#
            ),
            r#"@nix {"action":"stop","id":2}"#,
        ]);
        let paths = |drv: &str, out: &str| {
            Ok(CheckPaths {
                drv: drv.into(),
                out: out.into(),
            })
        };
        let map: CheckMap = [
            ("pass".to_string(), paths(DRV_PASS, "/out/pass")),
            ("fail".to_string(), paths(DRV_FAIL, "/out/fail")),
            (
                "cached".to_string(),
                paths("/nix/store/c.drv", "/out/cached"),
            ),
            (
                "unbuilt".to_string(),
                paths("/nix/store/u.drv", "/out/unbuilt"),
            ),
            ("bad".to_string(), Err("bad check".to_string())),
        ]
        .into_iter()
        .collect();
        let seen = HashMap::new();
        let results = results(
            "x86_64-linux",
            &map,
            &Ended {
                builds: &renderer.builds,
                failed_drvs: &[DRV_FAIL.into()],
                seen_ending: &seen,
                stopped_at: None,
            },
            |out| matches!(out, "/out/pass" | "/out/cached"),
        );
        let status: BTreeMap<&str, CheckStatus> = results
            .iter()
            .map(|r| (r.name.as_str(), r.status))
            .collect();
        assert_eq!(status["pass"], CheckStatus::Passed);
        assert_eq!(status["fail"], CheckStatus::Failed);
        assert_eq!(status["cached"], CheckStatus::Cached);
        assert_eq!(status["unbuilt"], CheckStatus::NotBuilt);
        assert_eq!(status["bad"], CheckStatus::NotBuilt);
        let fail = results.iter().find(|r| r.name == "fail").unwrap();
        assert_eq!(fail.log_excerpt.as_deref(), Some("fail> boom"));
        assert_eq!(fail.duration_ms, Some(20));
        assert_eq!(fail.log_offset, Some(0));
        assert_eq!(fail.machine.as_deref(), Some(LOCAL));
        let machine = |name: &str| {
            results
                .iter()
                .find(|r| r.name == name)
                .unwrap()
                .machine
                .clone()
        };
        assert_eq!((machine("cached"), machine("unbuilt")), (None, None));
        assert_eq!(failed_names(&results), ["fail", "bad (evaluation)"]);
    }
}
