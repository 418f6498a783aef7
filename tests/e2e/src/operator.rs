//! An operator running in the test's own runtime, one per test and namespace, and the
//! fixture the RayCluster tests share: a namespace, the CRDs, an admin client, a running
//! operator, and the waits and reads the tests make.
//!
//! In-process rather than the built binary: each test can install extra plugins (the
//! hostile test plugin) and read the controller's counters, and no second build of the
//! host is needed. `main.rs` only parses flags and calls the same `controller::run`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use wasmray::controller::{self, ControllerConfig, plugin_host::PluginHost};
use wasmray::runtime::{Runtime, RuntimeConfig};
use wasmray_crds::RayCluster;
use wasmray_crds::samples::{load_sample, samples_dir};

/// Generous: the machine running the tests may be loaded.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// A controller running in this test's runtime.
pub struct Operator {
    /// Its user agent, which tells its requests apart in the audit log.
    pub agent: String,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: Arc<controller::Stats>,
}

impl Operator {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// A change to the controller configuration.
pub type Configure = Box<dyn FnOnce(&mut ControllerConfig) + Send>;

#[derive(Default)]
pub struct OperatorOptions {
    pub feature_gates: BTreeMap<String, bool>,
    /// (name, component path, plugin configuration) of extra plugins.
    pub extra_plugins: Vec<(String, PathBuf, String)>,
    /// The client's request rate limit (qps, burst), as the operator's flags set it; none
    /// by default.
    pub rate_limit: Option<(f32, u32)>,
    /// Changes to the controller configuration beyond those.
    pub configure: Option<Configure>,
}

/// Compiled plugin code shared by the tests of this process.
pub fn plugin_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wasmray-e2e-plugin-cache-{}", std::process::id()))
}

pub async fn client_with_agent(agent: &str) -> anyhow::Result<Client> {
    limited_client_with_agent(agent, None).await
}

/// A client with the operator's request rate limit (`(qps, burst)`) when given.
pub async fn limited_client_with_agent(
    agent: &str,
    rate_limit: Option<(f32, u32)>,
) -> anyhow::Result<Client> {
    let cluster = crate::cluster().await?;
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let config = controller::with_user_agent(config, agent);
    Ok(match rate_limit {
        None => Client::try_from(config)?,
        Some((qps, burst)) => wasmray::client::build(
            config,
            wasmray::client::TokenBucket::new(qps, burst),
            Arc::default(),
        )?,
    })
}

/// Writes (create, update, patch, delete) the audit log holds from `agent`.
pub fn audited_writes(path: &std::path::Path, agent: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["userAgent"] == agent && event["stage"] == "ResponseComplete")
        .collect())
}

