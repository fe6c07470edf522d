//! Suggestions recently given, so that a keystroke typing along one of them is answered from it
//! at once, without the model: the user types `pri` after `print(x)` was suggested at `p`, and
//! gets `nt(x)` back. Documents are remembered by hashes of the text around the cursor, not
//! copies.

use std::collections::VecDeque;

use crate::context::Mode;

use super::Suggestion;

/// Suggestions kept (across all documents).
const CAPACITY: usize = 16;

#[derive(Default)]
pub struct Recent {
    shown: VecDeque<Shown>,
    hasher: ahash::RandomState,
}

struct Shown {
    uri: String,
    place: Place,
    suggestion: Suggestion,
}

/// A cursor in a text: its byte offset and hashes of the text before and after it.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    offset: usize,
    before: u64,
    after: u64,
}

impl Recent {
    fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    /// Where a suggestion is asked for: `text` with the cursor at byte `offset`.
    pub fn place(&self, text: &str, offset: usize) -> Option<Place> {
        Some(Place {
            offset,
            before: self.hash(text.get(..offset)?),
            after: self.hash(text.get(offset..)?),
        })
    }

    /// Remembers `suggestion`, made at `place` of document `uri`.
    pub fn remember(&mut self, uri: &str, place: Place, suggestion: &Suggestion) {
        if suggestion.text.trim().is_empty() {
            return;
        }
        self.shown
            .retain(|s| !(s.uri == uri && s.place.offset == place.offset));
        if self.shown.len() == CAPACITY {
            self.shown.pop_back();
        }
        self.shown.push_front(Shown {
            uri: uri.to_owned(),
            place,
            suggestion: suggestion.clone(),
        });
    }

