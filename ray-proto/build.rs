//! Compiles `proto/` with protox (no `protoc` needed) and generates the prost messages
//! and the tonic client and server of `AutoscalerStateService`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ray/rpc/autoscaler.proto",
        "proto/ray/rpc/common.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
