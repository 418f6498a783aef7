//! The ray.io/v1 CRDs on a real API server: they install with server-side apply, every sample
//! is accepted, the CEL rules reject invalid objects with the validation functions' messages,
//! and `kubectl get` shows KubeRay's columns.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;
use wasmray_crds::samples::{invalid_cases, load_sample, sample_files};
use wasmray_crds::{RayCluster, RayJob, RayService, messages};

const FIELD_MANAGER: &str = "wasmray-crds-e2e";

fn generated_crds() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/generated");
    [
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    ]
    .iter()
    .map(|file| dir.join(file))
    .collect()
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let paths = generated_crds();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    wasmray_e2e::crds::apply_crd_files(client, &paths).await
}

/// Server-side applies one ray.io object into `namespace` and reads it back through the types.
async fn apply(client: &Client, namespace: &str, mut object: Value) -> anyhow::Result<()> {
    let metadata = object["metadata"]
        .as_object_mut()
        .context("object without metadata")?;
    // Apply needs a name; a sample written for `kubectl create` may only have generateName.
    if !metadata.contains_key("name") {
        let prefix = metadata
            .remove("generateName")
            .and_then(|v| v.as_str().map(str::to_owned));
        metadata.insert(
            "name".into(),
            Value::from(format!("{}applied", prefix.unwrap_or_default())),
        );
    }
    metadata.insert("namespace".into(), Value::from(namespace));
    let name = metadata["name"].as_str().unwrap_or_default().to_owned();
    let params = PatchParams::apply(FIELD_MANAGER);
    match object["kind"].as_str() {
        Some("RayCluster") => {
            Api::<RayCluster>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await?;
        }
        Some("RayJob") => {
            Api::<RayJob>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await?;
        }
        Some("RayService") => {
            Api::<RayService>::namespaced(client.clone(), namespace)
                .patch(&name, &params, &Patch::Apply(&object))
                .await?;
        }
        other => bail!("not a ray.io kind: {other:?}"),
    }
    Ok(())
}

async fn apply_all_samples(client: &Client, namespace: &str) -> anyhow::Result<usize> {
    let files = sample_files()?;
    for path in &files {
        let object = load_sample(path)?;
        apply(client, namespace, object)
            .await
            .with_context(|| format!("{} was not accepted", path.display()))?;
    }
    Ok(files.len())
}

#[tokio::test]
async fn crds_install_and_every_sample_is_accepted() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let client = cluster.client().await?;
    install_crds(&client).await?;
    let ns = cluster.namespace("crds-samples").await?;
    let applied = apply_all_samples(&client, &ns.name).await?;
    assert!(applied >= 15, "only {applied} samples");

    // The schema defaults apply and the stored object reads back into the types.
    let clusters: Api<RayCluster> = Api::namespaced(client.clone(), &ns.name);
    let stored = clusters.get("raycluster-gpu").await?;
    let group = &stored.spec.worker_groups()[2];
    assert_eq!(group.num_of_hosts, Some(1));
    let jobs: Api<RayJob> = Api::namespaced(client.clone(), &ns.name);
    let job = jobs.get("rayjob-use-existing-cluster").await?;
    assert_eq!(job.spec.backoff_limit, Some(0));
    assert_eq!(
        job.spec.submission_mode,
        Some(wasmray_crds::rayjob::JobSubmissionMode::K8sJobMode)
    );
    ns.cleanup(&client).await
}

#[tokio::test]
async fn api_server_rejects_invalid_objects_with_the_cel_messages() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let client = cluster.client().await?;
    install_crds(&client).await?;
    let ns = cluster.namespace("crds-invalid").await?;
    let mut checked = 0;
    for case in invalid_cases()? {
        let expected = match (&case.server_message, case.cel) {
            (Some(server_message), _) => server_message.clone(),
            (None, true) => case.message.clone(),
            (None, false) => continue,
        };
        match apply(&client, &ns.name, case.object()?).await {
            Ok(()) => bail!("case {}: the API server accepted it", case.name),
            Err(error) => {
                let text = format!("{error:#}");
                assert!(
                    text.contains(&expected),
                    "case {}: expected `{expected}`, got `{text}`",
                    case.name
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} cases checked against the API server"
    );

    // managedBy may not change once set (a transition rule, so it needs an existing object).
    let mut object =
        load_sample(&wasmray_crds::samples::samples_dir().join("ray-cluster.sample.yaml"))?;
    object["spec"]["managedBy"] = Value::from("ray.io/kuberay-operator");
    apply(&client, &ns.name, object.clone()).await?;
    object["spec"]["managedBy"] = Value::from("kueue.x-k8s.io/multikueue");
    let error = apply(&client, &ns.name, object)
        .await
        .err()
        .context("managedBy change was accepted")?;
    assert!(
        format!("{error:#}").contains(messages::MANAGED_BY_IMMUTABLE),
        "{error:#}"
    );
    ns.cleanup(&client).await
}

fn kubectl_get(
    cluster: &wasmray_e2e::TestCluster,
    namespace: &str,
    wide: bool,
) -> anyhow::Result<String> {
    let mut command = cluster.kubectl();
    command.args(["get", "rayclusters,rayjobs,rayservices", "-n", namespace]);
    if wide {
        command.args(["-o", "wide"]);
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "kubectl get failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Column names of each table header line, in order.
fn headers(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|line| line.starts_with("NAME "))
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn kubectl_get_shows_kuberay_columns() -> anyhow::Result<()> {
    let cluster = wasmray_e2e::cluster().await?;
    let client = cluster.client().await?;
    install_crds(&client).await?;
    let ns = cluster.namespace("crds-columns").await?;
    apply_all_samples(&client, &ns.name).await?;

    let expected = [
        vec![
            "NAME",
            "DESIRED WORKERS",
            "AVAILABLE WORKERS",
            "CPUS",
            "MEMORY",
            "GPUS",
            "STATUS",
            "AGE",
        ],
        vec![
            "NAME",
            "JOB STATUS",
            "DEPLOYMENT STATUS",
            "RAY CLUSTER NAME",
            "START TIME",
            "END TIME",
            "AGE",
        ],
        vec!["NAME", "SERVICE STATUS", "NUM SERVE ENDPOINTS"],
    ];
    let table = kubectl_get(cluster, &ns.name, false)?;
    assert_eq!(headers(&table), expected, "{table}");
    assert!(
        table.contains("rayjob-sample") && table.contains("rayservice-sample"),
        "{table}"
    );

    let wide = kubectl_get(cluster, &ns.name, true)?;
    let wide_cluster_columns = &headers(&wide)[0];
    assert_eq!(
        wide_cluster_columns,
        &[
            "NAME",
            "DESIRED WORKERS",
            "AVAILABLE WORKERS",
            "CPUS",
            "MEMORY",
            "GPUS",
            "TPUS",
            "STATUS",
            "AGE",
            "HEAD POD IP",
            "HEAD SERVICE IP"
        ],
        "{wide}"
    );
    ns.cleanup(&client).await
}
