//go:build tools

// Package coredns names the cluster DNS server the rig builds.
package coredns

import _ "github.com/coredns/coredns"
