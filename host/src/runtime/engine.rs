//! The one process-wide wasmtime engine: pooling allocator with a fallback, and the
//! epoch ticker that makes deadlines fire.

use std::time::Duration;

use wasmtime::{
    Cache, Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    ProfilingStrategy,
};

use super::RuntimeConfig;

/// Set to `1` to write `/tmp/perf-<pid>.map`, so that `perf` names the frames of jitted
/// plugin code (for profiling only: the map grows with every compiled function).
pub const PERF_MAP_ENV: &str = "WASMRAY_PERF_MAP";

/// How often the epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots for instances, memories, tables and stacks.
    Pooling,
    /// Allocation at instantiation time (used where the pool cannot be reserved).
    OnDemand,
}

// Wasm32-wasip2 components built from Rust have a handful of core instances (the
// program, the WASI adapter, shims), up to two memories and a few tables; these bounds
// leave room for other toolchains.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;
/// Bytes of a memory slot kept resident between calls (see `pooling_config`). At most
/// this times the number of slots in use stays resident while idle.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 8 << 20;

fn base_config(config: &RuntimeConfig, disk_cache: Option<&Cache>) -> Config {
    let mut wasm = Config::new();
    wasm.cache(disk_cache.cloned());
    wasm.wasm_component_model(true)
        // Plugin calls are plain synchronous exports run on a fiber: without this, every
        // store sets up the component-model-async task machinery and every call goes
        // through it.
        .concurrency_support(false)
        .epoch_interruption(true)
        .parallel_compilation(true);
    if let Some(stack) = config.max_wasm_stack {
        wasm.max_wasm_stack(stack);
    }
    if std::env::var_os(PERF_MAP_ENV).is_some_and(|value| value == "1") {
        wasm.profiler(ProfilingStrategy::PerfMap);
    }
    wasm
}

fn pooling_config(config: &RuntimeConfig) -> PoolingAllocationConfig {
    let slots = config.pool_size;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(config.memory_limit)
        // Keep up to this much of a slot's memory mapped between calls: a fresh instance
        // per call then writes to resident pages instead of faulting every page of its
        // heap back in (a call of the RayCluster plugin dirties a few MiB).
        .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        // With PAGEMAP_SCAN (Linux 6.7+), only the pages a call dirtied are reset, so a
        // large keep-resident size costs nothing for pages a call never touched; older
        // kernels fall back to resetting the first `keep_resident` bytes.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Builds the engine. Pooling reserves virtual address space for every slot up front;
/// machines with a small address space or strict overcommit refuse that, so a failure
/// falls back to on-demand allocation instead of refusing to start. `disk_cache` is
/// wasmtime's compiled-code cache, if one is configured.
pub fn build_engine(
    config: &RuntimeConfig,
    disk_cache: Option<&Cache>,
) -> wasmtime::Result<(Engine, Allocator)> {
    if config.pooling {
        let mut wasm = base_config(config, disk_cache);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(config)));
        match Engine::new(&wasm) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(err) => tracing::warn!(
                error = %err,
                "pooling instance allocator unavailable; falling back to on-demand allocation"
            ),
        }
    }
    let engine = Engine::new(&base_config(config, disk_cache))?;
    Ok((engine, Allocator::OnDemand))
}

/// Starts the thread that advances the engine's epoch every [`EPOCH_TICK`]. It holds
/// only a weak reference and ends when the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmray-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}

/// The epoch deadline, in ticks, for a wall-clock deadline. One tick is added because
/// the current tick is already partly over when the call starts.
pub fn deadline_ticks(deadline: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}
