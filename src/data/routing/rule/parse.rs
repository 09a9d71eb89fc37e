//! The rule grammar: a lexer for values in backticks or quotes, `&&`, `||`, `!` and
//! parentheses, a recursive-descent parser (`||` binds looser than `&&`, `!` tightest), and
//! the construction of each matcher from its name and values.

use http::Method;
use regex::{Regex, RegexBuilder};

use super::{Cidr, Matcher, Rule, RuleError};
use crate::limits::{MAX_REGEX_SIZE, MAX_RULE_DEPTH, MAX_RULE_LEN};

pub(super) fn parse(text: &str) -> Result<Rule, RuleError> {
    if text.len() > MAX_RULE_LEN {
        return Err(RuleError {
            column: 1,
            message: format!("the rule is {} bytes long; the limit is {MAX_RULE_LEN}", text.len()),
        });
    }
    let tokens = lex(text)?;
    let mut parser = Parser { tokens, pos: 0, text, depth: 0 };
    let rule = parser.or()?;
    match parser.peek() {
        None => Ok(rule),
        Some(t) => Err(parser.error_at(t.column, format!("unexpected {}", t.kind.describe()))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Ident(name) => format!("{name:?}"),
            Kind::Str(s) => format!("value `{s}`"),
            Kind::Open => "\"(\"".into(),
            Kind::Close => "\")\"".into(),
            Kind::Comma => "\",\"".into(),
            Kind::And => "\"&&\"".into(),
            Kind::Or => "\"||\"".into(),
            Kind::Not => "\"!\"".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '!' => Kind::Not,
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(RuleError { column, message: format!("expected \"{c}{c}\"") });
                }
                i += 1;
                if c == '&' {
                    Kind::And
                } else {
                    Kind::Or
                }
            }
            '`' | '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or(RuleError { column, message: format!("unterminated value: no closing {c}") })?;
                let value: String = chars[i + 1..i + 1 + end].iter().collect();
                i += end + 1;
                Kind::Str(value)
            }
            c if c.is_ascii_alphabetic() => {
                let len = chars[i..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
                let name: String = chars[i..i + len].iter().collect();
                i += len - 1;
                Kind::Ident(name)
            }
            other => return Err(RuleError { column, message: format!("unexpected character {other:?}") }),
        };
        tokens.push(Token { kind, column });
        i += 1;
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    text: &'a str,
    /// How many `(` and `!` enclose the token at `pos`: bounded, so that the recursion (here,
    /// in matching, and in dropping the tree) is too.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn end_column(&self) -> usize {
        self.text.chars().count() + 1
    }

    fn error_at(&self, column: usize, message: String) -> RuleError {
        RuleError { column, message }
    }

    fn expect(&mut self, kind: Kind, what: &str) -> Result<Token, RuleError> {
        match self.tokens.get(self.pos).cloned() {
            Some(t) if t.kind == kind => {
                self.pos += 1;
                Ok(t)
            }
            Some(t) => Err(self.error_at(t.column, format!("expected {what}, found {}", t.kind.describe()))),
            None => Err(self.error_at(self.end_column(), format!("expected {what} at the end of the rule"))),
        }
    }

    fn or(&mut self) -> Result<Rule, RuleError> {
        self.chain(Kind::Or, Self::and, Rule::Or)
    }

    fn and(&mut self) -> Result<Rule, RuleError> {
        self.chain(Kind::And, Self::unary, Rule::And)
    }

    /// `operand (op operand)*`, one operand standing for itself.
    fn chain(
        &mut self,
        op: Kind,
        operand: fn(&mut Self) -> Result<Rule, RuleError>,
        combine: fn(Vec<Rule>) -> Rule,
    ) -> Result<Rule, RuleError> {
        let mut parts = vec![operand(self)?];
        while self.peek().is_some_and(|t| t.kind == op) {
            self.pos += 1;
            parts.push(operand(self)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { combine(parts) })
    }

    /// Enters one level of `(` or `!` at `column`, or fails past [`MAX_RULE_DEPTH`].
    fn nest(&mut self, column: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_RULE_DEPTH {
            return Err(self.error_at(column, format!("the rule nests deeper than {MAX_RULE_DEPTH} levels")));
        }
        self.pos += 1;
        Ok(())
    }

    fn unary(&mut self) -> Result<Rule, RuleError> {
        match self.peek().cloned() {
            Some(Token { kind: Kind::Not, column }) => {
                self.nest(column)?;
                let rule = Rule::Not(Box::new(self.unary()?));
                self.depth -= 1;
                Ok(rule)
            }
            Some(Token { kind: Kind::Open, column }) => {
                self.nest(column)?;
                let rule = self.or()?;
                self.expect(Kind::Close, "\")\"")?;
                self.depth -= 1;
                Ok(rule)
            }
            Some(Token { kind: Kind::Ident(name), column }) => {
                self.pos += 1;
                self.expect(Kind::Open, &format!("\"(\" after {name}"))?;
                let mut args = Vec::new();
                loop {
                    match self.tokens.get(self.pos).cloned() {
                        Some(Token { kind: Kind::Str(value), .. }) => {
                            self.pos += 1;
                            args.push(value);
                        }
                        Some(t) => {
                            return Err(self.error_at(
                                t.column,
                                format!("expected a value in backticks, found {}", t.kind.describe()),
                            ))
                        }
                        None => {
                            return Err(
                                self.error_at(self.end_column(), "expected a value at the end of the rule".into())
                            )
                        }
                    }
                    match self.tokens.get(self.pos).map(|t| t.kind.clone()) {
                        Some(Kind::Comma) => self.pos += 1,
                        _ => break,
                    }
                }
                self.expect(Kind::Close, "\")\"")?;
                matcher(&name, args).map(Rule::Match).map_err(|message| self.error_at(column, message))
            }
            Some(t) => Err(self.error_at(
                t.column,
                format!("expected a matcher such as Host(`example.com`), found {}", t.kind.describe()),
            )),
            None => Err(self.error_at(self.end_column(), "expected a matcher at the end of the rule".into())),
        }
    }
}

