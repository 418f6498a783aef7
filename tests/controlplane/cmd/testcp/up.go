package main

import (
	"context"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	etcd "go.etcd.io/etcd/server/v3/embed"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/version"
)

//go:embed stages.yaml
var kwokStages []byte

//go:embed audit-policy.yaml
var auditPolicy []byte

const (
	// serviceCIDR is bookkeeping only: nothing routes to it, since no kube-proxy runs.
	serviceCIDR    = "10.0.0.0/24"
	firstServiceIP = "10.0.0.1"
	// Pod IPs are handed out by kwok from inside 127.0.0.0/8, so a controller that dials a
	// pod (e.g. a Ray dashboard client) reaches loopback and is refused instead of leaving
	// the machine.
	defaultPodCIDR = "127.128.0.0/16"
	defaultNodeIP  = "127.0.0.1"
	// kwok renews a Lease per node; the node lifecycle controller marks nodes NotReady
	// without it.
	nodeLeaseSeconds = "40"
)

// KCM runs every default controller except the ones that write Endpoints and
// EndpointSlices: their validation rejects loopback addresses (ValidateEndpointIP), and
// every pod IP here is loopback; nothing consumes them without kube-proxy anyway. Node
// IPAM is off because kwok assigns pod IPs itself.
var disabledControllers = []string{
	"endpoints-controller", "endpointslice-controller", "endpointslice-mirroring-controller",
	"node-ipam-controller",
}

type upOptions struct {
	dir            string
	nodesFile      string
	podCIDR        string
	nodeIP         string
	kwokBinary     string
	timeout        time.Duration
	stopOnStdinEOF bool
	stopWithParent bool
	apiserverArgs  []string
	kcmArgs        []string
	schedulerArgs  []string
	kwokArgs       []string
	// The pod runner (runner.go): its binary, extra flags, node count and pod CIDR.
	podRunner     string
	podRunnerArgs []string
	runnerNodes   int
	runnerPodCIDR string
}

// readyInfo is written to <dir>/ready.json once the cluster is usable, and printed as one
// JSON line on stdout.
type readyInfo struct {
	Version        string         `json:"version"`
	Server         string         `json:"server"`
	Kubeconfig     string         `json:"kubeconfig"`
	RunDir         string         `json:"runDir"`
	LogsDir        string         `json:"logsDir"`
	AuditLog       string         `json:"auditLog"`
	BinDir         string         `json:"binDir"`
	PodCIDR        string         `json:"podCIDR"`
	Nodes          []string       `json:"nodes"`
	Ports          map[string]int `json:"ports"`
	Pids           map[string]int `json:"pids"`
	StartupSeconds float64        `json:"startupSeconds"`
	PodRunner      *podRunnerInfo `json:"podRunner,omitempty"`
}

// workloadAwareGates turns on Kubernetes' workload-aware scheduling in the API server,
// controller-manager and scheduler: pods of a scheduling.k8s.io PodGroup with a gang policy
// are scheduled all at once or not at all. Pods outside such a group are unaffected. A
// later --feature-gates in the *-arg flags adds to these.
const workloadAwareGates = "--feature-gates=GenericWorkload=true,GangScheduling=true"

