package docs

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/durations"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// TestLogQueriesNameLoggedMessages: every `msg = "…"` a document's Logs
// Insights query or runbook filters on is a message the code logs (a
// string literal in a non-test Go file): a message reworded in the code
// would leave the on-call's query finding nothing, silently.
func TestLogQueriesNameLoggedMessages(t *testing.T) {
	msgFilter := regexp.MustCompile(`msg\s*=\s*"([^"]+)"`)
	wanted := map[string][]string{} // message → documents filtering on it
	eachDoc(t, func(path, text string) {
		for _, m := range msgFilter.FindAllStringSubmatch(text, -1) {
			wanted[m[1]] = append(wanted[m[1]], path)
		}
	})
	if len(wanted) == 0 {
		t.Fatal("no document filters on a log message: the pattern no longer matches the documents' queries")
	}
	literals := map[string]bool{}
	goString := regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != ".." && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "cdk.out" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, q := range goString.FindAllString(string(b), -1) {
			if s, err := strconv.Unquote(q); err == nil {
				literals[s] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for msg, docs := range wanted {
		if !literals[msg] {
			t.Errorf("%v filter on msg %q, which no Go file logs", docs, msg)
		}
	}
}

// TestMakeTargetsDocumented: every target of the Makefile (not a file it
// makes) has its "## name: …" line, which `make help` prints.
func TestMakeTargetsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`^([a-z][a-z-]*):`)
	helped := map[string]bool{}
	var targets []string
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "## "); ok {
			if n, _, ok := strings.Cut(name, ":"); ok {
				helped[n] = true
			}
			continue
		}
		if m := rule.FindStringSubmatch(l); m != nil {
			targets = append(targets, m[1])
		}
	}
	if len(targets) < 5 {
		t.Fatalf("found %d targets only: the pattern no longer matches the Makefile's rules", len(targets))
	}
	for _, name := range targets {
		if !helped[name] {
			t.Errorf("make %s has no \"## %s: …\" line for make help", name, name)
		}
	}
}

// TestConformanceStatementFacts: each fact a PACS administrator configures
// from, taken from the code that decides it, is stated in conformance.md
// where a reader looks for it (a table row). A value changed in the code
// fails here until the statement says it too.
func TestConformanceStatementFacts(t *testing.T) {
	doc := string(Conformance)
	for _, tc := range []struct {
		what   string
		header string // the table the fact is a row of
		row    string // how the row's first cell begins
		want   string // what another cell of that row says
	}{
		{"implementation class UID", "| | Value |", "Implementation Class UID", "`" + version.ImplementationClassUID + "`"},
		{"implementation version name", "| | Value |", "Implementation Version Name", "`" + version.ImplementationVersionName + "`"},
		{"default max PDU length received", "| Parameter | Setting | Default |", "Maximum PDU size received", thousands(int64(dicomnet.DefaultMaxPDULength)) + " bytes"},
		{"default max PDU length sent", "| Parameter | Setting | Default |", "Maximum PDU size sent", thousands(int64(dicomnet.DefaultMaxSendPDULength)) + " bytes"},
		{"ARTIM", "| Timeout | Setting | Default |", "ARTIM", durations.Prose(dicomnet.DefaultARTIMTimeout)},
		{"idle timeout", "| Timeout | Setting | Default |", "Idle", durations.Prose(dicomnet.DefaultIdleTimeout)},
		{"progress window", "| Timeout | Setting | Default |", "Progress", durations.Prose(dicomnet.DefaultProgressWindow) + ", " + thousands(dicomnet.DefaultMinProgressBytes) + " bytes"},
		{"message time", "| Timeout | Setting | Default |", "One whole message", durations.Prose(dicomnet.DefaultMaxMessageTime)},
		{"write timeout", "| Timeout | Setting | Default |", "Each write", durations.Prose(dicomnet.DefaultWriteTimeout)},
		{"largest A-ASSOCIATE-RQ", "| | Value |", "Largest A-ASSOCIATE-RQ read", mib(dicomnet.MaxAssociatePDULength)},
	} {
		t.Run(tc.what, func(t *testing.T) {
			row := rowOf(t, doc, tc.header, tc.row)
			if row == nil {
				return
			}
			if !hasCell(row[1:], tc.want) {
				t.Errorf("conformance.md's row %q says %q, want a cell %q (from the code)", tc.row, row[1:], tc.want)
			}
		})
	}
}