/// Compiles a rule's regular expression, bounded in size ([`MAX_REGEX_SIZE`]).
fn regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).size_limit(MAX_REGEX_SIZE).build().map_err(|e| match e {
        regex::Error::CompiledTooBig(limit) => {
            format!("regular expression {} compiles larger than {limit} bytes", crate::limits::shown(pattern))
        }
        e => format!("invalid regular expression {}: {e}", crate::limits::shown(pattern)),
    })
}

/// Builds one matcher from its name (case-insensitive) and arguments.
fn matcher(name: &str, args: Vec<String>) -> Result<Matcher, String> {
    let count = args.len();
    let exactly = |n: usize| {
        if count == n {
            Ok(())
        } else {
            Err(format!("{name} takes {n} value{}, got {count}", if n == 1 { "" } else { "s" }))
        }
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        // A trailing dot names the same host (the request's is stripped too).
        "host" => Matcher::Host(args.iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect()),
        "hostregexp" => {
            exactly(1)?;
            Matcher::HostRegexp(regex(&format!("(?i){}", args[0]))?)
        }
        "path" => Matcher::Path(args),
        "pathprefix" => Matcher::PathPrefix(args),
        "pathregexp" => {
            exactly(1)?;
            Matcher::PathRegexp(regex(&args[0])?)
        }
        "method" => Matcher::Method(
            args.iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| format!("invalid method {m:?}")))
                .collect::<Result<_, _>>()?,
        ),
        "header" | "headers" => {
            exactly(2)?;
            Matcher::Header(args[0].to_ascii_lowercase(), args[1].clone())
        }
        "headerregexp" | "headersregexp" => {
            exactly(2)?;
            Matcher::HeaderRegexp(args[0].to_ascii_lowercase(), regex(&args[1])?)
        }
        "query" => match args.len() {
            1 => Matcher::Query(args[0].clone(), None),
            2 => Matcher::Query(args[0].clone(), Some(args[1].clone())),
            n => return Err(format!("Query takes a key and optionally a value, got {n} values")),
        },
        "queryregexp" => {
            exactly(2)?;
            Matcher::QueryRegexp(args[0].clone(), regex(&args[1])?)
        }
        "clientip" => Matcher::ClientIp(
            args.iter().map(|a| Cidr::parse(a).ok_or_else(|| format!("invalid IP or CIDR {a:?}"))).collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "unknown matcher {name:?}; use Host, HostRegexp, Path, PathPrefix, PathRegexp, Method, Header, HeaderRegexp, Query, QueryRegexp or ClientIP"
            ))
        }
    })
    .and_then(|m| match &m {
        Matcher::Host(v) | Matcher::Path(v) | Matcher::PathPrefix(v) if v.is_empty() => Err(format!("{name} needs a value")),
        Matcher::Method(v) if v.is_empty() => Err(format!("{name} needs a value")),
        _ => Ok(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_column() {
        let err = |rule: &str| Rule::parse(rule).unwrap_err();
        assert_eq!(err("Host(`a`) && ").column, 14);
        assert_eq!(err("Host(`a`) & Path(`/`)").column, 11);
        assert_eq!(err("Hots(`a`)").column, 1);
        assert!(err("Hots(`a`)").message.contains("unknown matcher"));
        assert_eq!(err("Host(`a`").column, 9);
        assert_eq!(err("Path(`/x)").column, 6);
        assert_eq!(err("Host(`a`) Path(`/`)").column, 11);
        assert!(err("PathRegexp(`(`)").message.contains("invalid regular expression"));
        assert!(err("ClientIP(`10.0.0.0/40`)").message.contains("CIDR"));
        assert!(err("Header(`X`)").message.contains("takes 2 values"));
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}Host(`a`){}", "(".repeat(10_000), ")".repeat(10_000));
        let e = Rule::parse(&deep).unwrap_err();
        assert_eq!(e.column, MAX_RULE_DEPTH + 1, "{e}");
        assert!(e.message.contains("nests deeper"), "{e}");
        let nots = format!("{}Host(`a`)", "!".repeat(30_000));
        assert!(Rule::parse(&nots).unwrap_err().message.contains("nests deeper"));
        let unbalanced = "(".repeat(10_000);
        assert!(Rule::parse(&unbalanced).unwrap_err().message.contains("nests deeper"));
        let fine = format!("{}Host(`a`){}", "(!".repeat(MAX_RULE_DEPTH / 2), ")".repeat(MAX_RULE_DEPTH / 2));
        assert!(Rule::parse(&fine).is_ok(), "{MAX_RULE_DEPTH} levels parse");
    }

    #[test]
    fn long_rules_and_huge_regexes_are_refused_quickly() {
        let long = format!("HostRegexp(`{}`)", "a".repeat(1 << 20));
        let started = std::time::Instant::now();
        assert!(Rule::parse(&long).unwrap_err().message.contains("the limit is"));
        let big = Rule::parse("PathRegexp(`\\w{1000}\\w{1000}`)").unwrap_err();
        assert!(big.message.contains("compiles larger than"), "{big}");
        assert!(big.message.len() < 200, "the pattern is quoted short: {big}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
