//! `wasmray`: prints the version and the built-in plugins with their digests.

use wasmray::builtin::BUILTIN_PLUGINS;
use wasmray::runtime::digest_of;

fn main() {
    println!("wasmray {}", env!("CARGO_PKG_VERSION"));
    for plugin in BUILTIN_PLUGINS {
        println!("{} {}", plugin.name, digest_of(plugin.bytes));
    }
}
