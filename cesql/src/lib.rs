//! CloudEvents SQL (CESQL) v1: compiling an expression once and evaluating it against events.
//!
//! Start with [`Expression::parse`], then [`Expression::matches`] to filter events (Knative
//! semantics: an evaluation error means no match) or [`Expression::evaluate`] for the value
//! and the error. [`eval_report`] is the JSON the `kinetic cesql eval` command prints.
//!
//! # Layout
//! - `lexer.rs` → `parser.rs` build the tree of `ast.rs`, resolving attribute names
//!   (`attribute.rs`), functions (`functions.rs`) and LIKE patterns (`like.rs`) up front.
//! - `eval.rs` walks the tree; `value.rs` holds the type system and casts; `error.rs` the
//!   errors.
//!
//! # Where the specification leaves room
//! - Errors do not stop evaluation, but an operator whose operand failed returns the zero
//!   value of its return type, passing the first error on (see `eval.rs`).
//! - `AND`, `OR` and `XOR` share one precedence level and associate left to right, as the
//!   specification's text says; its ANTLR grammar says right to left.
//! - Integer -> Boolean is a cast error where it would be implicit (`NOT 10`, as the TCK
//!   requires); `BOOL(10)` is `true`.
//! - Arithmetic overflow is a MathError with the saturated result, as `ABS` specifies.
//! - A backslash in a LIKE pattern escapes only `%` and `_`; in a string literal it escapes
//!   only the delimiting quote, which may also be doubled (`'it''s'`).
//! - `time` reads as RFC 3339 in UTC (`2018-04-26T12:48:09Z`): the event keeps no offset.
//! - Attribute and function names are case-insensitive.

mod ast;
mod attribute;
mod error;
mod eval;
mod functions;
mod lexer;
mod like;
mod parser;
mod value;

use std::fmt;
use std::str::FromStr;

use cloudevents::Event;

pub use error::{ErrorKind, EvalError, ParseError, ParseErrorKind};
pub use value::Value;

use ast::Node;
use value::Val;

/// A compiled CESQL expression; compile once, evaluate for every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    text: Box<str>,
    root: Node,
}

/// The outcome of evaluating an expression: always a value, and the first error, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The result; after an error, the value the specification prescribes (often the zero
    /// value of the result type).
    pub value: Value,
    /// The first error raised while evaluating.
    pub error: Option<EvalError>,
}

impl Expression {
    /// Compiles `text`.
    ///
    /// # Errors
    /// A [`ParseError`] saying where the text departs from the grammar and what was expected
    /// there; LIKE patterns that are not string literals and integer literals outside 32 bits
    /// are parse errors too.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Ok(Self {
            root: parser::parse(text)?,
            text: text.into(),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates against an event. Always yields a value; errors do not stop evaluation
    /// and the first one is reported.
    #[must_use]
    pub fn evaluate(&self, event: &Event) -> Evaluation {
        match self.root.eval(event) {
            Ok(value) => Evaluation {
                value: value.into_value(),
                error: None,
            },
            Err(failure) => Evaluation {
                value: failure.value.into_value(),
                error: Some(failure.error),
            },
        }
    }

    /// Whether the event passes the expression as a filter: the result is boolean `true` and
    /// no error was raised (section 1.2). Allocates nothing for string comparisons.
    #[must_use]
    pub fn matches(&self, event: &Event) -> bool {
        matches!(self.root.eval(event), Ok(Val::Bool(true)))
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        Self::parse(text)
    }
}

