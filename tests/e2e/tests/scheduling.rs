//! Batch scheduling end to end: the host calls the bound scheduler plugin before a
//! RayCluster's pods are created, writes its objects first and carries out its patches.
//!
//! The gang test runs on a real gang scheduler: the test control plane's own
//! kube-scheduler with workload-aware scheduling on (`testcp up` turns on the
//! `GenericWorkload` and `GangScheduling` gates and serves `scheduling.k8s.io/v1alpha2`).
//! Volcano's and scheduler-plugins' schedulers cannot be built here, so for them the API
//! server validates their objects against CRDs written from their documented API
//! (`tests/e2e/crds/`), and the pods carry what those schedulers read.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use wasmray::controller::ControllerConfig;
use wasmray_e2e::operator::{Fixture, OperatorOptions, condition, eventually};

/// A fixture whose operator binds RayClusters to `scheduler` (`--batch-scheduler`).
async fn fixture(prefix: &str, scheduler: &str) -> anyhow::Result<Fixture> {
    let scheduler = scheduler.to_owned();
    let options = OperatorOptions {
        configure: Some(Box::new(move |config: &mut ControllerConfig| {
            config.batch_scheduler = Some(scheduler);
        })),
        ..OperatorOptions::default()
    };
    Fixture::new(prefix, options).await
}

async fn install_scheduler_crds(fx: &Fixture) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    wasmray_e2e::crds::apply_crd_files(
        &fx.client,
        &[
            dir.join("scheduling.volcano.sh_podgroups.yaml").as_path(),
            dir.join("scheduling.volcano.sh_queues.yaml").as_path(),
            dir.join("scheduling.x-k8s.io_podgroups.yaml").as_path(),
        ],
    )
    .await
}

/// A cluster of a 1-CPU head and `workers` 1-CPU workers, with extra metadata.
fn cluster(name: &str, workers: i32, labels: Value, annotations: Value) -> Value {
    let container = |name: &str| {
        json!({
            "name": name,
            "image": "rayproject/ray:2.60.0",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        })
    };
    json!({
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-head")]}},
            },
            "workerGroupSpecs": [{
                "groupName": "workers",
                "replicas": workers,
                "minReplicas": 0,
                "maxReplicas": 8,
                "rayStartParams": {},
                "template": {"spec": {"containers": [container("ray-worker")]}},
            }],
        },
    })
}

fn dynamic_api(fx: &Fixture, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(fx.client.clone(), &fx.ns.name, &resource)
}

/// The object once the operator has written it.
async fn created(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<DynamicObject> {
    eventually(&format!("{name} written"), || async {
        Ok(api.get(name).await?)
    })
    .await
}

fn owned_by(object: &DynamicObject, uid: &str) -> bool {
    object
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.annotations().get(key).map(String::as_str)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.labels().get(key).map(String::as_str)
}

fn scheduler_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.scheduler_name.as_deref()
}

/// Waits for `count` pods of `cluster` and returns them.
async fn pods(fx: &Fixture, cluster: &str, count: usize) -> anyhow::Result<Vec<Pod>> {
    eventually(&format!("{count} pods of {cluster}"), || async {
        let pods = fx.pods(cluster).await?;
        ensure!(pods.len() == count, "{} pods", pods.len());
        Ok(pods)
    })
    .await
}

/// A kwok node of 4 CPUs that only the gang test's pods tolerate.
fn gang_node(name: &str, key: &str) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {key: "yes"},
        },
        "spec": {"taints": [{"key": key, "value": "yes", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        },
    }))?)
}

/// The test's nodes, deleted however the test ends.
struct Nodes {
    api: Api<Node>,
    names: Vec<String>,
}

impl Nodes {
    async fn add(&mut self, node: Node) -> anyhow::Result<()> {
        self.names.push(node.name_any());
        self.api.create(&PostParams::default(), &node).await?;
        Ok(())
    }

