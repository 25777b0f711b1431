package pipelinee2e

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

// The grants check: the emulators enforce no IAM, so every function a
// chain test starts (newEnv, startFunction) reaches S3, DynamoDB and
// EventBridge through a recorder of its own, which names each call's IAM
// action and resource; when the test ends, each call must be allowed by
// the function's grants in infra/access, from which infra/stack builds
// its role. A call they do not allow would be refused AccessDenied in AWS
// (as the audit function's GetItem and Query of the index were, before
// their grant). So would a GET or HEAD of a missing key by a function
// without s3:ListBucket: the emulator answers it 404, S3 403, and the
// check fails it too. Grants no test exercised are reported when the package's
// tests end: a log, not a failure.

// storeRoot is the root of the SCP's store in the chain tests
// (s3://bucket/site-a); the deployment's store has none (SCP_STORE).
const storeRoot = "site-a/"

// recordedFunction is one started function's recorder.
type recordedFunction struct {
	binary string // functions/<binary>: its grants are access.Functions[binary]
	rec    *awsemu.CallRecorder
}

// recordCalls starts fn's recorder and returns the endpoint variables that
// send its calls through it; none when e records nothing.
func (e *env) recordCalls(fn, binary string) []string {
	if e.grants == nil {
		return nil
	}
	rec, err := awsemu.NewCallRecorder(awsemu.Resources{
		Tables: map[string]string{indexTable: access.IndexTable, auditTable: access.AuditTable},
		Bucket: bucket, Bus: busName, Root: storeRoot,
	}, e.s3URL, e.ddbURL, e.ebURL)
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(rec)
	e.t.Cleanup(srv.Close)
	e.grants[fn] = &recordedFunction{binary: binary, rec: rec}
	return []string{"AWS_ENDPOINT_URL_S3=" + srv.URL, "AWS_ENDPOINT_URL_DYNAMODB=" + srv.URL, "AWS_ENDPOINT_URL_EVENTBRIDGE=" + srv.URL}
}

// exercised is, per function, the grants some call of a test needed.
var exercised = struct {
	sync.Mutex
	used map[string]map[access.Grant]bool
}{used: map[string]map[access.Grant]bool{}}

// checkGrants fails the test for each call a function made that its
// grants do not allow, naming the function, the action and the resource.
func (e *env) checkGrants() {
	for _, fn := range slices.Sorted(maps.Keys(e.grants)) {
		f := e.grants[fn]
		grants, declared := access.Functions[f.binary]
		refused := map[awsemu.Call]int{}
		for _, c := range f.rec.Calls() {
			allowing := grants.Allowing(c.Action, c.Resource)
			if len(allowing) == 0 {
				refused[c]++
				continue
			}
			exercised.Lock()
			if exercised.used[f.binary] == nil {
				exercised.used[f.binary] = map[access.Grant]bool{}
			}
			for _, g := range allowing {
				exercised.used[f.binary][g] = true
			}
			exercised.Unlock()
		}
		for _, c := range slices.SortedFunc(maps.Keys(refused), func(a, b awsemu.Call) int {
			return cmp.Compare(a.String(), b.String())
		}) {
			why := "its grants (infra/access) do not allow it"
			if !declared {
				why = "it has no grants in infra/access"
			}
			if c.MissingKey {
				// The emulator answered a GET or HEAD of a missing key
				// 404, which S3 says only to a caller that may list the
				// bucket: in AWS this function gets 403 AccessDenied, an
				// answer its code does not take for "missing" (the code
				// under test saw an outcome it never sees in AWS).
				e.t.Errorf("grants check: function %s (functions/%s) was answered 404 for a missing key %d time(s) without s3:ListBucket on the bucket (%s): in AWS this is 403 AccessDenied",
					fn, f.binary, refused[c], why)
				continue
			}
			e.t.Errorf("grants check: function %s (functions/%s) called %s on %s %d time(s), and %s: in AWS, AccessDenied",
				fn, f.binary, c.Action, describe(c.Resource), refused[c], why)
		}
	}
}

// describe names a resource without the object keys' UIDs: an object by
// its layout prefix and a digest of its key.
func describe(resource string) string {
	key, ok := strings.CutPrefix(resource, "object/")
	if !ok {
		return resource
	}
	prefix, _, _ := strings.Cut(key, "/")
	prefix += "/"
	for _, p := range []string{objectstore.CommitmentRequestsPrefix, objectstore.CommitmentResultsPrefix} {
		if strings.HasPrefix(key, p) {
			prefix = p
		}
	}
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("object/%s… (key sha256 %x)", prefix, sum[:6])
}

// unexercised lists, per function that ran, the grants no call needed.
func unexercised() []string {
	exercised.Lock()
	defer exercised.Unlock()
	var out []string
	for _, fn := range slices.Sorted(maps.Keys(exercised.used)) {
		for _, g := range access.Functions[fn].Grants() {
			if !exercised.used[fn][g] {
				out = append(out, fn+": "+g.String())
			}
		}
	}
	return out
}

// unexercisedReport is where the grants no call needed are listed after
// the package's tests (go test shows a passing package's output only with
// -v): test/artifacts/, beside the browser tests' screenshots.
var unexercisedReport = filepath.Join("..", "artifacts", "grants-unexercised.txt")

func TestMain(m *testing.M) {
	code := m.Run()
	if never := unexercised(); len(never) > 0 {
		report := "grants check: grants no call of these tests needed (infra/access; not a failure):\n  " + strings.Join(never, "\n  ") + "\n"
		fmt.Fprint(os.Stderr, report)
		if err := os.MkdirAll(filepath.Dir(unexercisedReport), 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "grants check: %v\n", err)
		} else if err := os.WriteFile(unexercisedReport, []byte(report), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "grants check: %v\n", err)
		}
	}
	os.Exit(code)
}
