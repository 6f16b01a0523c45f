//! What one plugin may do and use.
//!
//! Deny by default, in the style of `WasiCtxBuilder`: a [`Policy::default()`]
//! grants no filesystem, no environment variables, no arguments and no
//! network. Clocks and random numbers are always available (WASI gives them
//! without a grant and they reveal nothing about the host). The guest's
//! stdout and stderr go to the host's `tracing` log, tagged with the plugin's
//! `name@version`.
//!
//! Limits:
//! * **memory**: linear memory per instance is capped (default 256 MiB);
//!   a `memory.grow` past it fails inside the guest, which usually ends in a
//!   trap that becomes an [`Error::Trap`](crate::Error::Trap) for that call.
//! * **time**: each call into the guest (including `init`) has a deadline,
//!   enforced by epoch interruption (default 10 s, rounded up to the
//!   runtime's tick). Running past it traps with
//!   [`Trap::Interrupt`](wasmtime::Trap::Interrupt):
//!   [`Error::is_timeout`](crate::Error::is_timeout) is true.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::log::{GuestOutput, Stream};

/// Where a guest's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// To the host's `tracing` log, a line an event, tagged with the plugin.
    #[default]
    Log,
    /// Straight to the host process's own stdout and stderr.
    Inherit,
    /// Nowhere.
    Discard,
}

/// What a plugin may do and use. Build it like `WasiCtxBuilder`: start from
/// [`Policy::default()`] (nothing granted) and name each grant.
///
/// ```
/// use std::time::Duration;
/// let policy = wasmplug::Policy::default()
///     .deadline(Duration::from_millis(500))
///     .memory_limit(16 << 20);
/// assert_eq!(policy.deadline_value(), Some(Duration::from_millis(500)));
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    deadline: Option<Duration>,
    memory_limit: usize,
    output: Output,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deadline: Some(Duration::from_secs(10)),
            memory_limit: 256 << 20,
            output: Output::Log,
        }
    }
}

impl Policy {
    /// The longest one call into the guest may run; `None` for no limit.
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The most linear memory one instance may hold, in bytes.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Where the guest's stdout and stderr go.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The per-call deadline in force.
    pub fn deadline_value(&self) -> Option<Duration> {
        self.deadline
    }

    /// The memory cap in force, in bytes.
    pub fn memory_limit_value(&self) -> usize {
        self.memory_limit
    }

    /// The WASI context for one new instance: nothing granted but stdio.
    pub(crate) fn wasi_ctx(&self, label: &Arc<str>) -> WasiCtx {
        let mut builder = WasiCtxBuilder::new();
        match self.output {
            Output::Log => {
                builder
                    .stdout(GuestOutput::new(label.clone(), Stream::Stdout))
                    .stderr(GuestOutput::new(label.clone(), Stream::Stderr));
            }
            Output::Inherit => {
                builder.inherit_stdout().inherit_stderr();
            }
            Output::Discard => {} // WasiCtxBuilder's default stdio is empty.
        }
        builder.build()
    }

    pub(crate) fn store_limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(self.memory_limit)
            .trap_on_grow_failure(false)
            .build()
    }
}
