//! The decision, in the order Ray's v2 autoscaler takes its steps: group bounds, then
//! `request_resources` constraints, then placement groups, then tasks and actors, then idle
//! termination.
//!
//! The cluster is modelled as slots, one per Ray node: the head, each worker that is not
//! leaving, and each worker the current `replicas` promise but whose pod does not exist
//! yet (counted with its group's resources, as Ray counts launching nodes). Demand is
//! packed first-fit, larger shapes first, onto free resources; what is left adds replicas
//! to the group that suits it best. A node that holds packed demand or constraints is
//! needed and never removed.

use std::collections::{BTreeMap, BTreeSet};

use wasmray_plugin_sdk::Event;
use wasmray_plugin_sdk::autoscaler::{
    AutoscaleOutput, GangRequest, GroupDecision, Node, NodeStatus, PlacementStrategy, Request,
    RequestCount, ResourceRequest, WorkerGroup,
};

use crate::packing::{
    Amounts, Shape, amounts, copies, fits, is_placement_group_resource, labels_match, take,
    utilization,
};

/// Replicas one call may add in all, so a call stays well inside its deadline whatever
/// the demand; the next call adds more.
const MAX_NEW_REPLICAS_PER_CALL: u32 = 1000;
/// Copies of one request shape considered per call (Ray reports counts; a count above
/// this is more than any call adds nodes for).
const MAX_COPIES_PER_SHAPE: u64 = 1_000_000;

/// What a policy built on this core changes about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// Idle workers to keep per group beyond what demand needs (a warm pool).
    pub warm: BTreeMap<String, u32>,
    /// Warm workers idle this long are removed too; `None`: kept while idle.
    pub warm_idle_limit_ms: Option<u64>,
}

impl Options {
    fn warm(&self, group: &str) -> u32 {
        self.warm.get(group).copied().unwrap_or(0)
    }
}

/// Decides for `request`.
pub fn decide<C>(request: &Request<C>, options: &Options) -> AutoscaleOutput {
    let mut planner = Planner::new(request);
    planner.constraints(&request.constraints);
    for gang in &request.pending_gangs {
        planner.gang(gang);
    }
    planner.tasks(&request.pending_requests);
    planner.warm_pool(options);
    planner.scale_down(request, options);
    planner.output(request)
}

/// One Ray node as the planner sees it.
#[derive(Clone, Debug)]
struct Slot {
    /// Index into the groups; `None` for the head.
    group: Option<usize>,
    /// The pod, or `None` for a node a replica promises but whose pod does not exist yet.
    pod: Option<String>,
    labels: BTreeMap<String, String>,
    total: Amounts,
    /// Free for tasks, actors and placement groups.
    free: Amounts,
    /// Not yet claimed by `request_resources` constraints (which count totals).
    unreserved: Amounts,
    /// Holds demand or constraints: not to be removed.
    needed: bool,
    /// Ray runs something on it.
    busy: bool,
}

#[derive(Clone, Debug)]
struct GroupPlan {
    name: String,
    replicas: u32,
    target: u32,
    max: u32,
    min: u32,
    hosts: u32,
    shape: Amounts,
    labels: BTreeMap<String, String>,
    priority: i32,
    active: bool,
    /// Replicas task demand may still add this call (`upscalingMode`).
    task_allowance: u32,
    /// What the added replicas are for: description -> how many requests.
    reasons: BTreeMap<String, u64>,
    to_delete: Vec<String>,
    idle_notes: Vec<String>,
}

#[derive(Clone, Debug)]
struct Planner {
    groups: Vec<GroupPlan>,
    slots: Vec<Slot>,
    infeasible: Vec<Shape>,
    added: u32,
}

