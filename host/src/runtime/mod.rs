//! The plugin runtime: one shared wasmtime engine, plugins loaded from bytes, files or
//! the built-in set, and calls that each run in a fresh, capability-free store under a
//! deadline and a memory cap.
//!
//! ```no_run
//! # async fn demo(input: wasmray::runtime::ReconcileInput) -> Result<(), Box<dyn std::error::Error>> {
//! use wasmray::runtime::{Runtime, RuntimeConfig};
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! runtime.install_builtins().await?;
//! let output = runtime.reconcile("raycluster", &input).await?;
//! # Ok(()) }
//! ```

pub mod bindings;
mod code_cache;
pub mod contract_0_2;
mod engine;
mod error;
mod loaded;
pub mod records;
mod registry;
mod sandbox;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};

pub use bindings::autoscaler::exports::wasmray::plugin::autoscale::{
    AutoscaleInput, AutoscaleOutput,
};
pub use bindings::reconciler::exports::wasmray::plugin::reconcile::{
    ReconcileInput, ReconcileOutput,
};
pub use bindings::scheduler::exports::wasmray::plugin::schedule::{ScheduleInput, ScheduleOutput};
// plugin.rs names the module by its former name.
pub use code_cache::{CodeSource, digest_of};
pub use engine::{Allocator, EPOCH_TICK};
pub use error::{CallError, LoadError, PluginId};
pub use loaded::{CONTRACT_VERSION, CallLimits, Plugin, Role};
pub use registry::Registry;
pub use sandbox::OUTPUT_CAPTURE_BYTES;

use crate::builtin::BuiltinPlugin;
use bindings::types::PluginError as GuestError;
use loaded::RolePre;
use sandbox::CallState;

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Default wall-clock deadline of one call.
    pub deadline: Duration,
    /// Default linear-memory cap of one call, in bytes.
    pub memory_limit: usize,
    /// Use the pooling instance allocator if the machine allows it.
    pub pooling: bool,
    /// Instance slots in the pool.
    pub pool_size: u32,
    /// Calls that may run at once; at most `pool_size`, so that a call never finds
    /// the pool exhausted.
    pub max_concurrent_calls: usize,
    /// Directory of wasmtime's on-disk compiled-code cache; none disables it.
    pub cache_dir: Option<PathBuf>,
    /// Maximum wasm stack of a call, if not wasmtime's default.
    pub max_wasm_stack: Option<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            deadline: Duration::from_secs(1),
            memory_limit: 128 << 20,
            pooling: true,
            pool_size: 64,
            max_concurrent_calls: 32,
            cache_dir: None,
            max_wasm_stack: None,
        }
    }
}

/// The plugin runtime. Share it (`Arc<Runtime>`); every method takes `&self`.
pub struct Runtime {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<CallState>,
    cache: code_cache::CodeCache,
    calls: Semaphore,
    registry: Registry,
    config: RuntimeConfig,
}

/// Why a call failed inside the store, before classification.
enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// Instantiates a pre-linked plugin in a fresh store and calls one export, under the
/// plugin's limits ([`Runtime::run`]): `call_export!(runtime, plugin, pre,
/// interface.method(args))`.
macro_rules! call_export {
    ($runtime:expr, $plugin:expr, $pre:expr, $interface:ident . $method:ident ( $($arg:expr),* )) => {
        $runtime
            .run($plugin, async |store| {
                let instance = $pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(Failure::Instantiate)?;
                instance
                    .$interface()
                    .$method(&mut *store $(, $arg)*)
                    .await
                    .map_err(Failure::Call)
            })
            .await
    };
}

