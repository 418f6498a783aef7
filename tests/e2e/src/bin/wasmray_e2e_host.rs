//! The `wasmray` operator's entry point, unchanged: `host/src/main.rs` calls the same
//! function. Built here because Cargo gives a package's tests only the paths of that
//! package's binaries (`CARGO_BIN_EXE_<name>`); tests/deploy.rs runs it as a subprocess.

fn main() -> std::process::ExitCode {
    wasmray::cli::main()
}
