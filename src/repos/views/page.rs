//! A page of the repository view: what `GET /api/repos/{name}` answers for
//! the branches asked, put together from the JSON kept per branch, and the
//! default page kept whole (with its gzip encoding) until the next change.

use bytes::Bytes;
use serde::Serialize;

use super::{BranchState, RepoState};
use crate::app::Repo;
use crate::ops::metrics::BuildStats;

/// How many branches a page of the repository view lists unless asked.
pub const BRANCH_PAGE_DEFAULT: usize = 100;
/// The most branches one page of the repository view lists.
pub const BRANCH_PAGE_MAX: usize = 1000;

/// Which branches of the repository view to list: `limit` of them from
/// `offset`, in page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchPage {
    pub offset: usize,
    pub limit: usize,
}

impl Default for BranchPage {
    fn default() -> Self {
        BranchPage {
            offset: 0,
            limit: BRANCH_PAGE_DEFAULT,
        }
    }
}

/// A repository's answer as of its last change: its fixed part, every
/// branch in page order, and the default page (what nearly every request
/// asks for) with its gzip encoding once a client asked for it.
#[derive(Debug)]
pub(super) struct Answer {
    /// The repository, its statistics, its default branch and how many
    /// branches it has: a JSON object without its closing brace.
    pub(super) head: Bytes,
    /// Each branch's JSON, newest build first.
    pub(super) order: Vec<Bytes>,
    pub(super) json: Bytes,
    pub(super) gzip: Option<Bytes>,
}

/// `json` gzip-encoded, at the fastest level: JSON of branches compresses
/// to about a tenth, which is what a client then waits for.
pub(super) fn gzip(json: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(json).expect("writing to memory");
    encoder.finish().expect("writing to memory").into()
}

/// The answer listing the branches `listed`, the `start`th on of `total`
/// in page order, after `head`.
pub(super) fn page_json(head: &[u8], listed: &[Bytes], start: usize, total: usize) -> Bytes {
    let end = start + listed.len();
    let next = if end < total {
        end.to_string()
    } else {
        "null".to_string()
    };
    let size = listed.iter().map(|b| b.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(head.len() + size + 96);
    out.extend_from_slice(head);
    out.extend_from_slice(
        format!(",\"branches_offset\":{start},\"branches_next_offset\":{next},\"branches\":[")
            .as_bytes(),
    );
    for (i, branch) in listed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(branch);
    }
    out.extend_from_slice(b"]}");
    out.into()
}

/// The range of `total` branches that `page` lists.
pub(super) fn range_of(page: BranchPage, total: usize) -> std::ops::Range<usize> {
    let start = page.offset.min(total);
    start..start.saturating_add(page.limit).min(total)
}

impl RepoState {
    pub(super) fn answer(&mut self) -> &mut Answer {
        self.answer.get_or_insert_with(|| {
            #[derive(Serialize)]
            struct Head<'a> {
                #[serde(flatten)]
                repo: &'a Repo,
                /// The statistics over the repository's last finished builds.
                stats: BuildStats,
                branches_total: usize,
            }
            let head = serde_json::to_vec(&Head {
                repo: &self.repo,
                stats: self.finished.stats(),
                branches_total: self.branches.len(),
            })
            .expect("a repository serialises");
            // The branch the headline and badge are about: the one `HEAD`
            // names, listed even before it is pushed.
            let mut fixed = head[..head.len() - 1].to_vec();
            fixed.extend_from_slice(b",\"default_branch\":");
            match self.head.as_deref() {
                Some(name) => match self.branches.get(name) {
                    Some(branch) => fixed.extend_from_slice(&branch.json),
                    None => fixed.extend_from_slice(
                        &serde_json::to_vec(&serde_json::json!({
                            "name": name, "commit": null, "latest_build": null, "stats": null,
                        }))
                        .expect("a branch serialises"),
                    ),
                },
                None => fixed.extend_from_slice(b"null"),
            }
            // The branch with the newest build it shows first, as a forge
            // lists them;
            // never built last. The map is by name, and the sort is stable:
            // ties stay by name, so pages do not shuffle between requests.
            let mut ranked: Vec<&BranchState> = self.branches.values().collect();
            ranked.sort_by_key(|b| {
                let standing = self.standing.get(&b.commit);
                std::cmp::Reverse(
                    super::shown(b.latest.as_ref(), standing, &b.commit).map(|l| l.id),
                )
            });
            let order: Vec<Bytes> = ranked.into_iter().map(|b| b.json.clone()).collect();
            let first = range_of(BranchPage::default(), order.len());
            let json = page_json(&fixed, &order[first], 0, order.len());
            Answer {
                head: fixed.into(),
                order,
                json,
                gzip: None,
            }
        })
    }
}