impl Runtime {
    /// Creates the engine (pooling if possible), the sandbox linker and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Runtime> {
        let disk_cache = config.cache_dir.as_deref().and_then(code_cache::disk_cache);
        let (engine, allocator) = engine::build_engine(&config, disk_cache.as_ref())?;
        engine::start_epoch_ticker(&engine)?;
        let mut linker = Linker::new(&engine);
        // WASI is linked only because std needs it to link; the context grants nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every world imports the same `logging` interface, so one linker serves all roles.
        bindings::reconciler::Reconciler::add_to_linker::<
            CallState,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |state| state)?;
        // Contract 0.2.0 imports the same interfaces under its own version: `logging` has
        // its own binding, `types` (only types, no functions) an empty instance.
        bindings::v0_2::wasmray::plugin::logging::add_to_linker::<
            CallState,
            wasmtime::component::HasSelf<CallState>,
        >(&mut linker, |state| state)?;
        linker.instance("wasmray:plugin/types@0.2.0")?;
        let cache = code_cache::CodeCache::new(disk_cache);
        let permits = config.max_concurrent_calls.clamp(
            1,
            usize::try_from(config.pool_size.max(1)).unwrap_or(usize::MAX),
        );
        tracing::info!(?allocator, permits, "plugin runtime ready");
        Ok(Runtime {
            engine,
            allocator,
            linker,
            cache,
            calls: Semaphore::new(permits),
            registry: Registry::default(),
            config,
        })
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The instance allocator in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The installed plugins.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Loads a plugin from component bytes, with the default limits. It is not
    /// installed; see [`Registry::install`].
    pub async fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Plugin>, LoadError> {
        let limits = CallLimits {
            deadline: self.config.deadline,
            memory_limit: self.config.memory_limit,
        };
        self.load_with_limits(name, bytes, limits).await
    }

    /// Loads a plugin from component bytes with its own limits.
    pub async fn load_with_limits(
        &self,
        name: &str,
        bytes: &[u8],
        limits: CallLimits,
    ) -> Result<Arc<Plugin>, LoadError> {
        let id = PluginId {
            name: name.to_owned(),
            digest: digest_of(bytes),
        };
        let (component, code_source) = self.cache.component(&self.engine, &id, bytes).await?;
        let (role, contract) = loaded::Role::of(&self.engine, &component, &id)?;
        let link_error = |err: wasmtime::Error| LoadError::Link {
            plugin: id.clone(),
            message: format!("{err:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = RolePre::new(role, contract, pre).map_err(link_error)?;
        let mut plugin = Plugin {
            id: id.clone(),
            role,
            contract,
            pre,
            kinds: Vec::new(),
            limits,
            code_source,
        };
        let described = match &plugin.pre {
            RolePre::Reconciler(pre) => Some(call_export!(
                self,
                &plugin,
                pre,
                wasmray_plugin_reconcile.call_kinds()
            )),
            RolePre::Reconciler0_2(pre) => Some(call_export!(
                self,
                &plugin,
                pre,
                wasmray_plugin_reconcile.call_kinds()
            )),
            RolePre::Scheduler(_) | RolePre::Autoscaler(_) => None,
        };
        if let Some(kinds) = described {
            plugin.kinds = kinds.map_err(|source| LoadError::Describe {
                plugin: id.clone(),
                source: Box::new(source),
            })?;
        }
        tracing::info!(plugin = %id.name, digest = %id.digest, %role, contract, kinds = ?plugin.kinds, ?code_source, "plugin loaded");
        Ok(Arc::new(plugin))
    }

    /// Asks `plugin` whether it accepts `config` (its `validate-config` export). Contract
    /// 0.2.0 had no such export: those plugins accept every configuration here and check
    /// it on each call, as they always did.
    pub async fn validate_config(&self, plugin: &Plugin, config: &str) -> Result<(), LoadError> {
        let answer = match &plugin.pre {
            RolePre::Reconciler(pre) => {
                call_export!(
                    self,
                    plugin,
                    pre,
                    wasmray_plugin_reconcile.call_validate_config(config)
                )
            }
            RolePre::Scheduler(pre) => {
                call_export!(
                    self,
                    plugin,
                    pre,
                    wasmray_plugin_schedule.call_validate_config(config)
                )
            }
            RolePre::Autoscaler(pre) => {
                call_export!(
                    self,
                    plugin,
                    pre,
                    wasmray_plugin_autoscale.call_validate_config(config)
                )
            }
            RolePre::Reconciler0_2(_) => return Ok(()),
        };
        match answer {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(LoadError::Config {
                plugin: plugin.id.clone(),
                reason: refusal.reason,
                message: refusal.message,
            }),
            Err(source) => Err(LoadError::Describe {
                plugin: plugin.id.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Loads a plugin from a component file.
    pub async fn load_file(&self, name: &str, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                name: name.to_owned(),
                path: path.to_owned(),
                source,
            })?;
        self.load(name, &bytes).await
    }

    /// Loads and installs every plugin embedded in the binary.
    pub async fn install_builtins(&self) -> Result<Vec<Arc<Plugin>>, LoadError> {
        self.install_all(crate::builtin::BUILTIN_PLUGINS).await
    }

    /// Loads and installs the given plugins, one after the other: wasmtime already
    /// compiles the functions of one plugin in parallel, and compiling several plugins at
    /// once held the compiler's working memory of all of them at the same time (the
    /// operator's peak RSS at a cold start).
    pub async fn install_all(
        &self,
        plugins: &[BuiltinPlugin],
    ) -> Result<Vec<Arc<Plugin>>, LoadError> {
        let mut installed = Vec::with_capacity(plugins.len());
        for builtin in plugins {
            let plugin = self.load(builtin.name, builtin.bytes).await?;
            self.registry.install(Arc::clone(&plugin));
            installed.push(plugin);
        }
        Ok(installed)
    }

    fn resolve(&self, name: &str) -> Result<Arc<Plugin>, CallError> {
        self.registry
            .get(name)
            .ok_or_else(|| CallError::UnknownPlugin {
                name: name.to_owned(),
            })
    }

    fn wrong_role(plugin: &Plugin, expected: Role) -> CallError {
        CallError::WrongRole {
            plugin: plugin.id.clone(),
            expected: expected.as_str(),
            actual: plugin.role.as_str(),
        }
    }

    /// Instantiates the plugin installed under `name` in a fresh store, under its limits,
    /// and drops it without calling it: checks that it still instantiates, and is the
    /// fixed cost every call pays.
    pub async fn instantiate(&self, name: &str) -> Result<(), CallError> {
        let plugin = self.resolve(name)?;
        self.run(&plugin, async |store| {
            plugin
                .pre
                .instance_pre()
                .instantiate_async(&mut *store)
                .await
                .map(drop)
                .map_err(Failure::Instantiate)
        })
        .await
    }

    /// Calls the reconciler installed under `name`.
    pub async fn reconcile(
        &self,
        name: &str,
        input: &ReconcileInput,
    ) -> Result<ReconcileOutput, CallError> {
        let plugin = self.resolve(name)?;
        self.reconcile_with(&plugin, input).await
    }

    /// Calls a reconciler plugin. The answer is the plugin's as it gave it: what it asks
    /// for is checked where it is turned into writes (`controller::plan`).
    pub async fn reconcile_with(
        &self,
        plugin: &Plugin,
        input: &ReconcileInput,
    ) -> Result<ReconcileOutput, CallError> {
        let answer = match &plugin.pre {
            RolePre::Reconciler(pre) => call_export!(
                self,
                plugin,
                pre,
                wasmray_plugin_reconcile.call_reconcile(input)
            )?,
            RolePre::Reconciler0_2(pre) => {
                let input = contract_0_2::input(input);
                call_export!(
                    self,
                    plugin,
                    pre,
                    wasmray_plugin_reconcile.call_reconcile(&input)
                )?
                .map(contract_0_2::output)
            }
            RolePre::Scheduler(_) | RolePre::Autoscaler(_) => {
                return Err(Self::wrong_role(plugin, Role::Reconciler));
            }
        };
        answer.map_err(|refusal| refused(plugin, refusal))
    }

    /// Calls the scheduler installed under `name`.
    pub async fn schedule(
        &self,
        name: &str,
        input: &ScheduleInput,
    ) -> Result<ScheduleOutput, CallError> {
        let plugin = self.resolve(name)?;
        let RolePre::Scheduler(pre) = &plugin.pre else {
            return Err(Self::wrong_role(&plugin, Role::Scheduler));
        };
        let answer = call_export!(
            self,
            &plugin,
            pre,
            wasmray_plugin_schedule.call_schedule(input)
        )?;
        let output = answer.map_err(|refusal| refused(&plugin, refusal))?;
        validate::schedule_output(&output, input.pod_sets.len())
            .map_err(|what| malformed(&plugin, what))?;
        Ok(output)
    }

    /// Calls the autoscaler installed under `name`.
    pub async fn autoscale(
        &self,
        name: &str,
        input: &AutoscaleInput,
    ) -> Result<AutoscaleOutput, CallError> {
        let plugin = self.resolve(name)?;
        let RolePre::Autoscaler(pre) = &plugin.pre else {
            return Err(Self::wrong_role(&plugin, Role::Autoscaler));
        };
        let answer = call_export!(
            self,
            &plugin,
            pre,
            wasmray_plugin_autoscale.call_autoscale(input)
        )?;
        let output = answer.map_err(|refusal| refused(&plugin, refusal))?;
        validate::autoscale_output(&output, input).map_err(|what| malformed(&plugin, what))?;
        Ok(output)
    }

    /// Runs `call` in a fresh store under the plugin's deadline and memory cap, and turns
    /// every failure into a typed [`CallError`].
    async fn run<T>(
        &self,
        plugin: &Plugin,
        call: impl AsyncFnOnce(&mut Store<CallState>) -> Result<T, Failure>,
    ) -> Result<T, CallError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate {
                plugin: plugin.id.clone(),
                message: "the runtime is shutting down".to_owned(),
            })?;
        let deadline = plugin.limits.deadline;
        let mut store = Store::new(
            &self.engine,
            CallState::new(plugin.id.clone(), plugin.limits.memory_limit),
        );
        store.limiter(|state| state.limiter());
        // Epochs interrupt wasm code; the timer also covers time spent in host calls
        // (e.g. a guest blocked in a WASI poll), which epochs cannot interrupt.
        store.set_epoch_deadline(engine::deadline_ticks(deadline));
        store.epoch_deadline_trap();
        let timed = tokio::time::timeout(deadline + 2 * EPOCH_TICK, call(&mut store)).await;
        store.data().forward_output();
        match timed {
            Err(_) => Err(CallError::DeadlineExceeded {
                plugin: plugin.id.clone(),
                deadline,
            }),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Instantiate(err))) => Err(CallError::Instantiate {
                plugin: plugin.id.clone(),
                message: format!("{err:#}"),
            }),
            Ok(Err(Failure::Call(err))) => Err(classify(plugin, store.data(), &err)),
        }
    }
}

