//! What a build that passed did not test: notices shown with its result.

use serde_json::Value;

/// What a build that passed did not test: no checks for this host's system,
/// or checks only for other systems.
pub fn notices(system: &str, checks: Option<&Value>, outputs: Option<&Value>) -> Vec<String> {
    let mut notices = Vec::new();
    if checks.and_then(Value::as_array).is_some_and(Vec::is_empty) {
        notices.push(format!("no checks for {system}: nothing was tested"));
    }
    if let Some(per_system) = outputs
        .and_then(|o| o.get("checks"))
        .and_then(Value::as_object)
    {
        for (other, names) in per_system {
            let names: Vec<&str> = names
                .as_array()
                .map(|n| n.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if other != system && !names.is_empty() {
                notices.push(format!(
                    "checks for {other} not checked on this host ({system}): {}",
                    names.join(", ")
                ));
            }
        }
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_builds_say_what_was_not_tested() {
        let outputs = serde_json::json!({"checks": {"aarch64-linux": ["a"], "x86_64-linux": []}});
        assert_eq!(
            notices("x86_64-linux", Some(&serde_json::json!([])), Some(&outputs)),
            [
                "no checks for x86_64-linux: nothing was tested",
                "checks for aarch64-linux not checked on this host (x86_64-linux): a"
            ]
        );
        assert!(notices("x86_64-linux", Some(&serde_json::json!([{}])), None).is_empty());
    }
}
