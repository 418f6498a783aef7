//! Resource arithmetic and first-fit packing of request shapes onto Ray nodes, as Ray's
//! autoscaler packs them: a request fits a node when every resource it names is free
//! there (a name the node lacks is 0) and the node's labels satisfy its selector.

use std::collections::BTreeMap;

use wasmray_plugin_sdk::autoscaler::{LabelConstraint, ResourceRequest, SelectorOperator};

/// Amounts per resource name.
pub type Amounts = BTreeMap<String, f64>;

/// Ray keeps resources in units of 1/10000; anything below is rounding.
const EPSILON: f64 = 1e-6;
/// Implicit resources every node has one of, whether or not it lists them.
const IMPLICIT_PREFIX: &str = "node:__internal_implicit_resource_";

/// A list of pairs as a map (duplicates add up).
pub fn amounts(pairs: &[(String, f64)]) -> Amounts {
    let mut map = Amounts::new();
    for (name, amount) in pairs {
        if amount.is_finite() && *amount > 0.0 {
            *map.entry(name.clone()).or_default() += amount;
        }
    }
    map
}

/// Ray's bundle-scoped names (`CPU_group_<pg>`, `CPU_group_<i>_<pg>`): only the placement
/// group's own bundles hold them, so no new node can.
pub fn is_placement_group_resource(name: &str) -> bool {
    name.contains("_group_")
}

/// One request shape: resources that must be on one node, and the labels it needs there.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub resources: Amounts,
    pub selector: Vec<LabelConstraint>,
}

impl Shape {
    pub fn of(request: &ResourceRequest) -> Shape {
        Shape {
            resources: amounts(&request.resources),
            selector: request.label_selector.clone(),
        }
    }

    /// Several shapes that must land on one node (STRICT_PACK), as one.
    pub fn sum<'a>(shapes: impl IntoIterator<Item = &'a Shape>) -> Shape {
        let mut sum = Shape {
            resources: Amounts::new(),
            selector: Vec::new(),
        };
        for shape in shapes {
            for (name, amount) in &shape.resources {
                *sum.resources.entry(name.clone()).or_default() += amount;
            }
            for constraint in &shape.selector {
                if !sum.selector.contains(constraint) {
                    sum.selector.push(constraint.clone());
                }
            }
        }
        sum
    }

    /// Larger first: more resource names, then a larger total, as Ray orders demand.
    pub fn size_key(&self) -> (usize, f64) {
        (self.resources.len(), self.resources.values().sum())
    }

    /// `{CPU: 1, GPU: 1}`, for events.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .resources
            .iter()
            .map(|(name, amount)| format!("{name}: {}", trim_float(*amount)))
            .collect();
        let mut text = format!("{{{}}}", parts.join(", "));
        for constraint in &self.selector {
            let operator = match constraint.operator {
                SelectorOperator::In => "in",
                SelectorOperator::NotIn => "not in",
            };
            text.push_str(&format!(
                " where {} {operator} [{}]",
                constraint.key,
                constraint.values.join(", ")
            ));
        }
        text
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

fn trim_float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Whether `labels` satisfy every constraint of `selector`.
pub fn labels_match(labels: &BTreeMap<String, String>, selector: &[LabelConstraint]) -> bool {
    selector.iter().all(|constraint| {
        let value = labels.get(&constraint.key);
        let listed = value.is_some_and(|value| constraint.values.contains(value));
        match constraint.operator {
            SelectorOperator::In => listed,
            SelectorOperator::NotIn => !listed,
        }
    })
}

/// Whether `need` fits in `free`.
pub fn fits(free: &Amounts, need: &Amounts) -> bool {
    need.iter().all(|(name, amount)| {
        let have = free
            .get(name)
            .copied()
            .unwrap_or(if name.starts_with(IMPLICIT_PREFIX) {
                1.0
            } else {
                0.0
            });
        have + EPSILON >= *amount
    })
}

/// How many copies of `need` fit in `free`, at most `limit`.
pub fn copies(free: &Amounts, need: &Amounts, limit: u64) -> u64 {
    let mut count = limit;
    for (name, amount) in need {
        if *amount <= EPSILON {
            continue;
        }
        let have = free.get(name).copied().unwrap_or(0.0);
        let fit = ((have + EPSILON) / amount).floor();
        count = count.min(if fit <= 0.0 { 0 } else { fit as u64 });
    }
    count
}

/// Takes `times` copies of `need` out of `free`.
pub fn take(free: &mut Amounts, need: &Amounts, times: u64) {
    for (name, amount) in need {
        let entry = free.entry(name.clone()).or_default();
        *entry = (*entry - amount * times as f64).max(0.0);
    }
}

/// The share of `total` that `need` uses, averaged over the resources `need` names (the
/// "utilization" Ray's scorer prefers high).
pub fn utilization(total: &Amounts, used: &Amounts) -> f64 {
    let shares: Vec<f64> = total
        .iter()
        .filter(|(_, amount)| **amount > EPSILON)
        .map(|(name, amount)| used.get(name).copied().unwrap_or(0.0) / amount)
        .collect();
    if shares.is_empty() {
        0.0
    } else {
        shares.iter().sum::<f64>() / shares.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, f64)]) -> Amounts {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn fitting_treats_a_missing_name_as_zero_except_implicit_resources() {
        let free = map(&[("CPU", 2.0)]);
        assert!(fits(&free, &map(&[("CPU", 2.0)])));
        assert!(!fits(&free, &map(&[("CPU", 2.5)])));
        assert!(!fits(&free, &map(&[("GPU", 1.0)])));
        assert!(fits(
            &free,
            &map(&[("node:__internal_implicit_resource_x", 1.0)])
        ));
        assert_eq!(copies(&map(&[("CPU", 4.0)]), &map(&[("CPU", 1.5)]), 9), 2);
        assert_eq!(copies(&map(&[("CPU", 4.0)]), &map(&[("CPU", 1.0)]), 3), 3);
    }

    #[test]
    fn selectors_need_every_constraint() {
        let labels: BTreeMap<String, String> =
            [("zone".to_owned(), "a".to_owned())].into_iter().collect();
        let constraint = |key: &str, operator, values: &[&str]| LabelConstraint {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        assert!(labels_match(
            &labels,
            &[constraint("zone", SelectorOperator::In, &["a", "b"])]
        ));
        assert!(!labels_match(
            &labels,
            &[constraint("zone", SelectorOperator::NotIn, &["a"])]
        ));
        assert!(labels_match(
            &labels,
            &[constraint("gpu", SelectorOperator::NotIn, &["x"])]
        ));
        assert!(!labels_match(
            &labels,
            &[constraint("gpu", SelectorOperator::In, &["x"])]
        ));
    }
}
