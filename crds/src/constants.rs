//! Names shared by the host and every plugin: label and annotation keys, condition types and
//! reasons, ports, container and environment variable names, name limits (KubeRay v1.5.1).

/// API group and version of every kind in this crate.
pub const GROUP: &str = "ray.io";
pub const VERSION: &str = "v1";

/// KubeRay's own value of `spec.managedBy`; the only other accepted value hands the object to MultiKueue.
pub const MANAGED_BY_KUBERAY: &str = "ray.io/kuberay-operator";
pub const MANAGED_BY_MULTIKUEUE: &str = "kueue.x-k8s.io/multikueue";

// Name limits: a RayJob or RayService creates a RayCluster named `<name>-<5 chars>`, hence 53 - 6.
pub const MAX_RAY_CLUSTER_NAME_LENGTH: usize = 53;
pub const MAX_RAY_JOB_NAME_LENGTH: usize = 47;
pub const MAX_RAY_SERVICE_NAME_LENGTH: usize = 47;

// Label keys.
pub const RAY_CLUSTER_LABEL_KEY: &str = "ray.io/cluster";
pub const RAY_NODE_TYPE_LABEL_KEY: &str = "ray.io/node-type";
pub const RAY_NODE_GROUP_LABEL_KEY: &str = "ray.io/group";
pub const RAY_IS_RAY_NODE_LABEL_KEY: &str = "ray.io/is-ray-node";
pub const RAY_ID_LABEL_KEY: &str = "ray.io/identifier";
pub const RAY_CLUSTER_SERVING_SERVICE_LABEL_KEY: &str = "ray.io/serve";
pub const RAY_ORIGINATED_FROM_CR_NAME_LABEL_KEY: &str = "ray.io/originated-from-cr-name";
pub const RAY_ORIGINATED_FROM_CRD_LABEL_KEY: &str = "ray.io/originated-from-crd";
pub const RAY_CLUSTER_HEADLESS_SERVICE_LABEL_KEY: &str = "ray.io/headless-worker-svc";
pub const RAY_WORKER_REPLICA_NAME_LABEL_KEY: &str = "ray.io/worker-group-replica-name";
pub const RAY_WORKER_REPLICA_INDEX_LABEL_KEY: &str = "ray.io/worker-group-replica-index";
pub const RAY_HOST_INDEX_LABEL_KEY: &str = "ray.io/replica-host-index";
pub const RAY_GANG_SCHEDULING_ENABLED_LABEL_KEY: &str = "ray.io/gang-scheduling-enabled";
pub const RAY_PRIORITY_CLASS_NAME_LABEL_KEY: &str = "ray.io/priority-class-name";
pub const RAY_SCHEDULER_NAME_LABEL_KEY: &str = "ray.io/scheduler-name";
pub const KUBERNETES_APPLICATION_NAME_LABEL_KEY: &str = "app.kubernetes.io/name";
pub const KUBERNETES_CREATED_BY_LABEL_KEY: &str = "app.kubernetes.io/created-by";
pub const APPLICATION_NAME: &str = "kuberay";
pub const COMPONENT_NAME: &str = "kuberay-operator";
/// Kueue's queue label; with it a RayJob is created suspended and admitted by Kueue.
pub const KUEUE_QUEUE_NAME_LABEL_KEY: &str = "kueue.x-k8s.io/queue-name";

// Label values.
pub const HEAD_NODE_TYPE: &str = "head";
pub const WORKER_NODE_TYPE: &str = "worker";
pub const REDIS_CLEANUP_NODE_TYPE: &str = "redis-cleanup";
pub const HEAD_GROUP_NAME: &str = "headgroup";
pub const IS_RAY_NODE_VALUE: &str = "yes";

// Annotation keys.
pub const RAY_FT_ENABLED_ANNOTATION_KEY: &str = "ray.io/ft-enabled";
pub const RAY_EXTERNAL_STORAGE_NS_ANNOTATION_KEY: &str = "ray.io/external-storage-namespace";
pub const RAY_OVERWRITE_CONTAINER_CMD_ANNOTATION_KEY: &str = "ray.io/overwrite-container-cmd";
pub const ENABLE_SERVE_SERVICE_ANNOTATION_KEY: &str = "ray.io/enable-serve-service";
pub const RAY_SERVICE_INITIALIZING_TIMEOUT_ANNOTATION_KEY: &str = "ray.io/initializing-timeout";
pub const HASH_WITHOUT_REPLICAS_AND_WORKERS_TO_DELETE_KEY: &str =
    "ray.io/hash-without-replicas-and-workers-to-delete";