fn node_labels(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

impl Planner {
    fn new<C>(request: &Request<C>) -> Planner {
        let conservative = request.upscaling_mode == "Conservative";
        let mut groups: Vec<GroupPlan> = request
            .groups
            .iter()
            .map(|group| plan_of(group, conservative))
            .collect();
        let mut slots = Vec::new();
        if let Some(head) = request.head.as_ref().filter(|head| is_present(head)) {
            slots.push(slot_of(head, None));
        }
        let mut existing_replicas: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); groups.len()];
        let mut running_nodes = vec![0u32; groups.len()];
        let mut pending_replicas: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); groups.len()];
        for worker in request
            .workers
            .iter()
            .filter(|w| !w.leaving && is_present(w))
        {
            let Some(index) = groups.iter().position(|group| group.name == worker.group) else {
                continue;
            };
            let mut slot = slot_of(worker, Some(index));
            if worker.status == NodeStatus::Starting {
                slot.total = groups[index].shape.clone();
                slot.free = slot.total.clone();
                slot.unreserved = slot.total.clone();
                pending_replicas[index].insert(&worker.replica);
            } else {
                running_nodes[index] += 1;
            }
            existing_replicas[index].insert(&worker.replica);
            slots.push(slot);
        }
        for (index, group) in groups.iter_mut().enumerate() {
            let existing = u32::try_from(existing_replicas[index].len()).unwrap_or(u32::MAX);
            let promised = group.target.saturating_sub(existing);
            for _ in 0..promised
                .saturating_mul(group.hosts)
                .min(MAX_NEW_REPLICAS_PER_CALL)
            {
                slots.push(Slot {
                    group: Some(index),
                    pod: None,
                    labels: group.labels.clone(),
                    total: group.shape.clone(),
                    free: group.shape.clone(),
                    unreserved: group.shape.clone(),
                    needed: false,
                    busy: false,
                });
            }
            if conservative && group.active {
                // Ray's rate with upscaling speed 1: pending nodes up to the running ones.
                let running = (running_nodes[index] / group.hosts.max(1)).max(1);
                let pending =
                    u32::try_from(pending_replicas[index].len()).unwrap_or(u32::MAX) + promised;
                group.task_allowance = running.saturating_sub(pending);
            }
        }
        Planner {
            groups,
            slots,
            infeasible: Vec::new(),
            added: 0,
        }
    }

    /// `request_resources`: the constraints must fit the cluster's totals at once.
    fn constraints(&mut self, constraints: &[RequestCount]) {
        let mut shapes = shapes_of(constraints);
        sort_largest_first(&mut shapes);
        for (shape, count) in &mut shapes {
            for slot in &mut self.slots {
                if *count == 0 {
                    break;
                }
                if !labels_match(&slot.labels, &shape.selector) {
                    continue;
                }
                let placed = copies(&slot.unreserved, &shape.resources, *count);
                if placed > 0 {
                    take(&mut slot.unreserved, &shape.resources, placed);
                    slot.needed = true;
                    *count -= placed;
                }
            }
        }
        self.grow_for(
            shapes,
            "request_resources asks for",
            false,
            Capacity::Reserve,
        );
    }

    /// A placement group: PACK and SPREAD bundles go anywhere, STRICT_PACK's on one node,
    /// STRICT_SPREAD's each on a node of its own, or none of them.
    fn gang(&mut self, gang: &GangRequest) {
        let bundles: Vec<Shape> = gang
            .bundles
            .iter()
            .map(Shape::of)
            .filter(|shape| !shape.is_empty())
            .collect();
        let (strategy, what) = match gang.strategy {
            PlacementStrategy::Pack => ("PACK", bundles.clone()),
            PlacementStrategy::Spread => ("SPREAD", bundles.clone()),
            PlacementStrategy::StrictPack => ("STRICT_PACK", vec![Shape::sum(&bundles)]),
            PlacementStrategy::StrictSpread => {
                self.strict_spread(gang, &bundles);
                return;
            }
        };
        let reason = format!("placement group {} ({strategy}) needs", gang.id);
        let mut shapes: Vec<(Shape, u64)> = what.into_iter().map(|shape| (shape, 1)).collect();
        self.pack_free(&mut shapes);
        self.grow_for(shapes, &reason, false, Capacity::Free);
    }

    fn strict_spread(&mut self, gang: &GangRequest, bundles: &[Shape]) {
        let before = self.clone();
        let mut used: BTreeSet<usize> = BTreeSet::new();
        let reason = format!("placement group {} (STRICT_SPREAD) needs", gang.id);
        for bundle in bundles {
            let existing = (0..self.slots.len()).find(|index| {
                !used.contains(index)
                    && labels_match(&self.slots[*index].labels, &bundle.selector)
                    && fits(&self.slots[*index].free, &bundle.resources)
            });
            let index = match existing {
                Some(index) => index,
                None => {
                    let Some(group) = self.choose_group(&[(bundle.clone(), 1)], false) else {
                        if !self.any_group_fits(bundle) {
                            self.infeasible.push(bundle.clone());
                        }
                        *self = before;
                        return;
                    };
                    let first_new = self.add_replica(group);
                    self.groups[group]
                        .reasons
                        .entry(format!("{reason} {}", bundle.describe()))
                        .and_modify(|n| *n += 1)
                        .or_insert(1);
                    first_new
                }
            };
            used.insert(index);
            let slot = &mut self.slots[index];
            take(&mut slot.free, &bundle.resources, 1);
            slot.needed = true;
        }
    }

    /// Tasks and actors, under the upscaling mode's rate.
    fn tasks(&mut self, requests: &[RequestCount]) {
        let mut shapes: Vec<(Shape, u64)> = shapes_of(requests)
            .into_iter()
            .filter(|(shape, _)| {
                !shape
                    .resources
                    .keys()
                    .any(|name| is_placement_group_resource(name))
            })
            .collect();
        sort_largest_first(&mut shapes);
        self.pack_free(&mut shapes);
        self.grow_for(shapes, "pending tasks or actors need", true, Capacity::Free);
    }

    /// Packs onto free resources of existing slots; counts go down by what was placed.
    fn pack_free(&mut self, shapes: &mut [(Shape, u64)]) {
        for (shape, count) in shapes.iter_mut() {
            for slot in &mut self.slots {
                if *count == 0 {
                    break;
                }
                if !labels_match(&slot.labels, &shape.selector) {
                    continue;
                }
                let placed = copies(&slot.free, &shape.resources, *count);
                if placed > 0 {
                    take(&mut slot.free, &shape.resources, placed);
                    slot.needed = true;
                    *count -= placed;
                }
            }
        }
    }

    /// Adds replicas for what is left of `shapes`, one at a time to the best group, until
    /// everything is placed or no group can grow. Shapes no group can ever hold are
    /// infeasible.
    fn grow_for(
        &mut self,
        mut shapes: Vec<(Shape, u64)>,
        reason: &str,
        rate_limited: bool,
        capacity: Capacity,
    ) {
        shapes.retain(|(_, count)| *count > 0);
        while !shapes.is_empty() && self.added < MAX_NEW_REPLICAS_PER_CALL {
            let Some(group) = self.choose_group(&shapes, rate_limited) else {
                break;
            };
            let first_new = self.add_replica(group);
            if rate_limited {
                self.groups[group].task_allowance =
                    self.groups[group].task_allowance.saturating_sub(1);
            }
            for index in first_new..self.slots.len() {
                for (shape, count) in shapes.iter_mut() {
                    let slot = &mut self.slots[index];
                    if *count == 0 || !labels_match(&slot.labels, &shape.selector) {
                        continue;
                    }
                    let room = match capacity {
                        Capacity::Free => &mut slot.free,
                        Capacity::Reserve => &mut slot.unreserved,
                    };
                    let placed = copies(room, &shape.resources, *count);
                    if placed > 0 {
                        take(room, &shape.resources, placed);
                        slot.needed = true;
                        *count -= placed;
                        *self.groups[group]
                            .reasons
                            .entry(format!("{reason} {}", shape.describe()))
                            .or_default() += placed;
                    }
                }
            }
            shapes.retain(|(_, count)| *count > 0);
        }
        for (shape, _) in shapes {
            let on_a_node = self.slots.iter().any(|slot| {
                labels_match(&slot.labels, &shape.selector) && fits(&slot.total, &shape.resources)
            });
            if !on_a_node && !self.any_group_fits(&shape) && !self.infeasible.contains(&shape) {
                self.infeasible.push(shape);
            }
        }
    }

    /// Whether one node of some active group could hold `shape` at all.
    fn any_group_fits(&self, shape: &Shape) -> bool {
        self.groups.iter().any(|group| {
            group.active
                && group.max > 0
                && labels_match(&group.labels, &shape.selector)
                && fits(&group.shape, &shape.resources)
        })
    }

    /// The group a new replica of which suits `shapes` best: Ray's scorer, in order: no
    /// GPU node for work that needs none, then the group's priority, then how many of the
    /// demanded resource names it has, then how fully the replica would be used.
    fn choose_group(&self, shapes: &[(Shape, u64)], rate_limited: bool) -> Option<usize> {
        let mut best: Option<(usize, (bool, i32, usize, f64))> = None;
        for (index, group) in self.groups.iter().enumerate() {
            if !group.active || group.target >= group.max {
                continue;
            }
            if rate_limited && group.task_allowance == 0 {
                continue;
            }
            let mut free: Vec<Amounts> = vec![group.shape.clone(); group.hosts.max(1) as usize];
            let mut used = Amounts::new();
            let mut packed_any = false;
            let mut wants_gpu = false;
            let mut names: BTreeSet<&str> = BTreeSet::new();
            for (shape, count) in shapes {
                if !labels_match(&group.labels, &shape.selector) {
                    continue;
                }
                let mut left = *count;
                for node in &mut free {
                    let placed = copies(node, &shape.resources, left);
                    if placed > 0 {
                        take(node, &shape.resources, placed);
                        for (name, amount) in &shape.resources {
                            *used.entry(name.clone()).or_default() += amount * placed as f64;
                        }
                        left -= placed;
                        packed_any = true;
                        wants_gpu |= shape.resources.get("GPU").is_some_and(|gpu| *gpu > 0.0);
                        names.extend(shape.resources.keys().map(String::as_str));
                    }
                }
            }
            if !packed_any {
                continue;
            }
            let has_gpu = group.shape.get("GPU").is_some_and(|gpu| *gpu > 0.0);
            let total: Amounts = group
                .shape
                .iter()
                .map(|(name, amount)| (name.clone(), amount * f64::from(group.hosts.max(1))))
                .collect();
            let matching = names
                .iter()
                .filter(|name| group.shape.contains_key(**name))
                .count();
            let score = (
                !has_gpu || wants_gpu,
                group.priority,
                matching,
                utilization(&total, &used),
            );
            let better = match &best {
                None => true,
                Some((_, current)) => {
                    (score.0, score.1, score.2) > (current.0, current.1, current.2)
                        || ((score.0, score.1, score.2) == (current.0, current.1, current.2)
                            && score.3 > current.3 + 1e-9)
                }
            };
            if better {
                best = Some((index, score));
            }
        }
        best.map(|(index, _)| index)
    }

    /// Adds one replica of `group`; returns the index of its first new slot.
    fn add_replica(&mut self, group: usize) -> usize {
        let first_new = self.slots.len();
        let plan = &mut self.groups[group];
        plan.target += 1;
        self.added += 1;
        for _ in 0..plan.hosts.max(1) {
            self.slots.push(Slot {
                group: Some(group),
                pod: None,
                labels: plan.labels.clone(),
                total: plan.shape.clone(),
                free: plan.shape.clone(),
                unreserved: plan.shape.clone(),
                needed: false,
                busy: false,
            });
        }
        first_new
    }

    /// Keeps `warm` replicas free beside the work of each group that has work (a busy
    /// node or demand placed on it), within the group's maximum. A group with no work is
    /// not refilled: once its spare workers have gone idle past the warm limit, it stays
    /// empty until demand comes back.
    fn warm_pool(&mut self, options: &Options) {
        for group in 0..self.groups.len() {
            let wanted = options.warm(&self.groups[group].name);
            let working = self
                .slots
                .iter()
                .any(|slot| slot.group == Some(group) && (slot.busy || slot.needed));
            if wanted == 0 || !self.groups[group].active || !working {
                continue;
            }
            let hosts = self.groups[group].hosts.max(1) as usize;
            let spare_nodes = self
                .slots
                .iter()
                .filter(|slot| slot.group == Some(group) && !slot.needed && !slot.busy)
                .count();
            let spare = u32::try_from(spare_nodes / hosts).unwrap_or(u32::MAX);
            let mut missing = wanted.saturating_sub(spare);
            while missing > 0
                && self.groups[group].target < self.groups[group].max
                && self.added < MAX_NEW_REPLICAS_PER_CALL
            {
                self.add_replica(group);
                missing -= 1;
                *self.groups[group]
                    .reasons
                    .entry(format!("the warm pool keeps {wanted} idle"))
                    .or_default() += 1;
            }
        }
    }

    /// Removes replicas idle past their timeout (all of a replica's nodes idle, none
    /// needed), longest idle first, down to `minReplicas`; then names victims for any
    /// replicas above the target.
    fn scale_down<C>(&mut self, request: &Request<C>, options: &Options) {
        let needed: BTreeSet<&str> = self
            .slots
            .iter()
            .filter(|slot| slot.needed)
            .filter_map(|slot| slot.pod.as_deref())
            .collect();
        for (index, group) in self.groups.iter_mut().enumerate() {
            if !group.active || group.target > group.replicas.clamp(group.min, group.max) {
                continue;
            }
            let spec = &request.groups[index];
            let timeout_ms = u64::from(
                spec.idle_timeout_seconds
                    .unwrap_or(request.idle_timeout_seconds),
            ) * 1000;
            let mut replicas: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
            for worker in request
                .workers
                .iter()
                .filter(|w| w.group == group.name && !w.leaving && is_present(w))
            {
                replicas.entry(&worker.replica).or_default().push(worker);
            }
            // (idle ms of the least idle node, replica) for replicas wholly idle and unneeded.
            let mut idle: Vec<(u64, &str)> = replicas
                .iter()
                .filter(|(_, nodes)| {
                    nodes.iter().all(|node| {
                        node.status == NodeStatus::Idle && !needed.contains(node.pod.as_str())
                    })
                })
                .map(|(replica, nodes)| {
                    let least = nodes.iter().map(|node| node.idle_ms).min().unwrap_or(0);
                    (least, *replica)
                })
                .collect();
            // Longest idle first; the most recently used are the ones kept.
            idle.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let warm = usize::try_from(options.warm(&group.name)).unwrap_or(usize::MAX);
            let keep_warm_from = idle.len().saturating_sub(warm);
            for (position, (idle_ms, replica)) in idle.iter().enumerate() {
                if group.target <= group.min {
                    break;
                }
                let is_warm = position >= keep_warm_from;
                let limit = if is_warm {
                    match options.warm_idle_limit_ms {
                        Some(limit) => limit.max(timeout_ms),
                        None => continue,
                    }
                } else {
                    timeout_ms
                };
                if *idle_ms < limit {
                    continue;
                }
                group.target -= 1;
                for node in &replicas[replica] {
                    group.to_delete.push(node.pod.clone());
                }
                group.idle_notes.push(format!(
                    "{replica} idle for {} s (limit {} s)",
                    idle_ms / 1000,
                    limit / 1000
                ));
            }
            // More replicas than the target (e.g. above maxReplicas): name the victims,
            // starting ones first, then the longest idle, then the least busy.
            let deleted: BTreeSet<&str> = group.to_delete.iter().map(String::as_str).collect();
            let mut remaining: Vec<(&str, &Vec<&Node>)> = replicas
                .iter()
                .filter(|(_, nodes)| {
                    nodes
                        .iter()
                        .all(|node| !deleted.contains(node.pod.as_str()))
                })
                .map(|(replica, nodes)| (*replica, nodes))
                .collect();
            let excess = remaining
                .len()
                .saturating_sub(usize::try_from(group.target).unwrap_or(usize::MAX));
            if excess > 0 {
                remaining.sort_by_key(|(replica, nodes)| {
                    let starting = nodes.iter().all(|n| n.status == NodeStatus::Starting);
                    let idle = nodes.iter().all(|n| n.status == NodeStatus::Idle);
                    let idle_ms = nodes.iter().map(|n| n.idle_ms).min().unwrap_or(0);
                    let activity: usize = nodes.iter().map(|n| n.activity.len()).sum();
                    (
                        !starting,
                        !idle,
                        std::cmp::Reverse(idle_ms),
                        activity,
                        *replica,
                    )
                });
                for (replica, nodes) in remaining.into_iter().take(excess) {
                    for node in nodes {
                        group.to_delete.push(node.pod.clone());
                    }
                    group.idle_notes.push(format!(
                        "{replica} is above the group's {} replicas",
                        group.target
                    ));
                }
            }
        }
    }

    fn output<C>(self, request: &Request<C>) -> AutoscaleOutput {
        let mut output = AutoscaleOutput {
            groups: Vec::new(),
            infeasible: Vec::new(),
            events: Vec::new(),
            requeue_after_ms: requeue_after(request, &self.groups),
        };
        for group in self.groups {
            if !group.active || (group.target == group.replicas && group.to_delete.is_empty()) {
                continue;
            }
            if group.target > group.replicas {
                let why: Vec<String> = group
                    .reasons
                    .iter()
                    .map(|(what, count)| format!("{what} (x{count})"))
                    .collect();
                let reason = if why.is_empty() {
                    format!("minReplicas is {}", group.min)
                } else {
                    why.join("; ")
                };
                output.events.push(Event::normal(
                    "ScaledUpWorkerGroup",
                    format!(
                        "added {} worker replica(s) to group {} ({} -> {}): {reason}",
                        group.target - group.replicas,
                        group.name,
                        group.replicas,
                        group.target
                    ),
                ));
            } else {
                output.events.push(Event::normal(
                    "ScaledDownWorkerGroup",
                    format!(
                        "removing {} from group {} ({} -> {}): {}",
                        group.to_delete.join(", "),
                        group.name,
                        group.replicas,
                        group.target,
                        group.idle_notes.join("; ")
                    ),
                ));
            }
            output.groups.push(GroupDecision {
                name: group.name,
                replicas: group.target,
                workers_to_delete: group.to_delete,
            });
        }
        output.infeasible = self
            .infeasible
            .into_iter()
            .map(|shape| ResourceRequest {
                resources: shape.resources.into_iter().collect(),
                label_selector: shape.selector,
            })
            .collect();
        output
    }
}

