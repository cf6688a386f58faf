package network

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// serveIn serves h on addr inside the namespace at path.
func serveIn(t *testing.T, path, addr string, h http.Handler) *http.Server {
	t.Helper()
	var ln net.Listener
	if err := inNS(path, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestGateway(t *testing.T) {
	m, _ := newTestManager(t)
	p := setup(t, m,
		map[string]string{"1-net": "10.1.0.0/24", "2-net": "10.1.0.0/24"},
		map[string][2]string{"1-a": {"1-net", "10.1.0.2"}, "2-a": {"2-net", "10.1.0.2"}})

	app := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") == "echo" {
				// A websocket-like upgrade: 101, then the connection echoes.
				c, rw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer c.Close()
				rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
				rw.Flush()
				line, _ := rw.ReadString('\n')
				rw.WriteString(name + " echoes " + line)
				rw.Flush()
				return
			}
			fmt.Fprintf(w, "%s %s host=%s xff=%s xfh=%s xfp=%s from=%s",
				name, r.URL.RequestURI(), r.Host, r.Header.Get("X-Forwarded-For"),
				r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"), r.RemoteAddr)
		})
	}
	backend1 := serveIn(t, p["1-a"], ":80", app("one"))
	serveIn(t, p["2-a"], ":80", app("two"))

	g := NewGateway(m, nil)
	target := netip.MustParseAddrPort("10.1.0.2:80")
	g.Set("app.example", "1-net", target)
	g.Set("Other.Example", "2-net", target)
	srv := httptest.NewServer(g)
	defer srv.Close()

	get := func(host, path string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Host = host
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	code, body := get("app.example", "/x?y=1", "X-Forwarded-For", "6.6.6.6")
	if code != 200 || !strings.HasPrefix(body, "one /x?y=1 host=app.example xff=127.0.0.1 xfh=app.example xfp=http from=10.1.0.1:") {
		t.Errorf("app.example: %d %q", code, body)
	}
	// Same address, other network: the other container. Port and case ignored.
	if code, body := get("other.example:8080", "/"); code != 200 || !strings.HasPrefix(body, "two ") {
		t.Errorf("other.example: %d %q", code, body)
	}
	if code, _ := get("nobody.example", "/"); code != http.StatusNotFound {
		t.Errorf("unknown host: %d, want 404", code)
	}
	if h := g.Hosts(); len(h) != 2 || h["app.example"] != "1-net 10.1.0.2:80" || h["other.example"] != "2-net 10.1.0.2:80" {
		t.Errorf("Hosts: %v", h)
	}

	// An upgraded connection passes both ways.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "one echoes hello\n" {
		t.Errorf("upgraded: %q %v", line, err)
	}

	// The backend goes away: 502 once DialWait has passed. Then the route
	// goes: 404.
	backend1.Close() // its listener and connections
	g.DialWait = 300 * time.Millisecond
	t0 := time.Now()
	if code, _ := get("app.example", "/"); code != http.StatusBadGateway {
		t.Errorf("backend down: %d, want 502", code)
	}
	if d := time.Since(t0); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("502 after %v, want after DialWait (300ms)", d)
	}
	// A backend that starts listening while a request waits is served: a
	// container's first request does not get 502 for being early.
	g.DialWait = 5 * time.Second
	go func() {
		time.Sleep(300 * time.Millisecond)
		serveIn(t, p["1-a"], ":80", app("late"))
	}()
	if code, body := get("app.example", "/"); code != http.StatusOK || !strings.HasPrefix(body, "late ") {
		t.Errorf("backend starting during the request: %d %q", code, body)
	}
	g.Remove("APP.example")
	if code, _ := get("app.example", "/"); code != http.StatusNotFound {
		t.Errorf("removed host: %d, want 404", code)
	}
}
