//! Guest logging: the `log` import and the guest's stdout/stderr, both sent
//! to the host's `tracing` log under the target `wasmplug::guest`, each event
//! tagged with `plugin = name@version`.
//!
//! stdout and stderr are line-buffered: one event per line, and a pending
//! partial line is written when the guest flushes or the instance is dropped.
//! A line longer than [`MAX_LINE`] is split, so a guest that never writes a
//! newline cannot grow the host's buffer without bound.
//!
//! **Guest text never makes a line of its own.** Every character that could
//! end a line or change how it reads (`\n`, `\r`, `\t`, the other C0 and C1
//! controls, DEL, ESC and so terminal escape sequences, the Unicode line and
//! paragraph separators, bidirectional overrides) is written as an escape:
//! `\n`, `\r`, `\t` or `\u{1b}`. A guest cannot forge a host line such as
//! `WARN wasmplug::registry: swapped ...` in the log.
//!
//! **Each stream has a budget** ([`Policy::output_limit`](crate::Policy::output_limit)
//! bytes per instance, for stdout, stderr and the `log` import each),
//! counted as written to the log: escaped, a line break counting one byte,
//! so neither long lines nor floods of empty ones get past it. The line
//! that reaches it is cut there, one warning follows, and the rest of that
//! stream is dropped.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept in the buffer before it is written out as is.
pub const MAX_LINE: usize = 16 * 1024;

/// Log levels a guest may use, in the host's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// Something failed.
    Error,
}

/// Write one guest log line to `tracing`, tagged with the plugin's label,
/// with every control character escaped (see the module docs), so the
/// message stays one line, whatever the guest put in it.
///
/// This has no budget: a world's own log import should call
/// [`State::log`](crate::State::log) instead, which escapes the same way and
/// caps what one instance may log at the policy's output limit.
///
/// ```
/// // One event, one line: `a\nWARN wasmplug::registry: swapped`.
/// wasmplug::log::emit("evil@1.0.0", wasmplug::log::Level::Info, "a\nWARN wasmplug::registry: swapped");
/// ```
pub fn emit(label: &str, level: Level, message: &str) {
    write_event(label, level, &escape(message));
}

fn write_event(label: &str, level: Level, message: &str) {
    match level {
        Level::Trace => tracing::trace!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Debug => tracing::debug!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Info => tracing::info!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Warn => tracing::warn!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Error => tracing::error!(target: "wasmplug::guest", plugin = label, "{message}"),
    }
}

/// Whether `c` can make text read differently from what it holds: C0, DEL
/// and C1 (NEL among them), the Unicode line and paragraph separators, and
/// the bidirectional marks, embeddings, overrides and isolates.
pub(crate) fn misleads(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// How a character of guest text is written to the log: `None` as itself.
fn escape_char(c: char) -> Option<Cow<'static, str>> {
    match c {
        '\n' => Some(Cow::Borrowed("\\n")),
        '\r' => Some(Cow::Borrowed("\\r")),
        '\t' => Some(Cow::Borrowed("\\t")),
        c if misleads(c) => Some(Cow::Owned(format!("\\u{{{:x}}}", c as u32))),
        _ => None,
    }
}

/// Guest text with every control character escaped: one line, as it reads.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| escape_char(c).is_some()) {
        return Cow::Borrowed(text);
    }
    escape_within(text, usize::MAX).0.into()
}

/// `text` escaped, cut before the first character whose escaped form would
/// take it past `room` bytes; and whether all of it fit. Works in
/// proportion to `room`, not to `text`.
fn escape_within(text: &str, room: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(room).min(MAX_LINE));
    for c in text.chars() {
        let fits = match escape_char(c) {
            Some(escaped) => {
                let fits = out.len() + escaped.len() <= room;
                if fits {
                    out.push_str(&escaped);
                }
                fits
            }
            None => {
                let fits = out.len() + c.len_utf8() <= room;
                if fits {
                    out.push(c);
                }
                fits
            }
        };
        if !fits {
            return (out, false);
        }
    }
    (out, true)
}

/// What one guest stream of one instance may still write to the log.
#[derive(Debug)]
pub(crate) struct Budget {
    left: usize,
    spent: bool,
}

/// What may be logged of one line.
enum Admitted {
    /// All of it, escaped.
    Whole(String),
    /// The part that fit (perhaps empty): the budget ran out on this line.
    Cut(String),
    /// Nothing: the budget ran out earlier.
    Dropped,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            left: limit,
            spent: false,
        }
    }

    /// Take a line from the budget: its escaped text and a line break.
    fn admit(&mut self, line: &str) -> Admitted {
        if self.spent {
            return Admitted::Dropped;
        }
        let Some(room) = self.left.checked_sub(1) else {
            self.spent = true;
            return Admitted::Cut(String::new());
        };
        let (text, whole) = escape_within(line, room);
        if whole {
            self.left -= text.len() + 1;
            Admitted::Whole(text)
        } else {
            self.left = 0;
            self.spent = true;
            Admitted::Cut(text)
        }
    }
}

fn warn_limit(label: &str, stream: &'static str) {
    tracing::warn!(
        target: "wasmplug::guest",
        plugin = label,
        stream,
        "output limit reached: the rest of this instance's output is dropped"
    );
}

/// The `log` import of one instance: escaped, and within its budget.
#[derive(Debug)]
pub(crate) struct GuestLog {
    budget: Budget,
}

impl GuestLog {
    /// A log that takes at most `limit` bytes from one instance.
    pub(crate) fn new(limit: usize) -> Self {
        GuestLog {
            budget: Budget::new(limit),
        }
    }

