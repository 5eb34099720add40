//! Expressions over the latest readings of one device's points (and optional site points): the computed values
//! and multi-point conditions of rules (`value: sat - mat`, `when: { expr: "mat + eps_mat < min(rat, oat)" }`).
//!
//! A small hand-written parser (precedence climbing) turns the text into a tree; [`compile`] checks its units
//! against the types of the names it uses and emits a postfix [`Program`] that [`Program::eval`] runs on a fixed
//! stack without allocating. Units are checked at load time: `sat - mat` is a temperature difference, `sat + mat`
//! (two temperatures) and `sat + dsp` (°C + Pa) are errors. Inputs are converted to one unit per dimension before
//! evaluation (temperatures to degC, differences in K; every other dimension is stored canonical by the catalog).
//!
//! Precedence, lowest first: `||`, `&&`, comparisons (`< <= > >= == !=`), `+ -`, `* /`, unary `- !`.
//! Functions: `min`, `max`, `avg`, `abs`, `hypot` (√Σx²), `max_dev` (largest |x − mean|), `imbalance` (max_dev
//! / mean in percent), `if(c, a, b)`, `ahu_state(fan, heating, cooling, oa_damper, oa_min)` (the operating state
//! of ASHRAE Guideline 36: see [`AhuState`]) and `changes(x, 1h)` (how often `x` changed within the window).

use crate::catalog::Unit;
use std::collections::VecDeque;

/// What an expression (or a name in one) is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    /// A plain number (literals, counts, ratios of two like quantities): takes the unit of what it meets.
    Num,
    Bool,
    /// An operating state from `ahu_state` (compared with the state names `heating`, `economizer`, ...).
    State,
    /// A physical quantity: its dimension (as [`Unit::dimension`]) and, for temperatures, whether it is a
    /// difference (K) rather than a temperature (degC).
    Qty {
        dim: &'static str,
        delta: bool,
    },
}

impl Ty {
    /// The type of a point or parameter in `unit` (K is a temperature difference).
    pub fn of_unit(u: Unit) -> Ty {
        match u {
            Unit::None | Unit::Count => Ty::Num,
            Unit::Kelvin => Ty::Qty {
                dim: "temperature",
                delta: true,
            },
            u => Ty::Qty {
                dim: u.dimension(),
                delta: false,
            },
        }
    }

    /// The unit values of this type are evaluated in (`None` for numbers, booleans and states).
    pub fn unit(self) -> Option<Unit> {
        match self {
            Ty::Qty {
                dim: "temperature",
                delta,
            } => Some(if delta { Unit::Kelvin } else { Unit::DegC }),
            Ty::Qty { dim, .. } => Unit::ALL
                .iter()
                .filter_map(|w| Unit::parse(w))
                .find(|u| u.dimension() == dim)
                .map(Unit::canonical),
            _ => None,
        }
    }

    fn describe(self) -> String {
        match self {
            Ty::Num => "a number".into(),
            Ty::Bool => "a condition (true/false)".into(),
            Ty::State => "an operating state".into(),
            Ty::Qty {
                dim: "temperature",
                delta: false,
            } => "a temperature (degC)".into(),
            Ty::Qty {
                dim: "temperature",
                delta: true,
            } => "a temperature difference (K)".into(),
            Ty::Qty { dim, .. } => format!(
                "a {} ({})",
                dim.replace('_', " "),
                self.unit().map(|u| u.as_str()).unwrap_or("?")
            ),
        }
    }
}

/// The conversion `(factor, offset)` of a point's values in `u` into the unit its [`Ty`] is evaluated in.
pub fn input_conversion(u: Unit) -> (f64, f64) {
    match Ty::of_unit(u).unit() {
        Some(to) if u != Unit::Kelvin => {
            crate::catalog::units::unit_conversion(u, to).unwrap_or((1.0, 0.0))
        }
        _ => (1.0, 0.0),
    }
}

/// Operating states of an air handler, after ASHRAE Guideline 36 (section 5.16.14, "operating states"):
/// `ahu_state(fan, heating, cooling, oa_damper, oa_min)` with positions in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AhuState {
    /// Fan off: no state (Guideline 36 evaluates no fault condition).
    Off = 0,
    /// OS#1: heating valve open, cooling closed, outdoor-air damper at its minimum.
    Heating = 1,
    /// OS#2: free cooling, modulating outdoor-air damper, heating and cooling closed.
    Economizer = 2,
    /// OS#3: mechanical cooling with the outdoor-air damper fully open (≥ 99 %).
    EconomizerMech = 3,
    /// OS#4: mechanical cooling with the outdoor-air damper at its minimum.
    MechCooling = 4,
    /// OS#5: none of the above (e.g. heating and cooling at once).
    Unknown = 5,
}

