//! Ray Serve's REST answers as WasmRay reads them: the dashboard's
//! `GET /api/serve/applications/` body (`ServeInstanceDetails`), with only the fields a
//! decision reads, and its comparison with a desired config.
//!
//! KubeRay remembers in operator memory which config it sent to which cluster, so a restart
//! sends every config again and a head restart without GCS fault tolerance is seen only as
//! "zero applications". Each application's `deployed_app_config` says what Ray runs, so a
//! config is sent exactly when Ray does not run it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::rayservice::{APPLICATION_STATUS_RUNNING, AppStatus, ServeDeploymentStatus};

/// Serve's name of an application whose config gives none, as KubeRay reports it.
const DEFAULT_APP_NAME: &str = "default";

/// Serve's status of one cluster, with only what a decision reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServeState {
    pub applications: BTreeMap<String, Application>,
    /// Health of the proxy on the head node (the Serve controller's node), if Serve runs.
    pub head_proxy_healthy: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Application {
    pub status: String,
    pub message: String,
    pub deployments: BTreeMap<String, (String, String)>,
    pub deployed_config: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawInstance {
    #[serde(default)]
    applications: Option<BTreeMap<String, RawApplication>>,
    #[serde(default)]
    controller_info: Option<RawController>,
    #[serde(default)]
    proxies: Option<BTreeMap<String, RawProxy>>,
}

#[derive(Deserialize, Default)]
struct RawController {
    #[serde(default)]
    node_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawProxy {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawApplication {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    deployments: Option<BTreeMap<String, RawDeployment>>,
    #[serde(default)]
    deployed_app_config: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RawDeployment {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl ServeState {
    /// Parses the dashboard's answer; an answer that is not Serve's shape is an error.
    pub fn parse(text: &str) -> Result<ServeState, String> {
        let raw: RawInstance = serde_json::from_str(text)
            .map_err(|error| format!("Ray Serve's status is not what Serve answers: {error}"))?;
        let applications = raw
            .applications
            .unwrap_or_default()
            .into_iter()
            .map(|(name, app)| {
                let name = if name.is_empty() {
                    DEFAULT_APP_NAME.to_owned()
                } else {
                    name
                };
                let deployments = app
                    .deployments
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, deployment)| {
                        (
                            name,
                            (
                                deployment.status.unwrap_or_default(),
                                deployment.message.unwrap_or_default(),
                            ),
                        )
                    })
                    .collect();
                let application = Application {
                    status: app.status.unwrap_or_default(),
                    message: app.message.unwrap_or_default(),
                    deployments,
                    deployed_config: app.deployed_app_config,
                };
                (name, application)
            })
            .collect();
        let head_node = raw
            .controller_info
            .and_then(|controller| controller.node_id);
        let head_proxy_healthy = head_node.map(|node| {
            raw.proxies
                .unwrap_or_default()
                .get(&node)
                .and_then(|proxy| proxy.status.as_deref())
                == Some("HEALTHY")
        });
        Ok(ServeState {
            applications,
            head_proxy_healthy,
        })
    }

    /// KubeRay's readiness: at least one application and every one RUNNING.
    pub fn all_running(&self) -> bool {
        !self.applications.is_empty()
            && self
                .applications
                .values()
                .all(|app| app.status == APPLICATION_STATUS_RUNNING)
    }

    /// The applications as the RayService status shows them.
    pub fn statuses(&self) -> BTreeMap<String, AppStatus> {
        self.applications
            .iter()
            .map(|(name, app)| {
                let deployments = app
                    .deployments
                    .iter()
                    .map(|(name, (status, message))| {
                        (
                            name.clone(),
                            ServeDeploymentStatus {
                                status: Some(status.clone()),
                                message: Some(message.clone()).filter(|m| !m.is_empty()),
                            },
                        )
                    })
                    .collect();
                let status = AppStatus {
                    serve_deployment_statuses: Some(deployments),
                    status: Some(app.status.clone()),
                    message: Some(app.message.clone()).filter(|m| !m.is_empty()),
                };
                (name.clone(), status)
            })
            .collect()
    }

    /// What Ray lacks of `desired`, or None when it runs exactly that: every desired
    /// application exists, no other does, and each deployed config holds every desired
    /// field with the desired value (Ray fills in defaults and turns 5 into 5.0, so the
    /// comparison is by inclusion and numbers by value).
    pub fn missing(&self, desired: &Value) -> Option<String> {
        let wanted: Vec<(String, &Value)> = desired
            .get("applications")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|app| {
                let name = app
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|name| !name.is_empty())
                    .unwrap_or(DEFAULT_APP_NAME);
                (name.to_owned(), app)
            })
            .collect();
        if self.applications.is_empty() {
            return Some("Serve runs no application".to_owned());
        }
        for (name, app) in &wanted {
            match self.applications.get(name) {
                None => return Some(format!("application {name} is not deployed")),
                Some(running) => {
                    let same = running
                        .deployed_config
                        .as_ref()
                        .is_some_and(|deployed| includes(deployed, app));
                    if !same {
                        return Some(format!("application {name} runs another config"));
                    }
                }
            }
        }
        self.applications
            .keys()
            .find(|name| !wanted.iter().any(|(wanted, _)| wanted == *name))
            .map(|extra| format!("application {extra} is not in the config"))
    }
}

impl ServeState {
    /// The desired fields Ray does not hold at all (e.g. `applications[math].no_such_field`):
    /// Serve's schema drops fields it does not know instead of refusing them.
    pub fn ignored_fields(&self, desired: &Value) -> Vec<String> {
        let mut ignored = Vec::new();
        for app in desired
            .get("applications")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = app
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .unwrap_or(DEFAULT_APP_NAME);
            if let Some(deployed) = self
                .applications
                .get(name)
                .and_then(|running| running.deployed_config.as_ref())
            {
                absent(
                    deployed,
                    app,
                    &format!("applications[{name}]"),
                    &mut ignored,
                );
            }
        }
        ignored
    }
}

/// Collects the paths of `want`'s keys that `have` lacks.
fn absent(have: &Value, want: &Value, path: &str, found: &mut Vec<String>) {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => {
            for (key, value) in want {
                match have.get(key) {
                    None => found.push(format!("{path}.{key}")),
                    Some(held) => absent(held, value, &format!("{path}.{key}"), found),
                }
            }
        }
        (Value::Array(have), Value::Array(want)) => {
            for (index, (held, value)) in have.iter().zip(want).enumerate() {
                absent(held, value, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// Whether `have` holds every field of `want` with the same value.
fn includes(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|held| includes(held, value))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| includes(h, w))
        }
        (Value::Number(have), Value::Number(want)) => have.as_f64() == want.as_f64(),
        _ => have == want,
    }
}
