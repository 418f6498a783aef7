# Entry points for people and CI. Each target is a thin wrapper around a script, so the scripts
# stay the single source of truth.

.PHONY: demo test crds controlplane

## demo: a local control plane, the CRDs, the host, a sample RayCluster and RayJob (Ctrl-C cleans up)
demo:
	deploy/local/demo.sh

## test: the whole test suite (what CI runs)
test:
	tests/scripts/test-all.sh

## crds: regenerate the CRD YAML in crds/generated from the Rust types, and the chart's copy
crds:
	cargo run -p wasmray-crds --bin crdgen -- crds/generated
	cp crds/generated/*.yaml deploy/helm/wasmray/crds/

## controlplane: build the local Kubernetes control plane and print where its binaries are
controlplane:
	tests/controlplane/build.sh
