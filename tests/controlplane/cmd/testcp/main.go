package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubectl "k8s.io/kubectl/pkg/cmd"
	_ "go.etcd.io/etcd/server/v3/embed"
)

func main() {
	_ = apiserver.NewAPIServerCommand
	_ = kcm.NewControllerManagerCommand
	_ = scheduler.NewSchedulerCommand
	_ = kubectl.NewDefaultKubectlCommand
	os.Exit(cli.Run(nil))
}
