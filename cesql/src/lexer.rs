//! Splits an expression into tokens (the lexical rules of specification section 2 and of the
//! `CESQLLexer.g4` grammar).
//!
//! Keywords are case-insensitive. Integer literals are lexed without their sign: the parser
//! folds a leading `-` or `+` into the literal, so that `-2147483648` is representable and
//! `4-1` is a subtraction. Words (runs of letters, digits and underscores) are classified by
//! the parser, which knows whether a `(` follows (a function name) or not (an attribute name).

use super::error::{ParseError, ParseErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenKind<'a> {
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eq,
    /// `!=` or `<>`.
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
    Not,
    Like,
    Exists,
    In,
    True,
    False,
    /// Decimal digits, without a sign.
    Integer(&'a str),
    /// A string literal, escapes of its delimiting quote already resolved.
    String(String),
    /// Letters, digits and underscores that are not a keyword.
    Word(&'a str),
    End,
}

impl TokenKind<'_> {
    /// How an error message names the token.
    pub(super) fn describe(&self) -> String {
        let symbol = match self {
            Self::LParen => "'('",
            Self::RParen => "')'",
            Self::Comma => "','",
            Self::Plus => "'+'",
            Self::Minus => "'-'",
            Self::Star => "'*'",
            Self::Slash => "'/'",
            Self::Percent => "'%'",
            Self::Eq => "'='",
            Self::NotEq => "'!='",
            Self::Lt => "'<'",
            Self::Le => "'<='",
            Self::Gt => "'>'",
            Self::Ge => "'>='",
            Self::And => "AND",
            Self::Or => "OR",
            Self::Xor => "XOR",
            Self::Not => "NOT",
            Self::Like => "LIKE",
            Self::Exists => "EXISTS",
            Self::In => "IN",
            Self::True => "TRUE",
            Self::False => "FALSE",
            Self::End => "end of input",
            Self::Integer(digits) => return format!("integer {digits}"),
            Self::String(text) => return format!("string {}", super::error::quoted(text)),
            Self::Word(word) => return format!("name {word:?}"),
        };
        symbol.to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token<'a> {
    pub(super) kind: TokenKind<'a>,
    /// Byte offset of the token's first character.
    pub(super) offset: usize,
}

const KEYWORDS: [(&str, TokenKind<'static>); 9] = [
    ("AND", TokenKind::And),
    ("OR", TokenKind::Or),
    ("XOR", TokenKind::Xor),
    ("NOT", TokenKind::Not),
    ("LIKE", TokenKind::Like),
    ("EXISTS", TokenKind::Exists),
    ("IN", TokenKind::In),
    ("TRUE", TokenKind::True),
    ("FALSE", TokenKind::False),
];

/// Tokenizes the whole expression; the last token is always [`TokenKind::End`].
pub(super) fn tokenize(text: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(offset, c)) = chars.peek() {
        chars.next();
        let next = chars.peek().map(|&(_, n)| n);
        let kind = match c {
            c if c.is_whitespace() => continue,
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            ',' => TokenKind::Comma,
            '+' => TokenKind::Plus,
            '-' => TokenKind::Minus,
            '*' => TokenKind::Star,
            '/' => TokenKind::Slash,
            '%' => TokenKind::Percent,
            '=' => TokenKind::Eq,
            '!' if next == Some('=') => {
                chars.next();
                TokenKind::NotEq
            }
            '<' if next == Some('>') => {
                chars.next();
                TokenKind::NotEq
            }
            '<' if next == Some('=') => {
                chars.next();
                TokenKind::Le
            }
            '<' => TokenKind::Lt,
            '>' if next == Some('=') => {
                chars.next();
                TokenKind::Ge
            }
            '>' => TokenKind::Gt,
            '\'' | '"' => TokenKind::String(string_literal(text, offset, c, &mut chars)?),
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut end = offset + 1;
                while let Some(&(i, n)) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    end = i + 1;
                    chars.next();
                }
                word(&text[offset..end])
            }
            other => {
                return Err(ParseError::at(
                    text,
                    offset,
                    ParseErrorKind::UnexpectedCharacter(other),
                ));
            }
        };
        tokens.push(Token { kind, offset });
    }
    tokens.push(Token {
        kind: TokenKind::End,
        offset: text.len(),
    });
    Ok(tokens)
}