#[derive(Clone, Copy)]
enum Capacity {
    Free,
    Reserve,
}

fn plan_of(group: &WorkerGroup, conservative: bool) -> GroupPlan {
    let max = group.max_replicas;
    let min = group.min_replicas.min(max);
    let mut labels = node_labels(&group.labels);
    labels
        .entry("ray.io/node-group".to_owned())
        .or_insert_with(|| group.name.clone());
    GroupPlan {
        name: group.name.clone(),
        replicas: group.replicas,
        target: group.replicas.clamp(min, max),
        max,
        min,
        hosts: group.num_of_hosts.max(1),
        shape: amounts(&group.resources),
        labels,
        priority: group.priority,
        active: !group.suspended,
        task_allowance: if conservative { 0 } else { u32::MAX },
        reasons: BTreeMap::new(),
        to_delete: Vec::new(),
        idle_notes: Vec::new(),
    }
}

/// A node that takes part: not dead (a dead node's pod is the reconciler's business).
fn is_present(node: &Node) -> bool {
    node.status != NodeStatus::Dead
}

fn slot_of(node: &Node, group: Option<usize>) -> Slot {
    let total = amounts(&node.total);
    Slot {
        group,
        pod: Some(node.pod.clone()),
        labels: node_labels(&node.labels),
        free: amounts(&node.available),
        unreserved: total.clone(),
        total,
        needed: false,
        busy: node.status == NodeStatus::Running,
    }
}

