//! A recursive-descent parser for the grammar of specification section 2, with the
//! precedence of section 3.6, from loosest to tightest:
//!
//! 1. `AND`, `OR`, `XOR` — one level, left to right, so `a OR b AND c` is `(a OR b) AND c`
//! 2. `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`
//! 3. `+`, `-`
//! 4. `*`, `/`, `%`
//! 5. `LIKE`, `NOT LIKE`, `IN`, `NOT IN` (postfix), so `a + b LIKE 'x'` is `a + (b LIKE 'x')`
//! 6. unary `NOT` and `-`, so `NOT a = b` is `(NOT a) = b`
//! 7. function calls, `EXISTS`, parenthesised expressions, literals, attribute names
//!
//! Levels 1 to 4 are left-associative, as section 3.6 requires ("evaluated left to right when
//! the precedence is equal"); the published ANTLR grammar marks level 1 right-associative,
//! which the specification's text contradicts.

use super::ast::{BinaryOp, Node};
use super::attribute::Attribute;
use super::error::{ParseError, ParseErrorKind};
use super::functions::Function;
use super::lexer::{Token, TokenKind, tokenize};
use super::like::LikePattern;
use super::value::Value;

/// How deep parentheses, unary operators and LIKE/IN chains may nest. It bounds the
/// evaluator's recursion, so that a hostile filter cannot overflow the stack; real filters
/// stay far below it.
pub(super) const MAX_DEPTH: usize = 64;

/// The longest expression text: every node of an expression costs evaluation on every event of
/// the trigger's broker, so a filter stays a filter, not a program.
pub(super) const MAX_LENGTH: usize = 16 * 1024;

/// The binary operator levels, loosest first.
const LEVELS: usize = 4;

