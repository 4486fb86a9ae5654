//! The built-in functions (section 3.5) and the casting functions `INT`, `BOOL` and `STRING`.
//!
//! A call is resolved to a [`Function`] by name (case-insensitive) and number of arguments
//! when the expression is parsed; a call nothing matches is kept and raises a
//! MissingFunctionError when evaluated. All arguments are evaluated, left to right, before
//! they are cast to the parameter types. Lengths and positions count Unicode characters.

use std::borrow::Cow;

use cloudevents::Event;

use super::ast::Node;
use super::error::{ErrorKind, EvalError};
use super::eval::{Failure, FirstError, Flow};
use super::value::{Type, Val};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    /// `SUBSTRING(x, pos)`
    Substring,
    /// `SUBSTRING(x, pos, len)`
    SubstringLen,
    Abs,
    Int,
    Bool,
    String,
}

impl Function {
    /// The built-in called by `name` (upper case) with `arity` arguments, if any.
    pub(super) fn resolve(name: &str, arity: usize) -> Option<Self> {
        let function = match (name, arity) {
            ("LENGTH", 1) => Self::Length,
            ("CONCAT", _) => Self::Concat,
            ("CONCAT_WS", 1..) => Self::ConcatWs,
            ("LOWER", 1) => Self::Lower,
            ("UPPER", 1) => Self::Upper,
            ("TRIM", 1) => Self::Trim,
            ("LEFT", 2) => Self::Left,
            ("RIGHT", 2) => Self::Right,
            ("SUBSTRING", 2) => Self::Substring,
            ("SUBSTRING", 3) => Self::SubstringLen,
            ("ABS", 1) => Self::Abs,
            ("INT", 1) => Self::Int,
            ("BOOL", 1) => Self::Bool,
            ("STRING", 1) => Self::String,
            _ => return None,
        };
        Some(function)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Length => "LENGTH",
            Self::Concat => "CONCAT",
            Self::ConcatWs => "CONCAT_WS",
            Self::Lower => "LOWER",
            Self::Upper => "UPPER",
            Self::Trim => "TRIM",
            Self::Left => "LEFT",
            Self::Right => "RIGHT",
            Self::Substring | Self::SubstringLen => "SUBSTRING",
            Self::Abs => "ABS",
            Self::Int => "INT",
            Self::Bool => "BOOL",
            Self::String => "STRING",
        }
    }

    fn return_type(self) -> Type {
        match self {
            Self::Length | Self::Abs | Self::Int => Type::Integer,
            Self::Bool => Type::Boolean,
            _ => Type::String,
        }
    }

    pub(super) fn call<'a>(self, args: &'a [Node], event: &'a Event) -> Flow<'a> {
        let ret = self.return_type();
        let mut errors = FirstError::default();
        let value = match self {
            Self::Length => {
                let [x] = eval_args(args, event, ret)?;
                let length = x.into_string().chars().count();
                Val::Int(i32::try_from(length).unwrap_or(i32::MAX))
            }
            Self::Concat => {
                let mut out = String::new();
                for arg in args {
                    out.push_str(&arg.eval(event).map_err(|f| f.zeroed(ret))?.into_string());
                }
                Val::Str(Cow::Owned(out))
            }
            Self::ConcatWs => {
                // Resolution guarantees the delimiter; without one there is nothing to join.
                let Some((delimiter, rest)) = args.split_first() else {
                    return Ok(ret.zero());
                };
                let delimiter = delimiter.eval(event).map_err(|f| f.zeroed(ret))?;
                let delimiter = delimiter.into_string();
                let mut out = String::new();
                for (i, arg) in rest.iter().enumerate() {
                    let part = arg.eval(event).map_err(|f| f.zeroed(ret))?;
                    if i > 0 {
                        out.push_str(&delimiter);
                    }
                    out.push_str(&part.into_string());
                }
                Val::Str(Cow::Owned(out))
            }
            Self::Lower => {
                let [x] = eval_args(args, event, ret)?;
                Val::Str(Cow::Owned(x.into_string().to_lowercase()))
            }
            Self::Upper => {
                let [x] = eval_args(args, event, ret)?;
                Val::Str(Cow::Owned(x.into_string().to_uppercase()))
            }
            Self::Trim => {
                let [x] = eval_args(args, event, ret)?;
                // `str::trim` removes exactly the Unicode White_Space characters.
                Val::Str(slice(x.into_string(), |s| s.trim()))
            }
            Self::Left | Self::Right => {
                let [x, y] = eval_args(args, event, ret)?;
                let x = x.into_string();
                let count = errors.or_default(y.to_int());
                Val::Str(self.left_right(x, count, &mut errors))
            }
            Self::Substring | Self::SubstringLen => {
                let [x, pos, len] = if self == Self::Substring {
                    let [x, pos] = eval_args(args, event, ret)?;
                    [x, pos, Val::Int(i32::MAX)]
                } else {
                    eval_args(args, event, ret)?
                };
                let x = x.into_string();
                let pos = errors.or_default(pos.to_int());
                let len = errors.or_default(len.to_int());
                Val::Str(substring(x, pos, len, &mut errors))
            }
            Self::Abs => {
                let [x] = eval_args(args, event, ret)?;
                let x = errors.or_default(x.to_int());
                Val::Int(x.checked_abs().unwrap_or_else(|| {
                    errors.record(EvalError::new(
                        ErrorKind::Math,
                        format!("ABS({x}) overflows a 32-bit integer"),
                    ));
                    i32::MAX
                }))
            }
            Self::Int => {
                let [x] = eval_args(args, event, ret)?;
                Val::Int(errors.or_default(x.to_int()))
            }
            Self::Bool => {
                let [x] = eval_args(args, event, ret)?;
                Val::Bool(errors.or_default(x.to_bool_explicit()))
            }
            Self::String => {
                let [x] = eval_args(args, event, ret)?;
                Val::Str(x.into_string())
            }
        };
        errors.finish(value)
    }

    /// `LEFT(x, count)` and `RIGHT(x, count)`: `x` itself when it is not longer than `count`,
    /// or when `count` is negative (then with a FunctionEvaluationError).
    fn left_right<'a>(self, x: Cow<'a, str>, count: i32, errors: &mut FirstError) -> Cow<'a, str> {
        let Ok(count) = usize::try_from(count) else {
            errors.record(self.error(format!("length {count} is negative")));
            return x;
        };
        if self == Self::Left {
            match x.char_indices().nth(count) {
                Some((end, _)) => slice(x, |s| &s[..end]),
                None => x,
            }
        } else {
            let skip = x.chars().count().saturating_sub(count);
            if skip == 0 {
                return x;
            }
            let start = x.char_indices().nth(skip).map_or(x.len(), |(i, _)| i);
            slice(x, |s| &s[start..])
        }
    }

    fn error(self, message: String) -> EvalError {
        EvalError::new(
            ErrorKind::FunctionEvaluation,
            format!("{}: {message}", self.name()),
        )
    }
}