func runUp(args []string) int {
	opts := upOptions{}
	fs := pflag.NewFlagSet("up", pflag.ContinueOnError)
	fs.StringVar(&opts.dir, "dir", "", "run directory for kubeconfig, ready.json, logs, audit log, PKI and etcd data (required; recreated on start)")
	fs.StringVar(&opts.nodesFile, "nodes", "", "YAML file with fake node pools (default: 4 CPU nodes and 2 tainted 8-GPU nodes)")
	fs.StringVar(&opts.podCIDR, "pod-cidr", defaultPodCIDR, "CIDR kwok assigns pod IPs from; must lie inside 127.0.0.0/8")
	fs.StringVar(&opts.nodeIP, "node-ip", defaultNodeIP, "InternalIP of every fake node; must be a loopback address")
	fs.StringVar(&opts.kwokBinary, "kwok", "", "kwok binary (default: kwok next to testcp, then $PATH)")
	fs.DurationVar(&opts.timeout, "timeout", 3*time.Minute, "give up if the cluster is not ready within this time")
	fs.BoolVar(&opts.stopOnStdinEOF, "stop-on-stdin-eof", false, "stop when stdin reaches EOF (for a parent that holds a pipe to stdin)")
	fs.BoolVar(&opts.stopWithParent, "stop-with-parent", true, "stop when the parent process exits")
	fs.StringArrayVar(&opts.apiserverArgs, "apiserver-arg", nil, "extra kube-apiserver flag (repeatable)")
	fs.StringArrayVar(&opts.kcmArgs, "controller-manager-arg", nil, "extra kube-controller-manager flag (repeatable)")
	fs.StringArrayVar(&opts.schedulerArgs, "scheduler-arg", nil, "extra kube-scheduler flag (repeatable)")
	fs.StringArrayVar(&opts.kwokArgs, "kwok-arg", nil, "extra kwok flag (repeatable)")
	fs.StringVar(&opts.podRunner, "pod-runner", "", "pod runner binary: plays the kubelet for the tainted node pool \"ray\" (see README.md)")
	fs.StringArrayVar(&opts.podRunnerArgs, "pod-runner-arg", nil, "extra pod runner flag (repeatable)")
	fs.IntVar(&opts.runnerNodes, "runner-nodes", 0, "nodes in the pod runner's pool ray-0..N-1 (default 1 with --pod-runner)")
	fs.StringVar(&opts.runnerPodCIDR, "runner-pod-cidr", defaultRunnerPodCIDR, "CIDR the pod runner assigns pod IPs from; inside 127.0.0.0/8, apart from --pod-cidr")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: testcp up --dir DIR [flags]\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if opts.dir == "" {
		fmt.Fprintln(os.Stderr, "testcp up: --dir is required")
		fs.Usage()
		return 2
	}
	if opts.podRunner != "" && !fs.Changed("runner-nodes") {
		opts.runnerNodes = 1
	}
	log.SetPrefix("testcp up: ")
	log.SetFlags(log.Ltime | log.Lmicroseconds)

	// Children get Pdeathsig, which fires when the *thread* that forked them exits. Pinning
	// this goroutine to the main thread, which lives as long as the process, makes that
	// "when testcp exits" (including SIGKILL of testcp).
	runtime.LockOSThread()

	up, err := newCluster(opts)
	if err != nil {
		log.Print(err)
		return 1
	}
	ctx, stop := up.stopContext()
	defer stop()
	code := 0
	if err := up.start(ctx); err != nil {
		log.Print(err)
		code = 1
	} else if err := up.wait(ctx); err != nil {
		log.Print(err)
		code = 1
	}
	up.shutdown()
	return code
}

// cluster is one running control plane.
type cluster struct {
	opts     upOptions
	self     string // this executable, re-run as each component
	dir      string
	nodes    nodeConfig
	ports    map[string]int
	etcd     *etcd.Etcd
	children []*child
	started  time.Time

	// What `apiserver start` needs to bring the API server back exactly as it was.
	apiserverArgv []string
	apiserver     *child
	client        *kubernetes.Clientset
	ready         readyInfo

	// exited receives every child that exits; wait() tells requested stops from crashes.
	exited chan *child
	// stopping closes at shutdown, releasing goroutines that would wait for wait().
	stopping chan struct{}
	control  net.Listener
	requests chan controlRequest
}

func newCluster(opts upOptions) (*cluster, error) {
	if err := checkLoopback(opts.podCIDR, opts.nodeIP); err != nil {
		return nil, err
	}
	nodes, err := loadNodeConfig(opts.nodesFile)
	if err != nil {
		return nil, err
	}
	if err := addRunnerPool(&opts, &nodes); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.dir)
	if err != nil {
		return nil, err
	}
	if opts.kwokBinary == "" {
		opts.kwokBinary, err = findKwok()
		if err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &cluster{
		opts: opts, self: self, dir: dir, nodes: nodes, started: time.Now(),
		exited: make(chan *child), stopping: make(chan struct{}),
	}, nil
}

// checkLoopback enforces the network rule: nothing the cluster advertises may route off
// the machine.
func checkLoopback(podCIDR, nodeIP string) error {
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	ip, cidr, err := net.ParseCIDR(podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr %q: %w", podCIDR, err)
	}
	if ones, _ := cidr.Mask.Size(); !loopback.Contains(ip) || ones < 8 {
		return fmt.Errorf("--pod-cidr %q must lie inside 127.0.0.0/8", podCIDR)
	}
	if parsed := net.ParseIP(nodeIP); parsed == nil || !parsed.IsLoopback() {
		return fmt.Errorf("--node-ip %q must be a loopback address", nodeIP)
	}
	return nil
}

