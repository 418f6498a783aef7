//! Table tests of `ray-default` and of the options `warm-pool` uses: each rule of the
//! crate documentation, on inputs as the host builds them.

use wasmray_plugin_sdk::autoscaler::{
    GangRequest, LabelConstraint, Node, NodeStatus, PlacementStrategy, Request, RequestCount,
    ResourceRequest, SelectorOperator, WorkerGroup,
};
use wasmray_plugin_sdk::{HostFacts, Timestamp};

use super::{Options, decide};

fn res(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn group(name: &str, replicas: u32, min: u32, max: u32, shape: &[(&str, f64)]) -> WorkerGroup {
    WorkerGroup {
        name: name.to_owned(),
        min_replicas: min,
        max_replicas: max,
        replicas,
        num_of_hosts: 1,
        resources: res(shape),
        labels: vec![("ray.io/node-group".to_owned(), name.to_owned())],
        idle_timeout_seconds: None,
        priority: 0,
        suspended: false,
    }
}

fn node(
    pod: &str,
    group: &str,
    status: NodeStatus,
    idle_ms: u64,
    total: &[(&str, f64)],
    free: &[(&str, f64)],
) -> Node {
    Node {
        pod: pod.to_owned(),
        group: group.to_owned(),
        replica: pod.to_owned(),
        status,
        idle_ms,
        activity: if status == NodeStatus::Running {
            vec!["Resource: CPU currently in use.".to_owned()]
        } else {
            Vec::new()
        },
        total: res(total),
        available: res(free),
        labels: vec![("ray.io/node-group".to_owned(), group.to_owned())],
        leaving: false,
    }
}

fn idle(pod: &str, group: &str, idle_ms: u64, shape: &[(&str, f64)]) -> Node {
    node(pod, group, NodeStatus::Idle, idle_ms, shape, shape)
}

fn busy(pod: &str, group: &str, shape: &[(&str, f64)]) -> Node {
    node(pod, group, NodeStatus::Running, 0, shape, &[])
}

fn demand(shape: &[(&str, f64)], count: u32) -> RequestCount {
    RequestCount {
        request: ResourceRequest {
            resources: res(shape),
            label_selector: Vec::new(),
        },
        count,
    }
}

fn gang(strategy: PlacementStrategy, bundles: &[&[(&str, f64)]]) -> GangRequest {
    GangRequest {
        id: "pg1".to_owned(),
        strategy,
        bundles: bundles
            .iter()
            .map(|b| ResourceRequest {
                resources: res(b),
                label_selector: Vec::new(),
            })
            .collect(),
    }
}

fn request(groups: Vec<WorkerGroup>, workers: Vec<Node>) -> Request<()> {
    Request {
        cluster: (),
        groups,
        head: Some(busy("head", "headgroup", &[("CPU", 0.0)])),
        workers,
        pending_requests: Vec::new(),
        pending_gangs: Vec::new(),
        constraints: Vec::new(),
        upscaling_mode: "Default".to_owned(),
        idle_timeout_seconds: 60,
        now: Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        },
        config: String::new(),
        host: HostFacts {
            operator_version: "test".to_owned(),
            feature_gates: Vec::new(),
            settings: Vec::new(),
        },
    }
}

/// (group, replicas, workers to delete) of each decision.
fn decisions(request: &Request<()>, options: &Options) -> Vec<(String, u32, Vec<String>)> {
    decide(request, options)
        .groups
        .into_iter()
        .map(|d| (d.name, d.replicas, d.workers_to_delete))
        .collect()
}

fn one(name: &str, replicas: u32, delete: &[&str]) -> Vec<(String, u32, Vec<String>)> {
    vec![(
        name.to_owned(),
        replicas,
        delete.iter().map(|p| (*p).to_owned()).collect(),
    )]
}

type Shape = &'static [(&'static str, f64)];

const CPU1: &[(&str, f64)] = &[("CPU", 1.0)];
const CPU2: &[(&str, f64)] = &[("CPU", 2.0)];
const CPU4: &[(&str, f64)] = &[("CPU", 4.0)];

#[test]
fn bounds_raise_to_min_and_lower_to_max_naming_victims() {
    let r = request(vec![group("small", 0, 2, 5, CPU1)], vec![]);
    assert_eq!(decisions(&r, &Options::default()), one("small", 2, &[]));

    let workers = vec![
        busy("w1", "small", CPU1),
        idle("w2", "small", 5, CPU1),
        busy("w3", "small", CPU1),
    ];
    let r = request(vec![group("small", 3, 0, 2, CPU1)], workers);
    // Above max: the idle one goes first.
    assert_eq!(decisions(&r, &Options::default()), one("small", 2, &["w2"]));
}

