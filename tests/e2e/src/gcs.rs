//! A stand-in GCS: serves Ray's `AutoscalerStateService` from scripted demand, for the
//! autoscaling benchmark's many clusters (a real head costs about 1.5 GiB here). Its
//! replies are built as Ray 2.60.0 builds them for the same demand; the `autoscaling` e2e
//! test compares them with a real head's, so the two cannot drift apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use wasmray_ray_proto::autoscaler::autoscaler_state_service_server::{
    AutoscalerStateService, AutoscalerStateServiceServer,
};
use wasmray_ray_proto::autoscaler::{
    AutoscalingState, ClusterResourceState, DrainNodeReply, DrainNodeRequest,
    GetClusterResourceStateReply, GetClusterResourceStateRequest, GetClusterStatusReply,
    GetClusterStatusRequest, NodeState, NodeStatus, ReportAutoscalingStateReply,
    ReportAutoscalingStateRequest, RequestClusterResourceConstraintReply,
    RequestClusterResourceConstraintRequest, ResourceRequest, ResourceRequestByCount,
};
use wasmray_ray_proto::rpc::LabelSelector;

/// What the stand-in says the cluster is and needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// The head pod's name and IP.
    pub head: (String, String),
    /// Tasks waiting, as (shape, count).
    pub pending_tasks: Vec<(Vec<(String, f64)>, i64)>,
}

/// The head's node as Ray 2.60.0 reports a head started with `--num-cpus=0`: its
/// instance id is the pod name, its type `headgroup`, with the implicit resources.
pub fn head_node(pod: &str, ip: &str) -> NodeState {
    let total: HashMap<String, f64> = [
        (format!("node:{ip}"), 1.0),
        ("node:__internal_head__".to_owned(), 1.0),
        ("memory".to_owned(), 1e9),
        ("object_store_memory".to_owned(), 2e8),
    ]
    .into_iter()
    .collect();
    NodeState {
        node_id: vec![0x11; 28],
        instance_id: pod.to_owned(),
        ray_node_type_name: "headgroup".to_owned(),
        available_resources: total.clone(),
        total_resources: total,
        status: NodeStatus::Idle.into(),
        node_ip_address: ip.to_owned(),
        labels: [
            ("ray.io/node-group".to_owned(), "headgroup".to_owned()),
            ("ray.io/node-id".to_owned(), "11".repeat(28)),
        ]
        .into_iter()
        .collect(),
        ..NodeState::default()
    }
}

/// The reply Ray gives for `script`, at state version `version`.
pub fn cluster_state(script: &Script, version: i64) -> ClusterResourceState {
    let (pod, ip) = &script.head;
    let mut head = head_node(pod, ip);
    if !script.pending_tasks.is_empty() {
        // The driver that waits for the tasks runs on the head: Ray counts it busy.
        head.status = NodeStatus::Running.into();
    }
    ClusterResourceState {
        cluster_resource_state_version: version,
        node_states: vec![head],
        pending_resource_requests: script
            .pending_tasks
            .iter()
            .map(|(shape, count)| ResourceRequestByCount {
                request: Some(ResourceRequest {
                    resources_bundle: shape.iter().cloned().collect(),
                    // Ray 2.60.0 sends one empty selector for a task without any.
                    label_selectors: vec![LabelSelector::default()],
                    ..ResourceRequest::default()
                }),
                count: *count,
            })
            .collect(),
        cluster_session_name: "session_stand_in".to_owned(),
        ..ClusterResourceState::default()
    }
}

/// The stand-in's shared state: the script, and what the autoscaler told it.
#[derive(Clone, Default)]
pub struct StandIn {
    script: Arc<Mutex<(Script, i64)>>,
    reports: Arc<Mutex<Vec<AutoscalingState>>>,
    drains: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl StandIn {
    pub fn new(script: Script) -> Self {
        StandIn {
            script: Arc::new(Mutex::new((script, 1))),
            ..StandIn::default()
        }
    }

    /// Replaces the script; the next reply shows it, with a new version.
    pub fn set(&self, script: Script) {
        let mut current = self.script.lock().unwrap_or_else(|e| e.into_inner());
        current.1 += 1;
        current.0 = script;
    }

    pub fn script(&self) -> Script {
        self.script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Autoscaling states reported so far.
    pub fn reports(&self) -> usize {
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Serves on `address` until the task is aborted.
    pub fn serve(&self, address: SocketAddr) -> tokio::task::JoinHandle<Result<(), String>> {
        let service = AutoscalerStateServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(address)
                .await
                .map_err(|error| format!("stand-in GCS on {address}: {error}"))
        })
    }
}

#[tonic::async_trait]
impl AutoscalerStateService for StandIn {
    async fn get_cluster_resource_state(
        &self,
        _request: Request<GetClusterResourceStateRequest>,
    ) -> Result<Response<GetClusterResourceStateReply>, Status> {
        let (script, version) = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(Response::new(GetClusterResourceStateReply {
            cluster_resource_state: Some(cluster_state(&script, version)),
        }))
    }

    async fn report_autoscaling_state(
        &self,
        request: Request<ReportAutoscalingStateRequest>,
    ) -> Result<Response<ReportAutoscalingStateReply>, Status> {
        if let Some(state) = request.into_inner().autoscaling_state {
            self.reports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state);
        }
        Ok(Response::new(ReportAutoscalingStateReply {}))
    }

    async fn request_cluster_resource_constraint(
        &self,
        _request: Request<RequestClusterResourceConstraintRequest>,
    ) -> Result<Response<RequestClusterResourceConstraintReply>, Status> {
        Err(Status::unimplemented(
            "the stand-in takes demand from its script",
        ))
    }

    async fn get_cluster_status(
        &self,
        _request: Request<GetClusterStatusRequest>,
    ) -> Result<Response<GetClusterStatusReply>, Status> {
        Err(Status::unimplemented("not used by the host"))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeReply>, Status> {
        self.drains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.into_inner().node_id);
        Ok(Response::new(DrainNodeReply {
            is_accepted: true,
            rejection_reason_message: String::new(),
        }))
    }
}
