//! Writes the CRD YAML of RayCluster, RayJob and RayService into a directory:
//! `cargo run -p wasmray-crds --bin crdgen -- crds/generated`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: crdgen <output directory>");
        return ExitCode::from(2);
    };
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("crdgen: cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let crds = match wasmray_crds::crd::custom_resource_definitions() {
        Ok(crds) => crds,
        Err(error) => {
            eprintln!("crdgen: cannot build the CRDs: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (file_name, crd) in crds {
        let path = dir.join(file_name);
        let written = wasmray_crds::crd::to_yaml(&crd)
            .map_err(|error| error.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|error| error.to_string()));
        match written {
            Ok(()) => println!("wrote {}", path.display()),
            Err(error) => {
                eprintln!("crdgen: {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
