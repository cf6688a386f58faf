package hubclient

import (
	"context"
	"fmt"
	"net/http"
	"time"

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
	Error    string     `json:"error,omitempty"`
	Result   *Pushed    `json:"result,omitempty"` // when done
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
