//! Label selectors (apps/v1 `LabelSelector` and the `labelSelector=` query string syntax) and
//! field selectors, with the semantics of k8s.io/apimachinery's `labels` and `fields` packages.
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::core::names;

/// A selector that cannot be parsed or converted, with the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("invalid selector {selector:?}: {source}")]
    Invalid {
        selector: String,
        #[source]
        source: LabelError,
    },
}

/// Why a label key, value, requirement or selector string is refused. Key and value problems
/// are the messages of [`crate::core::names`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label key {key:?}: {}", .problems.join("; "))]
    InvalidKey { key: String, problems: Vec<String> },
    #[error("label value {value:?}: {}", .problems.join("; "))]
    InvalidValue {
        value: String,
        problems: Vec<String>,
    },
    #[error("found '{found}', expected: {expected}")]
    Unexpected { found: String, expected: String },
    #[error("operator '{0}' is not supported")]
    UnsupportedOperator(String),
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    #[error("values set for key {0:?} can't be empty for 'in', 'notin' operators")]
    EmptyValues(String),
    #[error("values set must be empty for exists and does not exist (key {0:?})")]
    ValuesNotAllowed(String),
    #[error("can't understand {0:?}")]
    FieldTerm(String),
    #[error("invalid escape sequence \\{escaped} in {value:?}")]
    InvalidEscape { escaped: char, value: String },
    #[error(
        "invalid character {character:?} in field selector value {value:?}, it must be escaped"
    )]
    UnescapedCharacter { character: char, value: String },
    #[error("unterminated escape sequence in {0:?}")]
    UnterminatedEscape(String),
}

/// `found 'TOKEN', expected: WHAT` (`found` is `end of string` past the end).
fn unexpected(found: Option<&Token>, expected: &str) -> LabelError {
    LabelError::Unexpected {
        found: found.map_or_else(|| "end of string".to_string(), Token::to_string),
        expected: expected.to_string(),
    }
}

/// Whether a (non-nil) `LabelSelector` matches `labels`. An empty selector matches everything,
/// as LabelSelectorAsSelector does; an invalid one matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::from_label_selector(sel).is_ok_and(|selector| selector.matches(labels))
}

/// One requirement of a parsed selector string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    /// Whether the value `get` returns for this requirement's key satisfies it. A missing key
    /// satisfies `NotEquals`, `NotIn` and `DoesNotExist`, as in Kubernetes.
    pub fn matches_with(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => get(k).is_some_and(|got| &got == v),
            Requirement::NotEquals(k, v) => get(k).is_none_or(|got| &got != v),
            Requirement::In(k, vs) => get(k).is_some_and(|got| vs.contains(&got)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|got| !vs.contains(&got)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }
}

impl fmt::Display for Requirement {
    /// The selector syntax Kubernetes prints (`a=b`, `a in (x,y)`, `!a`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A parsed `labelSelector=` / `fieldSelector=` string: requirements ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl Selector {
    /// Parses the label selector syntax: `a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j`.
    /// An empty (or blank) string selects everything. Keys and values are validated as label
    /// keys and values, as `labels.Parse` does. The `>`/`<` operators are not supported.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        Parser {
            tokens: lex(s),
            pos: 0,
        }
        .parse()
        .map_err(|source| SelectorError::Invalid {
            selector: s.to_string(),
            source,
        })
    }

    /// Parses a field selector: `metadata.name=x,spec.nodeName!=y` (only =, ==, !=), as
    /// `fields.ParseSelector` does: terms split at unescaped commas, values unescaped (`\,`,
    /// `\=`, `\\`), no whitespace trimming. Field lookups given to [`Selector::matches_with`]
    /// should return `Some("")` for a supported field that is unset, as Kubernetes' field sets
    /// hold every supported field.
    pub fn parse_fields(s: &str) -> Result<Selector, SelectorError> {
        let invalid = |source: LabelError| SelectorError::Invalid {
            selector: s.to_string(),
            source,
        };
        let mut requirements = Vec::new();
        for term in split_field_terms(s) {
            if term.is_empty() {
                continue;
            }
            let (lhs, op, rhs) = split_field_term(term)
                .ok_or_else(|| invalid(LabelError::FieldTerm(term.to_string())))?;
            let value = unescape_field_value(rhs).map_err(invalid)?;
            requirements.push(match op {
                "!=" => Requirement::NotEquals(lhs.to_string(), value),
                _ => Requirement::Equals(lhs.to_string(), value),
            });
        }
        Ok(Selector { requirements })
    }

    /// The selector a `LabelSelector` stands for (metav1.LabelSelectorAsSelector): matchLabels
    /// become `Equals`, matchExpressions their operator (In, NotIn, Exists, DoesNotExist).
    pub fn from_label_selector(sel: &LabelSelector) -> Result<Selector, SelectorError> {
        let invalid = |source: LabelError| SelectorError::Invalid {
            selector: format!("{sel:?}"),
            source,
        };
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            validate_label_key(k).map_err(invalid)?;
            validate_label_value(v).map_err(invalid)?;
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        for expr in sel.match_expressions.iter().flatten() {
            let values = expr.values.clone().unwrap_or_default();
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(invalid(LabelError::ValuesNotAllowed(key)))
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(invalid(LabelError::InvalidOperator(other.to_string()))),
            };
            validate_requirement(&requirement).map_err(invalid)?;
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// Whether `get(key)` (label or field lookup) satisfies every requirement.
    pub fn matches_with(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| r.matches_with(get))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(&|k| labels.get(k).cloned())
    }

    /// True when the selector has no requirement (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Checks a label key as `validation.IsQualifiedName` does.
