//! The shell lexer of buildkit (`shell.Lex`): quotes, escapes and `$` expansion, in the two
//! feature levels dockerd's classic builder has had.

use std::cell::Cell;
use std::collections::BTreeMap;

use super::Var;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum LexLevel {
    /// buildkit 0.8: `${VAR}`, `${VAR:-w}`, `${VAR:+w}`, `${VAR:?w}`.
    V08,
    /// Also `${VAR-w}`, `${VAR+w}`, `${VAR?w}`, and the pattern forms `#`, `%`, `/`.
    Current,
}

pub(super) enum LexErr {
    /// dockerd fails too.
    Dockerd(String),
    /// We cannot say what dockerd does.
    Refuse(String),
}

/// Deeper `${...${...}}` nesting is refused (Go would recurse on).
pub(super) const MAX_NESTING: usize = 64;

/// The bytes of variable values one plan may copy into expansions.
pub(super) const MAX_EXPANDED: usize = 4 << 20;

/// `shellWord` over Go's runes of one word.
pub(super) struct Lex<'a> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    level: LexLevel,
    env: &'a BTreeMap<String, Var>,
    pub(super) raw_quotes: bool,
    pub(super) raw_escapes: bool,
    pub(super) skip_unset: bool,
    depth: usize,
    /// Why the result cannot be trusted in `FROM`, first reason only.
    pub(super) taint: Option<String>,
    /// Whether [`Lex::words`] was asked: the word split is skipped otherwise.
    split: bool,
    /// Bytes of variable values left to copy (shared by the expansions of one plan).
    pub(super) budget: Option<&'a Cell<usize>>,
}

/// `wordsStruct`: the word split of an expansion.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

fn dockerd(e: impl Into<String>) -> LexErr {
    LexErr::Dockerd(e.into())
}

impl<'a> Lex<'a> {
    pub(super) fn new(
        chars: &'a [char],
        escape: char,
        level: LexLevel,
        env: &'a BTreeMap<String, Var>,
    ) -> Self {
        Lex {
            chars,
            // text/scanner skips a BOM at the start (checked on dockerd 20.10.24).
            pos: usize::from(chars.first() == Some(&'\u{feff}')),
            escape,
            level,
            env,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            depth: 0,
            taint: None,
            budget: None,
            split: false,
        }
    }

    pub(super) fn word(&mut self) -> Result<String, LexErr> {
        self.stop_on(None, self.raw_escapes).map(|(word, _)| word)
    }

