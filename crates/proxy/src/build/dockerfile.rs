//! Which images a `docker build` with dockerd's classic builder can pull, read from the
//! Dockerfile and the build args as dockerd reads them.
//!
//! The answer is a security decision, so the parser follows dockerd's, quirk for quirk, and
//! where it cannot tell what dockerd would do it refuses ([`Unevaluable`]) instead of guessing.
//!
//! # Dialects
//!
//! The daemon behind the proxy may be any version, and the parser dockerd vendors from buildkit
//! changed over time. [`plan`] parses the Dockerfile in every [`Dialect`] and answers the union:
//!
//! * [`Dialect::Legacy`], dockerd 20.10 (buildkit 0.8): no heredocs; a line loses one `\r`
//!   (`\` then `\r\r\n` is no continuation); `${VAR:-w}`, `${VAR:+w}`, `${VAR:?w}` only;
//!   `ALL_PROXY` is no builtin arg.
//! * [`Dialect::Transitional`], dockerd 23 to 26 (buildkit 0.10 to 0.13): heredocs (the body of
//!   `RUN <<EOF` is no instruction); a line loses every trailing `\r`; all `${...}` forms.
//! * [`Dialect::Current`], dockerd 27 and later (buildkit 0.14 and later): also the `check`
//!   directive, and any Unicode space after a directive's `#`.
//!
//! All dialects read the `escape` and `syntax` directives (checked on dockerd 20.10.24: `# syntax`
//! before `# escape` does not end the directives there), each at most once.
//!
//! | dialect outcome | contributes |
//! |---|---|
//! | parses and runs | its images |
//! | dockerd fails the build at parse time | nothing |
//! | dockerd fails the build while running it | the images pulled before the failure |
//! | something we cannot evaluate (a variable with no value in `FROM`, ...) | [`plan`] fails |
//!
//! If every dialect fails, [`plan`] returns the first failure: the build fails on any daemon.
//!
//! # Rules
//!
//! * `FROM` is expanded with the meta args only (the `ARG`s before the first `FROM`, build args
//!   overriding their defaults, plus the builtin proxy args when given); a name equal (Unicode
//!   case folding) to a *previous* stage's name is that stage; `scratch` pulls nothing; anything
//!   else is an image. A variable with no value in `FROM` is refused, as is an empty result.
//! * `COPY --from=X` (and `ADD --from`, `RUN --mount=from=X`, conservatively: the classic builder
//!   rejects them) is a previous stage by name, else a stage index if `X` is a Go `int`, else an
//!   image. The classic builder does not expand `--from`: a `$` in it is refused.
//! * A stage's `ONBUILD` triggers run in every later stage that starts `FROM` it: their `--from`
//!   images count for that later stage. The triggers of an external base image are not in the
//!   Dockerfile: the caller inspects the image and asks [`trigger_images`].
//! * A build's `target` is not considered: stages after it are still counted.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

mod lex;

use lex::{Lex, LexErr, LexLevel};

/// A version family of the Dockerfile parser that dockerd's classic builder vendors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// dockerd 20.10 (buildkit 0.8's parser).
    Legacy,
    /// dockerd 23 to 26 (buildkit 0.10 to 0.13): heredocs, the newer lexer.
    Transitional,
    /// dockerd 27 and later (buildkit 0.14 and later): the `check` directive.
    Current,
}

impl Dialect {
    /// Every dialect, in the order [`plan`] reports their failures.
    pub const ALL: [Dialect; 3] = [Dialect::Current, Dialect::Transitional, Dialect::Legacy];

    fn legacy(self) -> bool {
        self == Dialect::Legacy
    }
}

/// The images a build can pull.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// In order of appearance, each `(name, how, stage)` once.
    pub images: Vec<ImageUse>,
    /// The `# syntax=` directive's value: the classic builder ignores it, so it is logged only.
    pub syntax: Option<String>,
}

/// One image the build can pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    /// The reference dockerd would pull, after expansion.
    pub name: String,
    /// The index of the stage that pulls it.
    pub stage: usize,
    /// Which instruction pulls it.
    pub how: How,
    /// `FROM --platform`, expanded (with the meta args).
    pub platform: Option<String>,
}

/// The instruction that pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum How {
    /// The stage's base image.
    From,
    /// `COPY --from` (or `ADD --from`).
    CopyFrom,
    /// `COPY --from` in an `ONBUILD` trigger of a previous stage this stage starts from.
    OnBuildCopyFrom,
    /// `RUN --mount=from=` (the classic builder refuses it; counted anyway).
    MountFrom,
}

/// A Dockerfile we cannot answer for: the build is to be denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unevaluable {
    /// The 1-based line of the instruction (0: no line applies).
    pub line: usize,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Unevaluable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dockerfile line {}: {}", self.line, self.reason)
    }
}

/// The images a classic `docker build` of `dockerfile` with `build_args` can pull, on any
/// daemon version; see the module docs for the rules.
pub fn plan(
    dockerfile: &[u8],
    build_args: &BTreeMap<String, Option<String>>,
) -> Result<Plan, Unevaluable> {
    let mut plan = Plan::default();
    let mut seen = HashSet::new();
    let mut first_failure = None;
    let mut any_ok = false;
    for dialect in Dialect::ALL {
        let (images, stop, syntax) = match parse(dockerfile, dialect) {
            Ok(parsed) => {
                let syntax = parsed.syntax.clone();
                let (images, stop) = run(&parsed, build_args, dialect);
                (images, stop, syntax)
            }
            Err(stop) => (Vec::new(), Some(stop), None),
        };
        if plan.syntax.is_none() {
            plan.syntax = syntax;
        }
        match stop {
            Some(Stop::Refuse(e)) => return Err(e),
            Some(Stop::Fails(e)) => {
                first_failure.get_or_insert(e);
            }
            None => any_ok = true,
        }
        for image in images {
            if seen.insert((image.name.clone(), image.how, image.stage)) {
                plan.images.push(image);
            }
        }
    }
    match first_failure {
        Some(e) if !any_ok => Err(Unevaluable {
            line: e.line,
            reason: format!("dockerd fails this build: {}", e.reason),
        }),
        _ => Ok(plan),
    }
}

/// The images an external base image's `ONBUILD` triggers (its `Config.OnBuild` strings, each
/// one instruction line) can pull, when run in stage `stage` of this build: their `COPY --from`
/// (`ADD --from`, `RUN --mount=from=`) values that are not previous stages of `dockerfile`.
///
/// A trigger that is itself `ONBUILD ...` lands in the stage's own triggers and runs in a later
/// stage: its `--from` is counted here too (resolved against this stage's predecessors, which
/// can only turn a stage name into an image, never the reverse).
pub fn trigger_images(
    dockerfile: &[u8],
    build_args: &BTreeMap<String, Option<String>>,
    stage: usize,
    triggers: &[String],
) -> Result<Vec<String>, Unevaluable> {
    let _ = build_args; // `--from` is not expanded: the build args do not matter.
    let mut names: Vec<String> = Vec::new();
    let mut found = false;
    for dialect in Dialect::ALL {
        let Ok(parsed) = parse(dockerfile, dialect) else {
            continue;
        };
        let Some(here) = parsed.stages.get(stage) else {
            continue;
        };
        found = true;
        let mut previous = Done::default();
        for s in &parsed.stages[..stage] {
            previous.push(s.name.as_deref());
        }
        let mut images = Vec::new();
        let mut pending = Vec::new();
        let stop = run_triggers(
            triggers,
            &previous,
            dialect,
            here.line,
            stage,
            true,
            &mut images,
            &mut pending,
        );
        if let Some(Stop::Refuse(e)) = stop {
            return Err(e);
        }
        for image in images {
            if !names.contains(&image.name) {
                names.push(image.name);
            }
        }
    }
    if found {
        Ok(names)
    } else {
        Err(Unevaluable {
            line: 0,
            reason: format!("the Dockerfile has no stage {stage}"),
        })
    }
}

