package main

// The pod runner is a kubelet of our own for a dedicated pool of fake nodes: it runs the pods
// bound to them as real local processes (e.g. real Ray). kwok still keeps those nodes Ready
// and renews their Leases, but leaves their pods alone, and a namespace opts into the pool
// with two annotations read by the PodNodeSelector and PodTolerationRestriction admission
// plugins (see README.md).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

const (
	runnerPool = "ray"
	// runnerTaintKey keeps every pod off the runner's nodes unless its namespace opted in.
	runnerTaintKey = "testcp.wasmray.io/pod-runner"
	// defaultRunnerPodCIDR is where the runner takes pod IPs from: loopback, apart from
	// kwok's pods.
	defaultRunnerPodCIDR = "127.129.0.0/16"
	// runnerStopGrace lets the runner end the processes of its pods before the API server goes.
	runnerStopGrace = 15 * time.Second
	// The runner creates this file in its state dir once it serves its nodes.
	runnerReadyFile = "ready"

	nodeSelectorAnnotation       = "scheduler.alpha.kubernetes.io/node-selector"
	defaultTolerationsAnnotation = "scheduler.alpha.kubernetes.io/defaultTolerations"
)

// podRunnerInfo is ready.json's "podRunner".
type podRunnerInfo struct {
	Nodes    []string `json:"nodes"`
	StateDir string   `json:"stateDir"`
	PodCIDR  string   `json:"podCIDR"`
	// NamespaceAnnotations put every pod of a namespace that carries them on the runner's
	// nodes.
	NamespaceAnnotations map[string]string `json:"namespaceAnnotations"`
}

// runnerTaint is on every runner node.
func runnerTaint() corev1.Taint {
	return corev1.Taint{Key: runnerTaintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}
}

// runnerNodePool is the pool of fake nodes the runner plays the kubelet for.
func runnerNodePool(count int) nodePool {
	return nodePool{
		Name:  runnerPool,
		Count: count,
		Capacity: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("500"),
		},
		Labels: map[string]string{"node.kubernetes.io/instance-type": "testcp-pod-runner"},
		Taints: []corev1.Taint{runnerTaint()},
	}
}

// runnerNamespaceAnnotations select the runner's pool and tolerate its taint for every pod
// created in the namespace.
func runnerNamespaceAnnotations() (map[string]string, error) {
	tolerations, err := json.Marshal([]corev1.Toleration{{
		Key: runnerTaintKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule,
	}})
	if err != nil {
		return nil, err
	}
	return map[string]string{
		nodeSelectorAnnotation:       poolLabel + "=" + runnerPool,
		defaultTolerationsAnnotation: string(tolerations),
	}, nil
}

// addRunnerPool checks the runner's options and appends its pool to the node config.
func addRunnerPool(opts *upOptions, nodes *nodeConfig) error {
	if opts.podRunner == "" {
		if opts.runnerNodes > 0 {
			return errors.New("--runner-nodes needs --pod-runner")
		}
		return nil
	}
	if opts.runnerNodes < 1 {
		return fmt.Errorf("--runner-nodes %d: a pod runner needs at least one node", opts.runnerNodes)
	}
	for _, p := range nodes.Pools {
		if p.Name == runnerPool {
			return fmt.Errorf("the node config has a pool named %q, which --pod-runner reserves for the runner's nodes; rename it", runnerPool)
		}
	}
	if err := checkDisjointLoopback(opts.runnerPodCIDR, opts.podCIDR); err != nil {
		return err
	}
	path, err := exec.LookPath(opts.podRunner)
	if err != nil {
		return fmt.Errorf("--pod-runner: %w", err)
	}
	opts.podRunner = path
	nodes.Pools = append(nodes.Pools, runnerNodePool(opts.runnerNodes))
	return nil
}