func findKwok() (string, error) {
	if self, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(self), "kwok")
		if _, err := os.Stat(sibling); err == nil {
			return sibling, nil
		}
	}
	path, err := exec.LookPath("kwok")
	if err != nil {
		return "", errors.New("kwok binary not found next to testcp or on $PATH; pass --kwok (tests/controlplane/build.sh builds it)")
	}
	return path, nil
}

// stopContext ends on SIGINT/SIGTERM, on stdin EOF (if asked) and when the parent exits.
func (c *cluster) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	if c.opts.stopOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			log.Print("stdin closed, stopping")
			cancel()
		}()
	}
	if c.opts.stopWithParent {
		parent := os.Getppid()
		go func() {
			// A child whose parent died is re-parented, so its parent pid changes.
			for range time.Tick(500 * time.Millisecond) {
				if os.Getppid() != parent {
					log.Print("parent process exited, stopping")
					cancel()
					return
				}
			}
		}()
	}
	return ctx, cancel
}

func (c *cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.dir}, parts...)...)
}

func (c *cluster) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()

	// Every start is a fresh cluster: stale etcd data or PKI from a previous run would
	// not match the new certificates and ports.
	for _, stale := range []string{"etcd", "pki", "kwok", "logs", "pod-runner", "ready.json", "audit.log", "kubeconfig", controlSocket} {
		if err := os.RemoveAll(c.path(stale)); err != nil {
			return err
		}
	}
	for _, d := range []string{"pki", "logs", "kwok/home"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return err
		}
	}
	log.Printf("run dir %s (logs in %s)", c.dir, c.path("logs"))

	names := []string{"etcd", "etcdPeer", "kubeApiserver", "kubeControllerManager", "kubeScheduler"}
	ports, err := freePorts(len(names))
	if err != nil {
		return err
	}
	c.ports = map[string]int{}
	for i, n := range names {
		c.ports[n] = ports[i]
	}

	files, err := c.writeConfig()
	if err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}

	server := fmt.Sprintf("https://127.0.0.1:%d", c.ports["kubeApiserver"])
	c.apiserverArgv = append([]string{"kube-apiserver",
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", c.ports["etcd"]),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.ports["kubeApiserver"]),
		"--tls-cert-file=" + files.serving.CertFile,
		"--tls-private-key-file=" + files.serving.KeyFile,
		"--client-ca-file=" + files.ca.CertFile,
		// Front-proxy (request header) authentication, as kubeadm sets it up: the
		// controller-manager and scheduler read this CA for delegated authentication, and
		// aggregated API servers would need it.
		"--requestheader-client-ca-file=" + files.ca.CertFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + files.frontProxy.CertFile,
		"--proxy-client-key-file=" + files.frontProxy.KeyFile,
		"--cert-dir=" + c.path("pki"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=" + server,
		"--service-account-key-file=" + files.serviceAccount.CertFile,
		"--service-account-signing-key-file=" + files.serviceAccount.KeyFile,
		"--authorization-mode=RBAC",
		// In addition to the default plugins: namespace annotations put a namespace's pods
		// on the pod runner's tainted pool (runner.go); without them they change nothing.
		"--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
		"--allow-privileged=true",
		// svc/kubernetes would list 127.0.0.1, which Endpoints validation rejects.
		"--endpoint-reconciler-type=none",
		"--audit-policy-file=" + c.path("audit-policy.yaml"),
		"--audit-log-path=" + c.path("audit.log"),
		"--profiling=false",
		workloadAwareGates,
		// The Workload and PodGroup API the gang scheduler reads (alpha in 1.36).
		"--runtime-config=scheduling.k8s.io/v1alpha2=true",
	}, c.opts.apiserverArgs...)
	admin, err := clientcmd.BuildConfigFromFlags("", c.path("kubeconfig"))
	if err != nil {
		return err
	}
	admin.QPS, admin.Burst = 100, 200
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	c.client = client
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	apiserver := c.apiserver
	log.Printf("kube-apiserver ready at %s", server)

	kcm, err := c.spawn("kube-controller-manager", c.self, append([]string{"kube-controller-manager",
		"--kubeconfig=" + files.kubeconfigs["kube-controller-manager"],
		"--authentication-kubeconfig=" + files.kubeconfigs["kube-controller-manager"],
		"--authorization-kubeconfig=" + files.kubeconfigs["kube-controller-manager"],
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.ports["kubeControllerManager"]),
		"--controllers=*,-" + strings.Join(disabledControllers, ",-"),
		// Each controller acts under its own ServiceAccount, as on kubeadm clusters; this
		// also exercises the token controller and TokenRequest on every start.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + files.serviceAccount.KeyFile,
		"--root-ca-file=" + files.ca.CertFile,
		"--cluster-signing-cert-file=" + files.ca.CertFile,
		"--cluster-signing-key-file=" + files.ca.KeyFile,
		// Benchmarks create thousands of pods; the stock 20 QPS would make the
		// garbage collector and Job controller the bottleneck instead of the code under test.
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--profiling=false",
		workloadAwareGates,
	}, c.opts.kcmArgs...), nil)
	if err != nil {
		return err
	}
	scheduler, err := c.spawn("kube-scheduler", c.self, append([]string{"kube-scheduler",
		"--kubeconfig=" + files.kubeconfigs["kube-scheduler"],
		"--authentication-kubeconfig=" + files.kubeconfigs["kube-scheduler"],
		"--authorization-kubeconfig=" + files.kubeconfigs["kube-scheduler"],
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.ports["kubeScheduler"]),
		"--profiling=false",
		workloadAwareGates,
	}, c.opts.schedulerArgs...), nil)
	if err != nil {
		return err
	}
	for _, comp := range []struct {
		child *child
		port  int
	}{{kcm, c.ports["kubeControllerManager"]}, {scheduler, c.ports["kubeScheduler"]}} {
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", comp.port)
		if err := waitFor(ctx, comp.child.name+" /healthz", []*child{apiserver, comp.child}, func(ctx context.Context) (bool, error) {
			return healthy(ctx, url), nil
		}); err != nil {
			return err
		}
		log.Printf("%s healthy", comp.child.name)
	}

	kwok, err := c.spawn("kwok", c.opts.kwokBinary, append([]string{
		"--kubeconfig=" + files.kubeconfigs["kwok"],
		"--config=" + c.path("kwok", "stages.yaml"),
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotationKey + "=" + kwokNodeAnnotationValue,
		"--cidr=" + c.opts.podCIDR,
		"--node-ip=" + c.opts.nodeIP,
		"--node-lease-duration-seconds=" + nodeLeaseSeconds,
	}, c.opts.kwokArgs...), []string{"HOME=" + c.path("kwok", "home")})
	if err != nil {
		return err
	}

	if err := createNodes(ctx, client, c.nodes); err != nil {
		return err
	}
	if err := waitFor(ctx, fmt.Sprintf("%d nodes Ready", c.nodes.nodeCount()), c.children, func(ctx context.Context) (bool, error) {
		return nodesReady(ctx, client, c.nodes)
	}); err != nil {
		return err
	}
	// Pods can only be created once the ServiceAccount admission plugin finds the
	// namespace's default ServiceAccount; wait for the controller to make it.
	if err := waitFor(ctx, "default ServiceAccount", c.children, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}); err != nil {
		return err
	}
	var runner *child
	var runnerInfo *podRunnerInfo
	if c.opts.podRunner != "" {
		if runner, runnerInfo, err = c.startRunner(ctx, c.path("kubeconfig")); err != nil {
			return err
		}
	}

	info, err := client.Discovery().ServerVersion()
	if err != nil {
		return err
	}
	ready := readyInfo{
		Version:        info.GitVersion,
		Server:         server,
		Kubeconfig:     c.path("kubeconfig"),
		RunDir:         c.dir,
		LogsDir:        c.path("logs"),
		AuditLog:       c.path("audit.log"),
		BinDir:         filepath.Dir(c.self),
		PodCIDR:        c.opts.podCIDR,
		Ports:          c.ports,
		Pids:           map[string]int{"testcp": os.Getpid()},
		StartupSeconds: time.Since(c.started).Seconds(),
		PodRunner:      runnerInfo,
	}
	for _, n := range c.nodes.nodes() {
		ready.Nodes = append(ready.Nodes, n.Name)
	}
	for _, ch := range []*child{apiserver, kcm, scheduler, kwok, runner} {
		if ch != nil {
			ready.Pids[ch.name] = ch.cmd.Process.Pid
		}
	}
	c.ready = ready
	// The socket exists before ready.json, so whoever sees ready.json can use it.
	c.listenControl()
	if err := c.writeReady(); err != nil {
		return err
	}
	log.Printf("ready in %.1fs: Kubernetes %s, %d nodes; export KUBECONFIG=%s",
		ready.StartupSeconds, ready.Version, len(ready.Nodes), ready.Kubeconfig)
	encoded, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	fmt.Println(string(encoded))
	return nil
}

