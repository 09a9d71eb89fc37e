//! The expressions of `circuitBreaker` (oxy's predicate language, in Go syntax): metric
//! functions compared with literals, joined by `&&` and `||`, with parentheses:
//! `NetworkErrorRatio() > 0.30 || LatencyAtQuantileMS(50.0) > 100`. Types are as strict as
//! Traefik's: the ratios compare with a float literal (`0.5`, not `0`), the latency with an
//! integer, and `LatencyAtQuantileMS` takes a float (`50.0`). There is no `!`.

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Compare { metric: Metric, op: Op, value: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// The share of 502 and 504 responses.
    NetworkErrorRatio,
    /// Responses in `[a, b)` over responses in `[c, d)`; 0 when there are none of the latter.
    ResponseCodeRatio(u16, u16, u16, u16),
    /// The latency at a percentile (0-100), in whole milliseconds.
    LatencyAtQuantileMs(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What an expression is evaluated against.
pub trait Metrics {
    fn network_error_ratio(&self) -> f64;
    fn response_code_ratio(&self, a: u16, b: u16, c: u16, d: u16) -> f64;
    fn latency_ms(&self, quantile: f64) -> f64;
}

impl Expr {
    pub fn eval(&self, m: &dyn Metrics) -> bool {
        match self {
            Expr::Or(all) => all.iter().any(|e| e.eval(m)),
            Expr::And(all) => all.iter().all(|e| e.eval(m)),
            Expr::Compare { metric, op, value } => {
                let left = match *metric {
                    Metric::NetworkErrorRatio => m.network_error_ratio(),
                    Metric::ResponseCodeRatio(a, b, c, d) => m.response_code_ratio(a, b, c, d),
                    Metric::LatencyAtQuantileMs(q) => m.latency_ms(q),
                };
                match op {
                    Op::Eq => left == *value,
                    Op::Ne => left != *value,
                    Op::Lt => left < *value,
                    Op::Le => left <= *value,
                    Op::Gt => left > *value,
                    Op::Ge => left >= *value,
                }
            }
        }
    }

    pub fn parse(text: &str) -> Result<Expr, String> {
        if text.len() > crate::limits::MAX_RULE_LEN {
            return Err(format!("the expression is longer than {} bytes", crate::limits::MAX_RULE_LEN));
        }
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0, depth: 0 };
        let expr = p.or()?;
        match p.tokens.get(p.at) {
            None => Ok(expr),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Float(f64),
    Open,
    Close,
    Comma,
    Op(Op),
    And,
    Or,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let two = |t: Token| (t, 2);
        let (token, len) = match (c, next) {
            (c, _) if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            ('&', Some('&')) => two(Token::And),
            ('|', Some('|')) => two(Token::Or),
            ('=', Some('=')) => two(Token::Op(Op::Eq)),
            ('!', Some('=')) => two(Token::Op(Op::Ne)),
            ('<', Some('=')) => two(Token::Op(Op::Le)),
            ('>', Some('=')) => two(Token::Op(Op::Ge)),
            ('<', _) => (Token::Op(Op::Lt), 1),
            ('>', _) => (Token::Op(Op::Gt), 1),
            ('!', _) => return Err("! is not supported".into()),
            (c, _) if c.is_ascii_digit() => {
                let end =
                    (i..chars.len()).find(|&j| !(chars[j].is_ascii_digit() || chars[j] == '.')).unwrap_or(chars.len());
                let number: String = chars[i..end].iter().collect();
                let token = if number.contains('.') {
                    Token::Float(number.parse().map_err(|_| format!("{number:?} is not a number"))?)
                } else {
                    Token::Int(number.parse().map_err(|_| format!("{number:?} is not a number"))?)
                };
                (token, end - i)
            }
            (c, _) if c.is_ascii_alphabetic() => {
                let end = (i..chars.len()).find(|&j| !chars[j].is_ascii_alphanumeric()).unwrap_or(chars.len());
                (Token::Ident(chars[i..end].iter().collect()), end - i)
            }
            (c, _) => return Err(format!("unexpected {c:?}")),
        };
        out.push(token);
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Parentheses open now: bounded, as rules are, so no value can exhaust the stack.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn take(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        match self.take() {
            Some(t) if t == want => Ok(()),
            other => Err(format!("expected {want:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            all.push(self.and()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::Or(all) })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.primary()?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            all.push(self.primary()?);
        }
        Ok(if all.len() == 1 { all.remove(0) } else { Expr::And(all) })
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            self.depth += 1;
            if self.depth > crate::limits::MAX_RULE_DEPTH {
                return Err(format!("the expression nests deeper than {}", crate::limits::MAX_RULE_DEPTH));
            }
            let inner = self.or()?;
            self.expect(Token::Close)?;
            self.depth -= 1;
            return Ok(inner);
        }
        let metric = self.call()?;
        let op = match self.take() {
            Some(Token::Op(op)) => op,
            other => return Err(format!("expected a comparison after the function, found {other:?}")),
        };
        let value = match (metric, self.take()) {
            (Metric::LatencyAtQuantileMs(_), Some(Token::Int(n))) => n as f64,
            (Metric::LatencyAtQuantileMs(_), other) => {
                return Err(format!("LatencyAtQuantileMS compares with an integer, found {other:?}"))
            }
            (_, Some(Token::Float(f))) => f,
            (_, other) => return Err(format!("a ratio compares with a float such as 0.5, found {other:?}")),
        };
        Ok(Expr::Compare { metric, op, value })
    }

    fn call(&mut self) -> Result<Metric, String> {
        let name = match self.take() {
            Some(Token::Ident(name)) => name,
            other => return Err(format!("expected a function, found {other:?}")),
        };
        self.expect(Token::Open)?;
        let mut args = Vec::new();
        while self.peek() != Some(&Token::Close) {
            args.push(self.take().ok_or("unclosed call")?);
            if self.peek() == Some(&Token::Comma) {
                self.at += 1;
            }
        }
        self.expect(Token::Close)?;
        let code = |t: &Token| match t {
            Token::Int(n) => u16::try_from(*n).map_err(|_| format!("{n} is not a status code")),
            other => Err(format!("ResponseCodeRatio takes integers, found {other:?}")),
        };
        match (name.as_str(), args.as_slice()) {
            ("NetworkErrorRatio", []) => Ok(Metric::NetworkErrorRatio),
            ("ResponseCodeRatio", [a, b, c, d]) => {
                Ok(Metric::ResponseCodeRatio(code(a)?, code(b)?, code(c)?, code(d)?))
            }
            ("LatencyAtQuantileMS", [Token::Float(q)]) if (0.0..=100.0).contains(q) => {
                Ok(Metric::LatencyAtQuantileMs(*q))
            }
            ("LatencyAtQuantileMS", _) => Err("LatencyAtQuantileMS takes a percentile as a float, such as 50.0".into()),
            (name, _) => Err(format!("unknown function {name}() or wrong arguments")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Metrics for Fixed {
        fn network_error_ratio(&self) -> f64 {
            0.4
        }
        fn response_code_ratio(&self, a: u16, _: u16, _: u16, _: u16) -> f64 {
            if a == 500 {
                0.1
            } else {
                0.9
            }
        }
        fn latency_ms(&self, _: f64) -> f64 {
            120.0
        }
    }

    fn eval(text: &str) -> bool {
        Expr::parse(text).unwrap().eval(&Fixed)
    }

    #[test]
    fn expressions_read_as_traefiks_do() {
        assert!(eval("NetworkErrorRatio() > 0.30"));
        assert!(!eval("NetworkErrorRatio() > 0.5"));
        assert!(eval("ResponseCodeRatio(500, 600, 0, 600) < 0.25 && LatencyAtQuantileMS(50.0) >= 100"));
        assert!(eval("NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(99.0) > 100"));
        assert!(!eval("(NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(99.0) > 100) && ResponseCodeRatio(500, 600, 0, 600) > 0.5"));
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let deep = format!("{}NetworkErrorRatio() > 0.5{}", "(".repeat(1000), ")".repeat(1000));
        assert!(Expr::parse(&deep).unwrap_err().contains("nests deeper"));
    }

    #[test]
    fn literals_must_have_traefiks_types() {
        for bad in [
            "NetworkErrorRatio() > 0",
            "LatencyAtQuantileMS(50) > 100",
            "LatencyAtQuantileMS(50.0) > 100.5",
            "!(NetworkErrorRatio() > 0.5)",
            "NetworkErrorRatio()",
            "Foo() > 0.1",
            "",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }
}
