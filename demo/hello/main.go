// Command hello is the demo's workload (demo/run.sh): a static HTTP server
// that says where it runs, so the README's first command has an image to
// pack and deploy without a registry or a Debian mirror.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	addr := ":8000"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	host, _ := os.Hostname()
	var n atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from zos: container %s, pid %d, request %d, GREETING=%q\n", host, os.Getpid(), n.Add(1), os.Getenv("GREETING"))
	})
	log.Printf("hello: listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
