//! Table tests of the RayService plugin: one call at a time, from a RayService, its
//! clusters, Services and Ray's answer, to the writes, actions and status it decides.

use serde_json::{Value, json};
use wasmray_crds::RayServiceStatuses;
use wasmray_crds::constants::RAY_SERVICE_FINALIZER;
use wasmray_plugin_sdk::reconciler::{
    ActionResult, FinalizerIntent, RayActionKind, RayObservations, RayQuery, ReconcileInput,
    ReconcileOutput, run,
};
use wasmray_plugin_sdk::record::{Pod, PodCondition};
use wasmray_plugin_sdk::{
    EventType, HostFacts, ObservedObject, ObservedPods, ObservedService, Timestamp, WriteMode,
};

use crate::cluster::{cluster_name, desired_cluster};
use crate::reconcile::RayServiceReconciler;

const NOW: i64 = 1_795_400_000;
const UID: &str = "5e1f-uid";
const CONFIG: &str = "applications:\n- name: fruit\n  import_path: fruit:app\n  route_prefix: /fruit\n- name: math\n  import_path: math:app\n  route_prefix: /math\n";

fn rfc(seconds_before_now: i64) -> String {
    Timestamp {
        seconds: NOW - seconds_before_now,
        nanos: 0,
    }
    .to_rfc3339()
}

fn service(generation: i64, head_cpus: &str, status: Value) -> Value {
    json!({
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "rs", "namespace": "ns", "uid": UID, "generation": generation},
        "spec": {
            "serveConfigV2": CONFIG,
            "rayClusterDeletionDelaySeconds": 30,
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": head_cpus},
                    "template": {"spec": {"containers": [{
                        "name": "ray-head", "image": "rayproject/ray:2.60.0",
                        "ports": [{"name": "dashboard", "containerPort": 8265},
                                  {"name": "serve", "containerPort": 8000}]
                    }]}}
                },
                "workerGroupSpecs": [{"groupName": "small", "replicas": 1, "minReplicas": 1, "maxReplicas": 3,
                    "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0"}]}}}]
            }
        },
        "status": status,
    })
}

/// The cluster the plugin would create for `service`, as the API server returns it.
fn cluster(service: &Value, name: &str, head_ready: bool, created_before: i64) -> ObservedObject {
    let parsed: wasmray_crds::RayService = serde_json::from_value(service.clone()).unwrap();
    let mut object = serde_json::to_value(desired_cluster(&parsed, name)).unwrap();
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    object["metadata"]["creationTimestamp"] = json!(rfc(created_before));
    object["status"] = json!({
        "state": if head_ready { json!("ready") } else { Value::Null },
        "endpoints": {"dashboard": "8265", "serve": "8000"},
        "conditions": [{"type": "HeadPodReady", "status": if head_ready { "True" } else { "False" },
                        "reason": "x", "message": "", "lastTransitionTime": rfc(100)}],
    });
    ObservedObject {
        api_version: "ray.io/v1".into(),
        kind: "RayCluster".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        object: object.to_string(),
    }
}

fn serve_svc(cluster: &str) -> ObservedService {
    ObservedService {
        name: "rs-serve-svc".into(),
        uid: "uid-serve".into(),
        labels: vec![],
        annotations: vec![],
        creation_timestamp: None,
        deletion_timestamp: None,
        service_type: None,
        cluster_ip: Some("10.0.0.9".into()),
        selector: vec![
            ("ray.io/cluster".into(), cluster.into()),
            ("ray.io/serve".into(), "true".into()),
        ],
        ports: vec![],
    }
}

/// Serve's answer with `apps` as (name, status, deployed config).
fn serve_answer(apps: &[(&str, &str, Value)]) -> String {
    let applications: serde_json::Map<String, Value> = apps
        .iter()
        .map(|(name, status, config)| {
            (
                (*name).to_owned(),
                json!({"name": name, "status": status, "message": "",
                       "deployed_app_config": config,
                       "deployments": {"D": {"status": "HEALTHY", "message": ""}}}),
            )
        })
        .collect();
    json!({"controller_info": {"node_id": "n1"}, "proxies": {"n1": {"status": "HEALTHY"}},
           "applications": applications})
    .to_string()
}