// startAPIServer starts kube-apiserver with the arguments of the first start (same port,
// certificates and etcd) and waits until /readyz answers.
func (c *cluster) startAPIServer(ctx context.Context) error {
	apiserver, err := c.spawn("kube-apiserver", c.self, c.apiserverArgv, nil)
	if err != nil {
		return err
	}
	c.apiserver = apiserver
	return waitFor(ctx, "kube-apiserver /readyz", []*child{apiserver}, func(ctx context.Context) (bool, error) {
		_, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	})
}

// writeReady writes ready.json; write-then-rename so a poller never reads half a file.
func (c *cluster) writeReady() error {
	encoded, err := json.Marshal(c.ready)
	if err != nil {
		return err
	}
	tmp := c.path("ready.json.tmp")
	if err := os.WriteFile(tmp, append(encoded, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path("ready.json"))
}

// configFiles are the paths start() passes to the components.
type configFiles struct {
	ca             *authority
	serving        keyPair
	frontProxy     keyPair
	serviceAccount keyPair
	kubeconfigs    map[string]string
}

// writeConfig writes the PKI, one kubeconfig per identity, the audit policy and kwok's
// stages. Each component has its own identity so the audit log tells them apart.
func (c *cluster) writeConfig() (configFiles, error) {
	pki := c.path("pki")
	ca, err := newAuthority(pki)
	if err != nil {
		return configFiles{}, err
	}
	files := configFiles{ca: ca, kubeconfigs: map[string]string{}}
	if files.serving, err = ca.issue(pki, "kube-apiserver", "kube-apiserver", nil, true); err != nil {
		return configFiles{}, err
	}
	if files.frontProxy, err = ca.issue(pki, "front-proxy-client", "front-proxy-client", nil, false); err != nil {
		return configFiles{}, err
	}
	if files.serviceAccount, err = writeServiceAccountKeys(pki); err != nil {
		return configFiles{}, err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", c.ports["kubeApiserver"])
	identities := []struct {
		name, user string
		groups     []string
		path       string
	}{
		{"admin", "testcp:admin", []string{"system:masters"}, c.path("kubeconfig")},
		{"kube-controller-manager", "system:kube-controller-manager", nil, ""},
		{"kube-scheduler", "system:kube-scheduler", nil, ""},
		// kwok writes node and pod status for every fake kubelet.
		{"kwok", "testcp:kwok", []string{"system:masters"}, ""},
	}
	for _, id := range identities {
		pair, err := ca.issue(pki, id.name, id.user, id.groups, false)
		if err != nil {
			return configFiles{}, err
		}
		path := id.path
		if path == "" {
			path = filepath.Join(pki, id.name+".kubeconfig")
		}
		if err := writeKubeconfig(path, server, ca, pair); err != nil {
			return configFiles{}, err
		}
		files.kubeconfigs[id.name] = path
	}
	if err := os.WriteFile(c.path("audit-policy.yaml"), auditPolicy, 0o644); err != nil {
		return configFiles{}, err
	}
	stages := kwokStages
	if c.opts.podRunner != "" {
		var err error
		if stages, err = stagesSkippingNodes(kwokStages, c.runnerNodes()); err != nil {
			return configFiles{}, err
		}
	}
	if err := os.WriteFile(c.path("kwok", "stages.yaml"), stages, 0o644); err != nil {
		return configFiles{}, err
	}
	return files, nil
}

func writeKubeconfig(path, server string, ca *authority, pair keyPair) error {
	cert, err := os.ReadFile(pair.CertFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(pair.KeyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["testcp"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.CertPEM()}
	cfg.AuthInfos["testcp"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["testcp"] = &clientcmdapi.Context{Cluster: "testcp", AuthInfo: "testcp", Namespace: "default"}
	cfg.CurrentContext = "testcp"
	return clientcmd.WriteToFile(*cfg, path)
}

func (c *cluster) startEtcd(ctx context.Context) error {
	cfg := etcd.NewConfig()
	cfg.Name = "testcp"
	cfg.Dir = c.path("etcd")
	client := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", c.ports["etcd"])}
	peer := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", c.ports["etcdPeer"])}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Test data is disposable: skipping fsync makes writes an order of magnitude cheaper.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{c.path("logs", "etcd.log")}
	e, err := etcd.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	c.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		log.Printf("etcd ready at %s", client.String())
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("waiting for etcd: %w", ctx.Err())
	}
}

// wait blocks until asked to stop, or fails when a component exits on its own or etcd
// fails. It also carries out control requests (control.go), here on the main goroutine:
// the API server it restarts must be forked from the main thread to get Pdeathsig right.
func (c *cluster) wait(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch := <-c.exited:
			if ch.stopRequested {
				continue
			}
			return fmt.Errorf("%s exited unexpectedly (%v); see %s", ch.name, ch.err, ch.logPath)
		case err := <-c.etcd.Err():
			return fmt.Errorf("etcd failed: %w", err)
		case req := <-c.requests:
			req.reply <- c.handleControl(ctx, req.command)
		}
	}
}

// shutdown stops the children in reverse start order (the pod runner, started last, first,
// so the processes of its pods end while the API server still answers), then etcd. ready.json goes first so
// nobody attaches to a cluster that is going away.
func (c *cluster) shutdown() {
	_ = os.Remove(c.path("ready.json"))
	close(c.stopping)
	c.closeControl()
	for i := len(c.children) - 1; i >= 0; i-- {
		ch := c.children[i]
		grace := 10 * time.Second
		if ch.grace > 0 {
			grace = ch.grace
		}
		ch.stop(grace)
	}
	if c.etcd != nil {
		c.etcd.Close()
		// The data is useless without the PKI and ports of this run, and etcd
		// preallocates 64 MiB of WAL; logs and the audit log stay for inspection.
		if err := os.RemoveAll(c.path("etcd")); err != nil {
			log.Printf("removing etcd data: %v", err)
		}
	}
	log.Print("stopped")
}

// child is a component running as a subprocess, logging to <dir>/logs/<name>.log.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	// stopRequested marks an exit asked for through the control socket, not a crash.
	stopRequested bool
	// grace, when set, replaces shutdown's SIGTERM-to-SIGKILL wait.
	grace time.Duration
	// killGroup: once the child is gone, SIGKILL what is left of its process group.
	killGroup bool
}

func (c *cluster) spawn(name, binary string, args []string, extraEnv []string) (*child, error) {
	logPath := c.path("logs", name+".log")
	// Appending keeps the log of an API server that was stopped and started again.
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Killed with testcp even if testcp itself is SIGKILLed.
		Pdeathsig: syscall.SIGKILL,
		// Own process group: a terminal's Ctrl-C reaches only testcp, which then stops
		// the components in order.
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		logFile.Close()
		close(ch.done)
		select {
		case c.exited <- ch:
		case <-c.stopping:
		}
	}()
	// A restarted component takes its predecessor's place, so shutdown keeps the order.
	replaced := false
	for i, old := range c.children {
		if old.name == name {
			c.children[i], replaced = ch, true
		}
	}
	if !replaced {
		c.children = append(c.children, ch)
	}
	log.Printf("started %s (pid %d)", name, cmd.Process.Pid)
	return ch, nil
}

