//! Builds the workspace's plugins as wasm32-wasip2 components and embeds the built-in
//! ones, so `cargo build -p wasmray` is the one command that produces a complete binary.
//! The example and hostile plugins are built for tests: only their paths are compiled in.
//!
//! Each plugin is built by a nested `cargo build --release --target wasm32-wasip2` into
//! its own target directory (`<target>/wasm-plugins`), which avoids waiting on the outer
//! build's lock. Plugins are built one cargo invocation each: every plugin enables the
//! SDK feature of its own role, and one invocation would unify those features into
//! components that claim several roles. The nested cargo inherits the outer jobserver
//! (`CARGO_MAKEFLAGS`), so it shares the same CPU budget.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins embedded in the operator binary: (registered name, cargo package).
/// Adding a built-in plugin is one line here.
/// (registered name, cargo package, the one feature that selects the component, if any).
const BUILTIN: &[(&str, &str, Option<&str>)] = &[
    ("raycluster", "wasmray-plugin-raycluster", None),
    ("rayjob", "wasmray-plugin-rayjob", None),
    ("rayservice", "wasmray-plugin-rayservice", None),
    ("ray-default", "wasmray-plugin-autoscaler", None),
    ("warm-pool", "wasmray-plugin-warm-pool", None),
    // One crate, one scheduler component per feature.
    (
        "volcano",
        "wasmray-plugin-batch-schedulers",
        Some("volcano"),
    ),
    (
        "yunikorn",
        "wasmray-plugin-batch-schedulers",
        Some("yunikorn"),
    ),
    (
        "scheduler-plugins",
        "wasmray-plugin-batch-schedulers",
        Some("scheduler-plugins"),
    ),
    (
        "kai-scheduler",
        "wasmray-plugin-batch-schedulers",
        Some("kai-scheduler"),
    ),
    (
        "kubernetes-was",
        "wasmray-plugin-batch-schedulers",
        Some("kubernetes-was"),
    ),
];

/// Plugins built for tests only: their paths are compiled in, never their bytes.
/// (constant, cargo package, registered name if it is an example plugin).
const TEST_ONLY: &[(&str, &str, Option<&str>)] = &[
    ("HOSTILE", "wasmray-test-hostile", None),
    ("CONTRACT_0_2", "wasmray-test-contract-0-2", None),
    (
        "EXAMPLE_RECONCILER",
        "wasmray-example-reconciler",
        Some("example-reconciler"),
    ),
    (
        "EXAMPLE_SCHEDULER",
        "wasmray-example-scheduler",
        Some("example-scheduler"),
    ),
    (
        "EXAMPLE_AUTOSCALER",
        "wasmray-example-autoscaler",
        Some("example-autoscaler"),
    ),
];

const WASM_TARGET: &str = "wasm32-wasip2";

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("host/ has no parent directory")?
        .to_owned();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                workspace.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let plugin_target = target_root.join("wasm-plugins");

    // Relative to the package: cargo shares this script's output between checkouts of the
    // workspace that use one target directory (its hash ignores where the workspace is),
    // and absolute paths would keep watching the checkout that ran it first.
    for watched in ["wit", "plugins", "crds", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed=../{watched}");
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let mut shipped = Vec::new();
    for (name, package, feature) in BUILTIN {
        let wasm = build_plugin(&workspace, &plugin_target, &out_dir, package, *feature)?;
        shipped.push((*name, wasm));
    }
    let mut test_rs = String::new();
    let mut examples = Vec::new();
    for (constant, package, example) in TEST_ONLY {
        let wasm = build_plugin(&workspace, &plugin_target, &out_dir, package, None)?;
        writeln!(test_rs, "/// Component file of `{package}`.")?;
        writeln!(
            test_rs,
            "pub const {constant}: &str = {:?};",
            wasm.display()
        )?;
        if let Some(name) = example {
            examples.push((*name, *constant, wasm));
        }
    }
    test_rs.push_str("/// The example plugins: (registered name, component file).\n");
    test_rs.push_str("pub const EXAMPLES: &[(&str, &str)] = &[\n");
    for (name, constant, _) in &examples {
        writeln!(test_rs, "    ({name:?}, {constant}),")?;
    }
    test_rs.push_str("];\n");
    std::fs::write(out_dir.join("test_plugins.rs"), test_rs)?;

    let mut builtin_rs = String::from("const SHIPPED_PLUGINS: &[BuiltinPlugin] = &[\n");
    for (name, wasm) in &shipped {
        writeln!(
            builtin_rs,
            "    BuiltinPlugin {{ name: {name:?}, bytes: include_bytes!({:?}) }},",
            wasm.display()
        )?;
    }
    builtin_rs.push_str("];\n");
    std::fs::write(out_dir.join("builtin_plugins.rs"), builtin_rs)?;
    Ok(())
}

/// Builds one plugin package and copies its component into `out_dir`.
fn build_plugin(
    workspace: &Path,
    plugin_target: &Path,
    out_dir: &Path,
    package: &str,
    feature: Option<&str>,
) -> BuildResult<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", WASM_TARGET, "-p", package])
        .arg("--target-dir")
        .arg(plugin_target);
    if let Some(feature) = feature {
        command.args(["--features", feature]);
    }
    // The outer build's settings (rustflags for the host, clippy's wrapper, the
    // package's own variables) must not leak into the wasm build; the jobserver, the
    // cargo home and registry settings must.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = ["CARGO_HOME", "CARGO_MAKEFLAGS"].contains(&key)
            || [
                "CARGO_NET_",
                "CARGO_HTTP_",
                "CARGO_REGISTRIES_",
                "CARGO_REGISTRY_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
        let host_only = key.starts_with("CARGO_")
            || [
                "RUSTFLAGS",
                "RUSTC_WORKSPACE_WRAPPER",
                "TARGET",
                "HOST",
                "OUT_DIR",
            ]
            .contains(&key);
        if host_only && !keep {
            command.env_remove(key);
        }
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!(
            "building plugin {package} for {WASM_TARGET} failed ({status}); \
             is the target installed (`rustup target add {WASM_TARGET}`)?"
        )
        .into());
    }
    let file = format!("{}.wasm", package.replace('-', "_"));
    let built = plugin_target.join(WASM_TARGET).join("release").join(&file);
    // Each feature's component is copied out before the next build overwrites the file.
    let embedded = match feature {
        Some(feature) => out_dir.join(format!("{}_{}.wasm", package.replace('-', "_"), feature)),
        None => out_dir.join(&file),
    };
    std::fs::copy(&built, &embedded)
        .map_err(|err| format!("copying {}: {err}", built.display()))?;
    Ok(embedded)
}
