// Command etcd is the pinned etcd server for Tessera's local test control plane (scripts/kube-up).
// It is etcd's own entry point, built from go.etcd.io/etcd/server/v3 at the version in go.mod, so the
// control plane needs no download from outside the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