impl AhuState {
    pub const NAMES: [(&'static str, AhuState); 6] = [
        ("off", AhuState::Off),
        ("heating", AhuState::Heating),
        ("economizer", AhuState::Economizer),
        ("economizer_mech", AhuState::EconomizerMech),
        ("mech_cooling", AhuState::MechCooling),
        ("unknown_state", AhuState::Unknown),
    ];

    /// Guideline 36's logic: a valve is open above 1 %, the damper is at its minimum within 1 point of it and
    /// fully open from 99 %; the fan runs above 1 %.
    pub fn of(fan: f64, heat: f64, cool: f64, oad: f64, oa_min: f64) -> AhuState {
        const ON: f64 = 1.0;
        if fan <= ON {
            return AhuState::Off;
        }
        let (h, c) = (heat > ON, cool > ON);
        let at_min = oad <= oa_min + 1.0;
        match (h, c) {
            (true, false) if at_min => AhuState::Heating,
            (false, false) if !at_min => AhuState::Economizer,
            (false, true) if oad >= 99.0 => AhuState::EconomizerMech,
            (false, true) if at_min => AhuState::MechCooling,
            _ => AhuState::Unknown,
        }
    }

    pub fn name_of(v: f64) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, s)| *s as i32 as f64 == v)
            .map(|(n, _)| *n)
            .unwrap_or("unknown_state")
    }
}

// ---------------------------------------------------------------------------------------------------- parser

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Dur(i64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

/// An expression error: the column (1-based, in characters) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ExprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.col, self.msg)
    }
}

fn err<T>(col: usize, msg: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        col,
        msg: msg.into(),
    })
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len()
                && (chars[i] == 'e' || chars[i] == 'E')
                && chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '-' || *d == '+')
            {
                i += 2;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let num: String = chars[start..i].iter().collect();
            let Ok(v) = num.parse::<f64>() else {
                return err(col, format!("`{num}` is not a number"));
            };
            // A unit letter right after a number makes a duration (`1h`, `15m`): only `changes` takes one.
            let sstart = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i > sstart {
                let word: String = chars[start..i].iter().collect();
                match crate::util::parse_duration(&word) {
                    Ok(d) => out.push((Tok::Dur(d.as_nanos().min(i64::MAX as u128) as i64), col)),
                    Err(m) => return err(col, format!("`{word}`: {m}")),
                }
            } else {
                out.push((Tok::Num(v), col));
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), col));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op2 = ["<=", ">=", "==", "!=", "&&", "||"]
                .into_iter()
                .find(|o| *o == two);
            if let Some(o) = op2 {
                out.push((Tok::Op(o), col));
                i += 2;
                continue;
            }
            let t = match c {
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                ',' => Tok::Comma,
                '+' => Tok::Op("+"),
                '-' => Tok::Op("-"),
                '*' => Tok::Op("*"),
                '/' => Tok::Op("/"),
                '<' => Tok::Op("<"),
                '>' => Tok::Op(">"),
                '!' => Tok::Op("!"),
                '=' => return err(col, "`=` is not an operator: compare with `==`"),
                _ => return err(col, format!("unexpected character `{c}`")),
            };
            out.push((t, col));
            i += 1;
        }
    }
    Ok(out)
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Num(f64),
    Dur(i64, usize),
    Var(String, usize),
    Neg(Box<Ast>, usize),
    Not(Box<Ast>, usize),
    Bin(&'static str, Box<Ast>, Box<Ast>, usize),
    Call(String, Vec<Ast>, usize),
}