// TestProseFacts: the limits the documents state in their prose say what
// the code does, one table of facts for every document: conformance.md's
// (the onboarding kit hands every site this statement beside its README,
// which renders them from the code), and the copies of the commitment
// result's backoff and of the S3 put timeout's default in configuration.md,
// pipeline.md and alarms.md, which nothing checked, deploy.md's CDK CLI
// version (.tools/node's pin), the reader's limits and the inflate rule
// (shared/dataset's constants) where conformance.md, pipeline.md and
// local-mode.md state them, the study record's bound on its modalities,
// the 110104 details audit-feed.md and conformance.md name, the label
// values alarms.md and configuration.md list, and how many events in a row
// the bus may fail before a run takes it for down (pipeline.md, and the
// error alarms.md's NotifyDlqNotEmpty row has the on-call look for), the
// functions logging.md says read the log-name key (every pipeline function
// infra/access declares), the timers of the associations the AE initiates for Storage Commitment
// results (commitreport's), the N-ACTION's bounds and the Error Comment's
// length conformance.md states, the key rule of every certificate TLS
// relies on (tlstrust's) and a handshake cut at ARTIM's reason, which
// conformance.md and certificates.md state. A
// change of a default, of the backoff, of a limit or of the pin fails here
// until the prose says it too, as the tables do
// (TestConformanceStatementFacts).
func TestProseFacts(t *testing.T) {
	pdu := thousands(int64(dicomnet.DefaultMaxPDULength)) + " bytes"
	firstRetry, maxRetry := durations.Prose(pipeline.CommitmentReportFirstRetry), durations.Prose(pipeline.CommitmentReportMaxRetry)
	put := durations.Prose(objectstore.DefaultPutTimeout)
	cdkCLI := nodeToolVersion(t, "aws-cdk")
	// The inflate rule: inflated <= InflateAllowance + MaxInflateRatio × compressed.
	inflate := "inflating to more than " + mib(dataset.InflateAllowance) + " plus " + strconv.Itoa(dataset.MaxInflateRatio) + " bytes per byte"
	readerLimits := "sequences nested deeper than " + strconv.Itoa(dataset.MaxDepth) + ", more than " + thousands(dataset.MaxElements) +
		" elements and items, more than " + mib(dataset.MaxHeldBytes) + " of values of up to " + kib(dataset.MaxValueHeld) + " each, a Deflated data set " +
		inflate + " sent,"
	modalities := strconv.Itoa(pipeline.MaxStudyModalities)
	modalityLen := strconv.Itoa(pipeline.MaxStudyModalityLen)
	details := "`" + strings.Join([]string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailQuarantineKey,
		auditmessage.DetailHeldObjectKey, auditmessage.DetailHeldContentIdentity}, "`, `") + "`"
	shed := metricnames.ShedReasons
	if len(shed) != 3 {
		t.Fatalf("metricnames.ShedReasons has %d values: the prose below lists 3", len(shed))
	}
	byLabel := strconv.Itoa(len(metricnames.RejectReasons) + len(metricnames.FailureStatuses))
	byLabelTLS := strconv.Itoa(len(metricnames.RejectReasons) + len(metricnames.FailureStatuses) + len(metricnames.TLSHandshakeReasons))
	// How many events in a row the bus may fail before a run takes it for down.
	busDown := strconv.Itoa(pipeline.MaxPublishFailures)
	busDownWord := numberWord(pipeline.MaxPublishFailures)
	dial, answer := durations.Prose(commitreport.DefaultDialTimeout), durations.Prose(commitreport.DefaultResponseTimeout)
	// The key rule of every certificate TLS relies on (tlstrust.CheckKey) and a handshake cut at ARTIM's reason.
	rsaBits, curve := strconv.Itoa(tlstrust.MinRSABits), "P-"+strconv.Itoa(tlstrust.MinECBits)
	handshakeTimeout := "`" + strings.TrimPrefix(dicomnet.ErrHandshakeTimeout.Error(), "dicomnet: ") + " after " + dicomnet.DefaultARTIMTimeout.String() + " (ARTIM)`"
	// The functions given the log-name key: every pipeline function
	// (infra/access declares them; infra/stack's newFunction gives each the
	// key, TestLogNameKey).
	keyed := slices.Sorted(maps.Keys(access.Functions))
	keyedFunctions := "`" + strings.Join(keyed[:len(keyed)-1], "`, `") + "` and `" + keyed[len(keyed)-1] + "`"
	// A Storage Commitment delivery's bound (commitreport's MaxReport) and its transaction's lease (pipeline's
	// CommitmentLease), to a plain PACS and a tls:// one, from the commitment function (no SCP) and in local mode.
	plainPeer, tlsPeer := commitreport.Peers{"PACS": {Addr: "pacs:104"}}, commitreport.Peers{"PACS": {Addr: "pacs:2762", TLS: true}}
	bound := func(r *commitreport.Reporter) string { return durations.Prose(r.MaxReport()) }
	lease := func(r *commitreport.Reporter) string { return durations.Prose(pipeline.CommitmentLease(r)) }
	// In AWS the function's run has a deadline: a transaction is leased until CommitmentLeaseSkew past it.
	leaseSkew := durations.Prose(pipeline.CommitmentLeaseSkew)
	awsLease := durations.Prose(time.Duration(config.CommitmentTimeoutSeconds)*time.Second + pipeline.CommitmentLeaseSkew)
	awsPlain, awsTLS := &commitreport.Reporter{Peers: plainPeer}, &commitreport.Reporter{Peers: tlsPeer}
	localPlain, localTLS := &commitreport.Reporter{Peers: plainPeer, Server: &dicomnet.Server{}}, &commitreport.Reporter{Peers: tlsPeer, Server: &dicomnet.Server{}}
	reportParallel := strconv.Itoa(pipeline.CommitmentReportParallel)
	fnTimeout, writeMargin := durations.Prose(time.Duration(config.CommitmentTimeoutSeconds)*time.Second), durations.Prose(pipeline.CommitmentWriteMargin)
	waitRange := fmt.Sprintf("%d to %d", config.MinCommitmentWaitSeconds, config.MaxCommitmentWaitSeconds)
	reportRange := fmt.Sprintf("%d to %d", config.MinCommitmentReportMinutes, config.MaxCommitmentReportMinutes)
	for _, f := range []struct {
		doc  string
		says []string
	}{
		{"conformance.md", []string{
			pdu + " by default (`--max-pdu-length`)",
			"`commitment.waitSeconds`, " + waitRange + ")",
			"in AWS `commitment.reportMinutes`, " + reportRange + ")",
			"Maximum PDU length received: " + pdu + ", the library's default",
			"`--idle-timeout` (default " + durations.Prose(dicomnet.DefaultIdleTimeout) + ")",
			"(default " + kib(dicomnet.DefaultMinProgressBytes) + " per " + durations.Prose(dicomnet.DefaultProgressWindow) + ")",
			"retried with backoff (" + firstRetry + " doubling to " + maxRetry + ",",
			"`--s3-put-timeout`, " + put + " by default,",
			"every write has a " + durations.Prose(dicomnet.DefaultWriteTimeout) + " deadline",
			"the data set exceeds the reader's limits: " + readerLimits,
			// The tags the reader keeps to tell an element out of tag order from a repeat (dataset.MaxTagsHeld).
			"an element out of tag order after " + thousands(dataset.MaxTagsHeld) + " elements or more of the data set and the items it is in: `too many elements out of tag order",
			"at most " + thousands(dataset.MaxTagsHeld) + " in all (" + kib(4*dataset.MaxTagsHeld) + ");",
			"ParticipantObjectDetail type-value pairs (A.5.1's implementation-defined details, which A.5.3.7 does not specialize): " + details,
			// The association initiator's timers (3.2.3 and 3.4.2), commitreport's.
			"Timers: connect " + dial + "; " + answer + " for each answer of the peer (the A-ASSOCIATE-AC or -RJ, the N-EVENT-REPORT-RSP, the A-RELEASE-RP); " +
				durations.Prose(dicomnet.DefaultWriteTimeout) + " for each write; ARTIM " + durations.Prose(commitreport.ARTIMTimeout) + " for the peer to close",
			"connect " + dial + "; each answer of the peer (A-ASSOCIATE response, N-EVENT-REPORT-RSP, A-RELEASE-RP) " + answer + "; each write " +
				durations.Prose(dicomnet.DefaultWriteTimeout) + "; ARTIM after a rejection or an abort " + durations.Prose(commitreport.ARTIMTimeout) + ".",
			"if the response does not come within " + answer + ")",
			// A delivery's bound, and the AEs reported to at once.
			"A delivery as a whole is held to the sum of these timers (" + bound(awsPlain) + "; " + bound(awsTLS) + " to a `tls://` peer, whose TLS handshake has " + answer +
				"; in local mode " + answer + " more for the try on the requestor's association)",
			"to at most " + reportParallel + " AEs at once, each released after its one response",
			// A delivery in AWS: cut short of the function's invocation.
			"one given less than connecting and one answer (" + durations.Prose(awsPlain.MinReport()) + ") and cut before the PACS answered counts no attempt",
			"delivery cut, its A-ABORT (and any PDU written once the exchange was cut) is written within " + durations.Prose(dicomnet.TeardownWriteTimeout) + ", and ARTIM's " + durations.Prose(commitreport.ARTIMTimeout) + " follow: both, and the write of how it went, fall within the " + writeMargin + ".",
			"invocation too, whose " + fnTimeout + " timeout is shorter: cut " + writeMargin + " before that (" + durations.Prose(time.Duration(config.CommitmentTimeoutSeconds)*time.Second-pipeline.CommitmentWriteMargin) + " at most,",
			"(up to " + reportParallel + " AEs are reported to at once)",
			"after the invocation that took it, " + awsLease + " at most, and the schedule runs every minute); in local mode at once by the",
			"gone; they were waited out, " + lease(localPlain) + ", or " + lease(localTLS) + " with a `tls://`",
			"if it is still open and the requestor answers within " + answer + ",",
			// The N-ACTION's bounds (3.2.4.2) and the Error Comment's (dimse).
			"the Action Information exceeds " + mib(dicomnet.MaxActionInformation) + ", " + thousands(commitment.MaxRefs) + " referenced instances",
			"as many instances as it may name (" + thousands(commitment.MaxRefs) + ")",
			"saying why (at most " + strconv.Itoa(dimse.MaxCommentLen) + " characters)",
			"must have an RSA key of at least " + rsaBits + " bits, an ECDSA key on " + curve + " or a larger curve, or an Ed25519 key",
			"audited and logged as refused with the reason " + handshakeTimeout,
		}},
		{filepath.Join("operations", "certificates.md"), []string{
			"RSA keys of at least " + rsaBits + " bits, ECDSA keys on " + curve + " or a larger curve, or Ed25519",
			"fewer than " + rsaBits + "`",
		}},
		{"local-mode.md", []string{
			// A killed run's leases, released by the next start.
			"where it waited them out, " + lease(localPlain) + " or " + lease(localTLS) + ", before",
			"a deflated data set " + inflate + " stored",
			"modality (also one the study record did not keep, of a study with more than " + modalities + ":",
		}},
		{filepath.Join("operations", "audit-feed.md"), []string{
			"`" + auditmessage.DetailObjectKey + "` (where it is stored), `" + auditmessage.DetailContentIdentity + "`, `" + auditmessage.DetailQuarantineKey + "` (a quarantined",
			"`" + auditmessage.DetailHeldObjectKey + "` and `" + auditmessage.DetailHeldContentIdentity + "` (a conflict",
		}},
		{"configuration.md", []string{
			fmt.Sprintf("| `commitment.waitSeconds` | 300 | %d–%d:", config.MinCommitmentWaitSeconds, config.MaxCommitmentWaitSeconds),
			fmt.Sprintf("| `commitment.reportMinutes` | 60 | %d–%d:", config.MinCommitmentReportMinutes, config.MaxCommitmentReportMinutes),
			"how long delivering a result is retried (" + firstRetry + " doubling to " + maxRetry + ")",
			"shares one `--s3-put-timeout`, " + put + " by default;",
			"| `scp.s3PutTimeoutSeconds` | " + strconv.Itoa(int(objectstore.DefaultPutTimeout/time.Second)) + " |",
			"`…_connections_shed_total{reason}` (`" + strings.Join(shed, "`, `") + "`)",
		}},
		{"pipeline.md", []string{
			"(a restart after a kill waited " + lease(localPlain) + ", or " + lease(localTLS) + " with a `tls://`",
			"A failed delivery is retried after " + firstRetry + ", doubling to " + maxRetry + ",",
			"a deflated data set " + inflate + " stored",
			"or one out of tag order after " + thousands(dataset.MaxTagsHeld) + " elements or more of the data set and the items it is in",
			"the study keeps at most " + modalities + " distinct modalities (`pipeline.MaxStudyModalities`) of at most " + modalityLen + " characters (`MaxStudyModalityLen`)",
			"study record's: it keeps at most " + modalities + " modalities of at most " + modalityLen + " characters",
			"`modalities` (string set, at most " + modalities + ":",
			"bus has failed " + busDownWord + " announcements in a row",
			"once the bus has failed " + busDownWord + " of the run's events in a row (announcements and",
			"Once the bus has failed " + busDownWord + " of the run's events in a row, the run still reports",
			"each of at most " + strconv.Itoa(accesscontrol.MaxAETitleLength) + " characters (the A-ASSOCIATE-RQ field holds no more)",
			"the AEs side by side, " + reportParallel + " at most (`pipeline.CommitmentReportParallel`)",
			"ARTIM; " + bound(awsPlain) + " with plain peers only, " + bound(awsTLS) + " with any `tls://` peer, " + answer + " more in local mode)",
			"A delivery is also held to its run's context, " + writeMargin + " (`pipeline.CommitmentWriteMargin`)",
			"(" + durations.Prose(dicomnet.TeardownWriteTimeout) + ") even to a PACS that stopped reading (it was bounded by the " + durations.Prose(dicomnet.DefaultWriteTimeout) + " write timeout alone) and ARTIM's " + durations.Prose(commitreport.ARTIMTimeout) + ",",
			"invocation ends at its " + fnTimeout + " timeout (`config.CommitmentTimeoutSeconds`)",
			"(" + lease(localPlain) + " in local mode with plain PACSs only, " + lease(localTLS) + " with any `tls://` one; it would be " + lease(awsPlain) + " and " + lease(awsTLS) + " in AWS,",
			"only until " + leaseSkew + " (`pipeline.CommitmentLeaseSkew`:",
			"in AWS a transaction is held at most " + awsLease + ", to the end of the invocation",
			"(it waited " + lease(awsPlain) + " or " + lease(awsTLS) + ", then that run)",
			"Given less than the Reporter's `MinReport`, connecting and one answer (" + durations.Prose(awsPlain.MinReport()) + "), and cut before the PACS answered, it counts no attempt",
		}},
		{filepath.Join("operations", "alarms.md"), []string{
			"`--s3-put-timeout` (" + put + ")",
			"(each delivery cut " + writeMargin + " before the function's " + fnTimeout + " timeout, a failed attempt)",
			"`…_connections_shed_total`'s `reason`s `" + shed[0] + "`, `" + shed[1] + "` and `" + shed[2] + "`",
			"the " + byLabel + " metrics by `reason` and `status` (" + byLabelTLS + " with `dicom.tls`)",
			"(`pipeline: " + busDown + " announcements in a row failed to publish` in `err`), each run stops after " + busDownWord + " tries",
			// In AWS a transaction's lease ends CommitmentLeaseSkew past its invocation's end.
			"runs out " + leaseSkew + " after the end of the invocation that took it, " + awsLease + " at most",
		}},
		{filepath.Join("operations", "logging.md"), []string{
			"| AWS, " + keyedFunctions + " (every pipeline function) | the same secret, read once at cold start from `" + logname.SecretARNEnv + "`",
		}},
		{filepath.Join("operations", "deploy.md"), []string{
			"the CDK CLI `aws-cdk@" + cdkCLI + "`",
		}},
	} {
		b, err := os.ReadFile(f.doc)
		if err != nil {
			t.Fatal(err)
		}
		doc := strings.Join(strings.Fields(string(b)), " ")
		for _, want := range f.says {
			if !strings.Contains(doc, want) {
				t.Errorf("%s does not say %q (from the code)", f.doc, want)
			}
		}
	}
}