/// Why a dialect stopped.
#[derive(Debug)]
enum Stop {
    /// dockerd fails the build here.
    Fails(Unevaluable),
    /// We refuse to decide.
    Refuse(Unevaluable),
}

fn fails(line: usize, reason: impl Into<String>) -> Stop {
    Stop::Fails(Unevaluable {
        line,
        reason: reason.into(),
    })
}

fn refuse(line: usize, reason: impl Into<String>) -> Stop {
    Stop::Refuse(Unevaluable {
        line,
        reason: reason.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Lines and directives (buildkit `parser.Parse`).

/// bufio.Scanner's default token limit: a longer line makes the parse fail.
const MAX_LINE: usize = 64 * 1024;

/// One line as bufio.Scanner yields it, and whether a `\n` ended it.
struct RawLine<'a> {
    bytes: &'a [u8],
    newline: bool,
}

fn split_lines(data: &[u8]) -> Result<Vec<RawLine<'_>>, Stop> {
    let mut lines = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (bytes, newline, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if bytes.len() >= MAX_LINE {
            return Err(fails(
                lines.len() + 1,
                "dockerfile line greater than max allowed size",
            ));
        }
        lines.push(RawLine { bytes, newline });
        rest = next;
    }
    Ok(lines)
}

/// Go's `unicode.IsSpace` on a byte read as a rune (`extractBuilderFlags` reads bytes).
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Go regexp `\s`.
fn is_re_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// `bytes.TrimLeftFunc(b, unicode.IsSpace)`.
fn trim_left_space(b: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < b.len() {
        let (ch, width) = decode_rune(&b[i..]);
        if !ch.is_whitespace() {
            break;
        }
        i += width;
    }
    &b[i..]
}

/// `strings.TrimSpace`.
fn trim_space(b: &[u8]) -> &[u8] {
    let b = trim_left_space(b);
    let chars = go_chars(b);
    let mut end = b.len();
    for ch in chars.iter().rev() {
        if !ch.is_whitespace() {
            break;
        }
        end -= ch.len_utf8().min(end);
    }
    // U+FFFD stands for one invalid byte but is not a space: the loop stopped before any.
    &b[..end]
}

/// Go's `utf8.DecodeRune`: an invalid byte is U+FFFD of width 1.
fn decode_rune(b: &[u8]) -> (char, usize) {
    let len = match b.first() {
        None => return ('\u{fffd}', 0),
        Some(&c) if c < 0x80 => return (char::from(c), 1),
        Some(&c) if c >= 0xf0 => 4,
        Some(&c) if c >= 0xe0 => 3,
        Some(_) => 2,
    };
    match b.get(..len).and_then(|s| std::str::from_utf8(s).ok()) {
        Some(s) => s.chars().next().map_or(('\u{fffd}', 1), |c| (c, len)),
        None => ('\u{fffd}', 1),
    }
}

/// The runes Go sees in a byte string.
fn go_chars(b: &[u8]) -> Vec<char> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (ch, width) = decode_rune(&b[i..]);
        out.push(ch);
        i += width.max(1);
    }
    out
}

fn go_string(b: &[u8]) -> String {
    go_chars(b).into_iter().collect()
}

/// Go's `strings.ToLower` as far as ASCII results go: the two non-ASCII letters that lower to
/// ASCII are mapped, the rest kept (they can match no keyword or stage name).
fn go_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{212a}' => 'k',
            '\u{130}' => 'i',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

struct Directives {
    escape: u8,
    done: bool,
    seen: Vec<String>,
    syntax: Option<String>,
}

impl Directives {
    fn new() -> Self {
        Directives {
            escape: b'\\',
            done: false,
            seen: Vec::new(),
            syntax: None,
        }
    }

    /// `possibleParserDirective`: the regexp `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` up to
    /// buildkit 0.13; from 0.14 the `#` may be followed by any Unicode space, and `check` is valid.
    fn check(&mut self, token: &[u8], dialect: Dialect) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some(mut rest) = token.strip_prefix(b"#") else {
            self.done = true;
            return Ok(());
        };
        rest = if dialect == Dialect::Current {
            trim_left_space(rest)
        } else {
            &rest[rest.iter().take_while(|&&b| is_re_space(b)).count()..]
        };
        let key_len = match rest.first() {
            Some(b) if b.is_ascii_alphabetic() => rest
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count(),
            _ => 0,
        };
        let after = &rest[key_len..];
        let after = &after[after.iter().take_while(|&&b| is_re_space(b)).count()..];
        let value = match after.strip_prefix(b"=") {
            Some(v) if key_len > 0 && !v.is_empty() => {
                // `\s*(.+?)\s*$`: the greedy `\s*` leaves at least one byte to the value.
                let lead = v
                    .iter()
                    .take_while(|&&b| is_re_space(b))
                    .count()
                    .min(v.len() - 1);
                let v = &v[lead..];
                let trail = v.iter().rev().take_while(|&&b| is_re_space(b)).count();
                &v[..v.len() - trail.min(v.len() - 1)]
            }
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        let key = rest[..key_len].to_ascii_lowercase();
        let key = String::from_utf8_lossy(&key).into_owned();
        let valid = matches!(key.as_str(), "escape" | "syntax")
            || (key == "check" && dialect == Dialect::Current);
        if !valid {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value {
                b"\\" | b"`" => self.escape = value[0],
                _ => return Err("invalid escape token: not ` or \\".into()),
            },
            "syntax" => self.syntax = Some(go_string(value)),
            _ => {}
        }
        Ok(())
    }
}

fn is_comment(raw: &[u8], dialect: Dialect) -> bool {
    let line = if dialect.legacy() {
        raw
    } else {
        trim_newline(raw)
    };
    trim_left_space(line).first() == Some(&b'#')
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rev()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    &b[..b.len() - n]
}

/// `trimContinuationCharacter`: the line without its continuation, and whether it ends there.
fn trim_continuation(line: &[u8], escape: u8) -> (Vec<u8>, bool) {
    let blanks = line
        .iter()
        .rev()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let body = &line[..line.len() - blanks];
    if body.last() != Some(&escape) {
        return (line.to_vec(), true);
    }
    let before = &body[..body.len() - 1];
    // An escaped escape (`\\`) at the end does not continue the line (checked on 20.10.24).
    if before.last() == Some(&escape) {
        return (line.to_vec(), true);
    }
    (before.to_vec(), false)
}

/// One instruction as the line parser leaves it.
struct Node {
    line: usize,
    /// The keyword, lower-cased as Go does.
    cmd: String,
    flags: Vec<String>,
    /// The arguments after the flags, trimmed.
    args: Vec<u8>,
    /// The whole instruction line (for `ONBUILD`'s trigger).
    original: Vec<u8>,
    /// The heredoc bodies and names, `\n`-joined as `ONBUILD` stores them.
    heredoc_text: Vec<u8>,
    /// For `ONBUILD`: the trigger's keyword as written.
    child_cmd: Option<String>,
    /// The escape token (`parseWords` reads it for `ARG`).
    escape: u8,
}

const KNOWN: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `splitCommand`: keyword, flags, arguments.
fn split_command(line: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    let line = trim_space(line);
    let split = line.iter().position(|&b| is_ws_class(b));
    let (cmd, rest) = match split {
        Some(i) => {
            let rest = &line[i..];
            let skip = rest.iter().take_while(|&&b| is_ws_class(b));
            (&line[..i], Some(&rest[skip.count()..]))
        }
        None => (line, None),
    };
    let (flags, args) = match rest {
        Some(rest) => {
            let (args, flags) = extract_builder_flags(rest);
            (flags, trim_space(args).to_vec())
        }
        None => (Vec::new(), Vec::new()),
    };
    (go_lower(&go_string(cmd)), flags, args)
}

