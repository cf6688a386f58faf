package httpstore

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"

	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// frame is one answer of a batched get (docs/STORE-HTTP.md): a blob from
// a file checked before, a blob in memory, or a marker.
type frame struct {
	id   digest.ID
	file *os.File // sent with sendfile; closed by the handler
	blob []byte
	size int64
	mark string // frameMissing or frameCorrupt; "" for a blob
}

// line is the frame's header line.
func (f *frame) line() []byte {
	b := make([]byte, 0, 2*digest.Size+16)
	b = append(hex.AppendEncode(b, f.id[:]), ' ')
	if f.mark != "" {
		b = append(b, f.mark...)
	} else {
		b = strconv.AppendInt(b, f.size, 10)
	}
	return append(b, '\n')
}

// getBatch answers POST /.zos/v2/get: the blobs of the IDs asked for, in
// frames, for as many IDs as fit in about maxGetAnswer bytes (at least
// one). The answer's length is known before it starts, so blob files go
// out with sendfile as a single GET's do.
func (h *handler) getBatch(w http.ResponseWriter, r *http.Request) {
	ids, ok := readIDs(w, r, maxGetLen, MaxGetBatch)
	if !ok {
		return
	}
	if len(ids) == 0 {
		http.Error(w, "no IDs", http.StatusBadRequest)
		return
	}
	frames, err := h.frames(r.Context(), ids)
	defer func() {
		for _, f := range frames {
			if f.file != nil {
				f.file.Close()
			}
		}
	}()
	if len(frames) == 0 {
		h.fail(w, r, err)
		return
	}
	if err != nil && r.Context().Err() == nil {
		// The client asks again for the rest, and gets the error then.
		h.log.Debug("batched get cut short", "answered", len(frames), "of", len(ids), "err", err)
	}
	lines := make([][]byte, len(frames))
	n := int64(len(listEnd) + 1)
	for i := range frames {
		if h.looked != nil && frames[i].mark != frameCorrupt {
			h.looked(frames[i].mark == "")
		}
		lines[i] = frames[i].line()
		n += int64(len(lines[i])) + frames[i].size
	}
	hd := w.Header()
	hd["Content-Type"] = contentTypeBlob
	hd.Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush() // see getFile
	for i, f := range frames {
		_, err := w.Write(lines[i])
		switch {
		case err != nil:
		case f.file != nil:
			// The ResponseWriter's ReadFrom flushes the line, then sends
			// the file with sendfile. A file that shrank since its stat
			// leaves the answer short of its length: the connection is
			// closed and the client retries.
			_, err = io.Copy(w, &io.LimitedReader{R: f.file, N: f.size})
		case f.mark == "":
			_, err = w.Write(f.blob)
		}
		if err != nil {
			if r.Context().Err() == nil {
				h.log.Debug("sending batched get failed", "id", f.id, "err", err)
			}
			return
		}
	}
	io.WriteString(w, listEnd+"\n")
}

// frames resolves the first IDs of ids into frames, stopping once the
// blobs reach maxGetAnswer bytes, or those held in memory (not sent from
// a checked file) maxGetMemory bytes, or before an ID the store failed to
// read (returning that error).
func (h *handler) frames(ctx context.Context, ids []digest.ID) ([]frame, error) {
	files, isFiler := h.s.(filer)
	var out []frame
	var size, inMemory int64
	full := func() bool { return size >= maxGetAnswer || inMemory >= maxGetMemory }
	add := func(f frame) {
		out = append(out, f)
		size += f.size
		inMemory += int64(len(f.blob))
	}
	if isFiler {
		// Opening a file is cheap: one at a time.
		for _, id := range ids {
			if full() {
				break
			}
			f, err := h.frame(ctx, id, files)
			if err != nil {
				return out, err
			}
			add(f)
		}
		return out, nil
	}
	// A remote backend (S3): a window of reads at a time, as that many
	// clients' GETs would run.
	const window = 8
	for lo := 0; lo < len(ids) && !full(); lo += window {
		part := make([]frame, min(window, len(ids)-lo))
		errs := make([]error, len(part))
		var g errgroup.Group
		for i := range part {
			g.Go(func() error {
				part[i], errs[i] = h.frame(ctx, ids[lo+i], nil)
				return nil
			})
		}
		g.Wait()
		for i, f := range part {
			if errs[i] != nil {
				return out, errs[i]
			}
			add(f)
		}
	}
	return out, nil
}

// frame resolves one ID as getFile and get would answer it.
func (h *handler) frame(ctx context.Context, id digest.ID, files filer) (frame, error) {
	if files != nil {
		f, err := openBlob(files.Path(id))
		if errors.Is(err, fs.ErrNotExist) {
			return frame{id: id, mark: frameMissing}, nil
		}
		if err == nil {
			fi, err := f.Stat()
			if err == nil && fi.Mode().IsRegular() && h.verified.has(id, fi) {
				return frame{id: id, file: f, size: fi.Size()}, nil
			}
			f.Close()
		}
	}
	blob, err := h.s.Get(ctx, id)
	var inv *chunk.Invalid
	switch {
	case errors.Is(err, store.ErrNotFound):
		return frame{id: id, mark: frameMissing}, nil
	case errors.As(err, &inv):
		h.log.Error("stored blob fails its check", "id", id, "err", err)
		return frame{id: id, mark: frameCorrupt}, nil
	case err != nil:
		return frame{}, err
	}
	if files != nil {
		h.verified.checked(files.Path(id), id)
	}
	return frame{id: id, blob: blob, size: int64(len(blob))}, nil
}