fn word(word: &str) -> TokenKind<'_> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return TokenKind::Integer(word);
    }
    KEYWORDS
        .iter()
        .find(|(keyword, _)| keyword.eq_ignore_ascii_case(word))
        .map_or(TokenKind::Word(word), |(_, kind)| kind.clone())
}

/// Reads a string literal whose opening `quote` is at `start` and has been consumed.
///
/// A backslash pairs with the next character (so `\'` never ends a `'`-quoted literal). The
/// pair `\` + delimiting quote stands for the quote; every other pair is kept as written, so
/// that LIKE patterns keep their `\%` and `\_` escapes. A doubled delimiting quote (`''`)
/// also stands for the quote, as in SQL and the `CESQLLexer.g4` grammar.
fn string_literal(
    text: &str,
    start: usize,
    quote: char,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<String, ParseError> {
    let unterminated = || ParseError::at(text, start, ParseErrorKind::UnterminatedString);
    let mut value = String::new();
    loop {
        match chars.next() {
            None => return Err(unterminated()),
            Some((_, '\\')) => match chars.next() {
                None => return Err(unterminated()),
                Some((_, c)) if c == quote => value.push(quote),
                Some((_, c)) => {
                    value.push('\\');
                    value.push(c);
                }
            },
            Some((_, c)) if c == quote => {
                if chars.peek().is_some_and(|&(_, n)| n == quote) {
                    chars.next();
                    value.push(quote);
                } else {
                    return Ok(value);
                }
            }
            Some((_, c)) => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind<'_>> {
        tokenize(text)
            .expect("tokenizes")
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn operators_and_keywords() {
        use TokenKind::*;
        assert_eq!(
            kinds("a<>b != c <= >= < > = and Or xOr nOt like exists in"),
            vec![
                Word("a"),
                NotEq,
                Word("b"),
                NotEq,
                Word("c"),
                Le,
                Ge,
                Lt,
                Gt,
                Eq,
                And,
                Or,
                Xor,
                Not,
                Like,
                Exists,
                In,
                End
            ]
        );
    }

    #[test]
    fn integers_are_unsigned_and_words_may_mix_digits() {
        use TokenKind::*;
        assert_eq!(
            kinds("4-1 123abc CONCAT_WS"),
            vec![
                Integer("4"),
                Minus,
                Integer("1"),
                Word("123abc"),
                Word("CONCAT_WS"),
                End
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            kinds(r#"'a"b\'c'"#)[0],
            TokenKind::String(r#"a"b'c"#.into())
        );
        assert_eq!(
            kinds(r#""a'b\"c""#)[0],
            TokenKind::String(r#"a'b"c"#.into())
        );
        assert_eq!(kinds(r"'a\_b\%'")[0], TokenKind::String(r"a\_b\%".into()));
        assert_eq!(kinds("'it''s'")[0], TokenKind::String("it's".into()));
        assert_eq!(kinds("''")[0], TokenKind::String(String::new()));
        assert_eq!(kinds(r"'a\\'")[0], TokenKind::String(r"a\\".into()));
    }

    #[test]
    fn errors_point_at_their_cause() {
        let error = tokenize("id = 'abc").unwrap_err();
        assert_eq!(error.kind, ParseErrorKind::UnterminatedString);
        assert_eq!(error.column, 6);
        let error = tokenize(r"'abc\'").unwrap_err();
        assert_eq!(error.kind, ParseErrorKind::UnterminatedString);
        let error = tokenize("a ! b").unwrap_err();
        assert_eq!(error.kind, ParseErrorKind::UnexpectedCharacter('!'));
        assert_eq!(error.column, 3);
        let error = tokenize("é").unwrap_err();
        assert_eq!(error.column, 1);
    }
}
