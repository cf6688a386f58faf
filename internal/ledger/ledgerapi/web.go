package ledgerapi

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/ledgerclient"
	"github.com/zosgrid/zos/internal/spec"
)

//go:embed web
var webFiles embed.FS

// webCSP forbids scripts, frames, forms and every origin but our own for
// styles: an endpoint or report detail that slipped through escaping
// still could not run.
const webCSP = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// webLists bounds the rows of each list on the home page; the contracts
// list pages on with ?after=ID.
const webLists = 100

type web struct {
	s     *Server
	pages map[string]*template.Template
	css   []byte
}

func newWeb(s *Server) *web {
	funcs := template.FuncMap{
		"bytes":    humanBytes,
		"cores":    func(m uint64) string { return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64) },
		"time":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"contract": func(id uint64) string { return "/contracts/" + strconv.FormatUint(id, 10) },
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFiles, "web/layout.html"))
	w := &web{s: s, pages: map[string]*template.Template{}}
	for _, p := range []string{"home", "contract", "error"} {
		w.pages[p] = template.Must(template.Must(base.Clone()).ParseFS(webFiles, "web/"+p+".html"))
	}
	css, err := webFiles.ReadFile("web/ledger.css")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	w.css = css
	return w
}

func (w *web) routes(m *http.ServeMux) {
	m.HandleFunc("GET /{$}", w.home)
	m.HandleFunc("GET /contracts/{id}", w.contract)
	m.HandleFunc("GET /static/ledger.css", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/css; charset=utf-8")
		rw.Header().Set("Cache-Control", "public, max-age=3600")
		rw.Write(w.css)
	})
}

// page is what every template receives.
type page struct {
	Title  string
	Status ledgerclient.Status
	Data   any
}

