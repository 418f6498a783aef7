//! The per-call store state: an empty WASI context, a memory limiter, and log capture.
//!
//! Capabilities: wasm32-wasip2 guests built with Rust std import the WASI CLI, I/O,
//! clocks, random and filesystem interfaces just to link, so they are linked, but to a
//! context that grants nothing: no preopened directories, no environment, no arguments,
//! no stdin, TCP/UDP and name lookup denied. Clocks and randomness cannot be denied in
//! WASI 0.2 (their functions cannot fail), so they return fixed values: the wall clock
//! reads the Unix epoch, the monotonic clock reads 0, and both random sources yield a
//! fixed byte sequence. That leaks nothing of the host and keeps decisions replayable;
//! a plugin gets the time it may use from its input (`now`). Stdout and stderr are
//! captured per call (capped) and forwarded to `tracing`; stderr also goes into trap
//! errors, because that is where a Rust panic message lands.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView,
};

use super::bindings::logging::{self, Level};
use super::error::PluginId;

/// How much stdout and stderr one call may write; writing more traps the call.
pub const OUTPUT_CAPTURE_BYTES: usize = 64 * 1024;

/// Store data of one call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    plugin: PluginId,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl CallState {
    /// A fresh, capability-free state for one call of `plugin`.
    pub fn new(plugin: PluginId, memory_limit: usize) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPTURE_BYTES);
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FixedWallClock)
            .monotonic_clock(FixedMonotonicClock)
            .secure_random(Deterministic::new(FIXED_RANDOM_BYTES.to_vec()))
            .insecure_random(Deterministic::new(FIXED_RANDOM_BYTES.to_vec()))
            .insecure_random_seed(0)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        CallState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: CallLimiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(memory_limit)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_limit_hit: false,
            },
            plugin,
            stdout,
            stderr,
        }
    }

    /// The limiter, for `Store::limiter`.
    pub fn limiter(&mut self) -> &mut CallLimiter {
        &mut self.limiter
    }

    /// Whether the plugin tried to grow memory past its cap during this call.
    pub fn memory_limit_hit(&self) -> bool {
        self.limiter.memory_limit_hit
    }

    /// What the plugin wrote to stderr, lossily decoded.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }

    /// Sends the captured stdout and stderr to `tracing`, one event per line.
    pub fn forward_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let contents = pipe.contents();
            if contents.is_empty() {
                continue;
            }
            for line in String::from_utf8_lossy(&contents).lines() {
                tracing::info!(
                    target: "wasmray::plugin",
                    plugin = %self.plugin.name,
                    digest = %self.plugin.digest,
                    stream,
                    "{line}"
                );
            }
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl logging::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let (name, digest) = (&self.plugin.name, &self.plugin.digest);
        // `tracing` needs the level at compile time, hence one arm per level.
        match level {
            Level::Trace => {
                tracing::trace!(target: "wasmray::plugin", plugin = %name, digest = %digest, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "wasmray::plugin", plugin = %name, digest = %digest, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "wasmray::plugin", plugin = %name, digest = %digest, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "wasmray::plugin", plugin = %name, digest = %digest, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "wasmray::plugin", plugin = %name, digest = %digest, "{message}")
            }
        }
    }
}

impl super::bindings::types::Host for CallState {}

/// Contract 0.2.0's logging is the same function under the older package version.
impl super::bindings::v0_2::wasmray::plugin::logging::Host for CallState {
    fn log(
        &mut self,
        level: super::bindings::v0_2::wasmray::plugin::logging::Level,
        message: String,
    ) {
        use super::bindings::v0_2::wasmray::plugin::logging::Level as Old;
        let level = match level {
            Old::Trace => Level::Trace,
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        logging::Host::log(self, level, message);
    }
}

/// `StoreLimits` that remembers whether the memory cap was hit, so a trap can be told
/// apart as a memory-limit error.
pub struct CallLimiter {
    limits: StoreLimits,
    memory_limit_hit: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_limit_hit = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The bytes both random sources repeat. Any fixed value works; this one is not all
/// zeros so that code which rejects an all-zero seed still runs.
const FIXED_RANDOM_BYTES: [u8; 8] = [0x57, 0x61, 0x73, 0x6d, 0x52, 0x61, 0x79, 0x21];

/// A wall clock stopped at the Unix epoch.
struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A monotonic clock stopped at 0.
struct FixedMonotonicClock;

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