pub fn validate_label_key(key: &str) -> Result<(), LabelError> {
    let problems = names::is_qualified_name(key);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabelError::InvalidKey {
            key: key.to_string(),
            problems,
        })
    }
}

/// Checks a label value as `validation.IsValidLabelValue` does.
pub fn validate_label_value(value: &str) -> Result<(), LabelError> {
    let problems = names::is_valid_label_value(value);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabelError::InvalidValue {
            value: value.to_string(),
            problems,
        })
    }
}

/// What `labels.NewRequirement` checks: a valid key, valid values, a non-empty set for in/notin.
fn validate_requirement(r: &Requirement) -> Result<(), LabelError> {
    validate_label_key(r.key())?;
    match r {
        Requirement::In(k, vs) | Requirement::NotIn(k, vs) => {
            if vs.is_empty() {
                return Err(LabelError::EmptyValues(k.clone()));
            }
            vs.iter().try_for_each(|v| validate_label_value(v))
        }
        Requirement::Equals(_, v) | Requirement::NotEquals(_, v) => validate_label_value(v),
        Requirement::Exists(_) | Requirement::DoesNotExist(_) => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    OpenPar,
    ClosePar,
    Comma,
    /// A run of operator characters that is no operator (e.g. `=!`).
    Error(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Identifier(s) | Token::Error(s) => s.as_str(),
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
            Token::OpenPar => "(",
            Token::ClosePar => ")",
            Token::Comma => ",",
        };
        f.write_str(s)
    }
}

fn is_selector_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn symbol_token(s: &str) -> Option<Token> {
    Some(match s {
        "!" => Token::Bang,
        "!=" => Token::NotEquals,
        "=" => Token::Equals,
        "==" => Token::DoubleEquals,
        "(" => Token::OpenPar,
        ")" => Token::ClosePar,
        "," => Token::Comma,
        ">" => Token::Greater,
        "<" => Token::Less,
        _ => return None,
    })
}