/// An out-of-bounds access at the end of this many frames of one function calling itself is
/// taken for a stack overflow.
const STACK_OVERFLOW_RECURSION: usize = 16;

fn classify(plugin: &Plugin, state: &CallState, err: &wasmtime::Error) -> CallError {
    if state.memory_limit_hit() {
        return CallError::MemoryLimit {
            plugin: plugin.id.clone(),
            limit_bytes: plugin.limits.memory_limit,
        };
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return CallError::DeadlineExceeded {
            plugin: plugin.id.clone(),
            deadline: plugin.limits.deadline,
        };
    }
    let trap = err.downcast_ref::<Trap>();
    // Rust keeps its stack in linear memory: running out of it is an out-of-bounds access
    // below address 0 at the end of a chain of one function calling itself. The backtrace
    // of such a chain would drown the message, so it is left out.
    let recursion = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map_or(0, |backtrace| {
            let frames = backtrace.frames();
            let innermost = frames.first().map(wasmtime::FrameInfo::func_index);
            frames
                .iter()
                .take_while(|frame| Some(frame.func_index()) == innermost)
                .count()
        });
    if trap == Some(&Trap::StackOverflow)
        || (trap == Some(&Trap::MemoryOutOfBounds) && recursion >= STACK_OVERFLOW_RECURSION)
    {
        return CallError::Trap {
            plugin: plugin.id.clone(),
            message: "stack overflow: the call ran out of stack (unbounded recursion?)".to_owned(),
        };
    }
    let stderr = state.stderr_text();
    let mut message = format!("{err:#}");
    if !stderr.trim().is_empty() {
        message.push_str("; stderr: ");
        message.push_str(stderr.trim());
    }
    CallError::Trap {
        plugin: plugin.id.clone(),
        message,
    }
}

fn refused(plugin: &Plugin, refusal: GuestError) -> CallError {
    CallError::Refused {
        plugin: plugin.id.clone(),
        reason: refusal.reason,
        message: refusal.message,
        retry_after: refusal.retry_after_ms.map(Duration::from_millis),
    }
}

fn malformed(plugin: &Plugin, what: String) -> CallError {
    CallError::MalformedOutput {
        plugin: plugin.id.clone(),
        what,
    }
}
