//! CESQL values (specification section 3.1) and the type casts of section 3.7.
//!
//! [`Value`] is what callers see. While evaluating, the engine works on [`Val`], which borrows
//! strings from the event and from the compiled expression so that comparing an attribute with
//! a literal allocates nothing.

use std::borrow::Cow;
use std::fmt;

use super::error::{ErrorKind, EvalError, quoted};

/// The result of evaluating an expression: one of the three CESQL primitive types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `true` or `false`.
    Boolean(bool),
    /// A 32-bit signed integer.
    Integer(i32),
    /// A sequence of Unicode characters.
    String(String),
}

impl Value {
    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i32(&self) -> Option<i32> {
        match self {
            Self::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Boolean(b) => write!(f, "{b}"),
            Self::Integer(i) => write!(f, "{i}"),
            Self::String(s) => f.write_str(s),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Boolean(b) => Self::Bool(b),
            Value::Integer(i) => Self::from(i),
            Value::String(s) => Self::String(s),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Integer(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

/// The CESQL primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Type {
    Boolean,
    Integer,
    String,
}

impl Type {
    /// The zero value of the type (section 3.1), returned by an operation that fails.
    pub(super) fn zero(self) -> Val<'static> {
        match self {
            Self::Boolean => Val::Bool(false),
            Self::Integer => Val::Int(0),
            Self::String => Val::Str(Cow::Borrowed("")),
        }
    }
}

/// A value during evaluation; strings borrow from the event or the expression where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Val<'a> {
    Bool(bool),
    Int(i32),
    Str(Cow<'a, str>),
}

impl<'a> Val<'a> {
    /// Borrows a literal of the compiled expression.
    pub(super) fn borrowed(value: &'a Value) -> Self {
        match value {
            Value::Boolean(b) => Self::Bool(*b),
            Value::Integer(i) => Self::Int(*i),
            Value::String(s) => Self::Str(Cow::Borrowed(s)),
        }
    }

    pub(super) fn into_value(self) -> Value {
        match self {
            Self::Bool(b) => Value::Boolean(b),
            Self::Int(i) => Value::Integer(i),
            Self::Str(s) => Value::String(s.into_owned()),
        }
    }

    /// Casts to Integer; the same cast serves implicit casts and `INT()`.
    pub(super) fn to_int(&self) -> Result<i32, EvalError> {
        match self {
            Self::Int(i) => Ok(*i),
            Self::Bool(b) => Ok(i32::from(*b)),
            // `i32::from_str` accepts exactly the spec's form: an optional sign and base-10
            // digits, failing on overflow.
            Self::Str(s) => s.parse().map_err(|_| {
                EvalError::new(
                    ErrorKind::Cast,
                    format!("cannot cast string {} to integer", quoted(s)),
                )
            }),
        }
    }

    /// Casts to Boolean where an operator or function expects one.
    ///
    /// An integer is refused with a cast error: the TCK (`NOT 10` is `true` with a cast error)
    /// requires it, although the cast table in section 3.7 lists Integer -> Boolean. The
    /// explicit `BOOL()` applies that cast, see [`Val::to_bool_explicit`].
    pub(super) fn to_bool(&self) -> Result<bool, EvalError> {
        match self {
            Self::Bool(b) => Ok(*b),
            Self::Int(i) => Err(EvalError::new(
                ErrorKind::Cast,
                format!("cannot implicitly cast integer {i} to boolean; use BOOL()"),
            )),
            Self::Str(s) => parse_bool(s),
        }
    }

    /// Casts to Boolean for `BOOL()`: zero is false, any other integer is true.
    pub(super) fn to_bool_explicit(&self) -> Result<bool, EvalError> {
        match self {
            Self::Int(i) => Ok(*i != 0),
            other => other.to_bool(),
        }
    }

    /// Casts to String, which never fails.
    pub(super) fn into_string(self) -> Cow<'a, str> {
        match self {
            Self::Str(s) => s,
            Self::Int(i) => Cow::Owned(i.to_string()),
            Self::Bool(b) => Cow::Borrowed(bool_str(b)),
        }
    }
}

/// Section 3.7: the lower case form of the string must be exactly "true" or "false".
fn parse_bool(s: &str) -> Result<bool, EvalError> {
    if s.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(EvalError::new(
            ErrorKind::Cast,
            format!("cannot cast string {} to boolean", quoted(s)),
        ))
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(text))
    }

    #[test]
    fn string_to_integer_accepts_sign_and_rejects_overflow() {
        assert_eq!(s("+7").to_int(), Ok(7));
        assert_eq!(s("-2147483648").to_int(), Ok(i32::MIN));
        assert_eq!(s("007").to_int(), Ok(7));
        for bad in ["2147483648", "", " 1", "1.0", "0x10", "abc"] {
            let error = s(bad).to_int().expect_err(bad);
            assert_eq!(error.kind, ErrorKind::Cast, "{bad}");
        }
    }

    #[test]
    fn string_to_boolean_ignores_case_only() {
        assert_eq!(s("TrUe").to_bool(), Ok(true));
        assert_eq!(s("FALSE").to_bool(), Ok(false));
        assert!(s("yes").to_bool().is_err());
        assert!(s(" true").to_bool().is_err());
    }

    #[test]
    fn integer_to_boolean_only_explicitly() {
        assert_eq!(Val::Int(-50).to_bool_explicit(), Ok(true));
        assert_eq!(Val::Int(0).to_bool_explicit(), Ok(false));
        assert_eq!(Val::Int(1).to_bool().unwrap_err().kind, ErrorKind::Cast);
    }

    #[test]
    fn everything_casts_to_string() {
        assert_eq!(Val::Int(-1).into_string(), "-1");
        assert_eq!(Val::Bool(true).into_string(), "true");
        assert_eq!(Val::Bool(false).into_string(), "false");
        assert_eq!(s("x").into_string(), "x");
    }

    #[test]
    fn values_convert_to_json() {
        assert_eq!(
            serde_json::Value::from(Value::Integer(3)),
            serde_json::json!(3)
        );
        assert_eq!(
            serde_json::Value::from(Value::from("a")),
            serde_json::json!("a")
        );
        assert_eq!(
            serde_json::Value::from(Value::from(true)),
            serde_json::json!(true)
        );
    }
}
