//! Evaluates a compiled expression against an event (specification sections 3.2 to 3.7).
//!
//! Every node yields a value. When something goes wrong a node still yields one, together
//! with the error, as a [`Failure`]:
//!
//! - an operator or function whose *own* work fails (a cast, a division by zero, a negative
//!   length) computes its result with the zero value of the failed cast, or the value the
//!   specification names (`ABS(-2147483648)` is `2147483647`), and reports the error;
//! - an operator or function whose *operand* failed returns the zero value of its return type
//!   and passes the operand's error on, without evaluating further operands. This is what the
//!   specification requires for missing attributes (`missing != 2` is `false`, `missing / 0`
//!   is `0` without a MathError) and what the TCK requires for other errors
//!   (`true AND (1 != 1 / 0)` is `false`).
//!
//! The first error raised is the one reported. `AND` and `OR` short-circuit.

use cloudevents::Event;

use super::ast::{BinaryOp, Node};
use super::attribute::Attribute;
use super::error::{ErrorKind, EvalError};
use super::value::{Type, Val};

/// What evaluating a node gives: a value, or a value and an error.
pub(super) type Flow<'a> = Result<Val<'a>, Failure<'a>>;

#[derive(Debug)]
pub(super) struct Failure<'a> {
    pub(super) value: Val<'a>,
    pub(super) error: EvalError,
}

impl<'a> Failure<'a> {
    /// The failure as seen by an operation of return type `ty` that consumed the failed value.
    pub(super) fn zeroed(self, ty: Type) -> Self {
        Self {
            value: ty.zero(),
            error: self.error,
        }
    }
}

/// Keeps the first error an operation raises while it goes on computing its result.
#[derive(Debug, Default)]
pub(super) struct FirstError(Option<EvalError>);

impl FirstError {
    pub(super) fn record(&mut self, error: EvalError) {
        self.0.get_or_insert(error);
    }

    /// The cast's result, or the zero value of its type after recording the error.
    pub(super) fn or_default<T: Default>(&mut self, result: Result<T, EvalError>) -> T {
        result.unwrap_or_else(|error| {
            self.record(error);
            T::default()
        })
    }

    pub(super) fn finish(self, value: Val<'_>) -> Flow<'_> {
        match self.0 {
            None => Ok(value),
            Some(error) => Err(Failure { value, error }),
        }
    }
}

impl Node {
    pub(super) fn eval<'a>(&'a self, event: &'a Event) -> Flow<'a> {
        match self {
            Self::Literal(value) => Ok(Val::borrowed(value)),
            // Alone, a missing attribute's type is unknown: section 3.2 says to assume Boolean.
            Self::Attribute(attribute) => attribute.read(event).ok_or_else(|| Failure {
                value: Type::Boolean.zero(),
                error: missing(attribute),
            }),
            Self::Exists(attribute) => Ok(Val::Bool(attribute.exists(event))),
            Self::Not(operand) => {
                let value = operand.eval(event).map_err(|f| f.zeroed(Type::Boolean))?;
                let mut errors = FirstError::default();
                let b = errors.or_default(value.to_bool());
                errors.finish(Val::Bool(!b))
            }
            Self::Negate(operand) => {
                let value = operand.eval(event).map_err(|f| f.zeroed(Type::Integer))?;
                let mut errors = FirstError::default();
                let i = errors.or_default(value.to_int());
                let negated = i.checked_neg().unwrap_or_else(|| {
                    errors.record(overflow(format!("-({i})")));
                    i32::MAX
                });
                errors.finish(Val::Int(negated))
            }
            Self::Binary { first, rest } => {
                let mut acc = first.eval(event);
                for (op, right) in rest {
                    let left = acc.map_err(|f| f.zeroed(op.return_type()))?;
                    acc = binary(*op, left, right, event);
                }
                acc
            }
            Self::Like {
                operand,
                pattern,
                negated,
            } => {
                let value = operand.eval(event).map_err(|f| f.zeroed(Type::Boolean))?;
                Ok(Val::Bool(pattern.matches(&value.into_string()) != *negated))
            }
            Self::In {
                operand,
                set,
                negated,
            } => {
                let target = operand.eval(event).map_err(|f| f.zeroed(Type::Boolean))?;
                let mut errors = FirstError::default();
                let mut found = false;
                // Every element is evaluated and cast, as for any n-ary operator, even after
                // a match: the result must not depend on where in the set the match is.
                for element in set {
                    let element = element.eval(event).map_err(|f| f.zeroed(Type::Boolean))?;
                    found |= equals(&target, element, &mut errors);
                }
                errors.finish(Val::Bool(found != *negated))
            }
            Self::Call { function, args } => function.call(args, event),
            Self::MissingFunction { name, arity } => Err(Failure {
                value: Type::Boolean.zero(),
                error: EvalError::new(
                    ErrorKind::MissingFunction,
                    format!("no function {name} takes {arity} argument(s)"),
                ),
            }),
        }
    }
}

fn missing(attribute: &Attribute) -> EvalError {
    EvalError::new(
        ErrorKind::MissingAttribute,
        format!("the event has no attribute {:?}", attribute.name()),
    )
}

fn overflow(operation: String) -> EvalError {
    EvalError::new(
        ErrorKind::Math,
        format!("{operation} overflows a 32-bit integer"),
    )
}

/// Applies `left op right`; `right` is evaluated here so that AND and OR can skip it.
fn binary<'a>(op: BinaryOp, left: Val<'a>, right: &'a Node, event: &'a Event) -> Flow<'a> {
    let mut errors = FirstError::default();
    if let BinaryOp::And | BinaryOp::Or | BinaryOp::Xor = op {
        let l = errors.or_default(left.to_bool());
        match (op, l) {
            (BinaryOp::And, false) => return errors.finish(Val::Bool(false)),
            (BinaryOp::Or, true) => return errors.finish(Val::Bool(true)),
            _ => {}
        }
        let right = match right.eval(event) {
            Ok(right) => right,
            Err(failure) => {
                // Report the left operand's cast error, if any: it came first.
                let mut failure = failure.zeroed(Type::Boolean);
                if let Some(error) = errors.0 {
                    failure.error = error;
                }
                return Err(failure);
            }
        };
        let r = errors.or_default(right.to_bool());
        let value = match op {
            BinaryOp::And => l && r,
            BinaryOp::Or => l || r,
            _ => l != r,
        };
        return errors.finish(Val::Bool(value));
    }

    let right = right.eval(event).map_err(|f| f.zeroed(op.return_type()))?;
    let value = match op {
        // `=` is defined for each type: the right operand's type picks the definition and
        // the left operand is cast to it (section 3.7).
        BinaryOp::Eq => Val::Bool(equals(&right, left, &mut errors)),
        BinaryOp::NotEq => Val::Bool(!equals(&right, left, &mut errors)),
        _ => {
            let l = errors.or_default(left.to_int());
            let r = errors.or_default(right.to_int());
            match op {
                BinaryOp::Lt => Val::Bool(l < r),
                BinaryOp::Le => Val::Bool(l <= r),
                BinaryOp::Gt => Val::Bool(l > r),
                BinaryOp::Ge => Val::Bool(l >= r),
                _ => Val::Int(arithmetic(op, l, r, &mut errors)),
            }
        }
    };
    errors.finish(value)
}