fn prec(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "<" | "<=" | ">" | ">=" | "==" | "!=" => 3,
        "+" | "-" => 4,
        "*" | "/" => 5,
        _ => return None,
    })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end_col: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.1).unwrap_or(self.end_col)
    }

    /// Precedence climbing: parses operators binding at least as tightly as `min`.
    fn expr(&mut self, min: u8) -> Result<Ast, ExprError> {
        self.depth += 1;
        if self.depth > 64 {
            return err(self.col(), "expression nested too deeply");
        }
        let mut lhs = self.unary()?;
        while let Some(Tok::Op(op)) = self.peek() {
            let op = *op;
            let Some(p) = prec(op) else { break };
            if p < min {
                break;
            }
            let col = self.col();
            self.pos += 1;
            let rhs = self.expr(p + 1)?;
            if p == 3 {
                if let Some(Tok::Op(o2)) = self.peek() {
                    if prec(o2) == Some(3) {
                        return err(
                            self.col(),
                            "comparisons do not chain: write `a < b && b < c`",
                        );
                    }
                }
            }
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs), col);
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        let col = self.col();
        match self.peek().cloned() {
            Some(Tok::Op("-")) => {
                self.pos += 1;
                Ok(Ast::Neg(Box::new(self.unary()?), col))
            }
            Some(Tok::Op("!")) => {
                self.pos += 1;
                Ok(Ast::Not(Box::new(self.unary()?), col))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let col = self.col();
        let Some(t) = self.peek().cloned() else {
            return err(col, "expression ends too early");
        };
        self.pos += 1;
        match t {
            Tok::Num(v) => Ok(Ast::Num(v)),
            Tok::Dur(d) => Ok(Ast::Dur(d, col)),
            Tok::LParen => {
                let e = self.expr(0)?;
                if self.peek() != Some(&Tok::RParen) {
                    return err(self.col(), "missing `)`");
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Ident(name) => {
                if self.peek() != Some(&Tok::LParen) {
                    return Ok(Ast::Var(name, col));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() == Some(&Tok::RParen) {
                    self.pos += 1;
                } else {
                    loop {
                        args.push(self.expr(0)?);
                        match self.peek() {
                            Some(Tok::Comma) => self.pos += 1,
                            Some(Tok::RParen) => {
                                self.pos += 1;
                                break;
                            }
                            _ => return err(self.col(), "expected `,` or `)` in the arguments"),
                        }
                    }
                }
                Ok(Ast::Call(name, args, col))
            }
            Tok::Op(o) => err(col, format!("unexpected `{o}`")),
            Tok::RParen => err(col, "unexpected `)`"),
            Tok::Comma => err(col, "unexpected `,`"),
        }
    }
}

/// Parses an expression's text.
pub fn parse(text: &str) -> Result<Ast, ExprError> {
    let toks = lex(text)?;
    if toks.is_empty() {
        return err(1, "empty expression");
    }
    let mut p = Parser {
        toks,
        pos: 0,
        end_col: text.chars().count() + 1,
        depth: 0,
    };
    let e = p.expr(0)?;
    if p.pos < p.toks.len() {
        return err(p.col(), "unexpected text after the expression");
    }
    Ok(e)
}

impl Ast {
    /// Every name the expression uses (not function names), in order of appearance.
    pub fn names(&self, out: &mut Vec<String>) {
        match self {
            Ast::Var(n, _) => {
                if !out.contains(n) {
                    out.push(n.clone())
                }
            }
            Ast::Neg(a, _) | Ast::Not(a, _) => a.names(out),
            Ast::Bin(_, a, b, _) => {
                a.names(out);
                b.names(out);
            }
            Ast::Call(_, args, _) => args.iter().for_each(|a| a.names(out)),
            Ast::Num(_) | Ast::Dur(..) => {}
        }
    }
}

// ------------------------------------------------------------------------------------------- compile and run

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Const(f64),
    Load(u16),
    Neg,
    Not,
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Min(u8),
    Max(u8),
    Avg(u8),
    Abs,
    Hypot(u8),
    MaxDev(u8),
    Imbalance(u8),
    If,
    AhuState,
    Changes { call: u16, window_ns: i64 },
}

/// Most values on the evaluation stack (checked at compile time).
const STACK: usize = 32;

/// A compiled expression: postfix operations over input slots.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    ops: Vec<Op>,
    /// Stateful calls (`changes`) that need a [`CallState`] each.
    pub calls: usize,
}

/// What a name in an expression stands for while compiling.
#[derive(Debug, Clone)]
pub enum Sym {
    /// Input slot and its type.
    Input(u16, Ty),
    /// A constant with a type (a rule parameter such as `eps_sat: 1.1 K`).
    Const(f64, Ty),
    /// A named sub-expression (`let`), inlined.
    Let(Box<Ast>),
}

/// The state of one stateful call (`changes`) for one device.
#[derive(Debug, Clone, Default)]
pub struct CallState {
    last: Option<f64>,
    times: VecDeque<i64>,
}

struct Compiler<'a> {
    resolve: &'a dyn Fn(&str) -> Option<Sym>,
    ops: Vec<Op>,
    depth: usize,
    max_depth: usize,
    calls: usize,
    inlining: Vec<String>,
}