/// buildkit's `extractBuilderFlags`: leading `--flag` words (quotes and `\` handled, bytes read
/// as Latin-1 runes as Go's `rune(line[pos])` does); a bare `--` ends them.
fn extract_builder_flags(line: &[u8]) -> (&[u8], Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let n = line.len();
    let mut pos = 0;
    while pos <= n {
        let mut ch = line.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if pos == n {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == n || line[pos + 1] != b'-' {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if pos == n {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == n {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = line[pos];
            }
            word.push(char::from(ch));
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == n {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = line[pos];
        }
        word.push(char::from(ch));
        pos += 1;
    }
    (&line[n..], words)
}

/// Whether `parseJSON` takes the arguments as a JSON array: `Some(true)` an array of strings,
/// `Some(false)` not JSON, `None` an array with a non-string (a parse error).
fn json_form(args: &[u8]) -> Option<bool> {
    let args = trim_left_space(args);
    if args.first() != Some(&b'[') {
        return Some(false);
    }
    match serde_json::from_slice::<Vec<serde_json::Value>>(args) {
        Ok(values) if values.iter().all(serde_json::Value::is_string) => Some(true),
        Ok(_) => None,
        Err(_) => Some(false),
    }
}

struct Parsed {
    /// The escape token the directives set.
    escape: u8,
    meta_args: Vec<Node>,
    stages: Vec<StageDef>,
    syntax: Option<String>,
}

struct StageDef {
    line: usize,
    base: Vec<u8>,
    name: Option<String>,
    platform: Option<String>,
    commands: Vec<Node>,
}

/// `parser.Parse` then `instructions.Parse`, in `dialect`.
fn parse(data: &[u8], dialect: Dialect) -> Result<Parsed, Stop> {
    let (nodes, syntax, escape) = parse_nodes(data, dialect)?;
    let mut parsed = Parsed {
        escape,
        meta_args: Vec::new(),
        stages: Vec::new(),
        syntax,
    };
    for node in nodes {
        check_instruction(&node)?;
        if node.cmd == "from" {
            let (stage, platform) = from_parts(&node)?;
            parsed.stages.push(StageDef {
                line: node.line,
                base: stage.0,
                name: stage.1,
                platform,
                commands: Vec::new(),
            });
        } else if let Some(stage) = parsed.stages.last_mut() {
            stage.commands.push(node);
        } else if node.cmd == "arg" {
            parsed.meta_args.push(node);
        } else {
            return Err(fails(node.line, "no build stage in current context"));
        }
    }
    Ok(parsed)
}

/// The line parser: instruction nodes, and the `syntax` directive.
fn parse_nodes(data: &[u8], dialect: Dialect) -> Result<(Vec<Node>, Option<String>, u8), Stop> {
    let lines = split_lines(data)?;
    let mut d = Directives::new();
    let mut nodes = Vec::new();
    let mut i = 0;
    let processed = |d: &mut Directives, raw: &[u8], first: bool, no: usize| {
        let mut token = if dialect.legacy() {
            // bufio.ScanLines drops one `\r`.
            raw.strip_suffix(b"\r").unwrap_or(raw)
        } else {
            trim_newline(raw)
        };
        if first {
            token = trim_left_space(token);
        }
        d.check(token, dialect).map_err(|e| fails(no, e))?;
        Ok::<_, Stop>(if token.first() == Some(&b'#') {
            Vec::new()
        } else {
            token.to_vec()
        })
    };
    while i < lines.len() {
        let mut raw = lines[i].bytes;
        if i == 0 {
            raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw);
        }
        let token = processed(&mut d, raw, true, i + 1)?;
        i += 1;
        let start = i;
        let (mut line, mut eol) = trim_continuation(&token, d.escape);
        if eol && line.is_empty() {
            continue;
        }
        while !eol && i < lines.len() {
            let raw = lines[i].bytes;
            let token = processed(&mut d, raw, false, i + 1)?;
            i += 1;
            if is_comment(raw, dialect) || trim_left_space(&token).is_empty() {
                continue;
            }
            let (part, end) = trim_continuation(&token, d.escape);
            line.extend_from_slice(&part);
            eol = end;
        }
        let mut node = new_node(&line, start, d.escape);
        if !dialect.legacy() {
            read_heredocs(&mut node, &lines, &mut i, start)?;
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(fails(lines.len(), "file with no instructions"));
    }
    Ok((nodes, d.syntax, d.escape))
}

fn new_node(line: &[u8], start: usize, escape: u8) -> Node {
    let (cmd, flags, args) = split_command(line);
    // `parseOnBuild` checks the trigger's keyword as written.
    let child_cmd = (cmd == "onbuild" && !args.is_empty()).then(|| {
        let end = args
            .iter()
            .position(|&b| is_ws_class(b))
            .unwrap_or(args.len());
        go_string(&args[..end])
    });
    Node {
        line: start,
        cmd,
        flags,
        args,
        original: line.to_vec(),
        heredoc_text: Vec::new(),
        child_cmd,
        escape,
    }
}

/// buildkit's `reWhitespace`, `[\t\v\f\r ]`.
fn is_ws_class(b: u8) -> bool {
    matches!(b, b'\t' | 0x0b | 0x0c | b'\r' | b' ')
}

/// Heredocs (buildkit 0.9 and later): `RUN`, `COPY`, `ADD` (also as an `ONBUILD` trigger) in
/// shell form; the body lines up to each terminator are no instructions.
fn read_heredocs(
    node: &mut Node,
    lines: &[RawLine<'_>],
    i: &mut usize,
    start: usize,
) -> Result<(), Stop> {
    let (cmd, args) = if node.cmd == "onbuild" {
        let (cmd, _, args) = split_command(&node.args);
        (cmd, args)
    } else {
        (node.cmd.clone(), node.args.clone())
    };
    if !matches!(cmd.as_str(), "run" | "copy" | "add") {
        return Ok(());
    }
    let json = match json_form(&args) {
        Some(json) => json,
        None => {
            return Err(fails(
                start,
                "when using JSON array syntax, arrays must be comprised of strings only",
            ));
        }
    };
    if json {
        return Ok(());
    }
    let heredocs = heredocs_in(&node.original).map_err(|e| fails(start, e))?;
    if !heredocs.is_empty() && trim_left_space(&args).first() == Some(&b'[') {
        // Go's JSON reader accepts what serde_json does not (invalid UTF-8): then these would be
        // no heredocs at all.
        return Err(refuse(start, "a heredoc in what may be a JSON array"));
    }
    for (name, chomp) in heredocs {
        let mut content = Vec::new();
        let mut terminated = false;
        while *i < lines.len() {
            let raw = &lines[*i];
            *i += 1;
            let mut candidate = trim_newline(raw.bytes);
            if chomp {
                candidate = &candidate[candidate.iter().take_while(|&&b| b == b'\t').count()..];
            }
            if candidate == name.as_bytes() {
                terminated = true;
                break;
            }
            content.extend_from_slice(raw.bytes);
            if raw.newline {
                content.push(b'\n');
            }
        }
        if !terminated {
            return Err(fails(start, "unterminated heredoc"));
        }
        node.heredoc_text.push(b'\n');
        node.heredoc_text.extend_from_slice(&content);
        node.heredoc_text.extend_from_slice(name.as_bytes());
    }
    Ok(())
}

/// `heredocsFromLine`: the `<<NAME` words of the line, with their chomp (`<<-`) flag.
fn heredocs_in(line: &[u8]) -> Result<Vec<(String, bool)>, String> {
    let env = BTreeMap::new();
    let chars = go_chars(line);
    let mut lex = Lex::new(&chars, '\\', LexLevel::Current, &env);
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset = true;
    let words = match lex.words() {
        Ok(w) => w,
        Err(LexErr::Refuse(r)) => return Err(r),
        Err(LexErr::Dockerd(_)) => return Ok(Vec::new()),
    };
    let mut docs = Vec::new();
    for word in words {
        let digits = word.chars().take_while(char::is_ascii_digit).count();
        let Some(rest) = word[digits..].strip_prefix("<<") else {
            continue;
        };
        let (chomp, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let rest: Vec<char> = rest.chars().collect();
        let lex_words = |raw: bool| {
            let mut lex = Lex::new(&rest, '\\', LexLevel::Current, &env);
            lex.raw_quotes = raw;
            lex.skip_unset = true;
            lex.words().map_err(|e| match e {
                LexErr::Dockerd(m) | LexErr::Refuse(m) => m,
            })
        };
        let plain = lex_words(false)?;
        if plain.len() != 1 {
            continue;
        }
        if lex_words(true)?.len() != 1 {
            return Err("internal lexing of heredoc produced inconsistent results".into());
        }
        docs.push((plain[0].clone(), chomp));
    }
    Ok(docs)
}

// ---------------------------------------------------------------------------------------------
// Instructions (buildkit `instructions.Parse`): only what can fail or name an image.

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

/// The flags each instruction knows in some version (a flag unknown to every version fails the
/// build everywhere). `ADD --from` is unknown everywhere, but is counted as an image anyway.
fn known_flags(cmd: &str) -> Option<&'static [(&'static str, FlagKind)]> {
    use FlagKind::{Bool, Str, Strs};
    Some(match cmd {
        "from" => &[("platform", Str)],
        "copy" => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Strs),
        ],
        "add" => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("keep-git-dir", Bool),
            ("checksum", Str),
            ("exclude", Strs),
            ("unpack", Bool),
        ],
        "onbuild" => &[],
        _ => return None,
    })
}