pub const NUM_WORKER_GROUPS_KEY: &str = "ray.io/num-worker-groups";
pub const KUBERAY_VERSION_ANNOTATION_KEY: &str = "ray.io/kuberay-version";
pub const INGRESS_CLASS_ANNOTATION_KEY: &str = "kubernetes.io/ingress.class";

// Finalizers.
pub const GCS_FT_REDIS_CLEANUP_FINALIZER: &str = "ray.io/gcs-ft-redis-cleanup-finalizer";
pub const RAY_JOB_STOP_JOB_FINALIZER: &str = "ray.io/rayjob-finalizer";

// Ports and their names on the head Service.
pub const DEFAULT_GCS_SERVER_PORT: i32 = 6379;
pub const DEFAULT_CLIENT_PORT: i32 = 10001;
pub const DEFAULT_DASHBOARD_PORT: i32 = 8265;
pub const DEFAULT_METRICS_PORT: i32 = 8080;
pub const DEFAULT_SERVING_PORT: i32 = 8000;
pub const DEFAULT_DASHBOARD_AGENT_LISTEN_PORT: i32 = 52365;
pub const GCS_SERVER_PORT_NAME: &str = "gcs-server";
pub const CLIENT_PORT_NAME: &str = "client";
pub const DASHBOARD_PORT_NAME: &str = "dashboard";
pub const METRICS_PORT_NAME: &str = "metrics";
pub const SERVING_PORT_NAME: &str = "serve";

// Container names.
pub const AUTOSCALER_CONTAINER_NAME: &str = "autoscaler";
pub const WAIT_GCS_READY_INIT_CONTAINER_NAME: &str = "wait-gcs-ready";
pub const SUBMITTER_SIDECAR_CONTAINER_NAME: &str = "ray-job-submitter";

// Environment variables the operator reads from user templates or injects.
pub const RAY_REDIS_ADDRESS_ENV: &str = "RAY_REDIS_ADDRESS";
pub const REDIS_PASSWORD_ENV: &str = "REDIS_PASSWORD";
pub const REDIS_USERNAME_ENV: &str = "REDIS_USERNAME";
pub const RAY_ENABLE_AUTOSCALER_V2_ENV: &str = "RAY_enable_autoscaler_v2";
pub const RAY_EXTERNAL_STORAGE_NAMESPACE_ENV: &str = "RAY_external_storage_namespace";
pub const RAY_GCS_RPC_SERVER_RECONNECT_TIMEOUT_S_ENV: &str =
    "RAY_gcs_rpc_server_reconnect_timeout_s";
pub const FQ_RAY_IP_ENV: &str = "FQ_RAY_IP";
pub const RAY_IP_ENV: &str = "RAY_IP";
pub const RAY_CLUSTER_NAME_ENV: &str = "RAY_CLUSTER_NAME";
pub const RAY_CLOUD_INSTANCE_ID_ENV: &str = "RAY_CLOUD_INSTANCE_ID";
pub const RAY_NODE_TYPE_NAME_ENV: &str = "RAY_NODE_TYPE_NAME";
pub const KUBERAY_GEN_RAY_START_CMD_ENV: &str = "KUBERAY_GEN_RAY_START_CMD";
pub const RAY_PORT_ENV: &str = "RAY_PORT";
pub const RAY_ADDRESS_ENV: &str = "RAY_ADDRESS";
pub const RAY_USAGE_STATS_KUBERAY_IN_USE_ENV: &str = "RAY_USAGE_STATS_KUBERAY_IN_USE";
pub const RAY_USAGE_STATS_EXTRA_TAGS_ENV: &str = "RAY_USAGE_STATS_EXTRA_TAGS";
pub const RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE_ENV: &str = "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE";
pub const RAY_AUTH_MODE_ENV: &str = "RAY_AUTH_MODE";
pub const RAY_AUTH_TOKEN_ENV: &str = "RAY_AUTH_TOKEN";
/// Key of the token inside the auth Secret named after the cluster.
pub const RAY_AUTH_TOKEN_SECRET_KEY: &str = "auth_token";