fn running_apps() -> String {
    serve_answer(&[
        (
            "fruit",
            "RUNNING",
            json!({"name": "fruit", "import_path": "fruit:app", "route_prefix": "/fruit"}),
        ),
        (
            "math",
            "RUNNING",
            json!({"name": "math", "import_path": "math:app", "route_prefix": "/math"}),
        ),
    ])
}

/// The running head pod of `cluster`, labelled as serving and ready.
fn serving_head(cluster: &str) -> Pod {
    serving_pod(cluster, true)
}

/// The running head pod of `cluster`, labelled as serving, ready or not.
fn serving_pod(cluster: &str, ready: bool) -> Pod {
    Pod {
        name: format!("{cluster}-head"),
        uid: format!("uid-{cluster}-head"),
        resource_version: "1".to_owned(),
        labels: vec![
            ("ray.io/cluster".to_owned(), cluster.to_owned()),
            ("ray.io/node-type".to_owned(), "head".to_owned()),
            ("ray.io/serve".to_owned(), "true".to_owned()),
        ],
        annotations: Vec::new(),
        creation_timestamp: None,
        deletion_timestamp: None,
        node_name: Some("node".to_owned()),
        restart_policy: None,
        scheduler_name: None,
        phase: Some("Running".to_owned()),
        reason: None,
        message: None,
        pod_ip: Some("127.129.0.5".to_owned()),
        host_ip: None,
        start_time: None,
        conditions: vec![PodCondition {
            condition_type: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            reason: None,
            message: None,
            last_transition_time: None,
        }],
        init_container_statuses: Vec::new(),
        container_statuses: Vec::new(),
    }
}

struct Call {
    parent: Value,
    pods: Vec<Pod>,
    children: Vec<ObservedObject>,
    services: Vec<ObservedService>,
    ray: RayObservations,
    settings: Vec<(String, String)>,
}

impl Call {
    fn new(parent: Value) -> Self {
        Call {
            parent,
            pods: vec![],
            children: vec![],
            services: vec![],
            ray: RayObservations::default(),
            settings: vec![],
        }
    }

    fn run(&self) -> Output {
        let input = ReconcileInput {
            kind: "RayService".into(),
            parent: self.parent.to_string(),
            pods: ObservedPods::from_records(&self.pods),
            services: self.services.clone(),
            children: self.children.clone(),
            related: Vec::new(),
            ray: self.ray.clone(),
            failed_writes: Vec::new(),
            now: Timestamp {
                seconds: NOW,
                nanos: 0,
            },
            config: String::new(),
            host: HostFacts {
                operator_version: "0.1.0".into(),
                feature_gates: vec![],
                settings: self.settings.clone(),
            },
        };
        Output(run::<RayServiceReconciler>(input).expect("the plugin decides"))
    }
}

struct Output(ReconcileOutput);

impl Output {
    fn status(&self) -> RayServiceStatuses {
        serde_json::from_str(self.0.status.as_deref().expect("a status")).unwrap()
    }

    fn condition(&self, kind: &str) -> (String, String, String) {
        let status = self.status();
        let condition = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|condition| condition.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} condition"));
        (condition.status, condition.reason, condition.message)
    }

    fn applied(&self, kind: &str) -> Vec<(Value, WriteMode)> {
        self.0
            .apply
            .iter()
            .map(|desired| {
                (
                    serde_json::from_str::<Value>(&desired.object).unwrap(),
                    desired.mode,
                )
            })
            .filter(|(object, _)| object["kind"] == kind)
            .collect()
    }

    fn puts(&self) -> Vec<(String, Value)> {
        self.0
            .ray_actions
            .iter()
            .filter_map(|action| match &action.action {
                RayActionKind::PutServeConfig(config) => Some((
                    action.cluster.clone(),
                    serde_json::from_str(config).unwrap(),
                )),
                _ => None,
            })
            .collect()
    }

    fn deleted(&self) -> Vec<String> {
        self.0.delete.iter().map(|d| d.name.clone()).collect()
    }

    fn events(&self, event_type: EventType) -> Vec<(String, String)> {
        self.0
            .events
            .iter()
            .filter(|event| event.event_type == event_type)
            .map(|event| (event.reason.clone(), event.message.clone()))
            .collect()
    }
}

