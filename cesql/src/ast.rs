//! The compiled form of an expression: a tree the parser builds once and the evaluator walks
//! for every event.
//!
//! Everything that can be decided at compile time is: attribute names are resolved to the
//! attribute they address, function names to the built-in they call, LIKE patterns to a
//! matcher. Chains of binary operators of one precedence level (`a OR b OR c`) are kept flat,
//! so that long generated filters do not make the tree, and the evaluator's recursion, deep.

use super::attribute::Attribute;
use super::functions::Function;
use super::like::LikePattern;
use super::value::{Type, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Literal(Value),
    Attribute(Attribute),
    Exists(Attribute),
    Not(Box<Node>),
    Negate(Box<Node>),
    /// `first op1 rest1 op2 rest2 …`, evaluated left to right; all operators share a level.
    Binary {
        first: Box<Node>,
        rest: Vec<(BinaryOp, Node)>,
    },
    Like {
        operand: Box<Node>,
        pattern: LikePattern,
        negated: bool,
    },
    In {
        operand: Box<Node>,
        set: Vec<Node>,
        negated: bool,
    },
    Call {
        function: Function,
        args: Vec<Node>,
    },
    /// A call no built-in matches; evaluating it raises a MissingFunctionError (section 3.5).
    MissingFunction {
        name: Box<str>,
        arity: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinaryOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    pub(super) fn return_type(self) -> Type {
        match self {
            Self::Mul | Self::Div | Self::Rem | Self::Add | Self::Sub => Type::Integer,
            _ => Type::Boolean,
        }
    }

    pub(super) fn symbol(self) -> &'static str {
        match self {
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Eq => "=",
            Self::NotEq => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::And => "AND",
            Self::Or => "OR",
            Self::Xor => "XOR",
        }
    }
}