/// What `kinetic cesql eval` prints: `{"result": <value>}`, plus `"error": "<kind>"` and
/// `"message"` when an error was raised. An expression that does not parse gives
/// `{"result": false, "error": "parse", "message": …}`, the result the TCK expects.
pub fn eval_report(expression: &str, event: &Event) -> serde_json::Value {
    let evaluation = match Expression::parse(expression) {
        Ok(expression) => expression.evaluate(event),
        Err(error) => Evaluation {
            value: Value::Boolean(false),
            error: Some(error.into()),
        },
    };
    let mut report = serde_json::Map::new();
    report.insert("result".into(), evaluation.value.into());
    if let Some(error) = evaluation.error {
        report.insert("error".into(), error.kind.as_str().into());
        report.insert("message".into(), error.message.into());
    }
    serde_json::Value::Object(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};
    use serde_json::json;

    fn event() -> Event {
        EventBuilderV10::new()
            .id("id-1")
            .source("https://example.com/source")
            .ty("com.example.order.created")
            .extension("hop", "5")
            .extension("ttl", 10_i64)
            .build()
            .expect("valid event")
    }

    fn eval(text: &str) -> Evaluation {
        Expression::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .evaluate(&event())
    }

    fn value(text: &str) -> Value {
        let evaluation = eval(text);
        assert_eq!(evaluation.error, None, "{text}");
        evaluation.value
    }

    fn failure(text: &str) -> (Value, ErrorKind) {
        let evaluation = eval(text);
        let error = evaluation
            .error
            .unwrap_or_else(|| panic!("{text}: no error"));
        (evaluation.value, error.kind)
    }

    #[test]
    fn operator_precedence() {
        assert_eq!(value("2 + 3 * 4"), Value::Integer(14));
        assert_eq!(value("2 * 3 + 4"), Value::Integer(10));
        assert_eq!(value("10 - 2 - 3"), Value::Integer(5));
        assert_eq!(value("100 / 10 / 5"), Value::Integer(2));
        assert_eq!(value("7 - 2 * 3 % 4"), Value::Integer(5));
        assert_eq!(value("4-1"), Value::Integer(3));
        assert_eq!(value("1 + 2 = 3"), Value::Boolean(true));
        assert_eq!(value("1 < 2 = TRUE"), Value::Boolean(true));
        // NOT binds tighter than comparisons, LIKE and IN.
        assert_eq!(value("NOT TRUE = FALSE"), Value::Boolean(true));
        assert_eq!(value("NOT 'true' IN (FALSE)"), Value::Boolean(true));
        // LIKE binds tighter than arithmetic: 1 + ('2' LIKE '2') casts TRUE to 1.
        assert_eq!(value("1 + '2' LIKE '2'"), Value::Integer(2));
        // AND, OR and XOR share a level and go left to right.
        assert_eq!(value("TRUE OR FALSE AND FALSE"), Value::Boolean(false));
        assert_eq!(value("FALSE AND FALSE OR TRUE"), Value::Boolean(true));
        assert_eq!(value("TRUE XOR TRUE OR TRUE"), Value::Boolean(true));
    }

    #[test]
    fn nested_parentheses() {
        assert_eq!(value("((((1 + 2)) * (3)))"), Value::Integer(9));
        assert_eq!(value("(2 * (3 + (4 - (1))))"), Value::Integer(12));
        assert_eq!(value("NOT (NOT (TRUE))"), Value::Boolean(true));
        assert_eq!(value("-(-(-(1)))"), Value::Integer(-1));
        assert_eq!(
            value("(id = 'id-1' AND (type LIKE '%.created' OR (FALSE)))"),
            Value::Boolean(true)
        );
    }

    #[test]
    fn integer_overflow_is_a_math_error() {
        assert_eq!(
            failure("2147483647 + 1"),
            (Value::Integer(i32::MAX), ErrorKind::Math)
        );
        assert_eq!(
            failure("-2147483648 - 1"),
            (Value::Integer(i32::MIN), ErrorKind::Math)
        );
        assert_eq!(
            failure("-2147483648 / -1"),
            (Value::Integer(i32::MAX), ErrorKind::Math)
        );
        assert_eq!(
            failure("-(-2147483648)"),
            (Value::Integer(i32::MAX), ErrorKind::Math)
        );
        assert_eq!(
            failure("65536 * 65536"),
            (Value::Integer(i32::MAX), ErrorKind::Math)
        );
        // An operand's error makes the enclosing operator return its zero value.
        assert_eq!(
            failure("(2147483647 + 1) > 0"),
            (Value::Boolean(false), ErrorKind::Math)
        );
        assert_eq!(value("-2147483648 % -1"), Value::Integer(0));
    }

    #[test]
    fn division_by_zero() {
        assert_eq!(failure("1 / 0"), (Value::Integer(0), ErrorKind::Math));
        assert_eq!(failure("1 % 0"), (Value::Integer(0), ErrorKind::Math));
        assert_eq!(
            failure("1 / (2 - 2) + 5"),
            (Value::Integer(0), ErrorKind::Math)
        );
        assert_eq!(value("FALSE AND 1 / 0 = 0"), Value::Boolean(false));
        assert_eq!(value("TRUE OR 1 / 0 = 0"), Value::Boolean(true));
    }

    #[test]
    fn like_escapes() {
        assert_eq!(value(r"'50%' LIKE '50\%'"), Value::Boolean(true));
        assert_eq!(value(r"'500' LIKE '50\%'"), Value::Boolean(false));
        assert_eq!(value(r"'a_b' LIKE 'a\_b'"), Value::Boolean(true));
        assert_eq!(value(r"'axb' LIKE 'a\_b'"), Value::Boolean(false));
        assert_eq!(value(r#""it's" LIKE 'it''s'"#), Value::Boolean(true));
        assert_eq!(value(r"'a\b' LIKE 'a\b'"), Value::Boolean(true));
        assert_eq!(
            value(r"type NOT LIKE 'com.example.%'"),
            Value::Boolean(false)
        );
    }

    #[test]
    fn attributes_and_casts() {
        assert_eq!(value("hop < ttl"), Value::Boolean(true));
        assert_eq!(value("ttl = '10'"), Value::Boolean(true));
        assert_eq!(value("INT(hop) + ttl"), Value::Integer(15));
        assert_eq!(
            value("EXISTS hop AND NOT EXISTS nothing"),
            Value::Boolean(true)
        );
        assert_eq!(value("ID = 'id-1'"), Value::Boolean(true));
        assert_eq!(
            failure("nothing"),
            (Value::Boolean(false), ErrorKind::MissingAttribute)
        );
        assert_eq!(
            failure("LENGTH(nothing)"),
            (Value::Integer(0), ErrorKind::MissingAttribute)
        );
        assert_eq!(
            failure("1 IN (1, nothing)"),
            (Value::Boolean(false), ErrorKind::MissingAttribute)
        );
        assert_eq!(
            failure("'a' < 'b'"),
            (Value::Boolean(false), ErrorKind::Cast)
        );
        assert_eq!(
            failure("1 = TRUE"),
            (Value::Boolean(false), ErrorKind::Cast)
        );
        assert_eq!(
            failure("NOPE()"),
            (Value::Boolean(false), ErrorKind::MissingFunction)
        );
    }

    #[test]
    fn the_first_error_is_reported() {
        let evaluation = eval("INT('x') + nothing");
        let error = evaluation.error.expect("error");
        assert_eq!(error.kind, ErrorKind::Cast);
        assert_eq!(evaluation.value, Value::Integer(0));
        let error = eval("'x' OR 1 / 0 = 0").error.expect("error");
        assert_eq!(error.kind, ErrorKind::Cast);
    }

    #[test]
    fn matches_requires_true_without_error() {
        let event = event();
        let matches = |text: &str| Expression::parse(text).unwrap().matches(&event);
        assert!(matches("type LIKE 'com.example.%'"));
        assert!(!matches("type LIKE 'org.%'"));
        assert!(!matches("'true'"));
        assert!(!matches("1"));
        assert!(!matches("NOT 10"));
        assert!(!matches("NOT missing"));
    }

    #[test]
    fn reports() {
        let event = event();
        assert_eq!(eval_report("ttl * 2", &event), json!({"result": 20}));
        assert_eq!(
            eval_report("subject", &event),
            json!({
                "result": false,
                "error": "missingAttribute",
                "message": "the event has no attribute \"subject\""
            })
        );
        assert_eq!(
            eval_report("ABC(", &event),
            json!({
                "result": false,
                "error": "parse",
                "message": "expected an expression, found end of input at column 5"
            })
        );
    }

    #[test]
    fn expressions_are_shareable_and_printable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Expression>();
        let expression: Expression = " id = 'x' ".parse().unwrap();
        assert_eq!(expression.to_string(), " id = 'x' ");
        assert_eq!(expression.as_str(), " id = 'x' ");
    }
}