func (w *web) render(rw http.ResponseWriter, code int, name string, p page) {
	var buf bytes.Buffer
	if err := w.pages[name].Execute(&buf, p); err != nil {
		w.s.log.Warn("chain page", "page", name, "err", err)
		http.Error(rw, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	h := rw.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", webCSP)
	h.Set("Referrer-Policy", "no-referrer")
	rw.WriteHeader(code)
	rw.Write(buf.Bytes())
}

func (w *web) fail(rw http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		w.s.log.Warn("chain page", "path", r.URL.Path, "status", code, "err", err)
	}
	w.render(rw, code, "error", page{Title: http.StatusText(code), Data: err.Error()})
}

// query reads one of the ledger's queries into v.
func (w *web) query(ctx context.Context, path string, data any, v any) error {
	var in []byte
	if data != nil {
		in, _ = json.Marshal(data)
	}
	b, err := w.s.chain.Query(ctx, path, in)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// twins reads twins for approval checks, each once per page.
type twins struct {
	w    *web
	seen map[uint32]ledger.TwinView
}

func (t *twins) Twin(ctx context.Context, id uint32) (ledger.TwinView, error) {
	if v, ok := t.seen[id]; ok {
		return v, nil
	}
	var v ledger.TwinView
	if err := t.w.query(ctx, "twin/"+strconv.FormatUint(uint64(id), 10), nil, &v); err != nil {
		return v, err
	}
	t.seen[id] = v
	return v, nil
}

// contractRow is a contract as a row of the home page.
type contractRow struct {
	ledger.ContractView
	Check    spec.Result
	CheckErr string
}

type homeData struct {
	Twins     []ledger.TwinView
	MoreTwins bool
	Nodes     []ledger.NodeView
	MoreNodes bool
	Contracts []contractRow
	Filter    ledger.ContractFilter
	Next      string // the next page of contracts
}

func (w *web) home(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := readParams(r, "node", "owner", "state", "after")
	f := ledger.ContractFilter{
		Node:  uint32(p.uint("node", 1, 1<<32-1)),
		Owner: uint32(p.uint("owner", 1, 1<<32-1)),
		State: p.q.Get("state"),
		Page:  ledger.Page{After: p.uint("after", 0, 1<<64-1), Limit: webLists},
	}
	switch f.State {
	case "", ledger.StatePending, ledger.StateActive, ledger.StateCancelled:
	default:
		p.err = badParamf("state=%.40q: want pending, active or cancelled", f.State)
	}
	if p.err != nil {
		w.fail(rw, r, http.StatusBadRequest, p.err)
		return
	}
	st, err := w.s.status(ctx)
	if err != nil {
		w.failChain(rw, r, err)
		return
	}
	var d homeData
	var cs []ledger.ContractView
	err = errors.Join(
		w.query(ctx, "twins", ledger.Page{Limit: webLists + 1}, &d.Twins),
		w.query(ctx, "nodes", ledger.Page{Limit: webLists + 1}, &d.Nodes),
		w.query(ctx, "contracts", f, &cs),
	)
	if err != nil {
		w.failChain(rw, r, err)
		return
	}
	d.Twins, d.MoreTwins = cut(d.Twins, webLists)
	d.Nodes, d.MoreNodes = cut(d.Nodes, webLists)
	d.Filter = f
	ts := &twins{w: w, seen: map[uint32]ledger.TwinView{}}
	for _, c := range cs {
		row := contractRow{ContractView: c}
		row.Check, err = ledgerclient.Approvals(ctx, ts, &c)
		if err != nil {
			row.CheckErr = err.Error()
		}
		d.Contracts = append(d.Contracts, row)
	}
	if len(cs) == webLists {
		q := url.Values{}
		for k, v := range p.q {
			q[k] = v
		}
		q.Set("after", strconv.FormatUint(cs[len(cs)-1].ID, 10))
		d.Next = "/?" + q.Encode()
	}
	w.render(rw, http.StatusOK, "home", page{Title: "Ledger " + st.Chain, Status: st, Data: d})
}

func cut[T any](s []T, n int) ([]T, bool) {
	if len(s) > n {
		return s[:n], true
	}
	return s, false
}

func (w *web) failChain(rw http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, ledger.ErrNotFound) {
		w.fail(rw, r, http.StatusNotFound, err)
		return
	}
	w.fail(rw, r, http.StatusBadGateway, err)
}

type contractData struct {
	C        ledger.ContractView
	Node     *ledger.NodeView
	Check    spec.Result
	CheckErr string
	// Revision's check, when there is one.
	RevCheck    spec.Result
	RevCheckErr string
	Spec        string // indented
	RevSpec     string
}

func (w *web) contract(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := parseUint(r.PathValue("id"), 1<<64-1)
	if p := readParams(r); p.err != nil || err != nil || id == 0 {
		if p.err == nil {
			p.err = badParamf("contract id %.40q: want a whole number", r.PathValue("id"))
		}
		w.fail(rw, r, http.StatusBadRequest, p.err)
		return
	}
	st, err := w.s.status(ctx)
	if err != nil {
		w.failChain(rw, r, err)
		return
	}
	var d contractData
	if err := w.query(ctx, "contract/"+strconv.FormatUint(id, 10), nil, &d.C); err != nil {
		w.failChain(rw, r, err)
		return
	}
	var n ledger.NodeView
	if err := w.query(ctx, "node/"+strconv.FormatUint(uint64(d.C.Node), 10), nil, &n); err == nil {
		d.Node = &n
	}
	ts := &twins{w: w, seen: map[uint32]ledger.TwinView{}}
	if d.Check, err = ledgerclient.Approvals(ctx, ts, &d.C); err != nil {
		d.CheckErr = err.Error()
	}
	d.Spec = indent(d.C.Spec)
	if rv := d.C.Revision; rv != nil {
		if d.RevCheck, err = ledgerclient.Approvals(ctx, ts, &ledger.ContractView{Spec: rv.Spec, Approvals: rv.Approvals}); err != nil {
			d.RevCheckErr = err.Error()
		}
		d.RevSpec = indent(rv.Spec)
	}
	w.render(rw, http.StatusOK, "contract", page{Title: fmt.Sprintf("Contract %d", id), Status: st, Data: d})
}

func indent(b json.RawMessage) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

func humanBytes(v uint64) string {
	const units = "KMGTPE"
	if v < 1024 {
		return strconv.FormatUint(v, 10) + " B"
	}
	f, i := float64(v)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + string(units[i]) + "iB"
}