    /// Log one message of the guest's as one event (see the module docs).
    pub(crate) fn write(&mut self, label: &str, level: Level, message: &str) {
        match self.budget.admit(message) {
            Admitted::Whole(text) => write_event(label, level, &text),
            Admitted::Cut(text) => {
                if !text.is_empty() {
                    write_event(label, level, &text);
                }
                warn_limit(label, "log");
            }
            Admitted::Dropped => {}
        }
    }
}

/// Which standard stream a [`GuestOutput`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr, written to `tracing` a line at a time.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    inner: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    label: Arc<str>,
    stream: Stream,
    pending: Vec<u8>,
    /// What this stream may still write; past it output is dropped.
    budget: Budget,
}

impl LineBuffer {
    fn write(&mut self, mut bytes: &[u8]) {
        while !self.budget.spent {
            let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
                break;
            };
            self.pending.extend_from_slice(&bytes[..newline]);
            self.flush();
            bytes = &bytes[newline + 1..];
        }
        if self.budget.spent {
            // Dropped, cheaply: a flood costs the host no more than this.
            return;
        }
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= MAX_LINE && !self.budget.spent {
            let rest = self.pending.split_off(MAX_LINE);
            self.flush();
            self.pending = rest;
        }
        if self.budget.spent {
            self.pending = Vec::new();
        }
    }

    fn stream_name(&self) -> &'static str {
        match self.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn flush(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let admitted = self.budget.admit(line);
        self.pending.clear();
        let stream = self.stream_name();
        let text = match admitted {
            Admitted::Whole(text) => text,
            Admitted::Cut(text) => {
                if !text.is_empty() {
                    self.event(stream, &text);
                }
                warn_limit(&self.label, stream);
                return;
            }
            Admitted::Dropped => return,
        };
        self.event(stream, &text);
    }

    fn event(&self, stream: &'static str, line: &str) {
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "wasmplug::guest", plugin = &*self.label, stream, "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "wasmplug::guest", plugin = &*self.label, stream, "{line}")
            }
        }
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.flush();
        }
    }
}

impl GuestOutput {
    /// A stream tagged `label` that logs at most `limit` bytes.
    pub(crate) fn new(label: Arc<str>, stream: Stream, limit: usize) -> Self {
        GuestOutput {
            inner: Arc::new(Mutex::new(LineBuffer {
                label,
                stream,
                pending: Vec::new(),
                budget: Budget::new(limit),
            })),
        }
    }

    /// Tag this stream's lines with `label` from now on.
    pub(crate) fn relabel(&self, label: Arc<str>) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.label = label;
    }

    fn write(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-line; the
        // buffer is still a valid Vec, so keep logging.
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.write(bytes);
    }

    fn flush(&self) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !buf.pending.is_empty() {
            buf.flush();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        GuestOutput::flush(self);
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        GuestOutput::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        GuestOutput::flush(&self);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        GuestOutput::flush(&self);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_dropped() {
        let out = GuestOutput::new("t@1.0.0".into(), Stream::Stdout, 10);
        out.write(b"0123456\n"); // 8 bytes of budget: 7 and a line break
        out.write(b"789abcdef\nmore\n");
        let buf = out.inner.lock().unwrap();
        assert_eq!(buf.budget.left, 0);
        assert!(buf.budget.spent);
        assert!(buf.pending.is_empty(), "nothing is kept past the limit");
    }

    #[test]
    fn empty_lines_count_against_the_limit() {
        let out = GuestOutput::new("t@1.0.0".into(), Stream::Stdout, 100);
        out.write(&[b'\n'; 1000]);
        assert!(out.inner.lock().unwrap().budget.spent);
    }

    #[test]
    fn a_line_longer_than_the_cap_is_split_not_buffered_forever() {
        let out = GuestOutput::new("t@1.0.0".into(), Stream::Stdout, usize::MAX);
        out.write(&vec![b'x'; MAX_LINE * 3 + 5]);
        let buf = out.inner.lock().unwrap();
        assert_eq!(buf.pending.len(), 5);
    }

    #[test]
    fn lines_are_cut_at_newlines() {
        let out = GuestOutput::new("t@1.0.0".into(), Stream::Stderr, usize::MAX);
        out.write(b"one\ntwo\nthr");
        assert_eq!(out.inner.lock().unwrap().pending, b"thr");
        out.flush();
        assert!(out.inner.lock().unwrap().pending.is_empty());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain text, é ✓"), "plain text, é ✓");
        assert_eq!(
            escape("a\nb\rc\td\u{1b}[31me\u{7f}f\u{85}g\u{0}h\u{2028}i\u{202e}j"),
            "a\\nb\\rc\\td\\u{1b}[31me\\u{7f}f\\u{85}g\\u{0}h\\u{2028}i\\u{202e}j"
        );
        assert!(!escape("x\n\r\u{1b}\u{9b}").chars().any(char::is_control));
    }

    #[test]
    fn a_line_is_cut_at_the_budget_on_a_character_boundary() {
        let mut budget = Budget::new(6);
        // Room for 5 bytes of text: `ab` and one escape of 2 bytes.
        match budget.admit("ab\néé") {
            Admitted::Cut(text) => assert_eq!(text, "ab\\n"),
            _ => panic!("not cut"),
        }
        assert!(matches!(budget.admit("x"), Admitted::Dropped));
    }

    #[test]
    fn the_log_budget_is_spent_by_a_message_as_written() {
        let mut log = GuestLog::new(10);
        log.write("t@1.0.0", Level::Info, "12345678"); // 9 bytes
        assert_eq!(log.budget.left, 1);
        log.write("t@1.0.0", Level::Info, "");
        assert_eq!(log.budget.left, 0);
        log.write("t@1.0.0", Level::Info, "x");
        assert!(log.budget.spent);
    }
}
