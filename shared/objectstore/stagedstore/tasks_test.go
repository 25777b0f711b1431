package stagedstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// The helper process is one task: it stages objects (role "writer") or
// takes over what others left (role "adopter"), and reports on stdout.
const (
	envDir  = "STAGED_TASK_DIR"
	envRole = "STAGED_TASK_ROLE"
	envS3   = "STAGED_TASK_S3"
	envN    = "STAGED_TASK_N"
)

// reporting wraps the S3 store and prints every upload S3 took.
type reporting struct {
	*s3store.Store
	mu sync.Mutex
	w  io.Writer
}

func (r *reporting) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error) {
	st, err := r.Store.Put(ctx, obj, part10)
	if err == nil {
		r.mu.Lock()
		fmt.Fprintf(r.w, "uploaded %s duplicate=%v\n", st.Key, st.Duplicate)
		r.mu.Unlock()
	}
	return st, err
}

// taskChild is a task of TestTasksKilled, run in its child process: a
// writer (role) stages objects; an adopter takes over staged ones.
func taskChild(t *testing.T, dir, role string) {
	up, err := s3store.New(context.Background(), s3store.Options{
		Bucket: "bucket", Client: s3test.Client(os.Getenv(envS3)), RetryDeadline: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := os.Stdout // unbuffered: every line reaches the parent at once
	st, err := New(Options{Dir: dir, Uploader: &reporting{Store: up, w: out}, AdoptEvery: 20 * time.Millisecond, SegmentSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if role == "writer" {
		n, _ := strconv.Atoi(os.Getenv(envN))
		for i := range n {
			stored, err := st.Put(context.Background(), object(i), bytes.NewReader(taskBody(i)))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(out, "staged %s\n", stored.Key)
		}
		fmt.Fprintln(out, "all staged")
	}
	select {} // until killed
}

// taskBody is object i's content: some journaled, some large.
func taskBody(i int) []byte { return data(i, 50_000+(i%7)*300_000) }

// TestTasksKilled runs tasks as separate processes on one staging
// directory: a task stages objects while S3 is unreachable and is killed
// (SIGKILL); two other tasks start together, and between them upload
// every object the first acknowledged, each exactly once (the journal's
// lock keeps them from both working on it), and remove its journal.
func TestTasksKilled(t *testing.T) {
	if dir := os.Getenv(envDir); dir != "" {
		taskChild(t, dir, os.Getenv(envRole))
		return
	}
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	srv := s3test.NewServer(t, "bucket")
	const n = 40

	// The writer: S3 unreachable, so nothing leaves staging.
	writer := task(t, dir, "writer", "http://127.0.0.1:1", n)
	var staged []string
	for line := range writer.lines {
		if k, ok := strings.CutPrefix(line, "staged "); ok {
			staged = append(staged, k)
		}
		if line == "all staged" {
			break
		}
	}
	writer.kill(t)
	if len(staged) != n {
		t.Fatalf("the writer staged %d of %d", len(staged), n)
	}

	// Two tasks take over.
	a := task(t, dir, "adopter", srv.URL, 0)
	b := task(t, dir, "adopter", srv.URL, 0)
	uploads := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tk := range []*taskProc{a, b} {
		wg.Go(func() {
			for line := range tk.lines {
				if rest, ok := strings.CutPrefix(line, "uploaded "); ok {
					mu.Lock()
					uploads[strings.Fields(rest)[0]]++
					mu.Unlock()
				}
			}
		})
	}
	testenv.EventuallySawWithin(t, 60*time.Second, "every staged object in S3", func() (bool, string) {
		done := 0
		for i, k := range staged {
			if b, _, err := srv.Object(k); err == nil && bytes.Equal(b, taskBody(i)) {
				done++
			}
		}
		return done == n, fmt.Sprintf("%d of %d staged objects in S3", done, n)
	})
	// S3 holds an object before its task prints "uploaded"; the journal
	// goes only once every upload of it has returned, so every line is
	// in the pipes when the tasks are killed.
	waitGone(t, filepath.Join(dir, journalsDir, writer.name))
	a.kill(t)
	b.kill(t)
	wg.Wait()
	for _, k := range staged {
		if uploads[k] != 1 {
			t.Errorf("%s uploaded %d times by the two tasks, want once", k, uploads[k])
		}
	}
}

type taskProc struct {
	cmd   *exec.Cmd
	lines chan string
	name  string // its journal's name
}

func task(t *testing.T, dir, role, s3 string, n int) *taskProc {
	t.Helper()
	before, _ := os.ReadDir(filepath.Join(dir, journalsDir))
	cmd := exec.Command(os.Args[0], "-test.run=^TestTasksKilled$", "-test.v")
	cmd.Env = append(os.Environ(), envDir+"="+dir, envRole+"="+role, envS3+"="+s3, envN+"="+strconv.Itoa(n))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) // already dead when the test ran to its end
	p := &taskProc{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	// Its journal is the directory that appears under a task's own name:
	// it appears first under a starting name (lockOwnDir), which is gone
	// at once, and waiting for that to go would wait for nothing.
	testenv.EventuallyWithin(t, 30*time.Second, "the task's journal", func() bool {
		after, _ := os.ReadDir(filepath.Join(dir, journalsDir))
		for _, e := range after {
			if strings.HasPrefix(e.Name(), startingPrefix) {
				continue
			}
			known := false
			for _, b := range before {
				known = known || b.Name() == e.Name()
			}
			if !known {
				p.name = e.Name()
			}
		}
		return p.name != ""
	})
	return p
}

func (p *taskProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait() // killed: the exit status says so
}

// TestStartingJournalNotTakenOver: a journal directory a task has made but
// not yet locked (still under its ".starting-" name) is left alone by the
// other tasks, which take over every journal whose lock is free; a new
// task's journal reaches its own name only with its lock held.
func TestStartingJournalNotTakenOver(t *testing.T) {
	dir := t.TempDir()
	starting := filepath.Join(dir, journalsDir, startingPrefix+"other")
	if err := os.MkdirAll(filepath.Join(starting, largeDir), 0o750); err != nil {
		t.Fatal(err)
	}
	st := newStore(t, Options{Dir: dir, Uploader: newFakeS3(), AdoptEvery: time.Millisecond})
	time.Sleep(50 * time.Millisecond) // many scans
	if _, err := os.Stat(starting); err != nil {
		t.Errorf("a starting journal was taken over: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, journalsDir, startingPrefix+st.TaskID())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("this task's journal still under its starting name (%v)", err)
	}
	if _, err := st.fs.Lock(filepath.Join(dir, journalsDir, st.TaskID(), lockName)); !isLocked(err) {
		t.Errorf("this task's journal's lock: %v, want held", err)
	}
}

// TestAbandonedStartingJournalRemoved: a ".starting-" journal directory
// left long ago by a task that stopped while starting, its lock free, is
// removed by another task; a recent one, and an old one whose lock is
// held, are left alone.
func TestAbandonedStartingJournalRemoved(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-2 * abandonedStartAge)
	mk := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, journalsDir, startingPrefix+name)
		if err := os.MkdirAll(filepath.Join(p, largeDir), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, lockName), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	abandoned, recent, held := mk("abandoned", old), mk("recent", time.Now()), mk("held", old)
	lock, err := vfs.OS().Lock(filepath.Join(held, lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	newStore(t, Options{Dir: dir, Uploader: newFakeS3(), AdoptEvery: time.Millisecond})
	testenv.EventuallyWithin(t, 5*time.Second, "the abandoned starting journal removed", func() bool {
		_, err := os.Stat(abandoned)
		return errors.Is(err, fs.ErrNotExist)
	})
	for _, p := range []string{recent, held} {
		if _, err := os.Stat(filepath.Join(p, largeDir)); err != nil {
			t.Errorf("%s: %v, want left alone", filepath.Base(p), err)
		}
	}
}