pub(super) fn parse(text: &str) -> Result<Node, ParseError> {
    if text.len() > MAX_LENGTH {
        return Err(ParseError::at(
            text,
            MAX_LENGTH,
            ParseErrorKind::TooLong(MAX_LENGTH),
        ));
    }
    let mut parser = Parser {
        text,
        tokens: tokenize(text)?,
        pos: 0,
        depth: 0,
    };
    let node = parser.expression()?;
    if *parser.peek() != TokenKind::End {
        return Err(parser.unexpected("an operator or the end of the expression"));
    }
    Ok(node)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &TokenKind<'a> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &TokenKind<'a> {
        // The last token is always End.
        let last = self.tokens.len() - 1;
        &self.tokens[(self.pos + ahead).min(last)].kind
    }

    /// Takes the current token; at the end, keeps returning End.
    fn advance(&mut self) -> Token<'a> {
        let token = &mut self.tokens[self.pos];
        if token.kind == TokenKind::End {
            return token.clone();
        }
        self.pos += 1;
        Token {
            kind: std::mem::replace(&mut token.kind, TokenKind::End),
            offset: token.offset,
        }
    }

    fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::at(self.text, offset, kind)
    }

    /// An error about the current token.
    fn unexpected(&self, expected: &'static str) -> ParseError {
        let token = &self.tokens[self.pos];
        self.unexpected_token(token, expected)
    }

    fn unexpected_token(&self, token: &Token<'_>, expected: &'static str) -> ParseError {
        let found = token.kind.describe();
        self.error(token.offset, ParseErrorKind::Unexpected { expected, found })
    }

    fn expect(&mut self, kind: &TokenKind<'_>, expected: &'static str) -> Result<(), ParseError> {
        if self.peek() != kind {
            return Err(self.unexpected(expected));
        }
        self.advance();
        Ok(())
    }

    /// Runs `parse` one nesting level deeper.
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.descend()?;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn descend(&mut self) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            let offset = self.tokens[self.pos].offset;
            return Err(self.error(offset, ParseErrorKind::TooDeep(MAX_DEPTH)));
        }
        self.depth += 1;
        Ok(())
    }

    fn expression(&mut self) -> Result<Node, ParseError> {
        self.nested(|parser| parser.binary(0))
    }

    fn binary(&mut self, level: usize) -> Result<Node, ParseError> {
        if level == LEVELS {
            return self.postfix();
        }
        let first = self.binary(level + 1)?;
        let mut rest = Vec::new();
        while let Some(op) = binary_op(self.peek(), level) {
            self.advance();
            rest.push((op, self.binary(level + 1)?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Node::Binary {
                first: Box::new(first),
                rest,
            }
        })
    }

    /// `operand [NOT] LIKE 'pattern'` and `operand [NOT] IN (set)`, possibly chained.
    fn postfix(&mut self) -> Result<Node, ParseError> {
        let operand = self.unary()?;
        let depth = self.depth;
        let result = self.postfix_chain(operand);
        self.depth = depth;
        result
    }

    fn postfix_chain(&mut self, mut node: Node) -> Result<Node, ParseError> {
        loop {
            let negated = *self.peek() == TokenKind::Not;
            let operator = if negated {
                self.peek_at(1)
            } else {
                self.peek()
            };
            if !matches!(operator, TokenKind::Like | TokenKind::In) {
                if negated {
                    self.advance();
                    return Err(self.unexpected("LIKE or IN after NOT"));
                }
                return Ok(node);
            }
            // Each LIKE or IN wraps the tree one level deeper.
            self.descend()?;
            if negated {
                self.advance();
            }
            let operand = Box::new(node);
            node = if self.advance().kind == TokenKind::Like {
                let token = self.advance();
                let TokenKind::String(pattern) = &token.kind else {
                    return Err(self.unexpected_token(&token, "a string literal as LIKE pattern"));
                };
                Node::Like {
                    operand,
                    pattern: LikePattern::compile(pattern),
                    negated,
                }
            } else {
                Node::In {
                    operand,
                    set: self.set()?,
                    negated,
                }
            };
        }
    }

    /// `( expression [, expression]* )`; empty sets are not allowed.
    fn set(&mut self) -> Result<Vec<Node>, ParseError> {
        self.expect(&TokenKind::LParen, "'(' to open the IN set")?;
        let mut set = vec![self.expression()?];
        while *self.peek() == TokenKind::Comma {
            self.advance();
            set.push(self.expression()?);
        }
        self.expect(&TokenKind::RParen, "',' or ')'")?;
        Ok(set)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        match self.peek() {
            TokenKind::Not => {
                self.advance();
                let operand = self.nested(Self::unary)?;
                Ok(Node::Not(Box::new(operand)))
            }
            TokenKind::Minus => {
                let minus = self.advance();
                // `-` then digits is a negative literal: -2147483648 has no positive twin.
                if let TokenKind::Integer(digits) = *self.peek() {
                    self.advance();
                    return self.integer(&format!("-{digits}"), minus.offset);
                }
                let operand = self.nested(Self::unary)?;
                Ok(Node::Negate(Box::new(operand)))
            }
            TokenKind::Plus => {
                let plus = self.advance();
                match *self.peek() {
                    TokenKind::Integer(digits) => {
                        self.advance();
                        self.integer(digits, plus.offset)
                    }
                    _ => Err(self.unexpected("digits after '+'")),
                }
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let token = self.advance();
        match token.kind {
            TokenKind::LParen => {
                let node = self.expression()?;
                self.expect(&TokenKind::RParen, "')'")?;
                Ok(node)
            }
            TokenKind::True => Ok(Node::Literal(Value::Boolean(true))),
            TokenKind::False => Ok(Node::Literal(Value::Boolean(false))),
            TokenKind::Integer(digits) => self.integer(digits, token.offset),
            TokenKind::String(text) => Ok(Node::Literal(Value::String(text))),
            TokenKind::Exists => {
                let name = self.advance();
                match name.kind {
                    TokenKind::Word(word) => Ok(Node::Exists(self.attribute(word, name.offset)?)),
                    _ => Err(self.unexpected_token(&name, "an attribute name after EXISTS")),
                }
            }
            TokenKind::Word(word) if *self.peek() == TokenKind::LParen => {
                self.call(word, token.offset)
            }
            TokenKind::Word(word) => Ok(Node::Attribute(self.attribute(word, token.offset)?)),
            _ => Err(self.unexpected_token(&token, "an expression")),
        }
    }

    fn integer(&self, text: &str, offset: usize) -> Result<Node, ParseError> {
        match text.parse() {
            Ok(i) => Ok(Node::Literal(Value::Integer(i))),
            Err(_) => Err(self.error(offset, ParseErrorKind::IntegerOutOfRange(text.to_owned()))),
        }
    }

    fn attribute(&self, word: &str, offset: usize) -> Result<Attribute, ParseError> {
        if !word.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(self.error(
                offset,
                ParseErrorKind::InvalidAttributeName(word.to_owned()),
            ));
        }
        Ok(Attribute::from_name(word.to_ascii_lowercase()))
    }

    /// `NAME ( [expression [, expression]*] )`, the name already consumed.
    fn call(&mut self, word: &str, offset: usize) -> Result<Node, ParseError> {
        let valid = word.starts_with(|c: char| c.is_ascii_alphabetic())
            && word.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_');
        if !valid {
            return Err(self.error(offset, ParseErrorKind::InvalidFunctionName(word.to_owned())));
        }
        self.advance();
        let mut args = Vec::new();
        if *self.peek() == TokenKind::RParen {
            self.advance();
        } else {
            args.push(self.expression()?);
            while *self.peek() == TokenKind::Comma {
                self.advance();
                args.push(self.expression()?);
            }
            self.expect(&TokenKind::RParen, "',' or ')'")?;
        }
        let name = word.to_ascii_uppercase();
        Ok(match Function::resolve(&name, args.len()) {
            Some(function) => Node::Call { function, args },
            None => Node::MissingFunction {
                name: name.into_boxed_str(),
                arity: args.len(),
            },
        })
    }
}

fn binary_op(kind: &TokenKind<'_>, level: usize) -> Option<BinaryOp> {
    let op = match (level, kind) {
        (0, TokenKind::And) => BinaryOp::And,
        (0, TokenKind::Or) => BinaryOp::Or,
        (0, TokenKind::Xor) => BinaryOp::Xor,
        (1, TokenKind::Eq) => BinaryOp::Eq,
        (1, TokenKind::NotEq) => BinaryOp::NotEq,
        (1, TokenKind::Lt) => BinaryOp::Lt,
        (1, TokenKind::Le) => BinaryOp::Le,
        (1, TokenKind::Gt) => BinaryOp::Gt,
        (1, TokenKind::Ge) => BinaryOp::Ge,
        (2, TokenKind::Plus) => BinaryOp::Add,
        (2, TokenKind::Minus) => BinaryOp::Sub,
        (3, TokenKind::Star) => BinaryOp::Mul,
        (3, TokenKind::Slash) => BinaryOp::Div,
        (3, TokenKind::Percent) => BinaryOp::Rem,
        _ => return None,
    };
    Some(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        assert_eq!(
            error("ABC(").to_string(),
            "expected an expression, found end of input at column 5"
        );
        assert_eq!(
            error("x LIKE 123").to_string(),
            "expected a string literal as LIKE pattern, found integer 123 at column 8"
        );
        assert_eq!(
            error("(1 + 2").to_string(),
            "expected ')', found end of input at column 7"
        );
        assert_eq!(
            error("1 2").to_string(),
            "expected an operator or the end of the expression, found integer 2 at column 3"
        );
        assert_eq!(
            error("a NOT b").to_string(),
            "expected LIKE or IN after NOT, found name \"b\" at column 7"
        );
        assert_eq!(
            error("EXISTS 'id'").to_string(),
            "expected an attribute name after EXISTS, found string \"id\" at column 8"
        );
        assert_eq!(
            error("x IN ()").to_string(),
            "expected an expression, found ')' at column 7"
        );
        assert_eq!(
            error("CONCAT('a' 'b')").to_string(),
            "expected ',' or ')', found string \"b\" at column 12"
        );
        assert_eq!(
            error("").to_string(),
            "expected an expression, found end of input at column 1"
        );
    }

    #[test]
    fn integer_literals_must_fit_32_bits() {
        assert!(parse("-2147483648").is_ok());
        assert!(parse("+2147483647").is_ok());
        assert_eq!(
            error("1 + 2147483648").kind,
            ParseErrorKind::IntegerOutOfRange("2147483648".into())
        );
        assert_eq!(error("-2147483649").column, 1);
        assert!(matches!(
            error("+x").kind,
            ParseErrorKind::Unexpected { .. }
        ));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            error("my_ext = 1").kind,
            ParseErrorKind::InvalidAttributeName("my_ext".into())
        );
        assert_eq!(
            error("F1(2)").kind,
            ParseErrorKind::InvalidFunctionName("F1".into())
        );
        assert_eq!(
            error("_F(2)").kind,
            ParseErrorKind::InvalidFunctionName("_F".into())
        );
        assert_eq!(parse("SOURCE").unwrap(), Node::Attribute(Attribute::Source));
        assert_eq!(
            parse("concat_ws(',')").unwrap(),
            Node::Call {
                function: Function::ConcatWs,
                args: vec![Node::Literal(Value::from(","))]
            }
        );
    }

    #[test]
    fn unknown_functions_parse_and_fail_later() {
        assert_eq!(
            parse("NOPE(1, 2)").unwrap(),
            Node::MissingFunction {
                name: "NOPE".into(),
                arity: 2
            }
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(error(&deep).kind, ParseErrorKind::TooDeep(MAX_DEPTH));
        assert_eq!(
            error(&"NOT ".repeat(MAX_DEPTH + 1)).kind,
            ParseErrorKind::TooDeep(MAX_DEPTH)
        );
        let likes = format!("'a'{}", " LIKE 'a'".repeat(MAX_DEPTH));
        assert_eq!(error(&likes).kind, ParseErrorKind::TooDeep(MAX_DEPTH));
        let long = format!("type = '{}'", "x".repeat(MAX_LENGTH));
        assert_eq!(error(&long).kind, ParseErrorKind::TooLong(MAX_LENGTH));
        let fits = format!("type = '{}'", "x".repeat(MAX_LENGTH - 20));
        assert!(parse(&fits).is_ok());
        // Long flat chains are fine (up to the length bound): they do not nest.
        let chain = vec!["type = 'a'"; 1_000].join(" OR ");
        assert!(chain.len() <= MAX_LENGTH);
        assert!(parse(&chain).is_ok());
    }
}