#[test]
fn tasks_pack_onto_free_and_starting_nodes_before_adding_workers() {
    // (workers, pending {CPU: 1}, expected replicas of "small" with shape {CPU: 2})
    let cases: Vec<(Vec<Node>, u32, Option<u32>)> = vec![
        (vec![], 3, Some(2)),
        (vec![], 4, Some(2)),
        (vec![], 5, Some(3)),
        // A starting worker counts with its group's shape.
        (
            vec![node("w1", "small", NodeStatus::Starting, 0, &[], &[])],
            2,
            None,
        ),
        (
            vec![node("w1", "small", NodeStatus::Starting, 0, &[], &[])],
            3,
            Some(2),
        ),
        // Free CPU on a running worker takes one.
        (
            vec![node("w1", "small", NodeStatus::Running, 0, CPU2, CPU1)],
            1,
            None,
        ),
    ];
    for (workers, pending, expected) in cases {
        let replicas = u32::try_from(workers.len()).unwrap();
        let mut r = request(vec![group("small", replicas, 0, 10, CPU2)], workers);
        r.pending_requests = vec![demand(CPU1, pending)];
        let got = decisions(&r, &Options::default());
        match expected {
            Some(n) => assert_eq!(got, one("small", n, &[]), "pending {pending}"),
            None => assert!(got.is_empty(), "pending {pending}: {got:?}"),
        }
    }
}

#[test]
fn the_best_group_is_chosen_gpu_last_then_priority_then_fit() {
    let cpu = group("cpu", 0, 0, 10, CPU4);
    let gpu = group("gpu", 0, 0, 10, &[("CPU", 4.0), ("GPU", 1.0)]);
    let mut r = request(vec![gpu.clone(), cpu.clone()], vec![]);
    r.pending_requests = vec![demand(CPU1, 1)];
    assert_eq!(decisions(&r, &Options::default()), one("cpu", 1, &[]));
    r.pending_requests = vec![demand(&[("GPU", 1.0)], 1)];
    assert_eq!(decisions(&r, &Options::default()), one("gpu", 1, &[]));

    let mut low = group("low", 0, 0, 10, CPU4);
    let mut high = group("high", 0, 0, 10, CPU4);
    low.priority = 1;
    high.priority = 5;
    let mut r = request(vec![low, high], vec![]);
    r.pending_requests = vec![demand(CPU1, 1)];
    assert_eq!(decisions(&r, &Options::default()), one("high", 1, &[]));

    // Equal priority: the group the demand uses best.
    let big = group("big", 0, 0, 10, &[("CPU", 16.0)]);
    let fit = group("fit", 0, 0, 10, CPU2);
    let mut r = request(vec![big, fit], vec![]);
    r.pending_requests = vec![demand(CPU2, 1)];
    assert_eq!(decisions(&r, &Options::default()), one("fit", 1, &[]));
}

#[test]
fn label_selectors_pick_the_group_with_the_labels() {
    let mut a = group("zone-a", 0, 0, 10, CPU4);
    a.labels.push(("zone".to_owned(), "a".to_owned()));
    let mut b = group("zone-b", 0, 0, 10, CPU4);
    b.labels.push(("zone".to_owned(), "b".to_owned()));
    let mut r = request(vec![a, b], vec![]);
    r.pending_requests = vec![RequestCount {
        request: ResourceRequest {
            resources: res(CPU1),
            label_selector: vec![LabelConstraint {
                key: "zone".to_owned(),
                operator: SelectorOperator::In,
                values: vec!["b".to_owned()],
            }],
        },
        count: 1,
    }];
    assert_eq!(decisions(&r, &Options::default()), one("zone-b", 1, &[]));
}

#[test]
fn placement_groups_follow_their_strategy() {
    // (strategy, bundles, group shape, max, expected replicas)
    type Case = (PlacementStrategy, Vec<Shape>, Shape, u32, Option<u32>);
    let cases: Vec<Case> = vec![
        (
            PlacementStrategy::StrictSpread,
            vec![CPU1, CPU1],
            CPU4,
            10,
            Some(2),
        ),
        (
            PlacementStrategy::StrictPack,
            vec![CPU2, CPU2],
            CPU4,
            10,
            Some(1),
        ),
        (PlacementStrategy::Pack, vec![CPU2, CPU2], CPU2, 10, Some(2)),
        (
            PlacementStrategy::Spread,
            vec![CPU1, CPU1],
            CPU4,
            10,
            Some(1),
        ),
        // STRICT_SPREAD is all or nothing: one node allowed, two bundles, none added.
        (
            PlacementStrategy::StrictSpread,
            vec![CPU1, CPU1],
            CPU4,
            1,
            None,
        ),
        // STRICT_PACK's sum fits no node: nothing added.
        (
            PlacementStrategy::StrictPack,
            vec![CPU4, CPU4],
            CPU4,
            10,
            None,
        ),
    ];
    for (strategy, bundles, shape, max, expected) in cases {
        let mut r = request(vec![group("g", 0, 0, max, shape)], vec![]);
        r.pending_gangs = vec![gang(strategy, &bundles)];
        let output = decide(&r, &Options::default());
        let got: Vec<_> = output.groups.iter().map(|d| d.replicas).collect();
        assert_eq!(
            got,
            expected.into_iter().collect::<Vec<_>>(),
            "{strategy:?} {bundles:?}"
        );
    }
}

