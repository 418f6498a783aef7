//! Every sample parses into the types, serializes back to the same JSON and passes validation;
//! every invalid case yields its message at its field.

use serde_json::Value;
use wasmray_crds::samples::{invalid_cases, load_sample, sample_files};
use wasmray_crds::{FeatureGates, RayCluster, RayJob, RayService, validate_value};

/// JSON equality where 1 and 1.0 are the same number (f32 fields serialize with a fraction).
fn same_json(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| same_json(x, y)))
        }
        _ => left == right,
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) -> Value {
    let typed: T = serde_json::from_value(object.clone()).unwrap();
    serde_json::to_value(&typed).unwrap()
}

#[test]
fn samples_round_trip_and_validate() {
    let files = sample_files().unwrap();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for path in &files {
        let object = load_sample(path).unwrap();
        let kind = object["kind"].as_str().unwrap().to_owned();
        let again = match kind.as_str() {
            "RayCluster" => round_trip::<RayCluster>(&object),
            "RayJob" => round_trip::<RayJob>(&object),
            "RayService" => round_trip::<RayService>(&object),
            other => panic!("{}: unexpected kind {other}", path.display()),
        };
        assert!(
            same_json(&object, &again),
            "{} does not round-trip:\n{}\n---\n{}",
            path.display(),
            serde_json::to_string_pretty(&object).unwrap(),
            serde_json::to_string_pretty(&again).unwrap()
        );
        if let Err(errors) = validate_value(&object, &FeatureGates::default()).unwrap() {
            panic!("{} is invalid: {errors}", path.display());
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        kinds.values().all(|count| *count >= 2),
        "too few samples per kind: {kinds:?}"
    );
}

#[test]
fn invalid_objects_yield_their_messages() {
    let cases = invalid_cases().unwrap();
    assert!(cases.len() >= 30);
    for case in &cases {
        let object = case.object().unwrap();
        let errors = match validate_value(&object, &case.feature_gates()).unwrap() {
            Ok(()) => panic!("case {}: accepted", case.name),
            Err(errors) => errors,
        };
        assert!(
            errors
                .0
                .iter()
                .any(|error| error.field == case.field && error.message.contains(&case.message)),
            "case {}: expected `{}: {}`, got `{errors}`",
            case.name,
            case.field,
            case.message
        );
    }
}

#[test]
fn cel_cases_match_cel_messages_exactly() {
    // A CEL case's message must be a whole rule message in the CRD, or the API server's answer
    // would differ from the validation function's.
    let crds: String = wasmray_crds::crd::custom_resource_definitions()
        .unwrap()
        .iter()
        .map(|(_, crd)| serde_json::to_string(crd).unwrap())
        .collect();
    for case in invalid_cases().unwrap().iter().filter(|case| case.cel) {
        let quoted = serde_json::to_string(&case.message).unwrap();
        assert!(
            crds.contains(&format!("\"message\":{quoted}")),
            "case {}: no CEL rule with its message",
            case.name
        );
    }
}
