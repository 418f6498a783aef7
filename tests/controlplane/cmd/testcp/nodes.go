package main

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// kwokNodeAnnotation marks the Nodes kwok plays the kubelet for (its
// --manage-nodes-with-annotation-selector).
const (
	kwokNodeAnnotationKey   = "kwok.x-k8s.io/node"
	kwokNodeAnnotationValue = "fake"
	// poolLabel names the pool a node came from, so tests can select a pool.
	poolLabel = "testcp.wasmray.io/pool"
)

// nodeConfig is the file given to `up --nodes`.
type nodeConfig struct {
	Pools []nodePool `json:"pools"`
}

// nodePool is a group of identical fake nodes.
type nodePool struct {
	// Name prefixes the node names: <name>-0, <name>-1, ...
	Name  string `json:"name"`
	Count int    `json:"count"`
	// Capacity is also the allocatable amount (fake nodes reserve nothing for a kubelet).
	Capacity corev1.ResourceList `json:"capacity"`
	Labels   map[string]string   `json:"labels,omitempty"`
	Taints   []corev1.Taint      `json:"taints,omitempty"`
}

// defaultNodeConfig is four large CPU nodes and two 8-GPU nodes tainted like a managed GPU
// pool, so GPU pods need both a toleration and a GPU request. The pod capacity (8000 on
// the CPU pool) leaves room for benchmarks with thousands of pods.
func defaultNodeConfig() nodeConfig {
	return nodeConfig{Pools: []nodePool{
		{
			Name:  "cpu",
			Count: 4,
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("256"),
				corev1.ResourceMemory: resource.MustParse("1Ti"),
				corev1.ResourcePods:   resource.MustParse("2000"),
			},
			Labels: map[string]string{"node.kubernetes.io/instance-type": "testcp-cpu-256"},
		},
		{
			Name:  "gpu",
			Count: 2,
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("96"),
				corev1.ResourceMemory: resource.MustParse("768Gi"),
				corev1.ResourcePods:   resource.MustParse("500"),
				"nvidia.com/gpu":      resource.MustParse("8"),
			},
			Labels: map[string]string{
				"node.kubernetes.io/instance-type": "testcp-gpu-8",
				"nvidia.com/gpu.present":           "true",
				"nvidia.com/gpu.product":           "NVIDIA-A100-SXM4-80GB",
				"nvidia.com/gpu.count":             "8",
			},
			Taints: []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}},
		},
	}}
}

func loadNodeConfig(path string) (nodeConfig, error) {
	if path == "" {
		return defaultNodeConfig(), nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nodeConfig{}, err
	}
	var cfg nodeConfig
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		return nodeConfig{}, fmt.Errorf("node config %s: %w", path, err)
	}
	if err := cfg.validate(); err != nil {
		return nodeConfig{}, fmt.Errorf("node config %s: %w", path, err)
	}
	return cfg, nil
}

func (c nodeConfig) validate() error {
	seen := map[string]bool{}
	for i, p := range c.Pools {
		switch {
		case p.Name == "":
			return fmt.Errorf("pools[%d].name is empty", i)
		case seen[p.Name]:
			return fmt.Errorf("pools[%d].name %q is used twice", i, p.Name)
		case p.Count < 0:
			return fmt.Errorf("pools[%d] (%s): count %d is negative", i, p.Name, p.Count)
		case p.Capacity.Pods().IsZero():
			return fmt.Errorf("pools[%d] (%s): capacity.pods must be set and positive", i, p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

func (c nodeConfig) nodeCount() int {
	n := 0
	for _, p := range c.Pools {
		n += p.Count
	}
	return n
}

// nodes renders the Node objects. Status is accepted on create for Nodes, and kwok keeps a
// capacity that is already set, so capacity is fixed from the first write.
func (c nodeConfig) nodes() []*corev1.Node {
	var out []*corev1.Node
	for _, p := range c.Pools {
		for i := 0; i < p.Count; i++ {
			name := fmt.Sprintf("%s-%d", p.Name, i)
			labels := map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
				poolLabel:                p.Name,
			}
			for k, v := range p.Labels {
				labels[k] = v
			}
			out = append(out, &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{
					Name:        name,
					Labels:      labels,
					Annotations: map[string]string{kwokNodeAnnotationKey: kwokNodeAnnotationValue},
				},
				Spec: corev1.NodeSpec{
					ProviderID: "kwok://" + name,
					Taints:     append([]corev1.Taint(nil), p.Taints...),
				},
				Status: corev1.NodeStatus{
					Capacity:    p.Capacity.DeepCopy(),
					Allocatable: p.Capacity.DeepCopy(),
				},
			})
		}
	}
	return out
}

func createNodes(ctx context.Context, client kubernetes.Interface, cfg nodeConfig) error {
	for _, node := range cfg.nodes() {
		if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node %s: %w", node.Name, err)
		}
	}
	return nil
}

// nodesReady reports whether every configured node is Ready and no longer carries the
// not-ready taint the apiserver puts on new nodes (the node lifecycle controller removes it).
func nodesReady(ctx context.Context, client kubernetes.Interface, cfg nodeConfig) (bool, error) {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
	if err != nil {
		return false, err
	}
	ready := 0
	for _, n := range list.Items {
		if nodeIsReady(&n) {
			ready++
		}
	}
	return ready >= cfg.nodeCount(), nil
}

func nodeIsReady(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
