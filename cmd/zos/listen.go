package main

import (
	"net"
	"os"
)

// listenHosts are the names clients can address a server on listen by:
// the address itself, with localhost for loopback; for a wildcard, every
// address of the machine and its host name.
func listenHosts(listen string, addr net.Addr) []string {
	_, port, _ := net.SplitHostPort(addr.String())
	h, _, _ := net.SplitHostPort(listen)
	var out []string
	if h != "" && h != "0.0.0.0" && h != "::" {
		out = append(out, addr.String())
		if ip := net.ParseIP(h); h == "localhost" || ip != nil && ip.IsLoopback() {
			out = append(out, "localhost:"+port)
		}
		return out
	}
	if name, err := os.Hostname(); err == nil {
		out = append(out, net.JoinHostPort(name, port))
	}
	out = append(out, "localhost:"+port)
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				out = append(out, net.JoinHostPort(ipn.IP.String(), port))
			}
		}
	}
	return out
}