fn first_name() -> String {
    let parsed: wasmray_crds::RayService =
        serde_json::from_value(service(1, "2", json!({}))).unwrap();
    cluster_name(&parsed)
}

fn pending_status(name: &str) -> Value {
    json!({"pendingServiceStatus": {"rayClusterName": name},
           "conditions": [
               {"type": "Ready", "status": "False", "reason": "Initializing", "message": "RayService is initializing", "lastTransitionTime": rfc(50)},
               {"type": "UpgradeInProgress", "status": "False", "reason": "Initializing", "message": "RayService is initializing", "lastTransitionTime": rfc(50)}]})
}

fn active_status(name: &str, upgrade_since: i64) -> Value {
    json!({"activeServiceStatus": {"rayClusterName": name},
           "serviceStatus": "Running",
           "numServeEndpoints": 1,
           "conditions": [
               {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints", "message": "Number of serve endpoints is greater than 0", "lastTransitionTime": rfc(500)},
               {"type": "UpgradeInProgress", "status": "False", "reason": "NoPendingCluster", "message": "Active Ray cluster exists and no pending Ray cluster", "lastTransitionTime": rfc(upgrade_since)}]})
}

#[test]
fn a_new_rayservice_creates_its_first_cluster_and_initializes() {
    let output = Call::new(service(1, "2", json!(null))).run();
    let clusters = output.applied("RayCluster");
    assert_eq!(clusters.len(), 1);
    let (cluster, mode) = &clusters[0];
    assert_eq!(*mode, WriteMode::CreateOnly);
    let name = cluster["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("rs-") && name.len() == 8, "{name}");
    assert_eq!(
        cluster["metadata"]["labels"]["ray.io/originated-from-crd"],
        "RayService"
    );
    assert_eq!(
        cluster["metadata"]["labels"]["ray.io/originated-from-cr-name"],
        "rs"
    );
    assert_eq!(
        cluster["metadata"]["annotations"]["ray.io/num-worker-groups"],
        "1"
    );
    assert!(
        cluster["metadata"]["annotations"]["ray.io/hash-without-replicas-and-workers-to-delete"]
            .is_string()
    );
    let status = output.status();
    assert_eq!(
        status
            .pending_service_status
            .unwrap()
            .ray_cluster_name
            .as_deref(),
        Some(name)
    );
    assert_eq!(output.condition("Ready").1, "Initializing");
    assert_eq!(output.condition("UpgradeInProgress").1, "Initializing");
    assert!(
        output
            .0
            .finalizers
            .iter()
            .any(|f| f.name == RAY_SERVICE_FINALIZER && f.intent == FinalizerIntent::Add)
    );
    assert_eq!(output.0.requeue_after_ms, Some(2000));
    assert!(output.puts().is_empty());
}

#[test]
fn the_config_goes_to_a_ready_cluster_that_does_not_run_it_and_once_it_runs_traffic_follows() {
    let name = first_name();
    let parent = service(1, "2", pending_status(&name));
    // Head not ready: no Serve query, no config.
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, false, 60)];
    let output = call.run();
    assert!(output.0.ray_queries.is_empty() && output.puts().is_empty());
    // Head ready, Serve runs nothing: the config is sent, as JSON, to that cluster.
    call.children = vec![cluster(&parent, &name, true, 60)];
    call.ray.serve_status = Some(serve_answer(&[]));
    let output = call.run();
    assert_eq!(
        output.0.ray_queries,
        vec![RayQuery::ServeStatus(name.clone())]
    );
    let puts = output.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].0, name);
    assert_eq!(puts[0].1["applications"][1]["import_path"], "math:app");
    assert!(
        output.applied("Service").is_empty(),
        "no Services before the apps run"
    );
    // Every application runs, but the head's proxy is not serving yet: no Services.
    call.ray.serve_status = Some(running_apps());
    let output = call.run();
    assert!(output.applied("Service").is_empty());
    assert!(output.puts().is_empty());
    // The head serves: the Services point at the cluster; nothing is sent again.
    call.pods = vec![serving_head(&name)];
    let output = call.run();
    assert!(output.puts().is_empty());
    let services = output.applied("Service");
    assert_eq!(services.len(), 2);
    let serve = services
        .iter()
        .find(|(s, _)| s["metadata"]["name"] == "rs-serve-svc")
        .unwrap();
    assert_eq!(serve.0["spec"]["selector"]["ray.io/cluster"], name.as_str());
    assert_eq!(serve.0["spec"]["selector"]["ray.io/serve"], "true");
    assert_eq!(serve.0["spec"]["ports"][0]["port"], 8000);
    assert_eq!(serve.0["metadata"]["labels"]["ray.io/serve"], "rs-serve");
    let head = services
        .iter()
        .find(|(s, _)| s["metadata"]["name"] == "rs-head-svc")
        .unwrap();
    assert_eq!(head.0["spec"]["selector"]["ray.io/cluster"], name.as_str());
    let apps = output
        .status()
        .pending_service_status
        .unwrap()
        .application_statuses
        .unwrap();
    assert_eq!(apps["fruit"].status.as_deref(), Some("RUNNING"));
    // The Services select it and endpoints are ready: it is active, and the RayService Ready.
    call.services = vec![serve_svc(&name)];
    let mut not_ready_worker = serving_pod(&name, false);
    not_ready_worker.name = format!("{name}-worker");
    call.pods = vec![serving_head(&name), not_ready_worker];
    let output = call.run();
    let status = output.status();
    assert_eq!(
        status
            .active_service_status
            .unwrap()
            .ray_cluster_name
            .as_deref(),
        Some(name.as_str())
    );
    assert!(status.pending_service_status.is_none());
    assert_eq!(status.num_serve_endpoints, Some(1));
    assert_eq!(status.service_status.as_deref(), Some("Running"));
    assert_eq!(output.condition("Ready").0, "True");
    assert_eq!(output.condition("UpgradeInProgress").1, "NoPendingCluster");
}

