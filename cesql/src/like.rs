//! The LIKE operator's patterns (section 3.4.3), compiled once when the expression is parsed.
//!
//! `%` matches any sequence of characters, `_` exactly one character, and `\%` / `\_` the
//! wildcard characters themselves. The specification defines no other escape, so a backslash
//! before any other character is an ordinary character (`'ab\c' LIKE 'ab\c'` is true).
//! Matching is case-sensitive and counts Unicode characters, not bytes.
//!
//! The common filter shapes — exact, prefix (`'https://%'`), suffix (`'%.error'`) and
//! contains (`'%foo%'`) — become plain string comparisons; other patterns use a backtracking
//! matcher that is linear for typical patterns and at worst O(text × pattern).

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LikePattern {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    /// Only `%`: matches everything.
    Anything,
    General(Box<[Piece]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Literal(Box<str>),
    /// `_`
    AnyChar,
    /// `%`
    AnyString,
}

impl LikePattern {
    pub(super) fn compile(pattern: &str) -> Self {
        let pieces = pieces(pattern);
        match pieces.as_slice() {
            [] => Self::Exact("".into()),
            [Piece::Literal(exact)] => Self::Exact(exact.clone()),
            [Piece::AnyString] => Self::Anything,
            [Piece::Literal(prefix), Piece::AnyString] => Self::Prefix(prefix.clone()),
            [Piece::AnyString, Piece::Literal(suffix)] => Self::Suffix(suffix.clone()),
            [Piece::AnyString, Piece::Literal(inner), Piece::AnyString] => {
                Self::Contains(inner.clone())
            }
            _ => Self::General(pieces.into_boxed_slice()),
        }
    }

    pub(super) fn matches(&self, text: &str) -> bool {
        match self {
            Self::Exact(exact) => text == &**exact,
            Self::Prefix(prefix) => text.starts_with(&**prefix),
            Self::Suffix(suffix) => text.ends_with(&**suffix),
            Self::Contains(inner) => text.contains(&**inner),
            Self::Anything => true,
            Self::General(pieces) => matches_pieces(pieces, text),
        }
    }
}

/// Splits a pattern into literal runs and wildcards; consecutive `%` collapse into one.
fn pieces(pattern: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let wildcard = match c {
            '\\' if matches!(chars.peek(), Some('%' | '_')) => {
                literal.extend(chars.next());
                continue;
            }
            '%' => Piece::AnyString,
            '_' => Piece::AnyChar,
            other => {
                literal.push(other);
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(
                std::mem::take(&mut literal).into_boxed_str(),
            ));
        }
        if !(wildcard == Piece::AnyString && pieces.last() == Some(&Piece::AnyString)) {
            pieces.push(wildcard);
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal.into_boxed_str()));
    }
    pieces
}