/// `SUBSTRING(x, pos, len)`, 1-based; a negative `pos` counts from the end.
fn substring<'a>(x: Cow<'a, str>, pos: i32, len: i32, errors: &mut FirstError) -> Cow<'a, str> {
    let chars = i64::try_from(x.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > chars || pos < -chars {
        errors.record(Function::Substring.error(format!(
            "position {pos} is outside a string of {chars} characters"
        )));
        return Cow::Borrowed("");
    }
    if len < 0 {
        errors.record(Function::Substring.error(format!("length {len} is negative")));
        return Cow::Borrowed("");
    }
    if pos == 0 {
        return Cow::Borrowed("");
    }
    // Both conversions are in range: 0 <= start < chars, and len is non-negative.
    let start = usize::try_from(if pos > 0 { pos - 1 } else { chars + pos }).unwrap_or(0);
    let len = usize::try_from(len).unwrap_or(0);
    let mut boundaries = x.char_indices().map(|(i, _)| i).skip(start);
    let begin = boundaries.next().unwrap_or(x.len());
    let end = boundaries.nth(len.saturating_sub(1)).unwrap_or(x.len());
    let end = if len == 0 { begin } else { end };
    slice(x, |s| &s[begin..end])
}

/// A part of a string, borrowed when the string is.
fn slice<'a>(text: Cow<'a, str>, part: impl for<'s> FnOnce(&'s str) -> &'s str) -> Cow<'a, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(part(s)),
        Cow::Owned(s) => Cow::Owned(part(&s).to_owned()),
    }
}

/// Evaluates exactly `N` arguments (the arity was checked when the call was resolved). An
/// argument that fails makes the function return the zero value of its return type.
fn eval_args<'a, const N: usize>(
    args: &'a [Node],
    event: &'a Event,
    ret: Type,
) -> Result<[Val<'a>; N], Failure<'a>> {
    let mut values: [Val<'a>; N] = std::array::from_fn(|_| Val::Bool(false));
    for (value, arg) in values.iter_mut().zip(args) {
        *value = arg.eval(event).map_err(|f| f.zeroed(ret))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(x: &str, pos: i32, len: i32) -> (String, bool) {
        let mut errors = FirstError::default();
        let out = substring(Cow::Borrowed(x), pos, len, &mut errors).into_owned();
        (out, errors.finish(Val::Bool(true)).is_err())
    }

    #[test]
    fn resolution_is_by_name_and_arity() {
        assert_eq!(Function::resolve("CONCAT", 0), Some(Function::Concat));
        assert_eq!(Function::resolve("CONCAT_WS", 0), None);
        assert_eq!(
            Function::resolve("SUBSTRING", 3),
            Some(Function::SubstringLen)
        );
        assert_eq!(Function::resolve("SUBSTRING", 4), None);
        assert_eq!(Function::resolve("NOPE", 1), None);
    }

    #[test]
    fn substring_edges() {
        assert_eq!(sub("abcdef", 6, i32::MAX), ("f".into(), false));
        assert_eq!(sub("abcdef", -6, 2), ("ab".into(), false));
        assert_eq!(sub("abcdef", 2, 0), (String::new(), false));
        assert_eq!(sub("abcdef", 2, 100), ("bcdef".into(), false));
        assert_eq!(sub("abcdef", 7, 1), (String::new(), true));
        assert_eq!(sub("abcdef", 2, -1), (String::new(), true));
        assert_eq!(sub("", 0, 1), (String::new(), false));
        assert_eq!(sub("", 1, 1), (String::new(), true));
        assert_eq!(sub("héllo", 2, 3), ("éll".into(), false));
        assert_eq!(sub("héllo", i32::MIN, 3), (String::new(), true));
    }

    #[test]
    fn left_and_right_count_characters() {
        let mut errors = FirstError::default();
        let left = Function::Left.left_right(Cow::Borrowed("héllo"), 2, &mut errors);
        let right = Function::Right.left_right(Cow::Borrowed("héllo"), 4, &mut errors);
        let none = Function::Right.left_right(Cow::Borrowed("héllo"), 0, &mut errors);
        assert_eq!(
            (left.as_ref(), right.as_ref(), none.as_ref()),
            ("hé", "éllo", "")
        );
        assert!(errors.finish(Val::Bool(true)).is_ok());
    }

    #[test]
    fn slices_of_borrowed_strings_stay_borrowed() {
        assert!(matches!(
            slice(Cow::Borrowed(" a "), str::trim),
            Cow::Borrowed("a")
        ));
    }
}
