package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// JobState is where an ingest job is.
type JobState string

// Job states: queued → running → done (every file handled; some may have
// failed, see JobFile.Error) or failed (no file could be ingested, or the
// server shut down first).
const (
	JobQueued  JobState = "queued"
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// ingestStages are the stages Service.Ingest reports, in order.
var ingestStages = []string{"parse", "bm25", "embed", "cur", "commit"}

// JobFile is one file of an ingest job.
type JobFile struct {
	Name string `json:"name"`
	// Document is the document id: the SHA-256 of the file's bytes (or of
	// a JSON upload's text), which is what the Service names documents by.
	Document string   `json:"document"`
	State    JobState `json:"state"`
	// Stage, Done and Total are the last progress the ingest reported.
	Stage string `json:"stage,omitempty"`
	Done  int    `json:"done"`
	Total int    `json:"total"`
	// Existing is true when the same content was already in the store.
	Existing  bool   `json:"existing,omitempty"`
	NewChunks int    `json:"new_chunks"`
	Chunks    int    `json:"chunks"`
	Error     string `json:"error,omitempty"`
}

// Job is an ingest job as GET /v1/jobs/{id} shows it.
type Job struct {
	ID    string   `json:"id"`
	State JobState `json:"state"`
	// Progress is the fraction of the job done, 0..1.
	Progress float64    `json:"progress"`
	Files    []JobFile  `json:"files"`
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Error says why a failed job failed as a whole.
	Error string `json:"error,omitempty"`
}

// upload is one file (or JSON text) to ingest.
type upload struct {
	name   string
	data   []byte // a file, or
	title  string // a JSON upload's title and text
	text   string
	isText bool
}

// job is a queued or finished ingest job.
type job struct {
	uploads []upload // dropped when the job finishes
	mu      sync.Mutex
	view    Job
}

// snapshot returns a copy of the job's public view.
func (j *job) snapshot() Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := j.view
	v.Files = append([]JobFile(nil), j.view.Files...)
	return v
}

// errQueueFull is returned by enqueue when QueueLength jobs are waiting.
var errQueueFull = errors.New("the ingest queue is full")

// errShuttingDown is returned by enqueue after close.
var errShuttingDown = errors.New("the server is shutting down")

// jobQueue runs ingest jobs one at a time in a background worker (the
// Service serialises ingests anyway) and remembers the last keep finished
// ones. Jobs live only in memory.
type jobQueue struct {
	svc      *Service
	log      *slog.Logger
	keep     int
	onFinish func(JobState) // called as each job finishes

	ch     chan *job
	ctx    context.Context // cancelled to abort the running job
	cancel context.CancelFunc
	quit   chan struct{} // closed by close: the worker stops between jobs
	done   chan struct{} // closed when the worker has stopped

	mu       sync.Mutex
	closed   bool
	byID     map[string]*job
	finished []string // ids of finished jobs, oldest first
}

func newJobQueue(svc *Service, length, keep int, log *slog.Logger, onFinish func(JobState)) *jobQueue {
	q := &jobQueue{svc: svc, log: log, keep: keep, onFinish: onFinish, ch: make(chan *job, length),
		quit: make(chan struct{}), done: make(chan struct{}), byID: map[string]*job{}}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	go q.work()
	return q
}

// documentID is the id the Service will give an upload (see JobFile.Document).
func documentID(u upload) string {
	var sum [32]byte
	if u.isText {
		sum = sha256.Sum256([]byte(u.text))
	} else {
		sum = sha256.Sum256(u.data)
	}
	return hex.EncodeToString(sum[:])
}

// enqueue adds a job for uploads and returns its view, or errQueueFull /
// errShuttingDown.
func (q *jobQueue) enqueue(uploads []upload) (Job, error) {
	var idb [12]byte
	rand.Read(idb[:])
	j := &job{uploads: uploads, view: Job{ID: hex.EncodeToString(idb[:]), State: JobQueued, Created: time.Now().UTC()}}
	for _, u := range uploads {
		name := u.name
		if u.isText {
			name = u.title
		}
		j.view.Files = append(j.view.Files, JobFile{Name: name, Document: documentID(u), State: JobQueued})
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return Job{}, errShuttingDown
	}
	select {
	case q.ch <- j:
	default:
		return Job{}, errQueueFull
	}
	q.byID[j.view.ID] = j
	return j.snapshot(), nil
}

