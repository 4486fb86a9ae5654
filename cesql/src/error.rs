//! Errors of the CESQL engine: [`ParseError`] when an expression cannot be compiled, and
//! [`EvalError`] for the errors the specification (section 3.3) collects while evaluating.

use std::fmt;

/// Why an expression could not be compiled, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at column {column}")]
pub struct ParseError {
    /// 1-based column of the offending input, counted in characters.
    pub column: usize,
    /// Byte offset of the offending input in the expression text.
    pub offset: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// Builds an error located at byte `offset` of `text`.
    pub(super) fn at(text: &str, offset: usize, kind: ParseErrorKind) -> Self {
        let column = text
            .get(..offset)
            .map_or(offset, |before| before.chars().count())
            + 1;
        Self {
            column,
            offset,
            kind,
        }
    }
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A token that does not fit the grammar where it stands.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows at this point.
        expected: &'static str,
        /// What the expression has instead.
        found: String,
    },
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedCharacter(char),
    /// A string literal without its closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// An integer literal outside -2147483648..=2147483647.
    #[error("integer literal {0} is outside the 32-bit signed range")]
    IntegerOutOfRange(String),
    /// A word used as an attribute name that is not made of letters and digits.
    #[error("invalid attribute name {0:?}: attribute names contain only letters and digits")]
    InvalidAttributeName(String),
    /// A word used as a function name that is not made of letters and underscores.
    #[error(
        "invalid function name {0:?}: function names start with a letter and contain only letters and underscores"
    )]
    InvalidFunctionName(String),
    /// Parentheses, unary operators or LIKE/IN chains nested beyond the engine's limit.
    #[error("expression is nested more than {0} levels deep")]
    TooDeep(usize),
    /// The expression's text is longer than the engine takes.
    #[error("expression is longer than {0} bytes; split the filter (`all`, `any`) or simplify it")]
    TooLong(usize),
}

/// The error types every CESQL engine supports (specification section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The expression could not be parsed.
    Parse,
    /// A mathematical operation failed: division by zero, overflow.
    Math,
    /// An implicit or explicit type cast failed.
    Cast,
    /// A function that does not exist, or not with that number of arguments.
    MissingFunction,
    /// A function rejected its arguments.
    FunctionEvaluation,
    /// An attribute absent from the event was addressed.
    MissingAttribute,
    /// Any other error.
    Generic,
}

impl ErrorKind {
    /// The name the CESQL TCK uses for this kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Math => "math",
            Self::Cast => "cast",
            Self::MissingFunction => "missingFunction",
            Self::FunctionEvaluation => "functionEvaluation",
            Self::MissingAttribute => "missingAttribute",
            Self::Generic => "generic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error raised while evaluating an expression. Evaluation still yields a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct EvalError {
    /// The specification's error type.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
}

impl EvalError {
    pub(super) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<ParseError> for EvalError {
    fn from(error: ParseError) -> Self {
        Self::new(ErrorKind::Parse, error.to_string())
    }
}

/// Quotes a string for an error message, shortened so that a huge attribute cannot flood logs.
pub(super) fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_not_bytes() {
        let error = ParseError::at("'é' +", 5, ParseErrorKind::UnterminatedString);
        assert_eq!(error.column, 5);
        assert_eq!(error.to_string(), "unterminated string literal at column 5");
    }

    #[test]
    fn kinds_use_tck_names() {
        assert_eq!(ErrorKind::MissingAttribute.as_str(), "missingAttribute");
        assert_eq!(
            ErrorKind::FunctionEvaluation.to_string(),
            "functionEvaluation"
        );
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(100);
        let shown = quoted(&long);
        assert!(shown.ends_with('…'));
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), 64);
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }
}
