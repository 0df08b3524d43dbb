//! Who cancelled a build, recorded as its reason and read back from it,
//! with the hint shown on a cancelled build.

use serde::Serialize;

/// Who or what cancelled a build. (A shutdown cancels nothing: it hands
/// running builds back to the queue.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelSource {
    /// Someone pressed Cancel on the web page.
    Page,
    /// A client of the API.
    Api,
    /// A newer push to the same branch.
    Superseded,
}

impl CancelSource {
    /// The recorded reason of a cancellation by `self`; `newer` is the
    /// superseding build.
    pub fn reason(self, newer: Option<i64>) -> String {
        match self {
            CancelSource::Page => "cancelled from the web page".into(),
            CancelSource::Api => "cancelled through the API".into(),
            CancelSource::Superseded => format!("superseded by #{}", newer.unwrap_or_default()),
        }
    }

    /// Who cancelled, read back from a recorded reason.
    pub fn of(reason: &str) -> Option<CancelSource> {
        [CancelSource::Page, CancelSource::Api]
            .into_iter()
            .find(|source| source.reason(None) == reason)
            .or_else(|| {
                reason
                    .starts_with("superseded by #")
                    .then_some(CancelSource::Superseded)
            })
    }

    /// The one-line hint shown with a cancelled build.
    pub fn hint(self) -> &'static str {
        match self {
            CancelSource::Page => {
                "Someone pressed Cancel on the build's page. Rebuild to run it again."
            }
            CancelSource::Api => "A client cancelled it through the API. Rebuild to run it again.",
            CancelSource::Superseded => {
                "A newer commit was pushed to the branch; its build has the current result."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_sources_read_back_from_their_reasons() {
        for source in [
            CancelSource::Page,
            CancelSource::Api,
            CancelSource::Superseded,
        ] {
            assert_eq!(CancelSource::of(&source.reason(Some(7))), Some(source));
        }
        assert_eq!(CancelSource::Superseded.reason(Some(7)), "superseded by #7");
        assert_eq!(CancelSource::of("cancelled"), None);
    }
}
