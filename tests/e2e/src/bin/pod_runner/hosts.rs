//! The hosts file a pod sees as `/etc/hosts`: its own name, as a kubelet writes it, and the
//! Services it can reach, as cluster DNS would answer (there is no DNS server here).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;

/// A pod as name resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHost {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub ready: bool,
}

/// `/etc/hosts` for the pods `own` (they share one network namespace) that can reach the
/// pods `reachable` (`own` included): every own pod's hostname, and every Service of the
/// same namespace whose selector picks a reachable pod, under its four DNS names. A Service
/// with several such pods resolves to one of them, ready ones first, as the first address of
/// a DNS answer would be used.
pub fn render(
    own: &[PodHost],
    reachable: &[PodHost],
    services: &[Service],
    cluster_domain: &str,
) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for pod in own {
        let mut names = vec![pod.hostname.clone()];
        if let Some(subdomain) = &pod.subdomain {
            names.insert(
                0,
                format!(
                    "{}.{subdomain}.{}.svc.{cluster_domain}",
                    pod.hostname, pod.namespace
                ),
            );
        }
        let _ = writeln!(out, "{}\t{}", pod.ip, names.join(" "));
    }
    let namespaces: Vec<&str> = own.iter().map(|pod| pod.namespace.as_str()).collect();
    let mut lines: Vec<String> = services
        .iter()
        .filter_map(|service| {
            let namespace = service.metadata.namespace.as_deref()?;
            if !namespaces.contains(&namespace) {
                return None;
            }
            let name = service.metadata.name.as_deref()?;
            let selector = service.spec.as_ref()?.selector.as_ref()?;
            if selector.is_empty() {
                return None;
            }
            let pod = reachable
                .iter()
                .filter(|pod| pod.namespace == namespace && selects(selector, &pod.labels))
                .min_by_key(|pod| (!pod.ready, pod.name.clone()))?;
            Some(format!(
                "{}\t{name}.{namespace}.svc.{cluster_domain} {name}.{namespace}.svc {name}.{namespace} {name}",
                pod.ip
            ))
        })
        .collect();
    lines.sort();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A Service's equality-based selector against a pod's labels.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use kube::api::ObjectMeta;

    fn pod(name: &str, ip: [u8; 4], labels: &[(&str, &str)], ready: bool) -> PodHost {
        PodHost {
            namespace: "team".into(),
            name: name.into(),
            hostname: name.into(),
            subdomain: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ip: Ipv4Addr::from(ip),
            ready,
        }
    }

    fn service(namespace: &str, name: &str, selector: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_and_the_services_that_select_them_resolve() {
        let head = pod(
            "rc-head-a",
            [127, 129, 0, 2],
            &[("ray.io/node-type", "head")],
            true,
        );
        let worker = pod(
            "rc-w-b",
            [127, 129, 0, 3],
            &[("ray.io/node-type", "worker")],
            true,
        );
        let other = pod("other", [127, 129, 0, 9], &[("app", "x")], true);
        let services = [
            service("team", "rc-head-svc", &[("ray.io/node-type", "head")]),
            service("team", "nobody", &[("app", "none")]),
            service("elsewhere", "rc-head-svc", &[("ray.io/node-type", "head")]),
            service("team", "unreachable", &[("app", "x")]),
        ];
        let own = [head.clone(), worker.clone()];
        let text = render(&own, &own, &services, "cluster.local");
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.129.0.2\trc-head-a\n127.129.0.3\trc-w-b\n\
             127.129.0.2\trc-head-svc.team.svc.cluster.local rc-head-svc.team.svc rc-head-svc.team rc-head-svc\n"
        );
        // A pod outside the network namespace sees Services of pods it reaches through relays.
        let text = render(
            std::slice::from_ref(&other),
            &[head, worker, other.clone()],
            &services,
            "k8s.test",
        );
        assert!(
            text.contains("127.129.0.2\trc-head-svc.team.svc.k8s.test"),
            "{text}"
        );
        assert!(
            text.contains("127.129.0.9\tunreachable.team.svc.k8s.test"),
            "{text}"
        );
    }

    #[test]
    fn a_service_prefers_a_ready_pod() {
        let unready = pod("a", [127, 129, 0, 2], &[("app", "s")], false);
        let ready = pod("b", [127, 129, 0, 3], &[("app", "s")], true);
        let pods = [unready, ready];
        let text = render(&pods, &pods, &[service("team", "s", &[("app", "s")])], "c");
        assert!(text.contains("127.129.0.3\ts.team.svc.c"), "{text}");
    }
}