fn shapes_of(requests: &[RequestCount]) -> Vec<(Shape, u64)> {
    let mut shapes: Vec<(Shape, u64)> = Vec::new();
    for request in requests {
        let shape = Shape::of(&request.request);
        if shape.is_empty() || request.count == 0 {
            continue;
        }
        let count = u64::from(request.count).min(MAX_COPIES_PER_SHAPE);
        match shapes.iter_mut().find(|(known, _)| *known == shape) {
            Some((_, total)) => *total = (*total + count).min(MAX_COPIES_PER_SHAPE),
            None => shapes.push((shape, count)),
        }
    }
    shapes
}

fn sort_largest_first(shapes: &mut [(Shape, u64)]) {
    shapes.sort_by(|(a, _), (b, _)| {
        let (a_len, a_sum) = a.size_key();
        let (b_len, b_sum) = b.size_key();
        b_len.cmp(&a_len).then(b_sum.total_cmp(&a_sum))
    });
}

/// When the next idle timeout runs out, so the host calls again then even if Ray's state
/// does not change.
fn requeue_after<C>(request: &Request<C>, groups: &[GroupPlan]) -> Option<u64> {
    request
        .workers
        .iter()
        .filter(|worker| !worker.leaving && worker.status == NodeStatus::Idle)
        .filter_map(|worker| {
            let index = request.groups.iter().position(|g| g.name == worker.group)?;
            if !groups[index].active {
                return None;
            }
            let timeout_ms = u64::from(
                request.groups[index]
                    .idle_timeout_seconds
                    .unwrap_or(request.idle_timeout_seconds),
            ) * 1000;
            timeout_ms
                .checked_sub(worker.idle_ms)
                .filter(|left| *left > 0)
        })
        .min()
}
