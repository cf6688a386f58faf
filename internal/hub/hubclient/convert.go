package hubclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

// ConvertRequest is the body of POST /v1/convert: convert the image Source
// (docker://REF) into the flist Target (NS/NAME[:TAG]). Username and
// Password authenticate to the registry for this job only: the hub never
// stores or logs them.
type ConvertRequest struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// Platform is "os/arch[/variant]" (default linux/amd64 on an amd64 hub).
	Platform string `json:"platform,omitempty"`
}

// Job states. A job is queued, then running, then done or failed.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// Job is a conversion job as GET /v1/jobs/ID answers it.
type Job struct {
	ID       string     `json:"id"`
	State    string     `json:"state"`
	Source   string     `json:"source"`
	Target   string     `json:"target"`
	By       key.Public `json:"by"`
	Created  time.Time  `json:"created"`
	Started  time.Time  `json:"started,omitzero"`
	Updated  time.Time  `json:"updated"` // last heard of: the running hub refreshes it
	Finished time.Time  `json:"finished,omitzero"`
	Progress Progress   `json:"progress"`
	// Base is the flist the target's tag held when the job started: new
	// chunks are stored as deltas against it where that pays.
	Base   digest.ID `json:"base,omitzero"`
	Error  string    `json:"error,omitempty"`
	Result *Pushed   `json:"result,omitempty"` // when done
}

// Over reports whether the job is over (done or failed).
func (j Job) Over() bool { return j.State == JobDone || j.State == JobFailed }

// Progress is how far a conversion got.
type Progress struct {
	Layer      int   `json:"layer"`       // the layer being applied (1-based)
	Layers     int   `json:"layers"`      // how many the image has
	ImageBytes int64 `json:"image_bytes"` // compressed size of the layers, as the manifest says
	Bytes      int64 `json:"bytes"`       // uncompressed layer bytes read so far
	Chunks     int   `json:"chunks"`      // chunks sealed so far
	NewChunks  int   `json:"new_chunks"`  // of which the hub lacked
	Stored     int64 `json:"stored_bytes"`
	// DeltaChunks are the new chunks stored as deltas against the flist
	// the target's tag held (Job.Base).
	DeltaChunks int `json:"delta_chunks"`
}

// JobID checks the form of a job ID: 32 hex digits.
func JobID(s string) error {
	if len(s) != 32 {
		return fmt.Errorf("job ID %q: want 32 hex digits", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("job ID %q: want 32 hex digits", s)
		}
	}
	return nil
}

// Convert asks the hub to convert an image; the answer is the queued job
// (202), or a *StatusError: 429 when the hub's queue is full.
func (c *Client) Convert(ctx context.Context, req ConvertRequest) (Job, error) {
	var j Job
	return j, c.call(ctx, http.MethodPost, "/v1/convert", req, &j)
}

// ArchiveRequest says what to make of an uploaded docker-archive.
type ArchiveRequest struct {
	Target string // NS/NAME[:TAG]
	// Platform is "os/arch[/variant]": the image must be for it.
	Platform string
}

// ConvertArchive uploads the docker-archive (`docker save` tarball of one
// image) file for the hub to convert, as Convert does a registry image. The file is
// read twice, never held in memory: once to hash it (the signature
// covers the hash, which the hub checks before it reads the body), once
// to send it. It must not change meanwhile.
func (c *Client) ConvertArchive(ctx context.Context, file string, req ArchiveRequest) (Job, error) {
	if c.key == nil {
		return Job{}, errors.New("an upload is signed: the client needs a key")
	}
	f, err := os.Open(file)
	if err != nil {
		return Job{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Job{}, err
	}
	if !fi.Mode().IsRegular() {
		return Job{}, fmt.Errorf("%s: not a regular file", file)
	}
	h := digest.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, fi.Size())); err != nil {
		return Job{}, fmt.Errorf("%s: %w", file, err)
	}
	q := url.Values{"target": {req.Target}}
	if req.Platform != "" {
		q.Set("platform", req.Platform)
	}
	hc := *c.http
	hc.Timeout = 0 // an upload takes as long as it takes; ctx bounds it
	resp, err := c.send(ctx, &hc, http.MethodPost, "/v1/convert/archive", q, "application/x-tar", reqBody{
		open:     func() io.Reader { return io.NewSectionReader(f, 0, fi.Size()) },
		size:     fi.Size(),
		sum:      digest.FromHash(h),
		announce: true,
	})
	if err != nil {
		return Job{}, err
	}
	defer resp.Body.Close()
	var j Job
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&j); err != nil {
		return Job{}, fmt.Errorf("hub %s: bad answer to an upload: %w", c.base, err)
	}
	return j, nil
}

// Job returns a conversion job's state.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	if err := JobID(id); err != nil {
		return Job{}, err
	}
	var j Job
	return j, c.call(ctx, http.MethodGet, "/v1/jobs/"+id, nil, &j)
}

// WaitJob polls a job every interval until it is over, calling progress (if
// not nil) with every state it reads, and returns the last one. A failed
// job is returned with a nil error: its Error says why.
func (c *Client) WaitJob(ctx context.Context, id string, interval time.Duration, progress func(Job)) (Job, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			return j, err
		}
		if progress != nil {
			progress(j)
		}
		if j.Over() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-t.C:
		}
	}
}