var _ store.Batcher = (*Store)(nil)

// errNoBatch says the server does not answer batched gets.
var errNoBatch = fmt.Errorf("server does not answer batched gets: %w", errors.ErrUnsupported)

// GetBatch reads ids with batched gets of at most MaxGetBatch IDs,
// verifying every blob as Get does (store.Batcher). A server that answers
// part of a batch is asked again for the rest; a broken or cut-short
// answer is retried from the first ID it did not answer, with Get's
// tries and backoff, counted from the last answer that made progress.
// Against a server that does not speak batched gets (a static server, an
// older zos server) it fails with an error wrapping errors.ErrUnsupported,
// at once from then on.
func (s *Store) GetBatch(ctx context.Context, ids []digest.ID, fn func(i int, blob []byte, err error)) error {
	next := 0
	for try := 1; next < len(ids); {
		if s.noBatch.Load() {
			return fmt.Errorf("http store %s: %w", s, errNoBatch)
		}
		before := next
		part := ids[next:min(len(ids), next+MaxGetBatch)]
		err := s.try(ctx, request{method: http.MethodPost, path: getPath, body: idLines(part),
			handle: func(resp *http.Response) error {
				if err := helperAnswer(resp, errNoBatch); err != nil {
					return err
				}
				return s.readFrames(resp.Body, part, func(j int, blob []byte, err error) {
					fn(before+j, blob, err)
					next++
				})
			}})
		if next > before {
			try = 1
		}
		if err == nil {
			continue
		}
		if errors.Is(err, errNoBatch) {
			s.noBatch.Store(true)
		}
		var t *transient
		if !errors.As(err, &t) || ctx.Err() != nil {
			return fmt.Errorf("http store %s: POST %s: %w", s, getPath, err)
		}
		if try >= s.opts.Tries {
			return fmt.Errorf("http store %s: POST %s: %w (gave up after %d tries)", s, getPath, err, try)
		}
		if werr := s.backoff(ctx, try, t.after); werr != nil {
			return fmt.Errorf("http store %s: POST %s: %w (while retrying after: %v)", s, getPath, werr, err)
		}
		try++
	}
	return nil
}

// idLines is the body of a missing or batched get request.
func idLines(ids []digest.ID) []byte {
	b := make([]byte, 0, len(ids)*(2*digest.Size+1))
	for _, id := range ids {
		b = append(hex.AppendEncode(b, id[:]), '\n')
	}
	return b
}

// readFrames reads a batched get's answer to a request for ids, calling
// deliver for each frame in order with a verified blob or Get's error for
// that ID. A broken answer (a frame for an ID not asked next, a bad line,
// a size over the limit, no frame at all, bytes after the end line, a body
// cut short) is a transient error: what it delivered stands, and the rest
// is asked again.
func (s *Store) readFrames(body io.Reader, ids []digest.ID, deliver func(j int, blob []byte, err error)) error {
	br := bufio.NewReaderSize(body, 4<<10)
	for j := 0; ; j++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return &transient{err: fmt.Errorf("batched get answer cut short after %d frames: %w", j, noEOF(err))}
		}
		text := string(line[:len(line)-1])
		if text == listEnd {
			if j == 0 {
				return &transient{err: errors.New("batched get answered no frame")}
			}
			if _, err := br.ReadByte(); err != io.EOF {
				return &transient{err: errors.New("batched get answer goes on after its end line")}
			}
			return nil
		}
		if j >= len(ids) || len(text) < 2*digest.Size+2 || text[2*digest.Size] != ' ' ||
			text[:2*digest.Size] != ids[j].String() {
			return &transient{err: fmt.Errorf("batched get answer: frame %d is %q, not for the ID asked", j, clip(text))}
		}
		id := ids[j]
		switch rest := text[2*digest.Size+1:]; rest {
		case frameMissing:
			deliver(j, nil, fmt.Errorf("%s in %s: %w", id.Short(), s, store.ErrNotFound))
		case frameCorrupt:
			deliver(j, nil, &chunk.Invalid{ID: id, Store: s.name,
				Err: fmt.Errorf("%w: the server's copy fails its integrity check", chunk.ErrCorrupt)})
		default:
			n, err := strconv.ParseUint(rest, 10, 32)
			if err != nil || n > MaxBlobSize || rest != strconv.FormatUint(n, 10) {
				return &transient{err: fmt.Errorf("batched get answer: bad size in frame %q", clip(text))}
			}
			blob := make([]byte, n)
			if _, err := io.ReadFull(br, blob); err != nil {
				return &transient{err: fmt.Errorf("batched get answer cut short in frame %d: %w", j, noEOF(err))}
			}
			if err := store.Verify(s, id, blob); err != nil {
				deliver(j, nil, err)
			} else {
				deliver(j, blob, nil)
			}
		}
	}
}

// noEOF turns a body's clean end where more was due into an unexpected one.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// clip shortens text from an answer for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
