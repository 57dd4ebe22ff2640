//! `array_indices`: which indices a job run has, as Code Engine writes them
//! (`"0-9,15,20-22"`).

use std::fmt;

/// At most this many indices in one run (Code Engine's limit).
pub const MAX_INDICES: usize = 10_000;

/// The largest index that may be named (Code Engine's limit).
pub const MAX_INDEX: u32 = 9_999_999;

/// A validated, sorted set of indices, kept with the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArrayIndices {
    text: String,
    indices: Vec<u32>,
}

impl ArrayIndices {
    /// Parses a comma-separated list of indices and inclusive ranges.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut indices = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!(
                    "{text:?} has an empty entry; write indices and ranges like \"0-9,15,20-22\""
                ));
            }
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (index(low.trim(), text)?, index(high.trim(), text)?),
                None => {
                    let single = index(part, text)?;
                    (single, single)
                }
            };
            if low > high {
                return Err(format!(
                    "{part:?} in {text:?} runs backwards; write the lower index first"
                ));
            }
            if indices.len() + (high - low) as usize + 1 > MAX_INDICES {
                return Err(format!(
                    "{text:?} has more than {MAX_INDICES} indices; split the work over several runs"
                ));
            }
            indices.extend(low..=high);
        }
        indices.sort_unstable();
        indices.dedup();
        Ok(ArrayIndices {
            text: text.to_string(),
            indices,
        })
    }

    /// The indices, ascending, each once.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// `JOB_ARRAY_SIZE`: how many indices the run has.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl Default for ArrayIndices {
    fn default() -> Self {
        ArrayIndices::parse("0").expect("a valid default")
    }
}

impl fmt::Display for ArrayIndices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn index(value: &str, text: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(index) if index <= MAX_INDEX => Ok(index),
        Ok(_) => Err(format!(
            "{value} in {text:?} is above the largest index, {MAX_INDEX}"
        )),
        Err(_) => Err(format!(
            "{value:?} in {text:?} is not an index (0 to {MAX_INDEX}); write indices and ranges like \"0-9,15,20-22\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_become_sorted_unique_indices() {
        let parsed = ArrayIndices::parse("20-22, 0-3,15,2").unwrap();
        assert_eq!(parsed.indices(), [0, 1, 2, 3, 15, 20, 21, 22]);
        assert_eq!(parsed.to_string(), "20-22, 0-3,15,2");
        assert_eq!(ArrayIndices::default().indices(), [0]);
        assert_eq!(ArrayIndices::parse("0-9999").unwrap().len(), 10_000);
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (text, want) in [
            ("", "empty entry"),
            ("1,,2", "empty entry"),
            ("5-2", "runs backwards"),
            ("a-3", "not an index"),
            ("-1", "not an index"),
            ("0-10000", "more than 10000"),
            ("10000000", "above the largest"),
        ] {
            let error = ArrayIndices::parse(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