func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

func (ch *child) stop(grace time.Duration) {
	if !ch.exited() {
		_ = ch.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ch.done:
		case <-time.After(grace):
			log.Printf("%s did not stop within %s, killing it", ch.name, grace)
			_ = ch.cmd.Process.Kill()
			<-ch.done
		}
	}
	if ch.killGroup {
		// Setpgid made the child's pid its process group id.
		_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// waitFor polls probe until it reports true, failing early with the log tail of any
// watched child that exits meanwhile.
func waitFor(ctx context.Context, what string, watch []*child, probe func(context.Context) (bool, error)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		for _, ch := range watch {
			if ch.exited() {
				return fmt.Errorf("%s exited while waiting for %s (%v); last log lines:\n%s", ch.name, what, ch.err, tail(ch.logPath, 20))
			}
		}
		probeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := probe(probeCtx)
		cancel()
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// healthy probes a component's /healthz. The controller-manager and scheduler serve on
// loopback with a self-signed certificate generated in memory, so there is nothing to
// verify it against; the probe carries no credentials.
func healthy(ctx context.Context, url string) bool {
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true, // one probe per client; keep no idle connections behind
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tail(path string, lines int) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// freePorts reserves n distinct loopback ports by binding them all at once, then releases
// them for the components (the apiserver cannot take port 0).
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserving a loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func kubernetesVersion() string {
	return version.Get().GitVersion
}