#[test]
fn a_config_change_goes_to_the_active_cluster_in_place() {
    let name = first_name();
    let mut parent = service(2, "2", active_status(&name, 500));
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.pods = vec![serving_head(&name)];
    call.ray.serve_status = Some(running_apps());
    assert!(
        call.run().puts().is_empty(),
        "Ray runs the config: nothing to send"
    );
    parent["spec"]["serveConfigV2"] = json!(CONFIG.replace("/math", "/calc"));
    call.parent = parent;
    let output = call.run();
    let puts = output.puts();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].0, name);
    assert_eq!(puts[0].1["applications"][1]["route_prefix"], "/calc");
    assert!(output.applied("RayCluster").is_empty(), "no new cluster");
    assert!(output.status().pending_service_status.is_none());
}

#[test]
fn ray_filling_in_defaults_is_not_a_change() {
    let name = first_name();
    let mut parent = service(1, "2", active_status(&name, 500));
    parent["spec"]["serveConfigV2"] = json!(
        "applications:\n- name: fruit\n  import_path: fruit:app\n  deployments:\n  - name: D\n    graceful_shutdown_timeout_s: 5\n"
    );
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.ray.serve_status = Some(serve_answer(&[(
        "fruit",
        "RUNNING",
        json!({"name": "fruit", "import_path": "fruit:app", "route_prefix": "/", "runtime_env": {},
               "deployments": [{"name": "D", "graceful_shutdown_timeout_s": 5.0}]}),
    )]));
    assert!(call.run().puts().is_empty());
}