pub async fn start_operator(namespace: &str, options: OperatorOptions) -> anyhow::Result<Operator> {
    let agent = format!("{}-e2e-{namespace}", controller::USER_AGENT);
    let client = limited_client_with_agent(&agent, options.rate_limit).await?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(plugin_cache_dir()),
        ..RuntimeConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    runtime.install_builtins().await?;
    let mut plugin_config = BTreeMap::new();
    for (name, path, config) in &options.extra_plugins {
        let plugin = runtime.load_file(name, path).await?;
        runtime.registry().install(plugin);
        plugin_config.insert(name.clone(), config.clone());
    }
    let mut config = ControllerConfig {
        namespaces: vec![namespace.to_owned()],
        concurrency: 4,
        feature_gates: options.feature_gates,
        plugin_config,
        ..ControllerConfig::default()
    };
    if let Some(configure) = options.configure {
        configure(&mut config);
    }
    let stats = Arc::new(controller::Stats::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let plugins = PluginHost::new(Arc::new(runtime));
    let task = tokio::spawn(controller::run_with_stats(
        client,
        plugins,
        config,
        stopped,
        stats.clone(),
    ));
    Ok(Operator {
        agent,
        stop,
        task,
        stats,
    })
}

/// A namespace, the CRDs, an admin client and a running operator.
pub struct Fixture {
    pub client: Client,
    pub ns: crate::TestNamespace,
    pub operator: Operator,
}

impl Fixture {
    pub async fn new(prefix: &str, options: OperatorOptions) -> anyhow::Result<Fixture> {
        let cluster = crate::cluster().await?;
        let client = cluster.client().await?;
        let crd = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../crds/generated/ray.io_rayclusters.yaml");
        crate::crds::apply_crd_files(&client, &[crd.as_path()]).await?;
        let ns = cluster.namespace(prefix).await?;
        let operator = start_operator(&ns.name, options).await?;
        Ok(Fixture {
            client,
            ns,
            operator,
        })
    }

    /// Like [`Fixture::new`], in a namespace whose pods the pod runner runs as real Ray
    /// processes (`TestCluster::ray_namespace`), with the RayJob and RayService CRDs too, and an operator
    /// that reaches each head by its pod IP, as one outside the cluster's DNS would.
    pub async fn with_real_ray(
        prefix: &str,
        mut options: OperatorOptions,
    ) -> anyhow::Result<Fixture> {
        let cluster = crate::cluster().await?;
        let client = cluster.client().await?;
        let generated =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated");
        crate::crds::apply_crd_files(
            &client,
            &[
                generated.join("ray.io_rayclusters.yaml").as_path(),
                generated.join("ray.io_rayjobs.yaml").as_path(),
                generated.join("ray.io_rayservices.yaml").as_path(),
            ],
        )
        .await?;
        let ns = cluster.ray_namespace(prefix).await?;
        let configure = options.configure.take();
        options.configure = Some(Box::new(move |config: &mut ControllerConfig| {
            config.ray_head_address = wasmray::ray::HeadAddress::PodIp;
            config.ray_timeout = Duration::from_secs(10);
            if let Some(configure) = configure {
                configure(config);
            }
        }));
        let operator = start_operator(&ns.name, options).await?;
        Ok(Fixture {
            client,
            ns,
            operator,
        })
    }

    pub fn clusters(&self) -> Api<RayCluster> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn services_api(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn create(&self, object: Value) -> anyhow::Result<RayCluster> {
        let cluster: RayCluster = serde_json::from_value(object)?;
        Ok(self
            .clusters()
            .create(&PostParams::default(), &cluster)
            .await?)
    }

    pub async fn create_sample(&self, file: &str) -> anyhow::Result<RayCluster> {
        self.create(load_sample(&samples_dir().join(file))?).await
    }

    /// The pods of a cluster (terminating ones excluded).
    pub async fn pods(&self, cluster: &str) -> anyhow::Result<Vec<Pod>> {
        let list = self
            .pods_api()
            .list(&ListParams::default().labels(&format!("ray.io/cluster={cluster}")))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect())
    }

    pub async fn workers(&self, cluster: &str, group: &str) -> anyhow::Result<Vec<Pod>> {
        Ok(self
            .pods(cluster)
            .await?
            .into_iter()
            .filter(|pod| pod.labels().get("ray.io/group").map(String::as_str) == Some(group))
            .collect())
    }

    pub async fn status(&self, cluster: &str) -> anyhow::Result<Value> {
        let cluster = self.clusters().get(cluster).await?;
        Ok(serde_json::to_value(&cluster)?["status"].clone())
    }

    pub async fn patch_spec(&self, cluster: &str, patch: Value) -> anyhow::Result<()> {
        self.clusters()
            .patch(
                cluster,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": patch})),
            )
            .await?;
        Ok(())
    }

    /// Waits until the cluster is `ready` with `pods` pods, all Running and Ready.
    pub async fn wait_ready(&self, cluster: &str, pods: usize) -> anyhow::Result<()> {
        eventually(&format!("{cluster} ready with {pods} pods"), || async {
            let status = self.status(cluster).await?;
            ensure!(status["state"] == "ready", "state is {}", status["state"]);
            let live = self.pods(cluster).await?;
            ensure!(live.len() == pods, "{} pods", live.len());
            for pod in &live {
                ensure!(
                    crate::pod_running_and_ready(pod),
                    "pod {} is not Running and Ready",
                    pod.name_any()
                );
            }
            Ok(())
        })
        .await
    }

    /// Waits until the group has exactly `count` live pods, all Running and Ready.
    pub async fn wait_group(
        &self,
        cluster: &str,
        group: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Pod>> {
        eventually(
            &format!("{cluster}/{group} with {count} ready pods"),
            || async {
                let workers = self.workers(cluster, group).await?;
                ensure!(workers.len() == count, "{} pods", workers.len());
                ensure!(
                    workers.iter().all(crate::pod_running_and_ready),
                    "not all ready"
                );
                Ok(workers)
            },
        )
        .await
    }

    pub async fn events(&self, cluster: &str) -> anyhow::Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        Ok(events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|event| {
                event.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("RayCluster") && r.name.as_deref() == Some(cluster)
                })
            })
            .collect())
    }

    pub async fn finish(self) -> anyhow::Result<()> {
        self.operator.shutdown().await;
        self.ns.cleanup(&self.client).await
    }
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub fn condition_status(status: &Value, type_: &str) -> Option<String> {
    condition(status, type_).and_then(|c| c["status"].as_str().map(str::to_owned))
}

/// Polls `check` until it succeeds or [`TIMEOUT`] passes; the error names the last failure.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    crate::eventually(what, TIMEOUT, check).await
}