#[test]
fn request_resources_adds_workers_and_keeps_them() {
    let mut r = request(vec![group("g", 0, 0, 10, CPU4)], vec![]);
    r.constraints = vec![demand(CPU4, 3)];
    assert_eq!(decisions(&r, &Options::default()), one("g", 3, &[]));

    // Idle long past the timeout, but the constraint needs both.
    let workers = vec![
        idle("w1", "g", 600_000, CPU4),
        idle("w2", "g", 600_000, CPU4),
    ];
    let mut r = request(vec![group("g", 2, 0, 10, CPU4)], workers);
    r.constraints = vec![demand(CPU4, 2)];
    assert_eq!(decisions(&r, &Options::default()), vec![]);
    r.constraints = vec![demand(CPU4, 1)];
    assert_eq!(decisions(&r, &Options::default()).len(), 1);
}

#[test]
fn upscaling_mode_limits_the_rate() {
    // (mode, running workers, expected replicas with demand for 10 workers)
    let cases = [
        ("Default", 0, 10),
        ("Aggressive", 2, 12),
        ("Conservative", 0, 1),
        ("Conservative", 2, 4),
    ];
    for (mode, running, expected) in cases {
        let workers: Vec<Node> = (0..running)
            .map(|i| busy(&format!("w{i}"), "g", CPU1))
            .collect();
        let mut r = request(vec![group("g", running, 0, 100, CPU1)], workers);
        r.upscaling_mode = mode.to_owned();
        r.pending_requests = vec![demand(CPU1, 10)];
        assert_eq!(
            decisions(&r, &Options::default()),
            one("g", expected, &[]),
            "{mode} {running}"
        );
    }
}