// rayStartParams keys the validation looks at.
pub const RAY_START_PARAM_NUM_CPUS: &str = "num-cpus";
pub const RAY_START_PARAM_NUM_GPUS: &str = "num-gpus";
pub const RAY_START_PARAM_MEMORY: &str = "memory";
pub const RAY_START_PARAM_RESOURCES: &str = "resources";
pub const RAY_START_PARAM_LABELS: &str = "labels";
pub const RAY_START_PARAM_REDIS_PASSWORD: &str = "redis-password";
pub const RAY_START_PARAM_REDIS_USERNAME: &str = "redis-username";

/// Ray version from which token authentication exists.
pub const MIN_RAY_VERSION_FOR_TOKEN_AUTH: (u64, u64, u64) = (2, 52, 0);

// RayCluster condition types and reasons.
pub const HEAD_POD_READY: &str = "HeadPodReady";
pub const RAY_CLUSTER_PROVISIONED: &str = "RayClusterProvisioned";
pub const RAY_CLUSTER_REPLICA_FAILURE: &str = "ReplicaFailure";
pub const RAY_CLUSTER_SUSPENDING: &str = "RayClusterSuspending";
pub const RAY_CLUSTER_SUSPENDED: &str = "RayClusterSuspended";
pub const HEAD_POD_NOT_FOUND: &str = "HeadPodNotFound";
pub const HEAD_POD_RUNNING_AND_READY: &str = "HeadPodRunningAndReady";
pub const ALL_POD_RUNNING_AND_READY_FIRST_TIME: &str = "AllPodRunningAndReadyFirstTime";
pub const RAY_CLUSTER_PODS_PROVISIONING: &str = "RayClusterPodsProvisioning";
pub const FAILED_CREATE_HEAD_POD: &str = "FailedCreateHeadPod";
pub const FAILED_DELETE_HEAD_POD: &str = "FailedDeleteHeadPod";
pub const FAILED_CREATE_WORKER_POD: &str = "FailedCreateWorkerPod";
pub const FAILED_DELETE_WORKER_POD: &str = "FailedDeleteWorkerPod";
pub const FAILED_DELETE_ALL_PODS: &str = "FailedDeleteAllPods";

// RayService condition types and reasons.
pub const RAY_SERVICE_READY: &str = "Ready";
pub const UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";
pub const RAY_SERVICE_INITIALIZING: &str = "Initializing";
pub const NON_ZERO_SERVE_ENDPOINTS: &str = "NonZeroServeEndpoints";
pub const ZERO_SERVE_ENDPOINTS: &str = "ZeroServeEndpoints";
pub const INITIALIZING_TIMEOUT: &str = "InitializingTimeout";
pub const BOTH_ACTIVE_PENDING_CLUSTERS_EXIST: &str = "BothActivePendingClustersExist";
pub const NO_PENDING_CLUSTER: &str = "NoPendingCluster";
pub const NO_ACTIVE_CLUSTER: &str = "NoActiveCluster";
pub const RAY_SERVICE_VALIDATION_FAILED: &str = "ValidationFailed";
pub const RAY_SERVICE_SUSPENDING: &str = "Suspending";
pub const RAY_SERVICE_SUSPENDED: &str = "Suspended";
pub const SUSPEND_REQUESTED: &str = "SuspendRequested";
pub const SUSPEND_IN_PROGRESS: &str = "SuspendInProgress";
pub const SUSPEND_COMPLETE: &str = "SuspendComplete";
pub const RAY_SERVICE_RESUMED: &str = "RayServiceResumed";
/// KubeRay 1.6.2+: deleting a RayService deletes its clusters at once, then drops this.
pub const RAY_SERVICE_FINALIZER: &str = "ray.io/rayservice-finalizer";

/// Feature gates of KubeRay that change what is valid; defaults are v1.5.1's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    pub ray_cluster_status_conditions: bool,
    pub ray_job_deletion_policy: bool,
    pub ray_multi_host_indexing: bool,
    pub ray_service_incremental_upgrade: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self {
            ray_cluster_status_conditions: true,
            ray_job_deletion_policy: false,
            ray_multi_host_indexing: false,
            ray_service_incremental_upgrade: false,
        }
    }
}