// TestHandshakeReasonsListed: the alarms runbook's row of
// dicom_ingest_tls_handshake_failures_total says what each of its reasons
// means (metricnames.TLSHandshakeReasons, dicomnet's), and no other: an
// on-call engineer reading the graph by reason finds every value there.
func TestHandshakeReasonsListed(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("operations", "alarms.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for l := range strings.Lines(string(b)) {
		if strings.HasPrefix(l, "| `"+metricnames.TLSHandshakeFailures+"`") {
			row = l
		}
	}
	if row == "" {
		t.Fatalf("operations/alarms.md has no row of %s", metricnames.TLSHandshakeFailures)
	}
	cells := strings.Split(row, " | ")
	values := cells[len(cells)-1]
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z_]+)` \\(").FindAllStringSubmatch(values, -1) {
		listed[m[1]] = true
	}
	for _, r := range metricnames.TLSHandshakeReasons {
		if !listed[r] {
			t.Errorf("operations/alarms.md's row of %s does not say what `%s` is", metricnames.TLSHandshakeFailures, r)
		}
		delete(listed, r)
	}
	for r := range listed {
		t.Errorf("operations/alarms.md's row of %s lists `%s`, no reason of metricnames.TLSHandshakeReasons", metricnames.TLSHandshakeFailures, r)
	}
}

// nodeToolVersion is the version .tools/node/package.json pins name at, the
// one make synth and make deploy install.
func nodeToolVersion(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", ".tools", "node", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf(".tools/node/package.json: %v", err)
	}
	v := pkg.Dependencies[name]
	if v == "" {
		t.Fatalf(".tools/node/package.json pins no %s", name)
	}
	return v
}

// numberWord writes a small count as the prose does: three.
func numberWord(n int) string {
	if words := []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}; n >= 0 && n < len(words) {
		return words[n]
	}
	return strconv.Itoa(n)
}

// mib writes a whole number of MiB as the documents do: 64 MiB.
func mib(n int64) string {
	if n%(1<<20) != 0 {
		return kib(n)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// kib writes a whole number of KiB as the statement does: 1 KiB.
func kib(n int64) string {
	if n%1024 != 0 {
		return thousands(n) + " bytes"
	}
	return fmt.Sprintf("%d KiB", n/1024)
}

// TestConformanceStatementLists: the lists in conformance.md are the
// code's, both ways: every Storage SOP class the code names, every transfer
// syntax it knows (with whether negotiation accepts it for storage), every
// status a C-STORE is answered with and every A-ASSOCIATE-RJ it sends is a
// row, and no row names one the code does not have.
func TestConformanceStatementLists(t *testing.T) {
	doc := string(Conformance)

	t.Run("storage SOP classes", func(t *testing.T) {
		rows := tableRows(t, doc, "| Storage SOP Class | UID |")
		listed := map[string]bool{}
		for _, r := range rows {
			uid := unquote(r[1])
			listed[uid] = true
			if !dicomuid.IsStorageSOPClass(uid) {
				t.Errorf("conformance.md lists %s (%s) as a Storage SOP Class, which the SCP does not accept as one", uid, r[0])
			}
			if n := dicomuid.Name(uid); n != "" && n != r[0] {
				t.Errorf("conformance.md names %s %q, the code %q", uid, r[0], n)
			}
		}
		for _, uid := range dicomuid.NamedStorageSOPClasses() {
			if !listed[uid] {
				t.Errorf("conformance.md does not list the storage SOP class %s (%s)", uid, dicomuid.Name(uid))
			}
		}
	})

	t.Run("SOP classes other than storage", func(t *testing.T) {
		rows := tableRows(t, doc, "| SOP Class | UID | SCU | SCP |")
		for _, uid := range []string{dicomuid.Verification, dicomuid.StorageCommitment} {
			var found bool
			for _, r := range rows {
				if unquote(r[1]) == uid {
					found = true
					if r[3] != "Yes" {
						t.Errorf("conformance.md's SOP class table says SCP %q for %s", r[3], uid)
					}
				}
			}
			if !found {
				t.Errorf("conformance.md's SOP class table has no row for %s (%s)", uid, dicomuid.Name(uid))
			}
			if !accepts(uid, dicomuid.ExplicitVRLittleEndian, false) {
				t.Errorf("the SCP does not negotiate %s", uid)
			}
		}
	})

	t.Run("transfer syntaxes", func(t *testing.T) {
		rows := map[string][]string{}
		for _, r := range tableRows(t, doc, "| Transfer Syntax | UID | Accepted for storage | Pixel data |") {
			uid := unquote(r[1])
			if _, known := dicomuid.LookupTransferSyntax(uid); !known {
				t.Errorf("conformance.md lists %s (%s), a transfer syntax the code does not know (it gets result 4)", uid, r[0])
			}
			rows[uid] = r
		}
		for _, uid := range dicomuid.TransferSyntaxes() {
			ts, _ := dicomuid.LookupTransferSyntax(uid)
			r, ok := rows[uid]
			if !ok {
				t.Errorf("conformance.md's transfer syntax table has no row for %s (%s)", uid, ts.Name)
				continue
			}
			if r[0] != ts.Name {
				t.Errorf("conformance.md names %s %q, the code %q", uid, r[0], ts.Name)
			}
			want := "No"
			switch {
			case accepts(dicomuid.CTImageStorage, uid, false):
				want = "Yes"
			case accepts(dicomuid.CTImageStorage, uid, true):
				want = "With `--accept-big-endian`"
			}
			if r[2] != want {
				t.Errorf("conformance.md says %q for storage in %s (%s); negotiation says %q", r[2], uid, ts.Name, want)
			}
			if f := ts.Fidelity.String(); !strings.EqualFold(r[3], f) {
				t.Errorf("conformance.md says %q of %s's pixel data (%s); the code %q", r[3], uid, ts.Name, f)
			}
		}
	})

	t.Run("C-STORE statuses", func(t *testing.T) {
		// What the SCP answers a C-STORE with: success, the one warning
		// (group 0002 dropped), every failure the metrics count
		// (metricnames.FailureStatuses, held to the handler's statuses by
		// scp-task's metrics tests). No C-STORE is answered 0211: a
		// context whose class the requestor keeps no role for is rejected
		// in the A-ASSOCIATE-AC (dicomnet.Negotiate).
		want := map[uint16]bool{dimse.StatusSuccess: true, dimse.StatusElementsDiscarded: true}
		for _, s := range metricnames.FailureStatuses {
			if s == metricnames.StatusNone {
				continue
			}
			code, err := strconv.ParseUint(s, 16, 16)
			if err != nil {
				t.Fatalf("metricnames.FailureStatuses: %q: %v", s, err)
			}
			want[uint16(code)] = true
		}
		listed := map[uint16]bool{}
		for _, r := range tableRows(t, doc, "| Service status | Further meaning | Status | Related fields | When |") {
			code, err := strconv.ParseUint(unquote(r[2]), 16, 16)
			if err != nil {
				t.Errorf("conformance.md's C-STORE status %q: %v", r[2], err)
				continue
			}
			st := dimse.Status{Code: uint16(code)}
			listed[st.Code] = true
			if !want[st.Code] {
				t.Errorf("conformance.md lists C-STORE status %04X, which the SCP never sends", st.Code)
			}
			if service := serviceStatus(st); r[0] != service {
				t.Errorf("conformance.md calls %04X %q, the code %q", st.Code, r[0], service)
			}
			if !strings.Contains(strings.ToLower(dimse.StatusText(st.Code)), strings.ToLower(r[1])) {
				t.Errorf("conformance.md says %04X means %q, the code %q", st.Code, r[1], dimse.StatusText(st.Code))
			}
		}
		for code := range want {
			if !listed[code] {
				t.Errorf("conformance.md's C-STORE status table has no row for %04X (%s)", code, dimse.StatusText(code))
			}
		}
	})

	t.Run("A-ASSOCIATE-RJ", func(t *testing.T) {
		want := map[string]bool{}
		for _, rj := range []*dicomnet.RejectError{dicomnet.RejectNoReason, dicomnet.RejectApplicationContext,
			dicomnet.RejectCallingAENotRecognized, dicomnet.RejectCalledAENotRecognized, dicomnet.RejectProtocolVersion,
			dicomnet.RejectTemporaryCongestion, dicomnet.RejectTooManyAssociations} {
			want[fmt.Sprintf("%02x %02x %02x", rj.Result, rj.Source, rj.Reason)] = true
		}
		listed := map[string]bool{}
		for _, r := range tableRows(t, doc, "| Condition | A-ASSOCIATE-RJ result / source / reason |") {
			code := strings.Fields(unquote(strings.SplitN(r[1], "` ", 2)[0]))
			c := strings.Join(code, " ")
			listed[c] = true
			if !want[c] {
				t.Errorf("conformance.md lists the rejection %q, which the SCP never sends", c)
			}
		}
		for c := range want {
			if !listed[c] {
				t.Errorf("conformance.md's rejection table has no row for %s", c)
			}
		}
	})
}