/// The `labels` lexer: whitespace separates, operator characters form the longest operator,
/// everything else is an identifier (or the keywords `in`, `notin`).
fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_selector_space(c) {
            i += 1;
        } else if is_special(c) {
            let mut buffer = String::new();
            let mut last: Option<(Token, usize)> = None;
            while i < chars.len() && is_special(chars[i]) {
                buffer.push(chars[i]);
                match symbol_token(&buffer) {
                    Some(t) => last = Some((t, i + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            match last {
                Some((t, end)) => {
                    tokens.push(t);
                    i = end;
                }
                None => tokens.push(Token::Error(buffer)),
            }
        } else {
            let start = i;
            while i < chars.len() && !is_selector_space(chars[i]) && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
    tokens
}

/// The `labels.Parser` grammar over the lexed tokens.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// In a value position the keywords are plain identifiers (`a in (in)`).
    fn next_value(&mut self) -> Option<Token> {
        self.next().map(|t| match t {
            Token::In => Token::Identifier("in".into()),
            Token::NotIn => Token::Identifier("notin".into()),
            t => t,
        })
    }

    fn peek_value(&self) -> Option<Token> {
        self.peek().cloned().map(|t| match t {
            Token::In => Token::Identifier("in".into()),
            Token::NotIn => Token::Identifier("notin".into()),
            t => t,
        })
    }

    fn parse(mut self) -> Result<Selector, LabelError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                None => return Ok(Selector { requirements }),
                Some(Token::Identifier(_) | Token::Bang) => {
                    let r = self.parse_requirement()?;
                    validate_requirement(&r)?;
                    requirements.push(r);
                    match self.next() {
                        None => return Ok(Selector { requirements }),
                        Some(Token::Comma) => match self.peek() {
                            Some(Token::Identifier(_) | Token::Bang) => {}
                            t => return Err(unexpected(t, "identifier after ','")),
                        },
                        Some(t) => return Err(unexpected(Some(&t), "',' or 'end of string'")),
                    }
                }
                t => return Err(unexpected(t, "!, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, LabelError> {
        let negated = matches!(self.peek(), Some(Token::Bang));
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Some(Token::Identifier(k)) => k,
            t => return Err(unexpected(t.as_ref(), "identifier")),
        };
        validate_label_key(&key)?;
        if matches!(self.peek(), None | Some(Token::Comma)) {
            return Ok(if negated {
                Requirement::DoesNotExist(key)
            } else {
                Requirement::Exists(key)
            });
        }
        if negated {
            return Err(unexpected(
                self.peek(),
                &format!("',' or 'end of string' after !{key}"),
            ));
        }
        match self.next() {
            Some(Token::In) => Ok(Requirement::In(key, self.parse_values()?)),
            Some(Token::NotIn) => Ok(Requirement::NotIn(key, self.parse_values()?)),
            Some(Token::Equals | Token::DoubleEquals) => {
                Ok(Requirement::Equals(key, self.parse_exact_value()?))
            }
            Some(Token::NotEquals) => Ok(Requirement::NotEquals(key, self.parse_exact_value()?)),
            Some(t @ (Token::Greater | Token::Less)) => {
                Err(LabelError::UnsupportedOperator(t.to_string()))
            }
            t => Err(unexpected(t.as_ref(), "in, notin, =, ==, !=")),
        }
    }

    fn parse_exact_value(&mut self) -> Result<String, LabelError> {
        match self.peek_value() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Identifier(v)) => {
                self.pos += 1;
                Ok(v)
            }
            t => Err(unexpected(t.as_ref(), "identifier")),
        }
    }

    /// `(a,b)`; like Kubernetes, empty entries (`()`, `(a,)`) stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, LabelError> {
        match self.next_value() {
            Some(Token::OpenPar) => {}
            t => return Err(unexpected(t.as_ref(), "'('")),
        }
        let mut values: Vec<String> = Vec::new();
        let mut expect_value = true;
        loop {
            match self.next_value() {
                Some(Token::Identifier(v)) if expect_value => {
                    values.push(v);
                    expect_value = false;
                }
                Some(Token::Comma) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                Some(Token::ClosePar) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    break;
                }
                Some(t) if expect_value => {
                    return Err(unexpected(Some(&t), "',', ')' or identifier"))
                }
                Some(t) => return Err(unexpected(Some(&t), "',' or ')'")),
                None => return Err(unexpected(None, "')'")),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

/// `fields.splitTerms`: split at commas not escaped by a backslash.
fn split_field_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `fields.splitTerm`: the first `!=`, `==` or `=` splits the term.
fn split_field_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

/// `fields.UnescapeValue`.
fn unescape_field_value(s: &str) -> Result<String, LabelError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(LabelError::InvalidEscape {
                    escaped: c,
                    value: s.to_string(),
                });
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(LabelError::UnescapedCharacter {
                    character: c,
                    value: s.to_string(),
                })
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(LabelError::UnterminatedEscape(s.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn label_selector_matching() {
        let node = labels(&[("app", "web"), ("tier", "frontend"), ("zone", "a")]);
        let table: Vec<(&str, LabelSelector, bool)> = vec![
            ("empty selects all", LabelSelector::default(), true),
            (
                "matchLabels equal",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    ..Default::default()
                },
                true,
            ),
            (
                "matchLabels all keys needed",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web"), ("env", "prod")])),
                    ..Default::default()
                },
                false,
            ),
            (
                "matchLabels other value",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "db")])),
                    ..Default::default()
                },
                false,
            ),
            ("In", sel_exprs(vec![expr("zone", "In", &["a", "b"])]), true),
            (
                "In other value",
                sel_exprs(vec![expr("zone", "In", &["b"])]),
                false,
            ),
            (
                "In missing key",
                sel_exprs(vec![expr("region", "In", &["a"])]),
                false,
            ),
            (
                "NotIn",
                sel_exprs(vec![expr("zone", "NotIn", &["b"])]),
                true,
            ),
            (
                "NotIn listed",
                sel_exprs(vec![expr("zone", "NotIn", &["a"])]),
                false,
            ),
            (
                "NotIn missing key",
                sel_exprs(vec![expr("region", "NotIn", &["a"])]),
                true,
            ),
            ("Exists", sel_exprs(vec![expr("tier", "Exists", &[])]), true),
            (
                "Exists missing",
                sel_exprs(vec![expr("region", "Exists", &[])]),
                false,
            ),
            (
                "DoesNotExist",
                sel_exprs(vec![expr("tier", "DoesNotExist", &[])]),
                false,
            ),
            (
                "DoesNotExist missing",
                sel_exprs(vec![expr("region", "DoesNotExist", &[])]),
                true,
            ),
            (
                "unknown operator",
                sel_exprs(vec![expr("zone", "Gt", &["1"])]),
                false,
            ),
            (
                "In without values",
                sel_exprs(vec![expr("zone", "In", &[])]),
                false,
            ),
            (
                "Exists with values",
                sel_exprs(vec![expr("zone", "Exists", &["a"])]),
                false,
            ),
            (
                "invalid key",
                sel_exprs(vec![expr("bad key", "Exists", &[])]),
                false,
            ),
            (
                "labels AND expressions",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: Some(vec![expr("zone", "In", &["b"])]),
                },
                false,
            ),
            (
                "labels AND expressions both hold",
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: Some(vec![
                        expr("zone", "In", &["a"]),
                        expr("tier", "NotIn", &["backend"]),
                    ]),
                },
                true,
            ),
        ];
        for (name, sel, want) in table {
            assert_eq!(selector_matches(&sel, &node), want, "{name}");
        }
    }

    fn sel_exprs(exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(exprs),
            ..Default::default()
        }
    }

    #[test]
    fn parses_label_selector_strings() {
        use Requirement::*;
        let table: Vec<(&str, Vec<Requirement>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("a=b", vec![Equals(s("a"), s("b"))]),
            ("a==b", vec![Equals(s("a"), s("b"))]),
            ("a!=b", vec![NotEquals(s("a"), s("b"))]),
            ("a=", vec![Equals(s("a"), s(""))]),
            ("a==", vec![Equals(s("a"), s(""))]),
            ("a", vec![Exists(s("a"))]),
            ("!a", vec![DoesNotExist(s("a"))]),
            (" ! a ", vec![DoesNotExist(s("a"))]),
            ("a in (y,x)", vec![In(s("a"), vec![s("x"), s("y")])]),
            ("a in(x)", vec![In(s("a"), vec![s("x")])]),
            (
                "a notin ( x , y )",
                vec![NotIn(s("a"), vec![s("x"), s("y")])],
            ),
            ("a in ()", vec![In(s("a"), vec![s("")])]),
            ("a in (x,)", vec![In(s("a"), vec![s(""), s("x")])]),
            (
                "a in (in,notin)",
                vec![In(s("a"), vec![s("in"), s("notin")])],
            ),
            ("a = in", vec![Equals(s("a"), s("in"))]),
            (
                "example.com/role=web, tier != db ,x,!y, z in (1,2)",
                vec![
                    Equals(s("example.com/role"), s("web")),
                    NotEquals(s("tier"), s("db")),
                    Exists(s("x")),
                    DoesNotExist(s("y")),
                    In(s("z"), vec![s("1"), s("2")]),
                ],
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                Selector::parse(input),
                Ok(Selector { requirements: want }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_label_selector_strings() {
        let table = [
            "a=b,",
            ",a",
            "=b",
            "a=b=c",
            "a in",
            "a in x",
            "a in (x",
            "a in (x y)",
            "a notin",
            "!a=b",
            "a!",
            "a b",
            "a=(b)",
            "a>1",
            "a<1",
            "bad key=x",
            "a=bad value!",
            "a=-x",
            "a in (x,-y)",
            "a,,b",
            "a=!b",
            "a in ((x))",
            "/a",
            "Example.com/a",
            "a/b/c",
        ];
        for input in table {
            let got = Selector::parse(input);
            assert!(
                matches!(&got, Err(SelectorError::Invalid { selector, .. }) if selector == input),
                "{input:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn parsed_selectors_match() {
        let node = labels(&[("app", "web"), ("zone", "a"), ("empty", "")]);
        let table = [
            ("", true),
            ("app=web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=db", true),
            ("missing=", false),
            ("empty=", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("zone in (a,b)", true),
            ("zone in (b)", false),
            ("zone notin (b)", true),
            ("missing notin (b)", true),
            ("missing in (b)", false),
            ("app=web,zone notin (a)", false),
        ];
        for (input, want) in table {
            let sel = Selector::parse(input).expect(input);
            assert_eq!(sel.matches(&node), want, "{input}");
        }
    }

    #[test]
    fn selector_display_round_trips() {
        let table = [
            "a=b",
            "a!=b",
            "a in (x,y)",
            "a notin (x)",
            "a",
            "!a",
            "a=b,c in (d),!e",
        ];
        for input in table {
            let sel = Selector::parse(input).expect(input);
            assert_eq!(sel.to_string(), input);
            assert_eq!(Selector::parse(&sel.to_string()), Ok(sel));
        }
    }

    #[test]
    fn parses_field_selectors() {
        use Requirement::*;
        let table: Vec<(&str, Vec<Requirement>)> = vec![
            ("", vec![]),
            ("metadata.name=x", vec![Equals(s("metadata.name"), s("x"))]),
            ("metadata.name==x", vec![Equals(s("metadata.name"), s("x"))]),
            (
                "spec.nodeName!=",
                vec![NotEquals(s("spec.nodeName"), s(""))],
            ),
            (
                "metadata.name=x,spec.nodeName!=n1",
                vec![
                    Equals(s("metadata.name"), s("x")),
                    NotEquals(s("spec.nodeName"), s("n1")),
                ],
            ),
            ("a=x\\,y", vec![Equals(s("a"), s("x,y"))]),
            ("a=x\\=y\\\\", vec![Equals(s("a"), s("x=y\\"))]),
            (
                "a=x,,b=y",
                vec![Equals(s("a"), s("x")), Equals(s("b"), s("y"))],
            ),
            ("a = x", vec![Equals(s("a "), s(" x"))]),
        ];
        for (input, want) in table {
            assert_eq!(
                Selector::parse_fields(input),
                Ok(Selector { requirements: want }),
                "{input:?}"
            );
        }
        for bad in ["a", "a=b=c", "a=x\\y", "a=x\\", "a in (x)"] {
            assert!(Selector::parse_fields(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn field_selectors_match_with_a_lookup() {
        let get = |k: &str| match k {
            "metadata.name" => Some(s("web-1")),
            "spec.nodeName" => Some(s("")),
            _ => None,
        };
        let table = [
            ("metadata.name=web-1", true),
            ("metadata.name!=web-1", false),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("metadata.name=web-1,spec.nodeName=n1", false),
        ];
        for (input, want) in table {
            let sel = Selector::parse_fields(input).expect(input);
            assert_eq!(sel.matches_with(&get), want, "{input}");
        }
    }

    #[test]
    fn validates_label_keys_and_values() {
        let keys = [
            ("a", true),
            ("node-role.kubernetes.io/worker", true),
            ("kubernetes.io/hostname", true),
            ("A_b.c-9", true),
            ("", false),
            ("/a", false),
            ("a/", false),
            ("Example.com/a", false),
            ("a/b/c", false),
            ("-a", false),
            ("a-", false),
            (&"x".repeat(64), false),
        ];
        for (key, ok) in keys {
            assert_eq!(validate_label_key(key).is_ok(), ok, "{key:?}");
        }
        let values = [
            ("", true),
            ("true", true),
            ("a.b_c-d", true),
            ("a b", false),
            ("-a", false),
            (&"x".repeat(64), false),
        ];
        for (value, ok) in values {
            assert_eq!(validate_label_value(value).is_ok(), ok, "{value:?}");
        }
    }
}