    pub(super) fn words(&mut self) -> Result<Vec<String>, LexErr> {
        self.split = true;
        self.stop_on(None, self.raw_escapes).map(|(_, words)| words)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// `processStopOn`.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexErr> {
        if self.depth >= MAX_NESTING {
            return Err(LexErr::Refuse(format!(
                "variable expansions nested more than {MAX_NESTING} deep"
            )));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        result
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), LexErr> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    if self.split {
                        words.add_string(&value);
                    }
                }
                '\'' | '"' => {
                    let value = if ch == '\'' {
                        self.single_quote()?
                    } else {
                        self.double_quote()?
                    };
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        let Some(next) = self.next() else { break };
                        words.add_raw_char(next);
                        result.push(next);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(s) => Err(dockerd(format!(
                "unexpected end of statement while looking for matching {s}"
            ))),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, LexErr> {
        self.pos += 1;
        let mut result = String::new();
        if self.raw_quotes {
            result.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return Err(dockerd(
                        "unexpected end of statement while looking for matching single-quote",
                    ));
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, LexErr> {
        self.pos += 1;
        let mut result = String::new();
        if self.raw_quotes {
            result.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(dockerd(
                        "unexpected end of statement while looking for matching double-quote",
                    ));
                }
                Some('"') => {
                    self.pos += 1;
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                ch = next;
                                self.pos += 1;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn note_unset(&mut self, name: &str) {
        self.taint.get_or_insert_with(|| {
            format!("${name} has no value (an ARG without default and no build arg, or no ARG)")
        });
    }

    fn note_unevaluated(&mut self, what: &str) {
        self.taint
            .get_or_insert_with(|| format!("{what} is not evaluated"));
    }

    /// The variable's value, its taint passed on.
    fn value_of(&mut self, name: &str) -> Result<Option<String>, LexErr> {
        let Some(var) = self.env.get(name) else {
            return Ok(None);
        };
        if let Some(budget) = self.budget {
            let left = budget.get();
            if var.value.len() > left {
                budget.set(0);
                return Err(LexErr::Refuse("variables expand to too many bytes".into()));
            }
            budget.set(left - var.value.len());
        }
        if let Some(t) = &var.taint {
            self.taint.get_or_insert_with(|| t.clone());
        }
        Ok(Some(var.value.clone()))
    }

    /// `processDollar`.
    fn dollar(&mut self) -> Result<String, LexErr> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name()?;
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.value_of(&name)? {
                Some(value) => value,
                None if self.skip_unset => format!("${name}"),
                None => {
                    self.note_unset(&name);
                    String::new()
                }
            });
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(dockerd("syntax error: missing '}'")),
            Some('{' | '}' | ':') => return Err(dockerd("syntax error: bad substitution")),
            Some(_) => {}
        }
        let name = self.name()?;
        match (self.next(), self.level) {
            (Some('}'), _) => Ok(match self.value_of(&name)? {
                Some(value) => value,
                None if self.skip_unset => format!("${{{name}}}"),
                None => {
                    self.note_unset(&name);
                    String::new()
                }
            }),
            (Some(':'), _) => {
                let modifier = self.next();
                self.modifier(&name, modifier, true)
            }
            (Some(m @ ('+' | '-' | '?' | '#' | '%')), LexLevel::Current) => {
                self.modifier(&name, Some(m), false)
            }
            (Some('/'), LexLevel::Current) => self.replace(&name),
            (_, LexLevel::V08) => Err(dockerd("missing ':' in substitution")),
            (m, LexLevel::Current) => Err(dockerd(format!(
                "unsupported modifier ({m:?}) in substitution"
            ))),
        }
    }

    /// The word of `${VAR<modifier>word}` up to its `}`.
    fn closing_word(&mut self, raw_escapes: bool) -> Result<String, LexErr> {
        match self.stop_on(Some('}'), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(LexErr::Dockerd(_)) if self.peek().is_none() => {
                Err(dockerd("syntax error: missing '}'"))
            }
            Err(e) => Err(e),
        }
    }

    fn modifier(
        &mut self,
        name: &str,
        modifier: Option<char>,
        null_is_unset: bool,
    ) -> Result<String, LexErr> {
        let known = match self.level {
            LexLevel::V08 => matches!(modifier, Some('+' | '-' | '?')),
            LexLevel::Current => matches!(modifier, Some('+' | '-' | '?' | '#' | '%')),
        };
        let word = self.closing_word(matches!(modifier, Some('#' | '%')))?;
        let var = self.env.get(name).map(|v| v.value.clone());
        if self.skip_unset && var.is_none() && self.level == LexLevel::Current {
            let colon = if null_is_unset { ":" } else { "" };
            let m = modifier.map(String::from).unwrap_or_default();
            return Ok(format!("${{{name}{colon}{m}{word}}}"));
        }
        if !known {
            return Err(dockerd(format!(
                "unsupported modifier ({modifier:?}) in substitution"
            )));
        }
        let empty = var.as_deref() == Some("");
        let absent = var.is_none() || (null_is_unset && empty);
        match modifier {
            Some('-') if absent => Ok(word),
            Some('-') => Ok(self.value_of(name)?.unwrap_or_default()),
            Some('+') if absent => Ok(String::new()),
            Some('+') => Ok(word),
            Some('?') if var.is_none() || (null_is_unset && empty) => {
                let why = match (word.is_empty(), var.is_none()) {
                    (false, _) => word,
                    (true, true) => "is not allowed to be unset".into(),
                    (true, false) => "is not allowed to be empty".into(),
                };
                Err(dockerd(format!("{name}: {why}")))
            }
            Some('?') => Ok(self.value_of(name)?.unwrap_or_default()),
            _ => {
                // `#` and `%` trim a shell pattern off the value; an unset variable trims to "".
                if var.is_none() {
                    self.note_unset(name);
                } else {
                    self.note_unevaluated(&format!("the pattern trim ${{{name}...}}"));
                }
                Ok(String::new())
            }
        }
    }

    /// `${VAR/pattern/replacement}` and `${VAR//pattern/replacement}`.
    fn replace(&mut self, name: &str) -> Result<String, LexErr> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(LexErr::Dockerd(_)) if self.peek().is_none() => {
                return Err(dockerd("syntax error: missing '/' in ${}"));
            }
            Err(e) => return Err(e),
        };
        let replacement = self.closing_word(true)?;
        if self.skip_unset && !self.env.contains_key(name) {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        self.note_unevaluated(&format!("the pattern substitution ${{{name}/...}}"));
        Ok(String::new())
    }

    /// `processName`. Go's `unicode.IsLetter`/`IsDigit` differ from Rust's predicates beyond
    /// ASCII: a non-ASCII letter or digit there is refused.
    fn name(&mut self) -> Result<String, LexErr> {
        let non_ascii = || LexErr::Refuse("a non-ASCII letter or digit in a variable name".into());
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if !ch.is_ascii() {
                if ch.is_alphabetic() || ch.is_numeric() {
                    return Err(non_ascii());
                }
                break;
            }
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek() {
                    if d.is_ascii_digit() {
                        name.push(d);
                        self.pos += 1;
                    } else if !d.is_ascii() && d.is_numeric() {
                        return Err(non_ascii());
                    } else {
                        break;
                    }
                }
                return Ok(name);
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return Ok(ch.to_string());
            }
            if !(ch.is_ascii_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        Ok(name)
    }
}
