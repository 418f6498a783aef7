// Command testcp is a multi-call binary holding a real Kubernetes control plane for tests:
// kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from one pinned
// Kubernetes release, plus `up`, which runs them (and etcd, in process) on loopback.
//
// The component is chosen by the first argument, or by the name the binary was started
// under, so a `kubectl` symlink to testcp behaves like kubectl.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata" // CronJob time zones, as in the upstream apiserver and controller-manager

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: testcp <command> [flags]

commands:
  up                        start etcd, kube-apiserver, kube-controller-manager, kube-scheduler
                            and kwok on loopback (see "testcp up --help")
  apiserver                 stop or start the kube-apiserver of a running "up" (see
                            "testcp apiserver --help")
  kube-apiserver            run the kube-apiserver of this release
  kube-controller-manager   run the kube-controller-manager of this release
  kube-scheduler            run the kube-scheduler of this release
  kubectl                   run kubectl of this release (also when invoked through a "kubectl" symlink)
  version                   print the Kubernetes version testcp was built from
`

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "testcp" || name == "" {
		if len(args) == 0 {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	os.Exit(run(name, args))
}

func run(name string, args []string) int {
	// The upstream commands parse os.Args themselves; present each one its usual argv.
	os.Args = append([]string{name}, args...)
	switch name {
	case "up":
		return runUp(args)
	case "apiserver":
		return runAPIServerCommand(args)
	case "kube-apiserver":
		return cli.Run(apiserver.NewAPIServerCommand())
	case "kube-controller-manager":
		return cli.Run(controllermanager.NewControllerManagerCommand())
	case "kube-scheduler":
		return cli.Run(scheduler.NewSchedulerCommand())
	case "kubectl":
		return runKubectl()
	case "version":
		fmt.Println(kubernetesVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "testcp: unknown command %q\n\n%s", name, usage)
		return 2
	}
}

func runKubectl() int {
	// kubectl reads its verbosity before flag parsing so that plugin and kuberc handling log
	// at the requested level.
	_, _ = logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args))
	if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
		kubectlutil.CheckErr(err) // prints the error the way kubectl does and exits non-zero
	}
	return 0
}
