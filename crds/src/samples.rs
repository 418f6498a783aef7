//! The project's sample objects (`crds/samples/`) and the table of invalid objects
//! (`crds/samples/invalid/cases.yaml`), read by the unit tests here and by the API-server tests
//! in `tests/e2e`, so both check the same table.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::FeatureGates;

/// Directory of the sample YAML files.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Every sample file, sorted by name.
pub fn sample_files() -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(samples_dir())?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
    files.sort();
    Ok(files)
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("case {case}: no field at {pointer}")]
    BadPointer { case: String, pointer: String },
}

/// A sample file as JSON (what the API server receives).
pub fn load_sample(path: &Path) -> Result<Value, SampleError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SampleError::Read {
        path: display.clone(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| SampleError::Yaml {
        path: display,
        source,
    })
}

/// One invalid object: a sample with some fields changed, and the error it must yield.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidCase {
    pub name: String,
    /// Sample file the case starts from.
    pub sample: String,
    /// JSON pointer to new value; the last segment is created when missing.
    #[serde(default)]
    pub set: Vec<(String, Value)>,
    /// JSON pointers of fields to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Feature gates turned on for this case (on top of the v1.5.1 defaults).
    #[serde(default)]
    pub gates: Vec<String>,
    /// The field the validation function names and its message.
    pub field: String,
    pub message: String,
    /// The CRD has a CEL rule with the same message: the API server rejects the object.
    #[serde(default)]
    pub cel: bool,
    /// A message the API server gives from the schema itself (enum, minimum...), if any.
    #[serde(default)]
    pub server_message: Option<String>,
}

impl InvalidCase {
    /// The invalid object.
    pub fn object(&self) -> Result<Value, SampleError> {
        let mut object = load_sample(&samples_dir().join(&self.sample))?;
        let bad_pointer = |pointer: &str| SampleError::BadPointer {
            case: self.name.clone(),
            pointer: pointer.to_owned(),
        };
        for (pointer, value) in &self.set {
            let (parent, key) = pointer
                .rsplit_once('/')
                .ok_or_else(|| bad_pointer(pointer))?;
            match object
                .pointer_mut(parent)
                .ok_or_else(|| bad_pointer(pointer))?
            {
                Value::Object(map) => {
                    map.insert(key.replace("~1", "/").replace("~0", "~"), value.clone());
                }
                Value::Array(items) => match key.parse::<usize>() {
                    Ok(index) if index == items.len() => items.push(value.clone()),
                    Ok(index) if index < items.len() => items[index] = value.clone(),
                    _ => return Err(bad_pointer(pointer)),
                },
                _ => return Err(bad_pointer(pointer)),
            }
        }
        for pointer in &self.remove {
            let (parent, key) = pointer
                .rsplit_once('/')
                .ok_or_else(|| bad_pointer(pointer))?;
            let removed = object
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .and_then(|map| map.remove(key));
            removed.ok_or_else(|| bad_pointer(pointer))?;
        }
        Ok(object)
    }

    pub fn feature_gates(&self) -> FeatureGates {
        let mut gates = FeatureGates::default();
        for gate in &self.gates {
            match gate.as_str() {
                "RayJobDeletionPolicy" => gates.ray_job_deletion_policy = true,
                "RayServiceIncrementalUpgrade" => gates.ray_service_incremental_upgrade = true,
                "RayMultiHostIndexing" => gates.ray_multi_host_indexing = true,
                _ => {}
            }
        }
        gates
    }
}

/// The table of invalid objects.
pub fn invalid_cases() -> Result<Vec<InvalidCase>, SampleError> {
    let path = samples_dir().join("invalid").join("cases.yaml");
    let display = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| SampleError::Read {
        path: display.clone(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| SampleError::Yaml {
        path: display,
        source,
    })
}
