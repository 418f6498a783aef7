//! `wasmray`: the WasmRay operator. Everything but the entry point lives in the library
//! ([`wasmray::cli`]), so tests run the same code as the binary.

fn main() -> std::process::ExitCode {
    wasmray::cli::main()
}