#[test]
fn a_cluster_spec_change_prepares_a_new_cluster_and_the_old_one_goes_after_the_delay() {
    let name = first_name();
    let old = service(1, "2", json!({}));
    let parent = service(2, "3", active_status(&name, 500));
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&old, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.pods = vec![serving_head(&name)];
    call.ray.serve_status = Some(running_apps());
    let output = call.run();
    let created = output.applied("RayCluster");
    assert_eq!(created.len(), 1);
    let new = created[0].0["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, name);
    assert_eq!(
        created[0].0["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"],
        "3"
    );
    let status = output.status();
    assert_eq!(
        status.pending_service_status.unwrap().ray_cluster_name,
        Some(new.clone())
    );
    assert_eq!(output.condition("UpgradeInProgress").0, "True");
    assert!(
        output
            .events(EventType::Normal)
            .iter()
            .any(|(r, _)| r == "UpgradeStarted")
    );
    assert_eq!(
        output.condition("Ready").0,
        "True",
        "the active cluster keeps serving"
    );

    // Mid-upgrade, the pending cluster's app fails to deploy: the condition says why and
    // for how long; traffic stays; the active cluster is not touched.
    let mut upgrading = service(
        2,
        "3",
        json!({
        "activeServiceStatus": {"rayClusterName": name},
        "pendingServiceStatus": {"rayClusterName": new},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints", "message": "", "lastTransitionTime": rfc(500)},
            {"type": "UpgradeInProgress", "status": "True", "reason": "BothActivePendingClustersExist", "message": "", "lastTransitionTime": rfc(120)}]}),
    );
    call.parent = upgrading.clone();
    call.children = vec![
        cluster(&old, &name, true, 600),
        cluster(&upgrading, &new, true, 110),
    ];
    call.ray.serve_status = Some(serve_answer(&[
        (
            "fruit",
            "RUNNING",
            json!({"name": "fruit", "import_path": "fruit:app", "route_prefix": "/fruit"}),
        ),
        (
            "math",
            "DEPLOY_FAILED",
            json!({"name": "math", "import_path": "math:app", "route_prefix": "/math"}),
        ),
    ]));
    let output = call.run();
    assert!(output.applied("Service").is_empty());
    assert!(output.deleted().is_empty());
    let (_, _, message) = output.condition("UpgradeInProgress");
    assert!(
        message.contains("waiting 120 s") && message.contains("math is DEPLOY_FAILED"),
        "{message}"
    );

    // Every app runs on the new cluster and its head serves: Services switch, then it is
    // promoted.
    call.ray.serve_status = Some(running_apps());
    call.pods = vec![serving_head(&name), serving_head(&new)];
    let output = call.run();
    let serve = output.applied("Service");
    assert!(
        serve
            .iter()
            .all(|(s, _)| s["spec"]["selector"]["ray.io/cluster"] == new.as_str())
    );
    assert_eq!(serve.len(), 2);
    call.services = vec![serve_svc(&new)];
    let output = call.run();
    let status = output.status();
    assert_eq!(
        status.active_service_status.unwrap().ray_cluster_name,
        Some(new.clone())
    );
    assert!(status.pending_service_status.is_none());
    assert!(
        output
            .events(EventType::Normal)
            .iter()
            .any(|(r, _)| r == "UpgradeComplete")
    );
    assert!(
        output.deleted().is_empty(),
        "the old cluster waits for the delay"
    );

    // After the switch, the old cluster goes once rayClusterDeletionDelaySeconds passed.
    upgrading = service(2, "3", active_status(&new, 10));
    call.parent = upgrading.clone();
    let output = call.run();
    assert!(output.deleted().is_empty());
    assert_eq!(output.0.requeue_after_ms, Some(2000));
    call.parent = service(2, "3", active_status(&new, 31));
    assert_eq!(call.run().deleted(), vec![name]);
}

