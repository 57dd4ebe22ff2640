//! Validation of the revision-related parts of an app file: `[[traffic]]`, tags, and the
//! `cpu` / `memory` resources of `[run]`.
//!
//! Whether a named revision exists is not known here (revisions are runtime state): the
//! controller checks that when it applies the traffic block, and keeps the previous split
//! while a name is unknown.

use super::model::{Resources, RevisionRef, TrafficTarget};
use super::raw::{RawRun, RawTraffic};
use super::validate::{is_dns_label, Checker};

/// Most revisions `revision_history` may keep.
const MAX_HISTORY: u32 = 1000;
/// Revisions kept when `revision_history` is not set.
pub const DEFAULT_HISTORY: usize = 10;

/// Checks `[[traffic]]` of app `name`; `None` (absent) means 100% latest.
pub(super) fn traffic(
    c: &mut Checker<'_>,
    name: &str,
    project: &str,
    domain: &str,
    raw: Option<&[RawTraffic]>,
) -> Vec<TrafficTarget> {
    let Some(entries) = raw else {
        return TrafficTarget::all_latest();
    };
    if entries.is_empty() {
        c.report(
            "traffic",
            "is empty; leave it out for 100% to the latest revision",
        );
        return TrafficTarget::all_latest();
    }
    let mut targets = Vec::with_capacity(entries.len());
    let mut tags: Vec<&str> = Vec::new();
    let mut sum = 0u32;
    for (index, entry) in entries.iter().enumerate() {
        let field = |key: &str| format!("traffic[{index}].{key}");
        let revision = match entry.revision.as_deref() {
            None => {
                c.report(
                    &field("revision"),
                    "is required: \"latest\" or a revision name",
                );
                continue;
            }
            Some("latest") => RevisionRef::Latest,
            Some(other) => match revision_number(name, other) {
                Ok(number) => RevisionRef::Number(number),
                Err(message) => {
                    c.report(&field("revision"), message);
                    continue;
                }
            },
        };
        let percent = entry.percent.unwrap_or(0);
        if percent > 100 {
            c.report(&field("percent"), format!("{percent} is above 100"));
        }
        sum = sum.saturating_add(percent);
        let tag = match entry.tag.as_deref() {
            None => None,
            Some(tag) if !is_dns_label(tag) => {
                c.report(
                    &field("tag"),
                    format!("{tag:?} must be a DNS label: lower-case letters, digits and '-'"),
                );
                None
            }
            Some(tag) if tags.contains(&tag) => {
                c.report(&field("tag"), format!("{tag:?} is used twice"));
                None
            }
            Some(tag) => {
                tags.push(tag);
                Some((tag.to_string(), format!("{tag}-{name}.{project}.{domain}")))
            }
        };
        if entry.percent.is_none() && tag.is_none() {
            c.report(
                &field("percent"),
                "is required (it may be 0 only for a tagged entry)",
            );
        }
        targets.push(TrafficTarget {
            revision,
            percent,
            tag,
        });
    }
    if targets.len() == entries.len() && sum != 100 {
        c.report(
            "traffic",
            format!("the percentages add up to {sum}; they must add up to 100"),
        );
    }
    targets
}

/// `hello-00002` -> 2, for app `hello`.
fn revision_number(app: &str, revision: &str) -> Result<u32, String> {
    let digits = revision
        .strip_prefix(app)
        .and_then(|rest| rest.strip_prefix('-'))
        .ok_or_else(|| {
            format!("{revision:?} is not \"latest\" or a revision of this app like \"{app}-00001\"")
        })?;
    match digits.parse::<u32>() {
        Ok(number) if number > 0 && digits.len() == 5 => Ok(number),
        _ => Err(format!(
            "{revision:?}: a revision name ends in five digits, like \"{app}-00001\""
        )),
    }
}

/// Checks `revision_history`.
pub(super) fn history(c: &mut Checker<'_>, raw: Option<u32>) -> usize {
    match raw {
        None => DEFAULT_HISTORY,
        Some(0) => {
            c.report(
                "revision_history",
                "must be at least 1 (the current revision)",
            );
            DEFAULT_HISTORY
        }
        Some(n) if n > MAX_HISTORY => {
            c.report(
                "revision_history",
                format!("{n} is more than {MAX_HISTORY}"),
            );
            DEFAULT_HISTORY
        }
        Some(n) => n as usize,
    }
}

/// Checks `<table>.cpu` and `<table>.memory` (`run` or `container`).
pub(super) fn resources(c: &mut Checker<'_>, table: &str, run: &RawRun) -> Resources {
    let cpu_millis = run.cpu.and_then(|cpu| {
        if cpu.is_finite() && (0.001..=1024.0).contains(&cpu) {
            Some((cpu * 1000.0).round() as u32)
        } else {
            c.report(
                &format!("{table}.cpu"),
                format!("{cpu} is not a CPU count between 0.001 and 1024"),
            );
            None
        }
    });
    let memory_bytes = run
        .memory
        .as_deref()
        .and_then(|text| match parse_memory(text) {
            Ok(bytes) if bytes >= 4 << 20 => Some(bytes),
            Ok(_) => {
                c.report(
                    &format!("{table}.memory"),
                    format!("{text:?} is below the 4M an instance needs at least"),
                );
                None
            }
            Err(message) => {
                c.report(&format!("{table}.memory"), message);
                None
            }
        });
    Resources {
        cpu_millis,
        memory_bytes,
    }
}

/// `"512M"`, `"1G"`, `"0.5G"`, `"256Mi"`, `"1048576"` -> bytes. Decimal suffixes (K, M, G) as
/// Code Engine writes them, binary ones (Ki, Mi, Gi) as Kubernetes does.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit {
        "" => 1,
        "K" | "k" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use K, M, G, Ki, Mi or Gi"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an amount of memory like \"512M\" or \"1G\""))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{text:?} must be more than 0"));
    }
    Ok((value * multiplier as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("512M"), Ok(512_000_000));
        assert_eq!(parse_memory("0.5G"), Ok(500_000_000));
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert!(parse_memory("12 parsecs").is_err());
        assert!(parse_memory("-1G").is_err());
    }

    #[test]
    fn revision_names() {
        assert_eq!(revision_number("web", "web-00002"), Ok(2));
        assert!(revision_number("web", "api-00002").is_err());
        assert!(revision_number("web", "web-2").is_err());
        assert!(revision_number("web", "web-00000").is_err());
    }
}