// accepts reports whether the SCP's negotiation accepts abstractSyntax in
// transferSyntax, with or without --accept-big-endian.
func accepts(abstractSyntax, transferSyntax string, bigEndian bool) bool {
	rq := &pdu.AssociateRQ{PresentationContexts: []pdu.PresentationContextRQ{{ID: 1, AbstractSyntax: abstractSyntax, TransferSyntaxes: []string{transferSyntax}}}}
	n := dicomnet.Negotiate(rq, dicomnet.NegotiationOptions{AcceptExplicitBigEndian: bigEndian, StorageCommitment: true})
	return len(n.Accepted) == 1 && n.Accepted[0].TransferSyntax == transferSyntax
}

// serviceStatus is a status's class as PS3.2's status tables name it.
func serviceStatus(st dimse.Status) string {
	switch {
	case st.IsSuccess():
		return "Success"
	case st.IsWarning():
		return "Warning"
	}
	return "Failure"
}

// tableRows returns the cells of the rows of every Markdown table in doc
// whose header line is header, each with as many cells as the header.
func tableRows(t *testing.T, doc, header string) [][]string {
	t.Helper()
	var rows [][]string
	lines := strings.Split(doc, "\n")
	width := len(cells(header))
	for i, l := range lines {
		if strings.TrimSpace(l) != header {
			continue
		}
		for _, r := range lines[min(i+2, len(lines)):] {
			if !strings.HasPrefix(r, "|") {
				break
			}
			c := cells(r)
			if len(c) != width {
				t.Errorf("conformance.md: row %q has %d cells, its header %d", r, len(c), width)
				continue
			}
			rows = append(rows, c)
		}
	}
	if len(rows) == 0 {
		t.Fatalf("conformance.md has no table headed %q", header)
	}
	return rows
}

