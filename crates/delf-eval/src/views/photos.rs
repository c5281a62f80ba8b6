//! The benchmark's photo list (`tests/fixtures/views_photos.tsv`): which installed photos are originals, unrelated
//! database photos, distractor queries, and real second views.

use std::path::Path;

use crate::EvalError;

/// The photos of the benchmark, as paths relative to the data folder (`$DELF_HOME/data`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhotoList {
    /// Database photos that hard views are rendered from.
    pub originals: Vec<String>,
    /// Unrelated database photos.
    pub database: Vec<String>,
    /// Unrelated query photos (must answer "no match").
    pub distractors: Vec<String>,
    /// (query, database partner): other real photographs of a database photo's scene.
    pub real_views: Vec<(String, String)>,
}

impl PhotoList {
    /// Reads the tab-separated list: `original|database|distractor PATH` or `real-view QUERY PARTNER`; `#` starts a
    /// comment line. A path listed twice, or a real-view partner that is not a database photo, is an error.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::parse(&text).map_err(|reason| EvalError::format(path, reason))
    }

    /// [`PhotoList::load`] of text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["original", p] => list.originals.push(p.to_string()),
                ["database", p] => list.database.push(p.to_string()),
                ["distractor", p] => list.distractors.push(p.to_string()),
                ["real-view", q, p] => list.real_views.push((q.to_string(), p.to_string())),
                _ => return Err(format!("line {}: expected ROLE<TAB>PATH, got {line:?}", n + 1)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        let all = list.all_database().chain(list.queries());
        if let Some(p) = all.into_iter().find(|p| !seen.insert(*p)) {
            return Err(format!("{p} is listed twice"));
        }
        if let Some((q, p)) = list.real_views.iter().find(|(_, p)| !list.all_database().any(|d| d == p)) {
            return Err(format!("real view {q}: its partner {p} is not a database photo"));
        }
        if list.originals.is_empty() {
            return Err("no originals".into());
        }
        Ok(list)
    }

    /// Every database photo: originals first, then the unrelated ones.
    pub fn all_database(&self) -> impl Iterator<Item = &str> {
        self.originals.iter().chain(&self.database).map(String::as_str)
    }

    /// Photos used as queries as they are (distractors and real views).
    fn queries(&self) -> impl Iterator<Item = &str> {
        self.distractors.iter().map(String::as_str).chain(self.real_views.iter().map(|(q, _)| q.as_str()))
    }

    /// The subset for development runs: every `step`-th original, database photo and distractor (real views
    /// kept when their partner is kept).
    pub fn every(&self, step: usize) -> Self {
        let take = |v: &[String]| v.iter().step_by(step.max(1)).cloned().collect::<Vec<_>>();
        let mut out = Self {
            originals: take(&self.originals),
            database: take(&self.database),
            distractors: take(&self.distractors),
            real_views: Vec::new(),
        };
        let kept: std::collections::HashSet<String> = out.all_database().map(str::to_string).collect();
        out.real_views = self.real_views.iter().filter(|(_, p)| kept.contains(p)).cloned().collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_refuses_repeats_and_orphans() {
        let text =
            "# c\noriginal\ta.jpg\noriginal\tb.jpg\ndatabase\tc.jpg\ndistractor\td.jpg\nreal-view\te.jpg\ta.jpg\n";
        let list = PhotoList::parse(text).unwrap();
        assert_eq!(list.originals, ["a.jpg", "b.jpg"]);
        assert_eq!(list.real_views, [("e.jpg".to_string(), "a.jpg".to_string())]);
        assert_eq!(list.all_database().collect::<Vec<_>>(), ["a.jpg", "b.jpg", "c.jpg"]);
        let quick = list.every(2);
        assert_eq!(quick.originals, ["a.jpg"]);
        assert_eq!(quick.real_views.len(), 1);
        assert!(PhotoList::parse("original\ta.jpg\ndistractor\ta.jpg\n").unwrap_err().contains("twice"));
        assert!(PhotoList::parse("original\ta.jpg\nreal-view\tq.jpg\tz.jpg\n").unwrap_err().contains("partner"));
        assert!(PhotoList::parse("original a.jpg\n").unwrap_err().contains("line 1"));
    }
}