#[test]
fn idle_workers_go_after_their_timeout_down_to_min() {
    // (group idle timeout, min, idle ms of w1 and w2, expected deletions, expected requeue)
    type Case = (Option<u32>, u32, [u64; 2], Vec<&'static str>, Option<u64>);
    let cases: Vec<Case> = vec![
        (None, 0, [61_000, 10_000], vec!["w1"], Some(50_000)),
        (None, 0, [61_000, 90_000], vec!["w2", "w1"], None),
        (Some(120), 0, [61_000, 10_000], vec![], Some(59_000)),
        (None, 1, [61_000, 90_000], vec!["w2"], None),
        (None, 2, [61_000, 90_000], vec![], None),
    ];
    for (timeout, min, idle_ms, expected, requeue) in cases {
        let mut g = group("g", 2, min, 10, CPU1);
        g.idle_timeout_seconds = timeout;
        let workers = vec![
            idle("w1", "g", idle_ms[0], CPU1),
            idle("w2", "g", idle_ms[1], CPU1),
        ];
        let r = request(vec![g], workers);
        let output = decide(&r, &Options::default());
        let deleted: Vec<String> = output
            .groups
            .iter()
            .flat_map(|d| d.workers_to_delete.clone())
            .collect();
        assert_eq!(
            deleted, expected,
            "timeout {timeout:?} min {min} idle {idle_ms:?}"
        );
        if let Some(decision) = output.groups.first() {
            assert_eq!(
                decision.replicas,
                2 - u32::try_from(expected.len()).unwrap()
            );
            assert_eq!(output.events.len(), 1);
        }
        assert_eq!(output.requeue_after_ms, requeue);
    }
}

#[test]
fn busy_starting_and_leaving_workers_stay() {
    let mut leaving = idle("w3", "g", 900_000, CPU1);
    leaving.leaving = true;
    let workers = vec![
        busy("w1", "g", CPU1),
        node("w2", "g", NodeStatus::Starting, 0, &[], &[]),
        leaving,
    ];
    let r = request(vec![group("g", 2, 0, 10, CPU1)], workers);
    assert_eq!(decisions(&r, &Options::default()), vec![]);
}

#[test]
fn multi_host_groups_scale_by_whole_replicas() {
    let mut g = group("tpu", 1, 0, 4, &[("TPU", 4.0)]);
    g.num_of_hosts = 2;
    let mut a = idle("a-0", "tpu", 90_000, &[("TPU", 4.0)]);
    let mut b = idle("a-1", "tpu", 90_000, &[("TPU", 4.0)]);
    a.replica = "a".to_owned();
    b.replica = "a".to_owned();
    let r = request(vec![g.clone()], vec![a.clone(), b.clone()]);
    assert_eq!(
        decisions(&r, &Options::default()),
        one("tpu", 0, &["a-0", "a-1"])
    );

    // One host busy: the replica stays.
    b.status = NodeStatus::Running;
    let r = request(vec![g.clone()], vec![a, b]);
    assert_eq!(decisions(&r, &Options::default()), vec![]);

    // Demand for three hosts' worth adds two replicas (four hosts).
    g.replicas = 0;
    let mut r = request(vec![g], vec![]);
    r.pending_requests = vec![demand(&[("TPU", 4.0)], 3)];
    assert_eq!(decisions(&r, &Options::default()), one("tpu", 2, &[]));
}

#[test]
fn infeasible_demand_is_reported_and_changes_nothing() {
    let mut r = request(vec![group("g", 0, 0, 10, CPU4)], vec![]);
    r.pending_requests = vec![demand(&[("GPU", 1.0)], 2), demand(&[("CPU", 8.0)], 1)];
    let output = decide(&r, &Options::default());
    assert!(output.groups.is_empty());
    assert_eq!(output.infeasible.len(), 2);
    // At its maximum, demand that fits the shape is waiting, not infeasible.
    let mut r = request(vec![group("g", 1, 0, 1, CPU4)], vec![busy("w1", "g", CPU4)]);
    r.pending_requests = vec![demand(CPU1, 1)];
    let output = decide(&r, &Options::default());
    assert!(output.groups.is_empty() && output.infeasible.is_empty());
}

#[test]
fn suspended_groups_and_placement_group_resources_are_left_alone() {
    let mut g = group("g", 0, 0, 10, CPU4);
    g.suspended = true;
    let mut r = request(vec![g], vec![]);
    r.pending_requests = vec![demand(CPU1, 4)];
    assert_eq!(decisions(&r, &Options::default()), vec![]);

    let mut r = request(vec![group("g", 0, 0, 10, CPU4)], vec![]);
    r.pending_requests = vec![demand(&[("CPU_group_0_abc", 1.0)], 4)];
    assert_eq!(decisions(&r, &Options::default()), vec![]);
}

#[test]
fn demand_packed_onto_an_idle_worker_keeps_it() {
    let mut r = request(
        vec![group("g", 1, 0, 10, CPU2)],
        vec![idle("w1", "g", 600_000, CPU2)],
    );
    r.pending_requests = vec![demand(CPU1, 1)];
    assert_eq!(decisions(&r, &Options::default()), vec![]);
}

#[test]
fn a_warm_pool_keeps_idle_workers_and_refills() {
    let warm = Options {
        warm: [("g".to_owned(), 1)].into_iter().collect(),
        warm_idle_limit_ms: Some(3_600_000),
    };
    // A group without work gets no warm worker; demand gets one beside it.
    let mut r = request(vec![group("g", 0, 0, 10, CPU1)], vec![]);
    assert_eq!(decisions(&r, &warm), vec![]);
    r.pending_requests = vec![demand(CPU1, 2)];
    assert_eq!(decisions(&r, &warm), one("g", 3, &[]));
    // Two idle past the timeout: the most recently used one stays warm.
    let workers = vec![
        idle("w1", "g", 70_000, CPU1),
        idle("w2", "g", 300_000, CPU1),
    ];
    let r = request(vec![group("g", 2, 0, 10, CPU1)], workers);
    assert_eq!(decisions(&r, &warm), one("g", 1, &["w2"]));
    // The warm one goes after the longer window, and no work asks for a new one.
    let r = request(
        vec![group("g", 1, 0, 10, CPU1)],
        vec![idle("w1", "g", 3_700_000, CPU1)],
    );
    assert_eq!(decisions(&r, &warm), one("g", 0, &["w1"]));
    // A busy worker is not spare: a warm one is added beside it.
    let r = request(
        vec![group("g", 1, 0, 10, CPU1)],
        vec![busy("w1", "g", CPU1)],
    );
    assert_eq!(decisions(&r, &warm), one("g", 2, &[]));
}