// get returns the job with id.
func (q *jobQueue) get(id string) (Job, bool) {
	q.mu.Lock()
	j, ok := q.byID[id]
	q.mu.Unlock()
	if !ok {
		return Job{}, false
	}
	return j.snapshot(), true
}

// depth is how many jobs wait in the queue (not counting the running one).
func (q *jobQueue) depth() int { return len(q.ch) }

// work runs jobs until close.
func (q *jobQueue) work() {
	defer close(q.done)
	for {
		select {
		case <-q.quit:
			return
		case j := <-q.ch:
			q.run(j)
		}
	}
}

// run ingests every file of j, recording per-file outcomes.
func (q *jobQueue) run(j *job) {
	now := time.Now().UTC()
	j.mu.Lock()
	j.view.State, j.view.Started = JobRunning, &now
	j.mu.Unlock()
	failed := 0
	for i, u := range j.uploads {
		j.mu.Lock()
		j.view.Files[i].State = JobRunning
		j.mu.Unlock()
		progress := func(p Progress) {
			j.mu.Lock()
			defer j.mu.Unlock()
			f := &j.view.Files[i]
			f.Stage, f.Done, f.Total = p.Stage, p.Done, p.Total
			j.view.Progress = jobProgress(j.view.Files)
		}
		var res IngestResult
		var err error
		if u.isText {
			res, err = q.svc.IngestText(q.ctx, u.title, u.text, progress)
		} else {
			res, err = q.svc.Ingest(q.ctx, u.name, u.data, progress)
		}
		j.mu.Lock()
		f := &j.view.Files[i]
		if err != nil {
			failed++
			f.State, f.Error = JobFailed, err.Error()
			if q.ctx.Err() != nil {
				f.Error = fmt.Sprintf("%s: %v", errShuttingDown, err)
			}
		} else {
			f.State, f.Document, f.Existing, f.NewChunks, f.Chunks = JobDone, res.Doc.ID, res.Existing, res.NewChunks, res.Doc.Chunks
			f.Stage = "commit"
		}
		j.view.Progress = jobProgress(j.view.Files)
		j.mu.Unlock()
		if err != nil {
			q.log.Warn("ingest failed", "job", j.view.ID, "file", f.Name, "err", err)
		}
	}
	q.finish(j, failed == len(j.uploads), "")
}

// finish marks j done (or failed) and forgets the oldest finished jobs
// beyond keep.
func (q *jobQueue) finish(j *job, failed bool, why string) {
	now := time.Now().UTC()
	j.mu.Lock()
	j.uploads = nil
	j.view.State, j.view.Finished, j.view.Error = JobDone, &now, why
	if failed {
		j.view.State = JobFailed
		for i := range j.view.Files {
			if j.view.Files[i].State != JobFailed && j.view.Files[i].State != JobDone {
				j.view.Files[i].State, j.view.Files[i].Error = JobFailed, why
			}
		}
	}
	j.view.Progress = 1
	id, state := j.view.ID, j.view.State
	j.mu.Unlock()
	q.onFinish(state)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.finished = append(q.finished, id)
	for len(q.finished) > q.keep {
		delete(q.byID, q.finished[0])
		q.finished = q.finished[1:]
	}
}

// jobProgress is the fraction of files done, counting the running file by
// its stage (each of the five stages an equal share).
func jobProgress(files []JobFile) float64 {
	if len(files) == 0 {
		return 1
	}
	sum := 0.0
	for _, f := range files {
		switch f.State {
		case JobDone, JobFailed:
			sum++
		case JobRunning:
			for i, s := range ingestStages {
				if s == f.Stage {
					part := 1.0
					if f.Total > 0 {
						part = float64(f.Done) / float64(f.Total)
					}
					sum += (float64(i) + part) / float64(len(ingestStages))
				}
			}
		}
	}
	return sum / float64(len(files))
}

// close stops taking jobs, lets the running job finish until ctx is
// done, then cancels it; jobs still queued fail with errShuttingDown.
func (q *jobQueue) close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		<-q.done
		return nil
	}
	q.closed = true // enqueue adds nothing from now on
	q.mu.Unlock()
	for {
		select {
		case j := <-q.ch:
			q.finish(j, true, errShuttingDown.Error()+": the job was dropped before it started")
			continue
		default:
		}
		break
	}
	close(q.quit)
	var err error
	select {
	case <-q.done:
	case <-ctx.Done():
		err = fmt.Errorf("ingest job still running at shutdown, cancelled: %w", ctx.Err())
	}
	q.cancel()
	<-q.done
	return err
}