/// Integer arithmetic. Division truncates towards zero and the remainder takes the sign of
/// the dividend. Division by zero gives 0; an overflowing result saturates, as `ABS` does.
fn arithmetic(op: BinaryOp, l: i32, r: i32, errors: &mut FirstError) -> i32 {
    let checked = match op {
        BinaryOp::Add => l.checked_add(r),
        BinaryOp::Sub => l.checked_sub(r),
        BinaryOp::Mul => l.checked_mul(r),
        BinaryOp::Div | BinaryOp::Rem if r == 0 => {
            errors.record(EvalError::new(
                ErrorKind::Math,
                format!("{l} {} 0 divides by zero", op.symbol()),
            ));
            return 0;
        }
        BinaryOp::Div => l.checked_div(r),
        // Only i32::MIN % -1 "overflows", and its true result, 0, is representable.
        BinaryOp::Rem => Some(l.wrapping_rem(r)),
        _ => unreachable!("{op:?} is not arithmetic"),
    };
    checked.unwrap_or_else(|| {
        errors.record(overflow(format!("{l} {} {r}", op.symbol())));
        match op {
            BinaryOp::Add => l.saturating_add(r),
            BinaryOp::Sub => l.saturating_sub(r),
            BinaryOp::Mul => l.saturating_mul(r),
            _ => l.saturating_div(r),
        }
    })
}

/// Whether `other`, cast to the type of `target`, equals `target`.
fn equals(target: &Val<'_>, other: Val<'_>, errors: &mut FirstError) -> bool {
    match target {
        Val::Bool(b) => errors.or_default(other.to_bool()) == *b,
        Val::Int(i) => errors.or_default(other.to_int()) == *i,
        Val::Str(s) => other.into_string() == *s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn int_op(op: BinaryOp, l: i32, r: i32) -> (i32, Option<ErrorKind>) {
        let mut errors = FirstError::default();
        let value = arithmetic(op, l, r, &mut errors);
        (value, errors.0.map(|e| e.kind))
    }

    #[test]
    fn arithmetic_overflow_is_a_math_error_and_saturates() {
        let math = Some(ErrorKind::Math);
        assert_eq!(int_op(BinaryOp::Add, i32::MAX, 1), (i32::MAX, math));
        assert_eq!(int_op(BinaryOp::Sub, i32::MIN, 1), (i32::MIN, math));
        assert_eq!(int_op(BinaryOp::Mul, 65536, -65536), (i32::MIN, math));
        assert_eq!(int_op(BinaryOp::Div, i32::MIN, -1), (i32::MAX, math));
        assert_eq!(int_op(BinaryOp::Rem, i32::MIN, -1), (0, None));
    }

    #[test]
    fn division_truncates_and_remainder_follows_the_dividend() {
        assert_eq!(int_op(BinaryOp::Div, -7, 2), (-3, None));
        assert_eq!(int_op(BinaryOp::Rem, -7, 2), (-1, None));
        assert_eq!(int_op(BinaryOp::Rem, 7, -2), (1, None));
        assert_eq!(int_op(BinaryOp::Div, 7, 0), (0, Some(ErrorKind::Math)));
        assert_eq!(int_op(BinaryOp::Rem, 7, 0), (0, Some(ErrorKind::Math)));
    }

    #[test]
    fn equality_casts_to_the_target_type() {
        let mut errors = FirstError::default();
        assert!(equals(
            &Val::Int(1),
            Val::Str(Cow::Borrowed("1")),
            &mut errors
        ));
        assert!(equals(
            &Val::Str(Cow::Borrowed("1")),
            Val::Int(1),
            &mut errors
        ));
        assert!(!equals(
            &Val::Str(Cow::Borrowed("TRUE")),
            Val::Bool(true),
            &mut errors
        ));
        assert!(errors.0.is_none());
        assert!(!equals(
            &Val::Int(5),
            Val::Str(Cow::Borrowed("x")),
            &mut errors
        ));
        assert_eq!(errors.0.map(|e| e.kind), Some(ErrorKind::Cast));
    }
}