#[test]
fn upgrade_strategy_none_never_replaces_the_cluster() {
    let name = first_name();
    let old = service(1, "2", json!({}));
    let mut parent = service(2, "3", active_status(&name, 500));
    parent["spec"]["upgradeStrategy"] = json!({"type": "None"});
    let mut call = Call::new(parent);
    call.children = vec![cluster(&old, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.ray.serve_status = Some(running_apps());
    let output = call.run();
    assert!(output.applied("RayCluster").is_empty());
    assert!(output.status().pending_service_status.is_none());
}

#[test]
fn a_config_ray_refuses_is_reported_and_not_resent_every_call() {
    let name = first_name();
    let parent = service(1, "2", active_status(&name, 500));
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.pods = vec![serving_head(&name)];
    call.ray.serve_status = Some(serve_answer(&[]));
    call.ray.action_results = vec![ActionResult {
        id: format!("serve:{name}:abcd1234"),
        at: Timestamp {
            seconds: NOW,
            nanos: 0,
        },
        outcome: Err("400: unknown field `import_pth`".into()),
    }];
    let output = call.run();
    let (status, reason, message) = output.condition("ServeConfigAccepted");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RejectedByRay")
    );
    assert!(message.contains("import_pth"), "{message}");
    assert!(
        output
            .events(EventType::Warning)
            .iter()
            .any(|(r, _)| r == "FailedToUpdateServeApplications")
    );
    // The next call, within a minute, does not send it again.
    let mut after = parent.clone();
    after["status"] = output
        .0
        .status
        .as_deref()
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap();
    call.parent = after;
    call.ray.action_results.clear();
    let output = call.run();
    assert!(output.puts().is_empty());
    assert_eq!(
        output.condition("Ready").0,
        "True",
        "the active cluster keeps serving"
    );
}

#[test]
fn a_serve_config_that_is_not_yaml_is_refused_without_touching_the_clusters() {
    let name = first_name();
    let mut parent = service(1, "2", active_status(&name, 500));
    parent["spec"]["serveConfigV2"] = json!("applications: [unclosed");
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    let output = call.run();
    let (status, reason, message) = output.condition("Ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ValidationFailed")
    );
    assert!(message.contains("serveConfigV2"), "{message}");
    assert!(output.applied("RayCluster").is_empty() && output.deleted().is_empty());
    assert!(output.puts().is_empty());
    assert_eq!(output.events(EventType::Warning).len(), 1);
    assert_eq!(output.0.requeue_after_ms, None, "KubeRay 1.6: no requeue");
}

