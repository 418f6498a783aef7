//! Bindings generated from `wit/plugin@0.3.0/` (the newest contract) by wit-bindgen.
//!
//! The shared interfaces (`types`, `logging`) are generated once, from a world that only
//! imports them, and every role's world reuses them, so one Rust type per WIT type.
//! Each role's bindings sit behind a cargo feature because wit-bindgen embeds the world
//! in the component: a component must carry exactly one role.

#![allow(missing_docs, clippy::all)]

mod shared {
    wit_bindgen::generate!({
        inline: "
            package wasmray:sdk;
            world shared {
                import wasmray:plugin/types@0.3.0;
                import wasmray:plugin/logging@0.3.0;
            }
        ",
        path: "../../wit/plugin@0.3.0",
        world: "wasmray:sdk/shared",
        generate_all,
        additional_derives: [PartialEq],
    });
}

pub use shared::wasmray::plugin::{logging, types};

#[cfg(feature = "reconciler")]
pub mod reconciler {
    wit_bindgen::generate!({
        path: "../../wit/plugin@0.3.0",
        world: "wasmray:plugin/reconciler@0.3.0",
        with: {
            "wasmray:plugin/types@0.3.0": crate::bindings::types,
            "wasmray:plugin/logging@0.3.0": crate::bindings::logging,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_reconciler_world",
        default_bindings_module: "wasmray_plugin_sdk::bindings::reconciler",
        runtime_path: "wasmray_plugin_sdk::__private::wit_bindgen::rt",
    });
}

#[cfg(feature = "scheduler")]
pub mod scheduler {
    wit_bindgen::generate!({
        path: "../../wit/plugin@0.3.0",
        world: "wasmray:plugin/scheduler@0.3.0",
        features: ["scheduler-role"],
        with: {
            "wasmray:plugin/types@0.3.0": crate::bindings::types,
            "wasmray:plugin/logging@0.3.0": crate::bindings::logging,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_scheduler_world",
        default_bindings_module: "wasmray_plugin_sdk::bindings::scheduler",
        runtime_path: "wasmray_plugin_sdk::__private::wit_bindgen::rt",
    });
}

#[cfg(feature = "autoscaler")]
pub mod autoscaler {
    wit_bindgen::generate!({
        path: "../../wit/plugin@0.3.0",
        world: "wasmray:plugin/autoscaler@0.3.0",
        features: ["autoscaler-role"],
        with: {
            "wasmray:plugin/types@0.3.0": crate::bindings::types,
            "wasmray:plugin/logging@0.3.0": crate::bindings::logging,
        },
        additional_derives: [PartialEq],
        pub_export_macro: true,
        export_macro_name: "__export_autoscaler_world",
        default_bindings_module: "wasmray_plugin_sdk::bindings::autoscaler",
        runtime_path: "wasmray_plugin_sdk::__private::wit_bindgen::rt",
    });
}
