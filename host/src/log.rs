//! Guest logging: the `log` import and the guest's stdout/stderr, both sent
//! to the host's `tracing` log under the target `wasmplug::guest`, each event
//! tagged with `plugin = name@version`.
//!
//! stdout and stderr are line-buffered: one event per line, and a pending
//! partial line is written when the guest flushes or the instance is dropped.
//! A line longer than [`MAX_LINE`] is split, so a guest that never writes a
//! newline cannot grow the host's buffer without bound.

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

/// Write one guest log line to `tracing`, tagged with the plugin's label.
pub fn emit(label: &str, level: Level, message: &str) {
    match level {
        Level::Trace => tracing::trace!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Debug => tracing::debug!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Info => tracing::info!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Warn => tracing::warn!(target: "wasmplug::guest", plugin = label, "{message}"),
        Level::Error => tracing::error!(target: "wasmplug::guest", plugin = label, "{message}"),
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
    /// Bytes this stream may still write; past it output is dropped.
    budget: usize,
    truncated: bool,
}

impl LineBuffer {
    fn write(&mut self, bytes: &[u8]) {
        let allowed = bytes.len().min(self.budget);
        self.budget -= allowed;
        self.write_lines(&bytes[..allowed]);
        if allowed < bytes.len() && !self.truncated {
            self.truncated = true;
            if !self.pending.is_empty() {
                self.flush();
            }
            tracing::warn!(
                target: "wasmplug::guest",
                plugin = &*self.label,
                stream = self.stream_name(),
                "output limit reached: the rest of this instance's output is dropped"
            );
        }
    }

    fn stream_name(&self) -> &'static str {
        match self.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn write_lines(&mut self, mut bytes: &[u8]) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&bytes[..newline]);
            self.flush();
            bytes = &bytes[newline + 1..];
        }
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            self.flush();
            self.pending = rest;
        }
    }

    fn flush(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        let stream = self.stream_name();
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "wasmplug::guest", plugin = &*self.label, stream, "{line}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "wasmplug::guest", plugin = &*self.label, stream, "{line}")
            }
        }
        self.pending.clear();
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
                budget: limit,
                truncated: false,
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
        out.write(b"0123456");
        out.write(b"789abcdef");
        let buf = out.inner.lock().unwrap();
        assert_eq!(buf.budget, 0);
        assert!(buf.truncated);
        assert!(
            buf.pending.is_empty(),
            "the partial line was flushed at the limit"
        );
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
}