#[test]
fn incremental_upgrade_is_refused_with_a_reason_not_ignored() {
    let mut parent = service(1, "2", json!(null));
    parent["spec"]["upgradeStrategy"] = json!({"type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {"stepSizePercent": 10, "intervalSeconds": 5, "gatewayClassName": "x"}});
    let output = Call::new(parent).run();
    assert_eq!(output.condition("Ready").1, "ValidationFailed");
    assert!(output.applied("RayCluster").is_empty());
}

#[test]
fn suspend_deletes_everything_then_says_suspended_and_resumes_fresh() {
    let name = first_name();
    let mut parent = service(1, "2", active_status(&name, 500));
    parent["spec"]["suspend"] = json!(true);
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    let staged = call.run();
    assert_eq!(staged.condition("Suspending").1, "SuspendRequested");
    assert_eq!(staged.condition("Ready").1, "SuspendInProgress");
    assert!(staged.deleted().is_empty());
    parent["status"] = serde_json::from_str(staged.0.status.as_deref().unwrap()).unwrap();
    call.parent = parent.clone();
    let deleting = call.run();
    let mut deleted = deleting.deleted();
    deleted.sort();
    assert_eq!(deleted, vec![name.clone(), "rs-serve-svc".to_owned()]);
    call.children.clear();
    call.services.clear();
    let done = call.run();
    assert_eq!(done.condition("Suspended").0, "True");
    assert_eq!(done.condition("Suspending").0, "False");
    parent["status"] = serde_json::from_str(done.0.status.as_deref().unwrap()).unwrap();
    parent["spec"]["suspend"] = json!(false);
    call.parent = parent;
    let resumed = call.run();
    assert_eq!(resumed.condition("Suspended").1, "RayServiceResumed");
    assert_eq!(resumed.condition("Ready").1, "Initializing");
}

#[test]
fn deletion_deletes_the_clusters_at_once_and_then_releases_the_finalizer() {
    let name = first_name();
    let mut parent = service(1, "2", active_status(&name, 500));
    parent["metadata"]["deletionTimestamp"] = json!(rfc(1));
    parent["metadata"]["finalizers"] = json!([RAY_SERVICE_FINALIZER]);
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    let output = call.run();
    assert_eq!(output.deleted(), vec![name]);
    assert_eq!(output.0.finalizers[0].intent, FinalizerIntent::Keep);
    call.children.clear();
    assert_eq!(call.run().0.finalizers[0].intent, FinalizerIntent::Release);
}

#[test]
fn initializing_timeout_is_terminal() {
    let name = first_name();
    let mut parent = service(1, "2", pending_status(&name));
    parent["metadata"]["annotations"] = json!({"ray.io/initializing-timeout": "30s"});
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, false, 60)];
    let output = call.run();
    assert_eq!(output.condition("Ready").1, "InitializingTimeout");
    assert!(output.status().pending_service_status.is_none());
    assert!(
        output
            .events(EventType::Warning)
            .iter()
            .any(|(r, _)| r == "RayServiceInitializingTimeout")
    );
}

#[test]
fn endpoints_dropping_to_zero_turn_ready_false() {
    let name = first_name();
    let parent = service(1, "2", active_status(&name, 500));
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.pods = vec![serving_pod(&name, false)];
    let output = call.run();
    assert_eq!(output.condition("Ready").1, "ZeroServeEndpoints");
    assert_eq!(output.status().num_serve_endpoints, Some(0));
    assert_eq!(output.status().service_status, None);
}

#[test]
fn fields_ray_drops_are_reported_not_resent() {
    let name = first_name();
    let mut parent = service(2, "2", active_status(&name, 500));
    parent["spec"]["serveConfigV2"] = json!(format!("{CONFIG}  no_such_field: 1\n"));
    let desired =
        crate::serve::desired_config(parent["spec"]["serveConfigV2"].as_str().unwrap()).unwrap();
    let mut call = Call::new(parent.clone());
    call.children = vec![cluster(&parent, &name, true, 600)];
    call.services = vec![serve_svc(&name)];
    call.pods = vec![serving_head(&name)];
    // Ray runs the apps without the unknown field: the config is sent.
    call.ray.serve_status = Some(running_apps());
    assert_eq!(call.run().puts().len(), 1);
    // Ray accepted it and still runs it without the field: reported, not sent again.
    call.ray.action_results = vec![ActionResult {
        id: format!("serve:{name}:{}", crate::serve::fingerprint(&desired)),
        at: Timestamp {
            seconds: NOW,
            nanos: 0,
        },
        outcome: Ok(String::new()),
    }];
    let output = call.run();
    assert!(output.puts().is_empty());
    let (status, reason, message) = output.condition("ServeConfigAccepted");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "IgnoredByRay")
    );
    assert!(
        message.contains("applications[math].no_such_field"),
        "{message}"
    );
    parent["status"] = serde_json::from_str(output.0.status.as_deref().unwrap()).unwrap();
    call.parent = parent;
    call.ray.action_results.clear();
    assert!(
        call.run().puts().is_empty(),
        "not sent again within a minute"
    );
}