// checkDisjointLoopback requires the runner's pod CIDR inside 127.0.0.0/8 (nothing may route
// off the machine) and apart from kwok's, so no two pods share an IP.
func checkDisjointLoopback(runnerCIDR, podCIDR string) error {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	ip, runner, err := net.ParseCIDR(runnerCIDR)
	if err != nil {
		return fmt.Errorf("--runner-pod-cidr %q: %w", runnerCIDR, err)
	}
	if ones, _ := runner.Mask.Size(); !loopback.Contains(ip) || ones < 8 {
		return fmt.Errorf("--runner-pod-cidr %q must lie inside 127.0.0.0/8", runnerCIDR)
	}
	_, pods, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr %q: %w", podCIDR, err)
	}
	// Two CIDRs overlap exactly when one contains the other's network address.
	if runner.Contains(pods.IP) || pods.Contains(runner.IP) {
		return fmt.Errorf("--runner-pod-cidr %s overlaps --pod-cidr %s", runnerCIDR, podCIDR)
	}
	return nil
}

// stagesSkippingNodes returns the kwok stages with every Pod stage restricted to pods not
// bound to one of nodes, whose status and deletion the runner owns as their kubelet. Node
// stages are kept: kwok still reports those nodes Ready.
func stagesSkippingNodes(stages []byte, nodes []string) ([]byte, error) {
	out := []byte("# testcp's shipped kwok stages; the Pod stages skip the pod runner's nodes.\n")
	podStages := 0
	for i, doc := range bytes.Split(stages, []byte("\n---\n")) {
		var stage map[string]any
		if err := yaml.Unmarshal(doc, &stage); err != nil {
			return nil, fmt.Errorf("stage document %d: %w", i, err)
		}
		if stage == nil {
			continue
		}
		spec, _ := stage["spec"].(map[string]any)
		ref, _ := spec["resourceRef"].(map[string]any)
		if ref["kind"] == "Pod" {
			selector, _ := spec["selector"].(map[string]any)
			if selector == nil {
				selector = map[string]any{}
				spec["selector"] = selector
			}
			expressions, _ := selector["matchExpressions"].([]any)
			// A pod not bound yet has no nodeName, which NotIn matches.
			selector["matchExpressions"] = append(expressions, map[string]any{
				"key": ".spec.nodeName", "operator": "NotIn", "values": nodes,
			})
			podStages++
		}
		encoded, err := yaml.Marshal(stage)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, encoded...)
	}
	if podStages == 0 {
		return nil, errors.New("the shipped kwok stages have no Pod stage to restrict")
	}
	return out, nil
}

// runnerNodes names the nodes of the runner's pool.
func (c *cluster) runnerNodes() []string {
	var names []string
	for _, n := range c.nodes.nodes() {
		if n.Labels[poolLabel] == runnerPool {
			names = append(names, n.Name)
		}
	}
	return names
}

// startRunner starts the pod runner once its nodes are Ready and waits for its ready file.
func (c *cluster) startRunner(ctx context.Context, kubeconfig string) (*child, *podRunnerInfo, error) {
	nodes := c.runnerNodes()
	stateDir := c.path("pod-runner")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, nil, err
	}
	annotations, err := runnerNamespaceAnnotations()
	if err != nil {
		return nil, nil, err
	}
	runner, err := c.spawn("pod-runner", c.opts.podRunner, append([]string{
		"--kubeconfig", kubeconfig,
		"--nodes", strings.Join(nodes, ","),
		"--state-dir", stateDir,
		"--pod-cidr", c.opts.runnerPodCIDR,
	}, c.opts.podRunnerArgs...), nil)
	if err != nil {
		return nil, nil, err
	}
	runner.grace = runnerStopGrace
	// Whatever the runner leaves behind in its process group when it stops goes too.
	runner.killGroup = true
	ready := c.path("pod-runner", runnerReadyFile)
	if err := waitFor(ctx, ready, []*child{runner}, func(context.Context) (bool, error) {
		_, err := os.Stat(ready)
		return err == nil, nil
	}); err != nil {
		return nil, nil, err
	}
	log.Printf("pod-runner ready for nodes %s", strings.Join(nodes, ","))
	return runner, &podRunnerInfo{
		Nodes: nodes, StateDir: stateDir, PodCIDR: c.opts.runnerPodCIDR, NamespaceAnnotations: annotations,
	}, nil
}
