//! Progress of the long commands (`image copy`, `blob get`) on stderr: a live display on a
//! terminal, one JSON object per line for scripts, or nothing. Never on stdout, where the
//! commands write their results (and `blob get` the blob itself).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressStyle};
use vch_registry::{BlobOutcome, CopyEvent};

/// Where progress goes (`--progress`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A live display when stderr is a terminal; nothing otherwise.
    #[default]
    Auto,
    /// One JSON object per event and line on stderr, terminal or not.
    Json,
    /// Nothing.
    None,
}

/// The progress flags of a long command.
#[derive(Clone, Copy, Debug, Default, Args)]
pub struct ProgressArgs {
    /// Progress on stderr: auto (a live display when stderr is a terminal), json (one JSON
    /// object per event and line), none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// No progress output (the same as --progress=none).
    #[arg(short, long, conflicts_with = "progress")]
    pub quiet: bool,
}

impl ProgressArgs {
    /// The reporter these flags ask for, given whether stderr is a terminal now.
    pub(crate) fn reporter(self) -> Arc<Reporter> {
        let kind = match (self.quiet, self.progress) {
            (true, _) | (false, ProgressMode::None) => Kind::Silent,
            (false, ProgressMode::Json) => Kind::Json,
            (false, ProgressMode::Auto) if std::io::stderr().is_terminal() => {
                Kind::Tty(Display::new())
            }
            (false, ProgressMode::Auto) => Kind::Silent,
        };
        Arc::new(Reporter {
            kind,
            state: Mutex::new(State::default()),
            start: Instant::now(),
        })
    }
}

/// What happened to a blob, as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Copied,
    Mounted,
    Skipped,
    /// Written out by `blob get`.
    Downloaded,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Self::Copied => "copied",
            Self::Mounted => "mounted",
            Self::Skipped => "skipped",
            Self::Downloaded => "downloaded",
        }
    }
}

/// One progress event (the copy engine's, or `blob get`'s own).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event<'a> {
    Started {
        digest: &'a str,
        /// Unknown when a registry sends no `Content-Length`.
        size: Option<u64>,
    },
    Progress {
        digest: &'a str,
        bytes: u64,
    },
    Resumed {
        digest: &'a str,
        offset: u64,
    },
    Done {
        digest: &'a str,
        size: u64,
        outcome: Outcome,
    },
    Manifest {
        digest: &'a str,
    },
}

impl<'a> Event<'a> {
    /// The copy engine's event; `None` for kinds this version does not show.
    fn from_copy(e: &'a CopyEvent) -> Option<Self> {
        Some(match e {
            CopyEvent::BlobStarted { digest, size } => Self::Started {
                digest,
                size: Some(*size),
            },
            CopyEvent::BlobProgress { digest, bytes, .. } => Self::Progress {
                digest,
                bytes: *bytes,
            },
            CopyEvent::BlobResumed { digest, offset } => Self::Resumed {
                digest,
                offset: *offset,
            },
            CopyEvent::BlobDone {
                digest,
                size,
                outcome,
            } => Self::Done {
                digest,
                size: *size,
                outcome: match outcome {
                    BlobOutcome::Skipped => Outcome::Skipped,
                    BlobOutcome::Mounted => Outcome::Mounted,
                    _ => Outcome::Copied,
                },
            },
            CopyEvent::ManifestPushed { digest } => Self::Manifest { digest },
            _ => return None,
        })
    }

    fn to_json(self) -> serde_json::Value {
        match self {
            Self::Started { digest, size } => {
                serde_json::json!({"event": "blob_started", "digest": digest, "size": size})
            }
            Self::Progress { digest, bytes } => {
                serde_json::json!({"event": "blob_progress", "digest": digest, "bytes": bytes})
            }
            Self::Resumed { digest, offset } => {
                serde_json::json!({"event": "blob_resumed", "digest": digest, "offset": offset})
            }
            Self::Done {
                digest,
                size,
                outcome,
            } => serde_json::json!({
                "event": "blob_done", "digest": digest, "size": size, "outcome": outcome.name(),
            }),
            Self::Manifest { digest } => {
                serde_json::json!({"event": "manifest_pushed", "digest": digest})
            }
        }
    }
}

enum Kind {
    Silent,
    Json,
    Tty(Display),
}

/// The live display: one bar per blob in flight above a total bar, and a line per blob done.
struct Display {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Display {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(0));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>19} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ) {
            total.set_style(style.progress_chars("=> "));
        }
        total.set_prefix("total");
        Self { multi, total }
    }

    fn blob_bar(&self, digest: &str, size: Option<u64>) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size.unwrap_or(0)));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>19} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(short(digest).to_owned());
        bar
    }

    /// A line above the bars (drawn at once, whatever the refresh rate).
    fn line(&self, text: &str) {
        // A terminal that went away is no reason to fail the copy.
        let _ = self.multi.println(text);
    }
}

/// Counts and the blobs in flight.
#[derive(Default)]
struct State {
    /// Blob digest → its bar (on a terminal) and bytes read so far.
    in_flight: HashMap<String, (Option<ProgressBar>, u64)>,
    /// Bytes of blobs done plus bytes read of blobs in flight.
    position: u64,
    copied: u64,
    mounted: u64,
    skipped: u64,
    downloaded: u64,
    /// Bytes streamed (copied or downloaded blobs).
    bytes: u64,
}

impl State {
    fn count(&self) -> String {
        format!(
            "{} copied, {} mounted, {} skipped",
            self.copied, self.mounted, self.skipped
        )
    }
}