/// Why a flag without `=value` is refused: buildkit's `extractBuilderFlags` has been seen both
/// failing on it and taking the next word as its value.
const NO_VALUE: &str = "buildkit versions disagree on what it takes";

/// `BFlags.Parse`: the flags' values by name.
fn parse_flags(node: &Node) -> Result<BTreeMap<String, Vec<String>>, Stop> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Some(known) = known_flags(&node.cmd) else {
        // RUN and the rest: not checked (a false error would drop images); RUN's `--mount`
        // is read conservatively.
        for flag in &node.flags {
            let body = flag.strip_prefix("--").unwrap_or(flag);
            if let Some((name, value)) = body.split_once('=') {
                values
                    .entry(name.to_owned())
                    .or_default()
                    .push(value.to_owned());
            } else if node.cmd == "run" {
                return Err(refuse(
                    node.line,
                    format!("flag --{body} without `=value`: {NO_VALUE}"),
                ));
            }
        }
        return Ok(values);
    };
    for flag in &node.flags {
        if flag == "--" {
            break;
        }
        let body = flag.strip_prefix("--").unwrap_or(flag);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(_, kind)) = known.iter().find(|(n, _)| *n == name) else {
            return Err(fails(node.line, format!("unknown flag: {name}")));
        };
        if values.contains_key(name) && kind != FlagKind::Strs {
            return Err(fails(
                node.line,
                format!("duplicate flag specified: {name}"),
            ));
        }
        let value = match (kind, value) {
            (FlagKind::Bool, Some("")) => {
                return Err(fails(node.line, format!("missing a value on flag: {name}")));
            }
            (FlagKind::Bool, None) => "true".to_owned(),
            (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "false" => v.to_ascii_lowercase(),
                _ => {
                    return Err(fails(
                        node.line,
                        format!("expecting boolean value for flag {name}, not: {v}"),
                    ));
                }
            },
            (_, None) => {
                return Err(refuse(
                    node.line,
                    format!("flag --{name} without `=value`: {NO_VALUE}"),
                ));
            }
            (_, Some(v)) => v.to_owned(),
        };
        values.entry(name.to_owned()).or_default().push(value);
    }
    Ok(values)
}