/// Wildcard matching that backtracks only to the most recent `%`: when the pieces after it
/// fail, that `%` absorbs one more character and they are retried. This is enough because
/// whatever an earlier `%` could absorb instead, the later one can absorb as well.
fn matches_pieces(pieces: &[Piece], text: &str) -> bool {
    let (mut piece, mut at) = (0, 0);
    // The piece after the latest `%`, and where in the text it is being tried.
    let mut retry: Option<(usize, usize)> = None;
    loop {
        let step = match pieces.get(piece) {
            Some(Piece::AnyString) => {
                piece += 1;
                if piece == pieces.len() {
                    return true;
                }
                retry = Some((piece, at));
                continue;
            }
            // How many bytes the piece matches at `at`, if it matches.
            Some(Piece::AnyChar) => text[at..].chars().next().map(char::len_utf8),
            Some(Piece::Literal(literal)) => {
                text[at..].starts_with(&**literal).then_some(literal.len())
            }
            None if at == text.len() => return true,
            None => None,
        };
        if let Some(step) = step {
            piece += 1;
            at += step;
            continue;
        }
        let Some((retry_piece, retry_at)) = retry else {
            return false;
        };
        let Some(absorbed) = text[retry_at..].chars().next() else {
            return false;
        };
        let next_at = retry_at + absorbed.len_utf8();
        retry = Some((retry_piece, next_at));
        piece = retry_piece;
        at = next_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(text: &str, pattern: &str) -> bool {
        LikePattern::compile(pattern).matches(text)
    }

    #[test]
    fn common_shapes_compile_to_string_comparisons() {
        assert_eq!(
            LikePattern::compile("abc"),
            LikePattern::Exact("abc".into())
        );
        assert_eq!(
            LikePattern::compile("ab%"),
            LikePattern::Prefix("ab".into())
        );
        assert_eq!(
            LikePattern::compile("%%ab"),
            LikePattern::Suffix("ab".into())
        );
        assert_eq!(
            LikePattern::compile("%a\\%b%"),
            LikePattern::Contains("a%b".into())
        );
        assert_eq!(LikePattern::compile("%%"), LikePattern::Anything);
        assert_eq!(LikePattern::compile(""), LikePattern::Exact("".into()));
        assert!(matches!(
            LikePattern::compile("a_"),
            LikePattern::General(_)
        ));
    }

    #[test]
    fn wildcards() {
        assert!(like("abc", "a%b%c"));
        assert!(like("azzzbzzzc", "a%b%c"));
        assert!(!like("ac", "abc"));
        assert!(like("azbzc", "a_b_c"));
        assert!(!like("abzc", "a_b_c"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("aXbXc", "%X%X%"));
        assert!(!like("aXb", "%X%X%"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("mississippi", "m%i_s%i"));
        assert!(!like("mississippi", "m%x%"));
    }

    #[test]
    fn escapes() {
        assert!(like("a%b_c", r"a\%b\_c"));
        assert!(!like("axbyc", r"a\%b\_c"));
        assert!(like("100%", r"%\%"));
        assert!(!like("100", r"%\%"));
        // A backslash escapes nothing but the wildcards.
        assert!(like(r"ab\c", r"ab\c"));
        assert!(like(r"a\", r"a\"));
        assert!(like(r"a\%", r"a\\%"));
        assert!(!like(r"a\x", r"a\\%"));
    }

    #[test]
    fn underscore_is_one_character_not_one_byte() {
        assert!(like("é", "_"));
        assert!(like("aéb", "a_b"));
        assert!(like("日本語", "%本_"));
        assert!(!like("日本語", "%本"));
    }

    /// The definition, as a slow recursive matcher over characters.
    fn reference(text: &[char], pattern: &[char]) -> bool {
        match pattern {
            [] => text.is_empty(),
            ['\\', c @ ('%' | '_'), rest @ ..] => {
                text.first() == Some(c) && reference(&text[1..], rest)
            }
            ['%', rest @ ..] => (0..=text.len()).any(|skip| reference(&text[skip..], rest)),
            ['_', rest @ ..] => !text.is_empty() && reference(&text[1..], rest),
            [c, rest @ ..] => text.first() == Some(c) && reference(&text[1..], rest),
        }
    }

    /// Every string of length 0 to `max` over `alphabet`.
    fn strings(alphabet: &[char], max: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn agrees_with_the_definition_exhaustively() {
        let texts = strings(&['a', 'b', '%', '\\'], 4);
        for pattern in strings(&['a', 'b', '%', '_', '\\'], 5) {
            let compiled = LikePattern::compile(&pattern);
            let pattern_chars: Vec<char> = pattern.chars().collect();
            for text in &texts {
                let text_chars: Vec<char> = text.chars().collect();
                assert_eq!(
                    compiled.matches(text),
                    reference(&text_chars, &pattern_chars),
                    "{text:?} LIKE {pattern:?}"
                );
            }
        }
    }

    #[test]
    fn case_sensitive() {
        assert!(!like("ABC", "abc"));
        assert!(!like("aBc", "_b%"));
    }
}