    async fn remove_all(&self) {
        for name in &self.names {
            let _ = self.api.delete(name, &DeleteParams::default()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_does_not_fit_waits_whole_and_is_scheduled_in_one_piece() -> anyhow::Result<()>
{
    let fx = fixture("gang", "kubernetes-was").await?;
    let key = format!("wasmray-test/gang-{}", fx.ns.name);
    let mut nodes = Nodes {
        api: Api::all(fx.client.clone()),
        names: Vec::new(),
    };
    let result = async {
        nodes
            .add(gang_node(&format!("{}-a", fx.ns.name), &key)?)
            .await?;
        // Head and 4 workers of 1 CPU each: 5 CPUs, on nodes of 4.
        let mut spec = cluster(
            "gang",
            4,
            json!({"ray.io/gang-scheduling-enabled": "true"}),
            json!({}),
        );
        for template in [
            "/spec/headGroupSpec/template/spec",
            "/spec/workerGroupSpecs/0/template/spec",
        ] {
            let pod_spec = spec.pointer_mut(template).context("template")?;
            pod_spec["nodeSelector"] = json!({&key: "yes"});
            pod_spec["tolerations"] = json!([{"key": &key, "operator": "Exists"}]);
        }
        let cluster = fx.create(spec).await?;
        let uid = cluster.uid().context("uid")?;

        let pod_groups = dynamic_api(&fx, "scheduling.k8s.io", "v1alpha2", "PodGroup");
        let workloads = dynamic_api(&fx, "scheduling.k8s.io", "v1alpha2", "Workload");
        let workload = created(&workloads, "gang").await?;
        ensure!(owned_by(&workload, &uid), "the Workload is the cluster's");
        ensure!(
            workload.data["spec"]["podGroupTemplates"][0]["schedulingPolicy"]["gang"]["minCount"]
                == 5,
            "gang of 5: {}",
            workload.data["spec"]
        );
        let pods = pods(&fx, "gang", 5).await?;
        for pod in &pods {
            let group = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.scheduling_group.as_ref())
                .and_then(|group| group.pod_group_name.as_deref());
            ensure!(
                group == Some("gang-cluster"),
                "{} in {group:?}",
                pod.name_any()
            );
        }
        // The scheduler finds the gang unschedulable as a whole and binds none of it.
        eventually("the gang found unschedulable", || async {
            let group = pod_groups.get("gang-cluster").await?;
            let scheduled = group.data["status"]["conditions"]
                .as_array()
                .and_then(|all| all.iter().find(|c| c["type"] == "PodGroupScheduled"))
                .cloned()
                .unwrap_or(Value::Null);
            ensure!(
                scheduled["status"] == "False" && scheduled["reason"] == "Unschedulable",
                "PodGroupScheduled: {scheduled}"
            );
            Ok(())
        })
        .await?;
        let bound = fx
            .pods("gang")
            .await?
            .iter()
            .filter(|pod| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
            })
            .count();
        ensure!(
            bound == 0,
            "{bound} pods of an unschedulable gang were bound"
        );

        // Room for all five: the whole gang is scheduled.
        nodes
            .add(gang_node(&format!("{}-b", fx.ns.name), &key)?)
            .await?;
        eventually("the whole gang bound", || async {
            let pods = fx.pods("gang").await?;
            let bound = pods
                .iter()
                .filter(|pod| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                })
                .count();
            ensure!(bound == 5, "{bound} of 5 pods bound");
            Ok(())
        })
        .await?;
        Ok(())
    }
    .await;
    // The namespace first: kwok plays the kubelet of the nodes' pods until they are gone.
    let finished = fx.finish().await;
    nodes.remove_all().await;
    result?;
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_built_in_scheduler_writes_what_its_scheduler_reads() -> anyhow::Result<()> {
    let fx = fixture("schedulers", "volcano").await?;
    install_scheduler_crds(&fx).await?;

    // Volcano, the operator's default here.
    let volcano = fx
        .create(cluster(
            "vc",
            2,
            json!({"volcano.sh/queue-name": "research", "ray.io/priority-class-name": "high"}),
            json!({"team": "ml"}),
        ))
        .await?;
    // The others, chosen per object.
    let coscheduling = fx
        .create(cluster(
            "co",
            2,
            json!({"ray.io/gang-scheduling-enabled": "true"}),
            json!({"wasmray.io/scheduler": "scheduler-plugins"}),
        ))
        .await?;
    fx.create(cluster(
        "yk",
        1,
        json!({
            "ray.io/gang-scheduling-enabled": "true",
            "yunikorn.apache.org/app-id": "app-7",
            "yunikorn.apache.org/queue": "root.ray",
        }),
        json!({"wasmray.io/scheduler": "yunikorn"}),
    ))
    .await?;
    fx.create(cluster(
        "kai",
        1,
        json!({"kai.scheduler/queue": "team-a"}),
        json!({"wasmray.io/scheduler": "kai-scheduler"}),
    ))
    .await?;
    fx.create(cluster(
        "plain",
        1,
        json!({}),
        json!({"wasmray.io/scheduler": "none"}),
    ))
    .await?;

    let group = created(
        &dynamic_api(&fx, "scheduling.volcano.sh", "v1beta1", "PodGroup"),
        "ray-vc-pg",
    )
    .await?;
    ensure!(
        owned_by(&group, &volcano.uid().context("uid")?),
        "owned by vc"
    );
    let spec = &group.data["spec"];
    ensure!(spec["minMember"] == 3, "minMember: {spec}");
    ensure!(
        spec["minResources"] == json!({"cpu": "3", "memory": "3Gi"}),
        "minResources: {spec}"
    );
    ensure!(
        spec["queue"] == "research" && spec["priorityClassName"] == "high",
        "{spec}"
    );
    ensure!(group.annotations().get("team").map(String::as_str) == Some("ml"));
    for pod in pods(&fx, "vc", 3).await? {
        ensure!(scheduler_name(&pod) == Some("volcano"));
        ensure!(annotation(&pod, "scheduling.k8s.io/group-name") == Some("ray-vc-pg"));
        let task = annotation(&pod, "volcano.sh/task-spec");
        let group = label(&pod, "ray.io/group");
        ensure!(
            task == group && task.is_some(),
            "task {task:?} group {group:?}"
        );
        ensure!(label(&pod, "volcano.sh/queue-name") == Some("research"));
    }

    let group = created(
        &dynamic_api(&fx, "scheduling.x-k8s.io", "v1alpha1", "PodGroup"),
        "co",
    )
    .await?;
    ensure!(owned_by(&group, &coscheduling.uid().context("uid")?));
    ensure!(
        group.data["spec"]["minMember"] == 3,
        "{}",
        group.data["spec"]
    );
    for pod in pods(&fx, "co", 3).await? {
        ensure!(scheduler_name(&pod) == Some("scheduler-plugins-scheduler"));
        ensure!(label(&pod, "scheduling.x-k8s.io/pod-group") == Some("co"));
    }

    for pod in pods(&fx, "yk", 2).await? {
        ensure!(scheduler_name(&pod) == Some("yunikorn"));
        ensure!(label(&pod, "applicationId") == Some("app-7"));
        ensure!(label(&pod, "queue") == Some("root.ray"));
        let groups: Value = serde_json::from_str(
            annotation(&pod, "yunikorn.apache.org/task-groups").context("task groups")?,
        )?;
        ensure!(groups[0]["name"] == "headgroup" && groups[1]["name"] == "workers");
        ensure!(
            annotation(&pod, "yunikorn.apache.org/task-group-name") == label(&pod, "ray.io/group")
        );
    }

    for pod in pods(&fx, "kai", 2).await? {
        ensure!(scheduler_name(&pod) == Some("kai-scheduler"));
        ensure!(label(&pod, "kai.scheduler/queue") == Some("team-a"));
    }

    for pod in pods(&fx, "plain", 2).await? {
        ensure!(
            scheduler_name(&pod) == Some("default-scheduler"),
            "none means none"
        );
    }
    fx.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_refused_or_rejected_schedule_creates_no_pod() -> anyhow::Result<()> {
    let fx = fixture("sched-bad", "volcano").await?;
    install_scheduler_crds(&fx).await?;

    // KAI without a queue: held, and the cluster says why.
    fx.create(cluster(
        "held",
        1,
        json!({}),
        json!({"wasmray.io/scheduler": "kai-scheduler"}),
    ))
    .await?;
    // Volcano with a topology mode its API refuses: the PodGroup is rejected.
    fx.create(cluster(
        "rejected",
        1,
        json!({"volcano.sh/network-topology-mode": "bogus"}),
        json!({}),
    ))
    .await?;
    // Volcano with a tier that is not a number: the plugin refuses the cluster.
    fx.create(cluster(
        "refused",
        1,
        json!({
            "volcano.sh/network-topology-mode": "soft",
            "volcano.sh/network-topology-highest-tier-allowed": "two",
        }),
        json!({}),
    ))
    .await?;

    let held = eventually("held says why", || async {
        let status = fx.status("held").await?;
        let held = condition(&status, "SchedulingHeld")
            .cloned()
            .unwrap_or_default();
        ensure!(held["status"] == "True", "SchedulingHeld: {held}");
        Ok(held)
    })
    .await?;
    let message = held["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("kai-scheduler") && message.contains("kai.scheduler/queue"),
        "{message}"
    );
    let rejected = eventually("rejected says why", || async {
        let status = fx.status("rejected").await?;
        let failure = condition(&status, "WriteFailure")
            .cloned()
            .unwrap_or_default();
        ensure!(failure["status"] == "True", "WriteFailure: {failure}");
        Ok(failure)
    })
    .await?;
    let message = rejected["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("PodGroup") && message.contains("ray-rejected-pg"),
        "{message}"
    );
    let refused = eventually("refused says why", || async {
        let status = fx.status("refused").await?;
        let failure = condition(&status, "PluginFailure")
            .cloned()
            .unwrap_or_default();
        ensure!(failure["status"] == "True", "PluginFailure: {failure}");
        Ok(failure)
    })
    .await?;
    let message = refused["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("volcano") && message.contains("highest-tier-allowed"),
        "{message}"
    );
    let reasons = |events: Vec<k8s_openapi::api::events::v1::Event>| -> Vec<String> {
        events
            .into_iter()
            .filter_map(|event| event.reason)
            .collect()
    };
    ensure!(reasons(fx.events("held").await?).contains(&"SchedulingHeld".to_owned()));
    ensure!(reasons(fx.events("rejected").await?).contains(&"FailedToSchedulePods".to_owned()));
    ensure!(reasons(fx.events("refused").await?).contains(&"PluginFailure".to_owned()));
    // Give a wrong turn time to show, then: not one pod of the three.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["held", "rejected", "refused"] {
        let pods = fx.pods(name).await?;
        ensure!(pods.is_empty(), "{name} has {} pods", pods.len());
    }

    // The queue label arrives: the pods are created and the hold is withdrawn.
    fx.clusters()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"kai.scheduler/queue": "team-a"}}})),
        )
        .await?;
    pods(&fx, "held", 2).await?;
    eventually("the hold withdrawn", || async {
        let status = fx.status("held").await?;
        ensure!(condition(&status, "SchedulingHeld").is_none(), "{status}");
        Ok(())
    })
    .await?;
    fx.finish().await
}