/// The parse-time checks of `instructions.ParseInstruction` that matter here.
fn check_instruction(node: &Node) -> Result<(), Stop> {
    if !KNOWN.contains(&node.cmd.as_str()) {
        return Err(fails(
            node.line,
            format!("unknown instruction: {}", node.cmd),
        ));
    }
    match node.cmd.as_str() {
        "copy" | "add" | "run" => {
            if json_form(&node.args).is_none() {
                return Err(fails(
                    node.line,
                    "when using JSON array syntax, arrays must be comprised of strings only",
                ));
            }
            parse_flags(node)?;
        }
        "arg" => {
            let words = arg_words(node);
            if words.is_empty() {
                return Err(fails(node.line, "ARG requires at least one argument"));
            }
            if words.iter().any(|w| w.starts_with('=')) {
                return Err(fails(node.line, "ARG names can not be blank"));
            }
        }
        "onbuild" => {
            let Some(child) = &node.child_cmd else {
                return Err(fails(node.line, "ONBUILD requires at least one argument"));
            };
            parse_flags(node)?;
            let upper: String = child
                .chars()
                .map(|c| match c {
                    '\u{131}' => 'I',
                    '\u{17f}' => 'S',
                    c => c.to_ascii_uppercase(),
                })
                .collect();
            if matches!(upper.as_str(), "ONBUILD" | "MAINTAINER" | "FROM") {
                return Err(fails(
                    node.line,
                    format!("{upper} isn't allowed as an ONBUILD trigger"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

type FromParts = ((Vec<u8>, Option<String>), Option<String>);

/// `parseFrom`: base name, stage name, `--platform`.
fn from_parts(node: &Node) -> Result<FromParts, Stop> {
    // Before the arguments: a flag without `=value` may take the next word (see `parse_flags`).
    let flags = parse_flags(node)?;
    let args: Vec<&[u8]> = if node.args.is_empty() {
        Vec::new()
    } else {
        node.args
            .split(|&b| is_ws_class(b))
            .filter(|w| !w.is_empty())
            .collect()
    };
    let name = match args.as_slice() {
        [_] => None,
        [_, r#as, name] if r#as.eq_ignore_ascii_case(b"as") => {
            let name = go_lower(&go_string(name));
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(fails(
                    node.line,
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number \
                         or contain symbols"
                    ),
                ));
            }
            Some(name)
        }
        _ => {
            return Err(fails(
                node.line,
                "FROM requires either one or three arguments",
            ));
        }
    };
    let platform = flags.get("platform").and_then(|v| v.first()).cloned();
    Ok(((args[0].to_vec(), name), platform))
}

/// `parseWords` (for `ARG`): words with quotes kept, split on unquoted spaces.
fn parse_words(rest: &[u8], escape: char) -> Vec<String> {
    let chars = go_chars(rest);
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut in_word, mut in_quote, mut blank_ok, mut quote) = (false, false, false, '\0');
    let mut i = 0;
    while i < chars.len() {
        let mut ch = chars[i];
        if !in_word && !in_quote {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        if in_word && !in_quote {
            if ch.is_whitespace() {
                in_word = false;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                in_quote = true;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        if ch == quote {
            in_quote = false;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                in_quote = false;
                i += 1;
                continue;
            }
            i += 1;
            word.push(ch);
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    if (in_word || in_quote) && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

fn arg_words(node: &Node) -> Vec<String> {
    parse_words(&node.args, char::from(node.escape))
}

// ---------------------------------------------------------------------------------------------
// Running the stages (moby `dispatchDockerfileWithCancellation`): what is pulled, in order.

/// A variable's value, and why it cannot be trusted in `FROM` (it comes from a variable with
/// no value, or from an expansion we do not evaluate).
#[derive(Debug, Clone)]
struct Var {
    value: String,
    taint: Option<String>,
}

/// moby's `builtinAllowedBuildArgs`; `ALL_PROXY` joined after 20.10 (checked on 20.10.24).
fn builtin_args(dialect: Dialect) -> &'static [&'static str] {
    const BUILTIN: [&str; 10] = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    if dialect.legacy() {
        &BUILTIN[..8]
    } else {
        &BUILTIN
    }
}

fn lex_level(dialect: Dialect) -> LexLevel {
    if dialect.legacy() {
        LexLevel::V08
    } else {
        LexLevel::Current
    }
}

/// `ProcessWord`: the expansion, and its taint.
fn expand(
    word: &[char],
    escape: char,
    dialect: Dialect,
    env: &BTreeMap<String, Var>,
    line: usize,
    budget: &Cell<usize>,
) -> Result<Var, Stop> {
    let mut lex = Lex::new(word, escape, lex_level(dialect), env);
    lex.budget = Some(budget);
    match lex.word() {
        Ok(value) => Ok(Var {
            value,
            taint: lex.taint,
        }),
        Err(LexErr::Dockerd(e)) => Err(fails(line, e)),
        Err(LexErr::Refuse(e)) => Err(refuse(line, e)),
    }
}

fn run(
    parsed: &Parsed,
    build_args: &BTreeMap<String, Option<String>>,
    dialect: Dialect,
) -> (Vec<ImageUse>, Option<Stop>) {
    let mut images = Vec::new();
    let stop = run_stages(parsed, build_args, dialect, &mut images).err();
    (images, stop)
}

fn run_stages(
    parsed: &Parsed,
    build_args: &BTreeMap<String, Option<String>>,
    dialect: Dialect,
    images: &mut Vec<ImageUse>,
) -> Result<(), Stop> {
    // The bytes variables may expand to in this plan: `ARG A=$A$A` doubles at each line.
    let budget = Cell::new(lex::MAX_EXPANDED);
    // `processMetaArg`: every pair of one ARG is expanded with the args before that ARG.
    let mut meta: BTreeMap<String, Var> = BTreeMap::new();
    for &key in builtin_args(dialect) {
        if let Some(Some(value)) = build_args.get(key) {
            meta.insert(
                key.to_owned(),
                Var {
                    value: value.clone(),
                    taint: None,
                },
            );
        }
    }
    for node in &parsed.meta_args {
        let escape = char::from(node.escape);
        let mut pairs = Vec::new();
        for word in arg_words(node) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (word, None),
            };
            let key_chars: Vec<char> = key.chars().collect();
            let key = expand(&key_chars, escape, dialect, &meta, node.line, &budget)?;
            if key.taint.is_some() || key.value.contains('=') {
                return Err(refuse(
                    node.line,
                    format!("ARG name {:?} cannot be evaluated", key.value),
                ));
            }
            let value = match value {
                Some(v) => {
                    let chars: Vec<char> = v.chars().collect();
                    // What we refuse to evaluate only matters if a FROM uses it.
                    let mut var = match expand(&chars, escape, dialect, &meta, node.line, &budget) {
                        Err(Stop::Refuse(e)) => Var {
                            value: String::new(),
                            taint: Some(e.reason),
                        },
                        other => other?,
                    };
                    if let Some(t) = var.taint.take() {
                        var.taint = Some(format!("ARG {}'s default: {t}", key.value));
                    }
                    Some(var)
                }
                None => None,
            };
            pairs.push((key.value, value));
        }
        // `BuildArgs.getBuildArg`: a build arg overrides, else the latest default, else unset.
        for (key, default) in pairs {
            let value = match (build_args.get(&key), default) {
                (Some(Some(value)), _) => Some(Var {
                    value: value.clone(),
                    taint: None,
                }),
                (_, default) => default,
            };
            match value {
                Some(value) => meta.insert(key, value),
                None => meta.remove(&key),
            };
        }
    }
    let mut done = Done::default();
    let mut triggers_of: Vec<Vec<Vec<u8>>> = Vec::new();
    for (i, stage) in parsed.stages.iter().enumerate() {
        let line = stage.line;
        if let Some(name) = stage.name.as_deref().filter(|n| done.find(n).is_some()) {
            return Err(fails(line, format!("duplicate name {name:?}")));
        }
        let escape = char::from(parsed.escape);
        let platform = match &stage.platform {
            Some(p) => Some(
                expand(
                    &p.chars().collect::<Vec<_>>(),
                    escape,
                    dialect,
                    &meta,
                    line,
                    &budget,
                )?
                .value,
            ),
            None => None,
        };
        let base = expand(
            &go_chars(&stage.base),
            escape,
            dialect,
            &meta,
            line,
            &budget,
        )?;
        if let Some(taint) = base.taint {
            return Err(refuse(
                line,
                format!("FROM {}: {taint}", go_string(&stage.base)),
            ));
        }
        if base.value.is_empty() {
            return Err(fails(line, "base name should not be blank"));
        }
        let mut own_triggers = Vec::new();
        if let Some(j) = done.find(&base.value) {
            let triggers = triggers_of.get(j).cloned().unwrap_or_default();
            if let Some(stop) = run_triggers(
                &triggers,
                &done,
                dialect,
                line,
                i,
                false,
                images,
                &mut own_triggers,
            ) {
                return Err(stop);
            }
        } else if base.value != "scratch" {
            images.push(ImageUse {
                name: base.value,
                stage: i,
                how: How::From,
                platform,
            });
        }
        for node in &stage.commands {
            if node.cmd == "onbuild" {
                own_triggers.push(trigger_text(node));
            } else {
                command_images(node, &done, i, How::CopyFrom, images)?;
            }
        }
        done.push(stage.name.as_deref());
        triggers_of.push(own_triggers);
    }
    Ok(())
}

/// The stages built so far, found by name as Go's `strings.EqualFold` finds them.
struct Done {
    by_name: HashMap<String, usize>,
    count: usize,
    /// Trigger runs left (a stage's triggers run once per stage built FROM it).
    trigger_runs: Cell<usize>,
}

/// Trigger runs one plan may take; more are refused (the work would grow as their product).
const MAX_TRIGGER_RUNS: usize = 10_000;

impl Default for Done {
    fn default() -> Self {
        Done {
            by_name: HashMap::new(),
            count: 0,
            trigger_runs: Cell::new(MAX_TRIGGER_RUNS),
        }
    }
}

impl Done {
    fn push(&mut self, name: Option<&str>) {
        if let Some(name) = name {
            self.by_name.entry(name.to_owned()).or_insert(self.count);
        }
        self.count += 1;
    }

    /// A stage name is ASCII: only ASCII letters, the Kelvin sign and the long s fold to one.
    fn find(&self, name: &str) -> Option<usize> {
        let folded: Option<String> = name
            .chars()
            .map(|c| match c {
                '\u{212a}' => Some('k'),
                '\u{17f}' => Some('s'),
                c if c.is_ascii() => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        self.by_name.get(&folded?).copied()
    }

    fn take_trigger_run(&self) -> bool {
        let left = self.trigger_runs.get();
        self.trigger_runs.set(left.saturating_sub(1));
        left > 0
    }
}

/// The `ONBUILD` line as the image stores it: without `(?i)^\s*ONBUILD\s*`, with its heredocs.
fn trigger_text(node: &Node) -> Vec<u8> {
    let o = &node.original;
    let lead = o.iter().take_while(|&&b| is_re_space(b)).count();
    let mut text = match o.get(lead..lead + 7) {
        Some(word) if word.eq_ignore_ascii_case(b"onbuild") => {
            let rest = &o[lead + 7..];
            rest[rest.iter().take_while(|&&b| is_re_space(b)).count()..].to_vec()
        }
        _ => o.clone(),
    };
    text.extend_from_slice(&node.heredoc_text);
    text
}

/// The images a `COPY`/`ADD`/`RUN` pulls with `--from` (`--mount=...,from=`).
fn command_images(
    node: &Node,
    done: &Done,
    stage: usize,
    how: How,
    images: &mut Vec<ImageUse>,
) -> Result<(), Stop> {
    match node.cmd.as_str() {
        "copy" | "add" => {
            let flags = parse_flags(node)?;
            if let Some(from) = flags
                .get("from")
                .and_then(|v| v.last())
                .filter(|f| !f.is_empty())
            {
                resolve(from, done, node.line, stage, how, images)?;
            }
        }
        "run" => {
            let flags = parse_flags(node)?;
            for mount in flags.get("mount").into_iter().flatten() {
                for field in mount.split(',') {
                    let field = field.trim().trim_matches('"');
                    if let Some((key, value)) = field.split_once('=')
                        && key.trim().eq_ignore_ascii_case("from")
                        && !value.is_empty()
                    {
                        let how = if how == How::CopyFrom {
                            How::MountFrom
                        } else {
                            how
                        };
                        resolve(value, done, node.line, stage, how, images)?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `stagesBuildResults.get`: a previous stage by name, a stage index, or an image.
fn resolve(
    from: &str,
    done: &Done,
    line: usize,
    stage: usize,
    how: How,
    images: &mut Vec<ImageUse>,
) -> Result<(), Stop> {
    if from.contains('$') {
        return Err(refuse(
            line,
            format!("--from={from}: variables in --from are not expanded by the classic builder"),
        ));
    }
    if done.find(from).is_some() {
        return Ok(());
    }
    // Go's `strconv.ParseInt(from, 10, 0)`: any int is an index, never a pull.
    if let Ok(index) = from.parse::<i64>() {
        return match usize::try_from(index) {
            Ok(index) if index < done.count => Ok(()),
            _ => Err(fails(
                line,
                format!("invalid from flag value {from}: no such stage"),
            )),
        };
    }
    images.push(ImageUse {
        name: from.to_owned(),
        stage,
        how,
        platform: None,
    });
    Ok(())
}

/// `dispatchTriggeredOnBuild`: each trigger is parsed as a Dockerfile of one instruction and
/// run in stage `stage`, whose previous stages are `done`. An `ONBUILD` among them joins
/// `new_triggers`; `external` also counts its `--from` now (see [`trigger_images`]).
#[allow(clippy::too_many_arguments)]
fn run_triggers<T: AsRef<[u8]>>(
    triggers: &[T],
    done: &Done,
    dialect: Dialect,
    line: usize,
    stage: usize,
    external: bool,
    images: &mut Vec<ImageUse>,
    new_triggers: &mut Vec<Vec<u8>>,
) -> Option<Stop> {
    let at_line = |stop: Stop| match stop {
        Stop::Fails(e) => fails(line, format!("ONBUILD trigger: {}", e.reason)),
        Stop::Refuse(e) => refuse(line, format!("ONBUILD trigger: {}", e.reason)),
    };
    for trigger in triggers {
        if !done.take_trigger_run() {
            return Some(refuse(line, "too many ONBUILD trigger runs to evaluate"));
        }
        let nodes = match parse_nodes(trigger.as_ref(), dialect) {
            Ok((nodes, _, _)) => nodes,
            Err(stop) => return Some(at_line(stop)),
        };
        let [node] = nodes.as_slice() else {
            return Some(fails(line, "onbuild trigger should be a single expression"));
        };
        if let Err(stop) = check_instruction(node) {
            return Some(at_line(stop));
        }
        match node.cmd.as_str() {
            "from" => {
                return Some(fails(
                    line,
                    "FROM is not a command type in an ONBUILD trigger",
                ));
            }
            "onbuild" => {
                let text = trigger_text(node);
                if external {
                    let mut ignored = Vec::new();
                    let nested = [text.clone()];
                    // A nested trigger that fails only fails the later stage that runs it.
                    if let Some(stop @ Stop::Refuse(_)) = run_triggers(
                        &nested,
                        done,
                        dialect,
                        line,
                        stage,
                        false,
                        images,
                        &mut ignored,
                    ) {
                        return Some(stop);
                    }
                }
                new_triggers.push(text);
            }
            _ => {
                let mut found = Vec::new();
                if let Err(stop) =
                    command_images(node, done, stage, How::OnBuildCopyFrom, &mut found)
                {
                    return Some(at_line(stop));
                }
                images.extend(found);
            }
        }
    }
    None
}

/// The fuzz target's checks (`fuzz/fuzz_targets/dockerfile.rs`): the input is build args, one
/// `NAME=VALUE` (or `NAME`, a null value) per line, a NUL byte, then the Dockerfile; without a
/// NUL it is all Dockerfile. Panics if an invariant breaks.
#[doc(hidden)]
pub fn check_invariants(data: &[u8]) {
    let (args, dockerfile) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let build_args: BTreeMap<String, Option<String>> = String::from_utf8_lossy(args)
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (l.to_owned(), None),
        })
        .collect();
    let first = plan(dockerfile, &build_args);
    assert_eq!(
        first,
        plan(dockerfile, &build_args),
        "plan is deterministic"
    );
    match &first {
        Ok(plan) => {
            let froms = dockerfile
                .windows(4)
                .filter(|w| w.eq_ignore_ascii_case(b"from"))
                .count();
            assert!(
                froms > 0 || plan.images.is_empty(),
                "no FROM, no image: {plan:?}"
            );
            for (i, image) in plan.images.iter().enumerate() {
                assert!(!image.name.is_empty(), "an image has a name");
                assert!(
                    image.stage < froms,
                    "stage {} of {froms} FROMs",
                    image.stage
                );
                assert!(
                    plan.images[..i].iter().all(|o| (&o.name, o.how, o.stage)
                        != (&image.name, image.how, image.stage)),
                    "each image once"
                );
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(names) = trigger_images(dockerfile, &build_args, 0, &["COPY --from=x a b".into()]) {
        assert!(names.iter().all(|n| !n.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    /// `stage how name` lines, or `error: reason`.
    fn answer(dockerfile: &str, build_args: &BTreeMap<String, Option<String>>) -> Vec<String> {
        match plan(dockerfile.as_bytes(), build_args) {
            Ok(plan) => plan
                .images
                .iter()
                .map(|i| format!("{} {} {}", i.stage, how_name(i.how), i.name))
                .collect(),
            Err(e) => vec![format!("error: {e}")],
        }
    }

    fn how_name(how: How) -> &'static str {
        match how {
            How::From => "from",
            How::CopyFrom => "copy-from",
            How::OnBuildCopyFrom => "onbuild-copy-from",
            How::MountFrom => "mount-from",
        }
    }

    fn images(dockerfile: &str) -> Vec<String> {
        answer(dockerfile, &BTreeMap::new())
    }

    fn error(dockerfile: &str, build_args: &BTreeMap<String, Option<String>>) -> String {
        match plan(dockerfile.as_bytes(), build_args) {
            Ok(plan) => panic!("{dockerfile:?}: expected an error, got {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn from_images_stages_and_scratch() {
        let df = concat!(
            "FROM a AS Build\nFROM scratch\nFROM BUILD\nFROM b AS c\nFROM C\nFROM later\n",
            "FROM later AS later\n",
        );
        assert_eq!(
            images(df),
            ["0 from a", "3 from b", "5 from later", "6 from later"]
        );
        // A stage is found by a later FROM only: the same or a later stage's name is an image.
        assert_eq!(images("FROM x AS x\n"), ["0 from x"]);
        assert_eq!(images("FROM y\nFROM x AS y\n"), ["0 from y", "1 from x"]);
        // Only `--from` takes indexes.
        assert_eq!(images("FROM a\nFROM 0\n"), ["0 from a", "1 from 0"]);
        // Go's EqualFold: the Kelvin sign folds to k.
        assert_eq!(images("FROM a AS k\nFROM \u{212a}\n"), ["0 from a"]);
    }

    #[test]
    fn from_syntax_errors() {
        assert!(error("FROM a b\n", &BTreeMap::new()).contains("one or three arguments"));
        assert!(error("FROM a AS 1x\n", &BTreeMap::new()).contains("invalid name for build stage"));
        assert!(error("FROM a AS b_$\n", &BTreeMap::new()).contains("invalid name"));
        assert!(error("FROM --foo=1 a\n", &BTreeMap::new()).contains("unknown flag: foo"));
        assert!(error("FROM --platform a b\n", &BTreeMap::new()).contains("without `=value`"));
        assert!(error("RUN x\nFROM a\n", &BTreeMap::new()).contains("no build stage"));
        assert!(error("\n# c\n", &BTreeMap::new()).contains("no instructions"));
        assert!(error("FROM a\nBOGUS x\n", &BTreeMap::new()).contains("unknown instruction"));
        assert!(error("FROM a AS x\nFROM b AS X\n", &BTreeMap::new()).contains("duplicate name"));
    }

    #[test]
    fn meta_args_and_build_args() {
        let df = "ARG R=reg.example\nARG T\nFROM $R/app:${T:-latest}\n";
        assert_eq!(answer(df, &args(&[])), ["0 from reg.example/app:latest"]);
        assert_eq!(
            answer(df, &args(&[("T", Some("1"))])),
            ["0 from reg.example/app:1"]
        );
        assert_eq!(
            answer(df, &args(&[("R", None), ("T", Some(""))])),
            ["0 from reg.example/app:latest"]
        );
        assert_eq!(
            answer(df, &args(&[("R", Some("evil"))])),
            ["0 from evil/app:latest"]
        );
        // Only meta args expand in FROM; ARGs of a stage do not.
        let df = "ARG X=a\nFROM b\nARG X=c\nFROM $X\n";
        assert_eq!(images(df), ["0 from b", "1 from a"]);
        // A build arg without ARG does not expand, unless it is a builtin proxy arg.
        assert!(error("FROM a$X\n", &args(&[("X", Some("1"))])).contains("$X has no value"));
        assert_eq!(
            answer("FROM a$HTTP_PROXY\n", &args(&[("HTTP_PROXY", Some("p"))])),
            ["0 from ap"]
        );
        // ALL_PROXY is builtin after 20.10 only: the union has both readings.
        assert_eq!(
            answer("FROM a${ALL_PROXY:-}\n", &args(&[("ALL_PROXY", Some("p"))])),
            ["0 from ap", "0 from a"]
        );
        // The pairs of one ARG see the args before it (checked on dockerd 20.10.24).
        assert_eq!(images("ARG A=1 B=x$A\nARG C=$A\nFROM a$B$C\n").len(), 1);
        assert!(error("ARG A=1 B=x$A\nFROM a$B\n", &BTreeMap::new()).contains("has no value"));
        assert_eq!(images("ARG A=1\nARG B=x$A\nFROM a$B\n"), ["0 from ax1"]);
    }

    #[test]
    fn unset_variables_in_from_are_refused() {
        let e = error("ARG V\nFROM app:$V\n", &BTreeMap::new());
        assert!(e.starts_with("Dockerfile line 2: FROM app:$V"), "{e}");
        assert!(error("FROM app:${V}\n", &BTreeMap::new()).contains("$V has no value"));
        // Through another ARG's default.
        assert!(
            error("ARG V\nARG W=x$V\nFROM app:$W\n", &BTreeMap::new()).contains("ARG W's default")
        );
        // A default or alternative is a value.
        assert_eq!(images("FROM app:${V:-1}${V:+2}\n"), ["0 from app:1"]);
        // Empty is a value, but an empty name is an error in dockerd.
        assert!(error("ARG V=\nFROM $V\n", &BTreeMap::new()).contains("should not be blank"));
    }

    #[test]
    fn lexer_forms() {
        let env = args(&[("V", Some("v")), ("E", Some(""))]);
        let run = |word: &str| answer(&format!("ARG V\nARG E\nFROM {word}\n"), &env);
        assert_eq!(run("a\"b$V\"'$V'"), ["0 from abv$V"]);
        assert_eq!(run("a\\$V"), ["0 from a$V"]);
        assert_eq!(run("a${E:-d}${E-d}"), ["0 from ad"]);
        assert_eq!(run("a${E:+p}${E+p}"), ["0 from ap"]);
        assert_eq!(run("a${V:?m}"), ["0 from av"]);
        assert!(run("a${E:?m}")[0].contains("E: m"));
        assert!(run("a${V")[0].starts_with("error:"));
        assert!(run("a${}")[0].contains("bad substitution"));
        assert!(run("a${V/x/y}")[0].contains("not evaluated"));
        assert!(run("a${V#x}")[0].contains("not evaluated"));
        // `$1`, `$@`: names with no value.
        assert!(run("a$1")[0].contains("$1 has no value"));
        assert_eq!(run("a$"), ["0 from a$"]);
        // text/scanner skips a BOM at the start of the word (checked on dockerd 20.10.24).
        assert_eq!(run("\u{feff}x"), ["0 from x"]);
        assert!(run(&format!("{}x", "${V:-".repeat(100)))[0].contains("nested"));
    }

    /// `ARG A=$A$A` doubles A at each line: the work is bounded, and refused only if used.
    #[test]
    fn expansion_is_bounded() {
        let doubling = format!("ARG A=x\n{}", "ARG A=$A$A\n".repeat(80));
        assert_eq!(images(&format!("{doubling}FROM b\n")), ["0 from b"]);
        let e = error(&format!("{doubling}FROM b:$A\n"), &BTreeMap::new());
        assert!(e.contains("too many bytes"), "{e}");
        let fan_out = format!(
            "FROM a AS s\n{}{}",
            "ONBUILD COPY --from=t a b\n".repeat(200),
            "FROM s\n".repeat(200)
        );
        assert!(error(&fan_out, &BTreeMap::new()).contains("too many ONBUILD trigger runs"));
    }

    #[test]
    fn copy_from() {
        let df = concat!(
            "FROM a AS one\nCOPY --from=ONE /x /y\nCOPY --from=img:1 /x /y\n",
            "ADD --from=img:2 /x /y\nCOPY --from=two /x /y\nFROM b AS two\n",
            "COPY --from=two /x /y\nCOPY --from=0 /x /y\n",
        );
        // A stage's own name is no previous stage: `ONE` is an image there.
        assert_eq!(
            images(df),
            [
                "0 from a",
                "0 copy-from ONE",
                "0 copy-from img:1",
                "0 copy-from img:2",
                "0 copy-from two",
                "1 from b",
                "1 copy-from two"
            ]
        );
        // Index 0 in stage 0 is the stage being built (checked on dockerd 20.10.24).
        assert!(error("FROM a\nCOPY --from=0 /x /y\n", &BTreeMap::new()).contains("no such stage"));
        assert!(error("FROM a\nCOPY --from=$X /x /y\n", &BTreeMap::new()).contains("not expanded"));
        assert!(error("FROM a\nCOPY --from=1 /x /y\n", &BTreeMap::new()).contains("no such stage"));
        assert!(
            error("FROM a\nCOPY --from=-1 /x /y\n", &BTreeMap::new()).contains("no such stage")
        );
        // Out of int64 range: not an index, an image name.
        assert_eq!(
            images("FROM a\nCOPY --from=99999999999999999999 /x /y\n")[1],
            "0 copy-from 99999999999999999999"
        );
        assert!(
            error("FROM a\nCOPY --from /x /y\n", &BTreeMap::new()).contains("without `=value`")
        );
        assert!(
            error("FROM a\nCOPY --from=b --from=c /x /y\n", &BTreeMap::new())
                .contains("duplicate flag")
        );
        assert!(error("FROM a\nCOPY --nope=1 /x /y\n", &BTreeMap::new()).contains("unknown flag"));
        // Quotes and escapes in flags; `--` ends them.
        assert_eq!(
            images("FROM a\nCOPY --link --from=\"i\\mg\" -- --from=x /y\n")[1],
            "0 copy-from img"
        );
        assert_eq!(
            images("FROM a\nRUN --mount=type=bind,from=m,target=/t true\n")[1],
            "0 mount-from m"
        );
    }

    #[test]
    fn onbuild_triggers_run_in_later_stages() {
        let df = concat!(
            "FROM a AS base\nONBUILD COPY --from=trig /x /y\nONBUILD COPY --from=base /x /y\n",
            "FROM b\nFROM base\nFROM base AS base2\nFROM base2\n",
        );
        assert_eq!(
            images(df),
            [
                "0 from a",
                "1 from b",
                "2 onbuild-copy-from trig",
                "3 onbuild-copy-from trig"
            ]
        );
        assert!(error("FROM a\nONBUILD FROM b\n", &BTreeMap::new()).contains("isn't allowed"));
        assert!(
            error("FROM a\nONBUILD ONBUILD RUN x\n", &BTreeMap::new()).contains("isn't allowed")
        );
        assert!(
            error("FROM a\nonbuild maintainer x\n", &BTreeMap::new()).contains("isn't allowed")
        );
        assert!(
            error(
                "FROM a AS s\nONBUILD COPY --from=$X a b\nFROM s\n",
                &BTreeMap::new()
            )
            .contains("not expanded")
        );
        // A trigger with a bad flag fails the later stage when it runs: what came before counts.
        let df = "FROM a AS s\nONBUILD COPY --bad=1 a b\nFROM s\nFROM c\n";
        assert!(error(df, &BTreeMap::new()).contains("unknown flag"));
    }

    #[test]
    fn external_triggers() {
        let df = b"FROM a AS one\nFROM ext\n";
        let triggers = [
            "COPY --from=one /a /b".to_owned(),
            "COPY --from=evil /a /b".to_owned(),
            "ONBUILD COPY --from=nested /a /b".to_owned(),
        ];
        assert_eq!(
            trigger_images(df, &BTreeMap::new(), 1, &triggers).unwrap(),
            ["evil", "nested"]
        );
        assert_eq!(
            trigger_images(df, &BTreeMap::new(), 0, &triggers).unwrap(),
            ["one", "evil", "nested"]
        );
        assert!(trigger_images(df, &BTreeMap::new(), 5, &triggers).is_err());
        let bad = ["COPY --from=$X a b".to_owned()];
        assert!(trigger_images(df, &BTreeMap::new(), 1, &bad).is_err());
        // A trigger that fails stops the rest.
        let stops = ["FROM x".to_owned(), "COPY --from=after a b".to_owned()];
        assert!(
            trigger_images(df, &BTreeMap::new(), 1, &stops)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn lines_continuations_and_directives() {
        assert_eq!(
            images("# escape=`\nFROM a`\n  AS b\nFROM b`\n\n`\n"),
            ["0 from a"]
        );
        assert_eq!(
            images("FROM a \\\n # comment\n\n   AS b\nfrom B\n"),
            ["0 from a"]
        );
        assert_eq!(
            images("\u{feff}FROM a\r\nFROM b\r\n"),
            ["0 from a", "1 from b"]
        );
        // An unknown directive ends the directives; a comment line too.
        assert!(
            error("# x=y\n# escape=`\nFROM a`\n b\n", &BTreeMap::new())
                .contains("unknown instruction")
        );
        assert!(error("# escape=x\nFROM a\n", &BTreeMap::new()).contains("invalid escape"));
        assert!(
            error("# escape=\\\n# escape=\\\nFROM a\n", &BTreeMap::new())
                .contains("only one escape")
        );
        // `check` is a directive from buildkit 0.14 only.
        assert_eq!(
            images("# check=skip=all\n# escape=`\nFROM a`\n AS b\nCOPY --from=x`\n y z\n"),
            ["0 from a", "0 copy-from x"]
        );
        assert_eq!(
            plan(
                b"# syntax = docker/dockerfile:1\nFROM a\n",
                &BTreeMap::new()
            )
            .unwrap()
            .syntax
            .as_deref(),
            Some("docker/dockerfile:1")
        );
        let long = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE));
        assert!(error(&long, &BTreeMap::new()).contains("max allowed size"));
        assert_eq!(
            images(&format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE - 5))),
            ["0 from a"]
        );
    }

    #[test]
    fn heredocs_by_dialect() {
        // 20.10 reads the body as instructions, and fails on the terminator.
        let df = "FROM a\nRUN <<EOF\nFROM evil\nEOF\n";
        assert_eq!(images(df), ["0 from a"]);
        // A terminator that is an instruction: 20.10 pulls the body's image (checked on 20.10.24).
        let df = "FROM a\nRUN <<CMD\nFROM evil\nCMD\n";
        assert_eq!(images(df), ["0 from a", "1 from evil"]);
        // JSON form: no heredoc.
        assert_eq!(
            images("FROM a\nRUN [\"<<CMD\"]\nFROM b\nCMD\n"),
            ["0 from a", "1 from b"]
        );
        assert!(error("FROM a\nRUN <<EOF\nx\n", &BTreeMap::new()).contains("unterminated heredoc"));
        // ONBUILD keeps its heredocs, and runs them in the later stage.
        let df = concat!(
            "FROM a AS s\nONBUILD COPY <<CMD /f\nFROM evil\nCMD\nFROM s\n",
            "COPY --from=x <<-\"E\" /g\n\tbody\n\tE\n",
        );
        // (20.10 reads `FROM evil` as a stage, then fails on `body`.)
        assert_eq!(images(df), ["0 from a", "1 copy-from x"]);
    }

    #[test]
    fn words_and_flags() {
        assert_eq!(
            parse_words(b"a='b c' \"d\\\" e\" f\\ g", '\\'),
            ["a='b c'", "\"d\\\" e\"", "f\\ g"]
        );
        let (rest, flags) = extract_builder_flags(b"--a=1 --b='x y' c d");
        assert_eq!(
            (rest, flags.as_slice()),
            (&b"c d"[..], &["--a=1".to_owned(), "--b=x y".to_owned()][..])
        );
        // Bytes are read as Latin-1 runes; 0xA0 is a space to Go's `unicode.IsSpace(rune(b))`.
        let (rest, flags) = extract_builder_flags(b"--from=\xc3\xa0x y");
        assert_eq!(
            (rest, flags.as_slice()),
            (&b"x y"[..], &["--from=\u{c3}".to_owned()][..])
        );
    }

    #[test]
    fn fuzz_invariants_hold_on_samples() {
        for sample in [
            &b"T=1\0ARG T\nFROM a:$T"[..],
            b"FROM a\nCOPY --from=0 a b",
            b"\xff\xfe",
            b"FROM \xff${",
        ] {
            check_invariants(sample);
        }
    }

    /// `testdata/dockerfiles/NAME.Dockerfile`, `NAME.expected`, `NAME.buildargs`.
    #[test]
    fn corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/dockerfiles");
        let mut cases = 0;
        let mut failures = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.extension().and_then(|e| e.to_str()) != Some("Dockerfile") {
                continue;
            }
            cases += 1;
            let dockerfile = std::fs::read(&path).unwrap();
            let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
            let build_args: BTreeMap<String, Option<String>> =
                std::fs::read(path.with_extension("buildargs"))
                    .map(|b| serde_json::from_slice(&b).unwrap())
                    .unwrap_or_default();
            let expected: Vec<&str> = expected
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .collect();
            let got = plan(&dockerfile, &build_args);
            check_invariants(&dockerfile);
            let ok = match (&got, expected.as_slice()) {
                (Err(e), [line]) if line.starts_with("error: ") => {
                    e.to_string().contains(&line["error: ".len()..])
                }
                (Ok(plan), lines) => {
                    let got: Vec<String> = plan
                        .images
                        .iter()
                        .map(|i| format!("{} {} {}", i.stage, how_name(i.how), i.name))
                        .collect();
                    got == lines
                }
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{}: expected {expected:?}, got {got:?}",
                    path.display()
                ));
            }
        }
        assert!(cases >= 40, "{cases} cases");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