/// Shows the events of one command as its flags ask.
pub(crate) struct Reporter {
    kind: Kind,
    state: Mutex<State>,
    start: Instant,
}

impl Reporter {
    /// Whether anything is shown (a silent reporter costs the copy nothing).
    pub(crate) fn is_silent(&self) -> bool {
        matches!(self.kind, Kind::Silent)
    }

    /// A callback for [`vch_registry::CopyOptions::progress`]; `None` when silent.
    pub(crate) fn copy_callback(self: &Arc<Self>) -> Option<vch_registry::Progress> {
        if self.is_silent() {
            return None;
        }
        let me = self.clone();
        Some(Arc::new(move |e: &CopyEvent| {
            if let Some(e) = Event::from_copy(e) {
                me.event(e);
            }
        }))
    }

    /// Shows one event.
    pub(crate) fn event(&self, e: Event<'_>) {
        if self.is_silent() {
            return;
        }
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let st = &mut *guard;
        let display = match &self.kind {
            Kind::Tty(d) => Some(d),
            _ => None,
        };
        match e {
            Event::Started { digest, size } => {
                let bar = display.map(|d| {
                    d.total.inc_length(size.unwrap_or(0));
                    d.blob_bar(digest, size)
                });
                st.in_flight.insert(digest.to_owned(), (bar, 0));
            }
            Event::Progress { digest, bytes }
            | Event::Resumed {
                digest,
                offset: bytes,
            } => {
                if let Some((bar, seen)) = st.in_flight.get_mut(digest) {
                    let before = std::mem::replace(seen, bytes);
                    if let Some(bar) = bar {
                        bar.set_position(bytes);
                    }
                    st.position = st.position.saturating_sub(before).saturating_add(bytes);
                }
                if let (Event::Resumed { .. }, Some(d)) = (e, display) {
                    d.line(&format!(
                        "{:>19} resumed at {}",
                        short(digest),
                        HumanBytes(bytes)
                    ));
                }
            }
            Event::Done {
                digest,
                size,
                outcome,
            } => {
                let seen = match st.in_flight.remove(digest) {
                    Some((bar, seen)) => {
                        if let (Some(bar), Some(d)) = (bar, display) {
                            bar.finish_and_clear();
                            d.multi.remove(&bar);
                        }
                        seen
                    }
                    None => 0,
                };
                st.position = st.position.saturating_sub(seen).saturating_add(size);
                match outcome {
                    Outcome::Copied => st.copied += 1,
                    Outcome::Mounted => st.mounted += 1,
                    Outcome::Skipped => st.skipped += 1,
                    Outcome::Downloaded => st.downloaded += 1,
                }
                if matches!(outcome, Outcome::Copied | Outcome::Downloaded) {
                    st.bytes += size;
                }
                if let Some(d) = display {
                    d.line(&format!(
                        "{:>19} {:<10} {}",
                        short(digest),
                        outcome.name(),
                        HumanBytes(size)
                    ));
                    d.total.set_message(st.count());
                }
            }
            Event::Manifest { digest } => {
                if let Some(d) = display {
                    d.line(&format!("{:>19} manifest pushed", short(digest)));
                }
            }
        }
        match &self.kind {
            Kind::Tty(d) => d.total.set_position(st.position),
            Kind::Json => json_line(&e.to_json()),
            Kind::Silent => {}
        }
    }

    /// Ends the display: a summary when the command succeeded (the error line says the
    /// rest otherwise).
    pub(crate) fn finish(&self, ok: bool) {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = self.start.elapsed();
        match &self.kind {
            Kind::Silent => {}
            Kind::Json => {
                if ok {
                    json_line(&serde_json::json!({
                        "event": "done",
                        "copied": st.copied, "mounted": st.mounted, "skipped": st.skipped,
                        "downloaded": st.downloaded, "bytes": st.bytes,
                        "seconds": elapsed.as_secs_f64(),
                    }));
                }
            }
            Kind::Tty(d) => {
                for bar in st.in_flight.values().filter_map(|(bar, _)| bar.as_ref()) {
                    bar.finish_and_clear();
                }
                if ok {
                    let what = if st.downloaded > 0 {
                        format!("{} downloaded", st.downloaded)
                    } else {
                        st.count()
                    };
                    d.line(&format!(
                        "{:>19} {what}; {} in {}",
                        "total",
                        HumanBytes(st.bytes),
                        HumanDuration(elapsed)
                    ));
                }
                d.total.finish_and_clear();
            }
        }
    }
}

/// `sha256:` and the first 12 hex digits, as docker shows layers.
fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest)
}

/// One line on stderr, written at once (lines from parallel blobs never interleave).
fn json_line(v: &serde_json::Value) {
    let mut line = v.to_string();
    line.push('\n');
    // Progress is best effort: a closed stderr does not fail the command.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digest_is_docker_like_and_never_panics() {
        assert_eq!(
            short("sha256:0123456789abcdef0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(short("sha256:01"), "sha256:01");
        assert_eq!(short("é"), "é");
    }

    #[test]
    fn copy_events_map_to_json_lines() {
        let e = CopyEvent::BlobDone {
            digest: "sha256:aa".into(),
            size: 3,
            outcome: BlobOutcome::Mounted,
        };
        let v = Event::from_copy(&e).map(Event::to_json);
        assert_eq!(
            v,
            Some(serde_json::json!({
                "event": "blob_done", "digest": "sha256:aa", "size": 3, "outcome": "mounted",
            }))
        );
    }
}