fn unify(a: Ty, b: Ty, what: &str, col: usize) -> Result<Ty, ExprError> {
    match (a, b) {
        (Ty::Num, t) | (t, Ty::Num) => Ok(t),
        (x, y) if x == y => Ok(x),
        (
            Ty::Qty {
                dim: "temperature", ..
            },
            Ty::Qty {
                dim: "temperature", ..
            },
        ) => err(
            col,
            format!(
                "{what} {} and {}: write both as temperatures or both as differences",
                a.describe(),
                b.describe()
            ),
        ),
        _ => err(
            col,
            format!(
                "{what} {} and {}: not the same kind of quantity",
                a.describe(),
                b.describe()
            ),
        ),
    }
}

impl Compiler<'_> {
    fn push(&mut self, op: Op, pops: usize) {
        self.ops.push(op);
        self.depth = self.depth + 1 - pops;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn compile(&mut self, e: &Ast) -> Result<Ty, ExprError> {
        match e {
            Ast::Num(v) => {
                self.push(Op::Const(*v), 0);
                Ok(Ty::Num)
            }
            Ast::Dur(_, col) => err(*col, "a duration is only an argument of `changes(x, 1h)`"),
            Ast::Var(n, col) => {
                if let Some((_, s)) = AhuState::NAMES.iter().find(|(k, _)| k == n) {
                    self.push(Op::Const(*s as i32 as f64), 0);
                    return Ok(Ty::State);
                }
                match (self.resolve)(n) {
                    Some(Sym::Input(slot, t)) => {
                        self.push(Op::Load(slot), 0);
                        Ok(t)
                    }
                    Some(Sym::Const(v, t)) => {
                        self.push(Op::Const(v), 0);
                        Ok(t)
                    }
                    Some(Sym::Let(ast)) => {
                        if self.inlining.contains(n) {
                            return err(*col, format!("`{n}` is defined in terms of itself"));
                        }
                        self.inlining.push(n.clone());
                        let t = self.compile(&ast);
                        self.inlining.pop();
                        t
                    }
                    None => err(
                        *col,
                        format!(
                            "unknown name `{n}`: not an input, parameter or `let` of this rule"
                        ),
                    ),
                }
            }
            Ast::Neg(a, col) => {
                let t = self.compile(a)?;
                if matches!(t, Ty::Bool | Ty::State) {
                    return err(*col, format!("cannot negate {}", t.describe()));
                }
                self.push(Op::Neg, 1);
                Ok(t)
            }
            Ast::Not(a, col) => {
                let t = self.compile(a)?;
                if t != Ty::Bool {
                    return err(*col, format!("`!` needs a condition, not {}", t.describe()));
                }
                self.push(Op::Not, 1);
                Ok(Ty::Bool)
            }
            Ast::Bin(op, a, b, col) => {
                let ta = self.compile(a)?;
                let tb = self.compile(b)?;
                let col = *col;
                let (code, t) = match *op {
                    "&&" | "||" => {
                        if ta != Ty::Bool || tb != Ty::Bool {
                            return err(
                                col,
                                format!(
                                    "`{op}` joins conditions, not {} and {}",
                                    ta.describe(),
                                    tb.describe()
                                ),
                            );
                        }
                        (if *op == "&&" { Op::And } else { Op::Or }, Ty::Bool)
                    }
                    "<" | "<=" | ">" | ">=" | "==" | "!=" => {
                        if ta == Ty::Bool || tb == Ty::Bool {
                            return err(
                                col,
                                format!("cannot compare {} and {}", ta.describe(), tb.describe()),
                            );
                        }
                        unify(ta, tb, "comparing", col)?;
                        let code = match *op {
                            "<" => Op::Lt,
                            "<=" => Op::Le,
                            ">" => Op::Gt,
                            ">=" => Op::Ge,
                            "==" => Op::Eq,
                            _ => Op::Ne,
                        };
                        (code, Ty::Bool)
                    }
                    "+" | "-" => (
                        if *op == "+" { Op::Add } else { Op::Sub },
                        add_sub(op, ta, tb, col)?,
                    ),
                    "*" => {
                        let t = match (ta, tb) {
                            (Ty::Num, t @ Ty::Qty { .. }) | (t @ Ty::Qty { .. }, Ty::Num) => t,
                            (Ty::Num, Ty::Num) => Ty::Num,
                            _ => {
                                return err(
                                    col,
                                    format!(
                                        "cannot multiply {} by {}",
                                        ta.describe(),
                                        tb.describe()
                                    ),
                                );
                            }
                        };
                        (Op::Mul, t)
                    }
                    _ => {
                        let t = match (ta, tb) {
                            (t @ Ty::Qty { .. }, Ty::Num) => t,
                            (Ty::Num, Ty::Num) => Ty::Num,
                            (Ty::Qty { dim: d1, delta: x1 }, Ty::Qty { dim: d2, delta: x2 })
                                if d1 == d2 && (d1 != "temperature" || (x1 && x2)) =>
                            {
                                Ty::Num
                            }
                            _ => {
                                return err(
                                    col,
                                    format!("cannot divide {} by {}", ta.describe(), tb.describe()),
                                );
                            }
                        };
                        (Op::Div, t)
                    }
                };
                self.push(code, 2);
                Ok(t)
            }
            Ast::Call(name, args, col) => self.call(name, args, *col),
        }
    }

    fn call(&mut self, name: &str, args: &[Ast], col: usize) -> Result<Ty, ExprError> {
        let n = args.len();
        let arity = |lo: usize, hi: usize| -> Result<(), ExprError> {
            if n < lo || n > hi {
                let want = if lo == hi {
                    format!("{lo}")
                } else if hi == usize::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo} to {hi}")
                };
                return err(col, format!("`{name}` takes {want} arguments, got {n}"));
            }
            Ok(())
        };
        match name {
            "changes" => {
                arity(2, 2)?;
                let Ast::Dur(w, _) = args[1] else {
                    return err(
                        col,
                        "`changes(x, window)`: the window is a duration such as `1h`",
                    );
                };
                self.compile(&args[0])?;
                let call = self.calls as u16;
                self.calls += 1;
                self.push(Op::Changes { call, window_ns: w }, 1);
                return Ok(Ty::Num);
            }
            "if" => {
                arity(3, 3)?;
                let c = self.compile(&args[0])?;
                if c != Ty::Bool {
                    return err(
                        col,
                        format!("`if` needs a condition first, not {}", c.describe()),
                    );
                }
                let a = self.compile(&args[1])?;
                let b = self.compile(&args[2])?;
                let t = unify(a, b, "`if` chooses between", col)?;
                self.push(Op::If, 3);
                return Ok(t);
            }
            "ahu_state" => {
                arity(5, 5)?;
                for a in args {
                    let t = self.compile(a)?;
                    if !matches!(t, Ty::Num | Ty::Qty { dim: "ratio", .. }) {
                        return err(
                            col,
                            format!(
                                "`ahu_state(fan, heating, cooling, oa_damper, oa_min)` takes positions in percent, not {}",
                                t.describe()
                            ),
                        );
                    }
                }
                self.push(Op::AhuState, 5);
                return Ok(Ty::State);
            }
            _ => {}
        }
        let (lo, hi) = match name {
            "abs" => (1, 1),
            "min" | "max" | "avg" | "hypot" => (1, 16),
            "max_dev" | "imbalance" => (2, 16),
            _ => {
                return err(
                    col,
                    format!(
                        "unknown function `{name}`; expected one of: min, max, avg, abs, hypot, max_dev, imbalance, if, ahu_state, changes"
                    ),
                );
            }
        };
        arity(lo, hi)?;
        let mut t = Ty::Num;
        for a in args {
            let ta = self.compile(a)?;
            if matches!(ta, Ty::Bool) {
                return err(col, format!("`{name}` takes values, not {}", ta.describe()));
            }
            t = unify(t, ta, &format!("`{name}` of"), col)?;
        }
        let k = n as u8;
        let (op, rt) = match name {
            "abs" => (Op::Abs, t),
            "min" => (Op::Min(k), t),
            "max" => (Op::Max(k), t),
            "avg" => (Op::Avg(k), t),
            "hypot" => (Op::Hypot(k), t),
            "max_dev" => (
                Op::MaxDev(k),
                match t {
                    Ty::Qty { dim, .. } => Ty::Qty {
                        dim,
                        delta: dim == "temperature",
                    },
                    t => t,
                },
            ),
            _ => (
                Op::Imbalance(k),
                Ty::Qty {
                    dim: "ratio",
                    delta: false,
                },
            ),
        };
        self.push(op, n);
        Ok(rt)
    }
}