    /// What was typed at `place` since: `text` is the text of `place` with something (maybe
    /// nothing) inserted at its cursor, and `offset` is just after the insertion.
    pub fn typed_since<'t>(&self, place: &Place, text: &'t str, offset: usize) -> Option<&'t str> {
        let typed = text.get(place.offset..offset)?;
        (self.hash(text.get(offset..)?) == place.after
            && self.hash(text.get(..place.offset)?) == place.before)
            .then_some(typed)
    }

    /// The rest of a remembered suggestion whose start the user has typed since: `text` is the
    /// remembered text with that start inserted at the remembered cursor, and `offset` is just
    /// after it. Never an empty or blank rest.
    pub fn typed_along(&self, uri: &str, text: &str, offset: usize) -> Option<Suggestion> {
        let after = text.get(offset..)?;
        let mut after_hash = None;
        self.shown.iter().find_map(|s| {
            if s.uri != uri || s.place.offset > offset {
                return None;
            }
            let rest = Self::rest(&s.suggestion, text.get(s.place.offset..offset)?)?;
            // Cheap tests first: most keystrokes differ from every remembered place.
            let after_hash = *after_hash.get_or_insert_with(|| self.hash(after));
            if after_hash != s.place.after
                || self.hash(text.get(..s.place.offset)?) != s.place.before
            {
                return None;
            }
            Some(rest)
        })
    }

    /// What is left of `suggestion` once `typed` of it is typed: never an empty or blank rest.
    pub fn rest(suggestion: &Suggestion, typed: &str) -> Option<Suggestion> {
        let rest = suggestion.text.strip_prefix(typed)?;
        if rest.trim().is_empty() {
            return None;
        }
        Some(Suggestion {
            text: rest.to_owned(),
            mode: if typed.is_empty() || rest.contains('\n') {
                suggestion.mode
            } else {
                Mode::Line
            },
        })
    }

    /// Whether a suggestion still being generated, `so_far` of it, may turn out to start with
    /// `typed`: neither has left the other's path yet.
    pub fn may_match(so_far: &str, typed: &str) -> bool {
        so_far.starts_with(typed) || typed.starts_with(so_far)
    }

    /// Forgets a closed document's suggestions.
    pub fn forget(&mut self, uri: &str) {
        self.shown.retain(|s| s.uri != uri);
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `$0` marks the cursor.
    pub(crate) fn at(fixture: &str) -> (String, usize) {
        let offset = fixture.find("$0").expect("cursor marker");
        (fixture.replace("$0", ""), offset)
    }

    fn line(text: &str) -> Suggestion {
        Suggestion {
            text: text.into(),
            mode: Mode::Line,
        }
    }

    #[test]
    fn typing_along_a_suggestion_answers_its_rest() {
        let mut recent = Recent::default();
        let (text, offset) = at("x = 1\nprint$0\ny = 2\n");
        let place = recent.place(&text, offset).unwrap();
        recent.remember("a.py", place, &line("(x + 1)"));
        let (typed, offset) = at("x = 1\nprint(x$0\ny = 2\n");
        assert_eq!(
            recent.typed_along("a.py", &typed, offset),
            Some(line(" + 1)"))
        );
        // Nothing typed yet: the same suggestion again.
        assert_eq!(recent.typed_along("a.py", &text, 11), Some(line("(x + 1)")));
    }

    #[test]
    fn anything_else_asks_the_model() {
        let mut recent = Recent::default();
        let (text, offset) = at("x = 1\nprint$0\ny = 2\n");
        let place = recent.place(&text, offset).unwrap();
        recent.remember("a.py", place, &line("(x + 1)"));
        for (uri, fixture) in [
            ("a.py", "x = 1\nprint(y$0\ny = 2\n"), // typed something else
            ("a.py", "x = 2\nprint(x$0\ny = 2\n"), // changed above
            ("a.py", "x = 1\nprint(x$0\ny = 3\n"), // changed below
            ("b.py", "x = 1\nprint(x$0\ny = 2\n"), // another document
            ("a.py", "x = 1\nprint(x + 1)$0\ny = 2\n"), // typed it all
            ("a.py", "x = 1\npri$0\ny = 2\n"),     // deleted
        ] {
            let (typed, offset) = at(fixture);
            assert_eq!(recent.typed_along(uri, &typed, offset), None, "{fixture}");
        }
        recent.forget("a.py");
        let (typed, offset) = at("x = 1\nprint(x$0\ny = 2\n");
        assert_eq!(recent.typed_along("a.py", &typed, offset), None);
    }

    #[test]
    fn typed_since_names_the_insertion_at_a_place() {
        let recent = Recent::default();
        let (text, offset) = at("x = 1\nprint$0\ny = 2\n");
        let place = recent.place(&text, offset).unwrap();
        assert_eq!(recent.typed_since(&place, &text, offset), Some(""));
        let (typed, offset) = at("x = 1\nprint(x$0\ny = 2\n");
        assert_eq!(recent.typed_since(&place, &typed, offset), Some("(x"));
        for fixture in [
            "x = 2\nprint(x$0\ny = 2\n",
            "x = 1\nprint(x$0\ny = 3\n",
            "x = 1\npri$0\ny = 2\n",
        ] {
            let (typed, offset) = at(fixture);
            assert_eq!(
                recent.typed_since(&place, &typed, offset),
                None,
                "{fixture}"
            );
        }
    }

    #[test]
    fn a_running_suggestion_may_match_until_it_leaves_the_typed_path() {
        assert!(Recent::may_match("", "(x"));
        assert!(Recent::may_match("(", "(x"));
        assert!(Recent::may_match("(x + 1)", "(x"));
        assert!(!Recent::may_match("(y", "(x"));
        assert!(!Recent::may_match("\n", "(x"));
    }

    #[test]
    fn multi_line_rests_keep_their_mode() {
        let mut recent = Recent::default();
        let (text, offset) = at("def f():\n    $0\n");
        let block = Suggestion {
            text: "a = 1\n    return a".into(),
            mode: Mode::Block,
        };
        let place = recent.place(&text, offset).unwrap();
        recent.remember("a.py", place, &block);
        let (typed, offset) = at("def f():\n    a = $0\n");
        assert_eq!(
            recent.typed_along("a.py", &typed, offset).map(|s| s.mode),
            Some(Mode::Block)
        );
        let (typed, offset) = at("def f():\n    a = 1\n    ret$0\n");
        assert_eq!(
            recent.typed_along("a.py", &typed, offset),
            Some(line("urn a"))
        );
    }
}
