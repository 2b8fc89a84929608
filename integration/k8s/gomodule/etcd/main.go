// Command etcd is etcd's own server entry point at the version
// k8s.io/kubernetes requires, so the rig's store matches what the
// apiserver is tested against.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