fn add_sub(op: &str, a: Ty, b: Ty, col: usize) -> Result<Ty, ExprError> {
    use Ty::*;
    let what = if op == "+" { "adding" } else { "subtracting" };
    match (a, b) {
        (Bool, _) | (_, Bool) | (State, _) | (_, State) => err(
            col,
            format!(
                "{what} {} and {}: only quantities add up",
                a.describe(),
                b.describe()
            ),
        ),
        (Num, t) | (t, Num) => Ok(t),
        (
            Qty {
                dim: "temperature",
                delta: da,
            },
            Qty {
                dim: "temperature",
                delta: db,
            },
        ) => match (op, da, db) {
            ("-", false, false) => Ok(Qty {
                dim: "temperature",
                delta: true,
            }),
            (_, false, true) => Ok(Qty {
                dim: "temperature",
                delta: false,
            }),
            ("+", true, false) => Ok(Qty {
                dim: "temperature",
                delta: false,
            }),
            (_, true, true) => Ok(Qty {
                dim: "temperature",
                delta: true,
            }),
            ("+", false, false) => err(
                col,
                "adding two temperatures (degC + degC) means nothing: did you mean a difference?",
            ),
            _ => err(
                col,
                "subtracting a temperature from a temperature difference (K - degC)",
            ),
        },
        (Qty { dim: d1, .. }, Qty { dim: d2, .. }) if d1 == d2 => Ok(a),
        _ => err(col, format!("{what} {} and {}", a.describe(), b.describe())),
    }
}