// rowOf returns the row of a table headed header whose first cell begins
// with first, or nil (having failed the test).
func rowOf(t *testing.T, doc, header, first string) []string {
	t.Helper()
	for _, r := range tableRows(t, doc, header) {
		if strings.HasPrefix(r[0], first) {
			return r
		}
	}
	t.Errorf("conformance.md: no row %q in a table headed %q", first, header)
	return nil
}

// cells splits a Markdown table row; an escaped \| stays in its cell.
func cells(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var out []string
	var cur strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			cur.WriteByte('|')
			i++
		case row[i] == '|':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(row[i])
		}
	}
	return append(out, strings.TrimSpace(cur.String()))
}

// unquote strips a cell's code quotes.
func unquote(cell string) string { return strings.Trim(cell, "` ") }

// hasCell reports whether one of cells says want, alone or followed by a
// remark ("262,144 bytes (`--max-pdu-length`)").
func hasCell(cells []string, want string) bool {
	for _, c := range cells {
		if c == want || strings.HasPrefix(c, want+" ") || strings.HasPrefix(c, want+";") {
			return true
		}
	}
	return false
}

// thousands writes n as the statement does: 262,144.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestSecretNamesInExamples: no example creates a secret whose name ends in a hyphen and six letters or digits,
// which certificates.md (after AWS) advises against: a partial ARN of such a name is taken for a complete one, by
// synth and by Secrets Manager, and names no secret.
func TestSecretNamesInExamples(t *testing.T) {
	created := regexp.MustCompile(`create-secret\s+--name\s+(\S+)`)
	endsLikeSuffix := regexp.MustCompile(`-[A-Za-z0-9]{6}$`)
	n := 0
	eachDoc(t, func(path, text string) {
		for _, m := range created.FindAllStringSubmatch(text, -1) {
			n++
			if endsLikeSuffix.MatchString(m[1]) {
				t.Errorf("%s: create-secret --name %s ends in a hyphen and six characters, as a complete ARN's suffix", path, m[1])
			}
		}
	})
	if n == 0 {
		t.Fatal("no create-secret example found: the pattern no longer matches the documents")
	}
}

// eachDoc calls fn with the path and text of each Markdown document under docs/.
func eachDoc(t *testing.T, fn func(path, text string)) {
	t.Helper()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fn(path, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