/// Compiles `ast`, resolving names with `resolve`; returns the program and the expression's type.
pub fn compile(
    ast: &Ast,
    resolve: &dyn Fn(&str) -> Option<Sym>,
) -> Result<(Program, Ty), ExprError> {
    let mut c = Compiler {
        resolve,
        ops: Vec::new(),
        depth: 0,
        max_depth: 0,
        calls: 0,
        inlining: Vec::new(),
    };
    let t = c.compile(ast)?;
    if c.max_depth > STACK {
        return err(
            1,
            format!(
                "expression too large (needs a stack of {}, at most {STACK})",
                c.max_depth
            ),
        );
    }
    Ok((
        Program {
            ops: c.ops,
            calls: c.calls,
        },
        t,
    ))
}

#[inline]
fn b(x: bool) -> f64 {
    if x { 1.0 } else { 0.0 }
}

impl Program {
    /// Evaluates over the input `slots` at time `at` (for `changes`), updating `calls` (one per stateful call).
    /// Booleans are 1/0. A non-finite result (a division by zero) is returned as is: callers skip it.
    pub fn eval(&self, slots: &[f64], calls: &mut [CallState], at: i64) -> f64 {
        let mut st = [0.0f64; STACK];
        let mut sp = 0usize;
        for op in &self.ops {
            match *op {
                Op::Const(v) => {
                    st[sp] = v;
                    sp += 1;
                }
                Op::Load(s) => {
                    st[sp] = slots.get(s as usize).copied().unwrap_or(f64::NAN);
                    sp += 1;
                }
                Op::Neg => st[sp - 1] = -st[sp - 1],
                Op::Not => st[sp - 1] = b(st[sp - 1] == 0.0),
                Op::Abs => st[sp - 1] = st[sp - 1].abs(),
                Op::Add
                | Op::Sub
                | Op::Mul
                | Op::Div
                | Op::Lt
                | Op::Le
                | Op::Gt
                | Op::Ge
                | Op::Eq
                | Op::Ne
                | Op::And
                | Op::Or => {
                    let (x, y) = (st[sp - 2], st[sp - 1]);
                    sp -= 1;
                    st[sp - 1] = match *op {
                        Op::Add => x + y,
                        Op::Sub => x - y,
                        Op::Mul => x * y,
                        Op::Div => x / y,
                        Op::Lt => b(x < y),
                        Op::Le => b(x <= y),
                        Op::Gt => b(x > y),
                        Op::Ge => b(x >= y),
                        Op::Eq => b(x == y),
                        Op::Ne => b(x != y),
                        Op::And => b(x != 0.0 && y != 0.0),
                        _ => b(x != 0.0 || y != 0.0),
                    };
                }
                Op::Min(k)
                | Op::Max(k)
                | Op::Avg(k)
                | Op::Hypot(k)
                | Op::MaxDev(k)
                | Op::Imbalance(k) => {
                    let k = k as usize;
                    let a = &st[sp - k..sp];
                    let mean = a.iter().sum::<f64>() / k as f64;
                    let r = match *op {
                        Op::Min(_) => a.iter().copied().fold(f64::INFINITY, f64::min),
                        Op::Max(_) => a.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        Op::Avg(_) => mean,
                        Op::Hypot(_) => a.iter().map(|x| x * x).sum::<f64>().sqrt(),
                        Op::MaxDev(_) => a.iter().map(|x| (x - mean).abs()).fold(0.0, f64::max),
                        _ => 100.0 * a.iter().map(|x| (x - mean).abs()).fold(0.0, f64::max) / mean,
                    };
                    sp -= k;
                    st[sp] = r;
                    sp += 1;
                }
                Op::If => {
                    let (c, x, y) = (st[sp - 3], st[sp - 2], st[sp - 1]);
                    sp -= 2;
                    st[sp - 1] = if c != 0.0 { x } else { y };
                }
                Op::AhuState => {
                    let a = &st[sp - 5..sp];
                    let s = AhuState::of(a[0], a[1], a[2], a[3], a[4]) as i32 as f64;
                    sp -= 5;
                    st[sp] = s;
                    sp += 1;
                }
                Op::Changes { call, window_ns } => {
                    let x = st[sp - 1];
                    let n = match calls.get_mut(call as usize) {
                        Some(c) => {
                            if c.times.back().is_some_and(|t| *t > at) {
                                c.times.clear(); // a replay went back in time
                            }
                            if c.last.is_some_and(|l| l != x) {
                                c.times.push_back(at);
                                if c.times.len() > 4096 {
                                    c.times.pop_front();
                                }
                            }
                            c.last = Some(x);
                            while c.times.front().is_some_and(|t| *t <= at - window_ns) {
                                c.times.pop_front();
                            }
                            c.times.len() as f64
                        }
                        None => f64::NAN,
                    };
                    st[sp - 1] = n;
                }
            }
        }
        if sp == 1 { st[0] } else { f64::NAN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> Ty {
        Ty::of_unit(Unit::DegC)
    }

    fn env(n: &str) -> Option<Sym> {
        Some(match n {
            "sat" => Sym::Input(0, temp()),
            "mat" => Sym::Input(1, temp()),
            "rat" => Sym::Input(2, temp()),
            "oat" => Sym::Input(3, temp()),
            "dsp" => Sym::Input(4, Ty::of_unit(Unit::Pa)),
            "fan" => Sym::Input(5, Ty::of_unit(Unit::Percent)),
            "eps" => Sym::Const(1.1, Ty::of_unit(Unit::Kelvin)),
            "delta" => Sym::Let(Box::new(parse("sat - mat").unwrap())),
            "loop" => Sym::Let(Box::new(parse("loop + 1").unwrap())),
            _ => return None,
        })
    }

    fn run(text: &str, slots: &[f64]) -> (f64, Ty) {
        let (p, t) = compile(&parse(text).unwrap(), &env).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut calls = vec![CallState::default(); p.calls];
        (p.eval(slots, &mut calls, 0), t)
    }

    fn fails(text: &str) -> ExprError {
        match parse(text) {
            Err(e) => e,
            Ok(a) => compile(&a, &env)
                .err()
                .unwrap_or_else(|| panic!("{text} compiled")),
        }
    }

    const S: [f64; 6] = [14.0, 12.0, 21.0, 5.0, 180.0, 100.0];

    #[test]
    fn precedence_and_functions() {
        assert_eq!(run("1 + 2 * 3 - 4 / 2", &S).0, 5.0);
        assert_eq!(run("-(1 + 2) * 3", &S).0, -9.0);
        assert_eq!(
            run("sat - mat", &S),
            (
                2.0,
                Ty::Qty {
                    dim: "temperature",
                    delta: true
                }
            )
        );
        assert_eq!(run("mat + eps < min(rat - eps, oat - eps)", &S).0, 0.0);
        assert_eq!(
            run(
                "mat - eps > max(rat + eps, oat + eps) || fan >= 99 && !(dsp < 200)",
                &S
            )
            .0,
            0.0
        );
        assert_eq!(run("fan >= 99 && dsp < 200", &S).0, 1.0);
        assert_eq!(run("abs(delta) > eps", &S).0, 1.0);
        assert!((run("hypot(eps, eps)", &S).0 - 1.1 * 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(run("avg(sat, mat, rat)", &S).0, 47.0 / 3.0);
        assert_eq!(run("max_dev(10, 12, 14)", &S).0, 2.0);
        assert_eq!(run("imbalance(10, 12, 14)", &S).0, 100.0 * 2.0 / 12.0);
        assert_eq!(run("if(sat > mat, sat, mat)", &S).0, 14.0);
        assert_eq!(run("ahu_state(fan, 0, 0, 40, 20) == economizer", &S).0, 1.0);
        assert_eq!(run("1e3 + .5", &S).0, 1000.5);
    }

    #[test]
    fn units_are_checked() {
        for (text, want) in [
            ("sat + mat", "adding two temperatures"),
            ("sat + dsp", "a temperature (degC) and a pressure (Pa)"),
            (
                "sat > eps",
                "comparing a temperature (degC) and a temperature difference (K)",
            ),
            ("sat * mat", "cannot multiply"),
            ("min(sat, dsp)", "not the same kind"),
            ("sat && mat > 1", "joins conditions"),
            ("ahu_state(sat, 0, 0, 0, 0)", "positions in percent"),
            ("nosuch > 1", "unknown name `nosuch`"),
            ("loop > 1", "in terms of itself"),
            ("frob(1)", "unknown function `frob`"),
            ("min()", "takes 1 to 16 arguments"),
            ("changes(sat, 5)", "a duration"),
        ] {
            let e = fails(text);
            assert!(e.msg.contains(want), "{text}: {e}");
        }
        assert_eq!(fails("sat + dsp").col, 5);
        for (text, want, col) in [
            ("sat >", "ends too early", 6),
            ("(sat - mat", "missing `)`", 11),
            ("sat = 1", "compare with `==`", 5),
            ("1 < sat < 3", "do not chain", 9),
            ("sat # 2", "unexpected character", 5),
            ("changes(sat, 1y)", "`1y`", 14),
        ] {
            let e = fails(text);
            assert!(e.msg.contains(want) && e.col == col, "{text}: {e}");
        }
        // Dividing two differences is a plain ratio (the outdoor-air fraction of Guideline 36).
        assert_eq!(run("(mat - rat) / (oat - rat)", &S).1, Ty::Num);
    }

    #[test]
    fn changes_counts_within_the_window() {
        let (p, _) = compile(&parse("changes(fan, 1h)").unwrap(), &env).unwrap();
        let mut calls = vec![CallState::default(); p.calls];
        let min = 60_000_000_000i64;
        let mut slots = S;
        let mut n = 0.0;
        for i in 0..120 {
            slots[5] = if (i / 10) % 2 == 0 { 0.0 } else { 100.0 };
            n = p.eval(&slots, &mut calls, i * min);
            if i == 59 {
                assert_eq!(n, 5.0);
            }
        }
        assert_eq!(n, 6.0);
    }

    #[test]
    fn ahu_states_follow_guideline_36() {
        use AhuState::*;
        assert_eq!(AhuState::of(0.0, 50.0, 0.0, 20.0, 20.0), Off);
        assert_eq!(AhuState::of(80.0, 50.0, 0.0, 20.0, 20.0), Heating);
        assert_eq!(AhuState::of(80.0, 0.0, 0.0, 45.0, 20.0), Economizer);
        assert_eq!(AhuState::of(80.0, 0.0, 60.0, 100.0, 20.0), EconomizerMech);
        assert_eq!(AhuState::of(80.0, 0.0, 60.0, 20.0, 20.0), MechCooling);
        assert_eq!(AhuState::of(80.0, 30.0, 60.0, 20.0, 20.0), Unknown);
        assert_eq!(AhuState::name_of(3.0), "economizer_mech");
    }
}
