package stack

import (
	"log/slog"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
)

// TestMessageFilterIsTheCDKs: jsonlog.MessageFilter, which the metric
// filters take as a literal, is the text the CDK's FilterPattern.stringValue
// and FilterPattern.any made of the same messages before it, as its
// comment says: deployed filters keep their pattern, and the tests that
// match lines against it (jsonlogtest.FilterMatches) read CloudWatch's.
func TestMessageFilterIsTheCDKs(t *testing.T) {
	for _, msgs := range [][]string{
		{"validate: handling panicked: a bug"},
		{"first: a bug", `quoted "x" \ y`},
		{"a", "b", "c"},
	} {
		terms := make([]awslogs.JsonPattern, len(msgs))
		for i, m := range msgs {
			terms[i] = awslogs.FilterPattern_StringValue(jsii.String("$."+slog.MessageKey), jsii.String("="), jsii.String(m))
		}
		pattern := terms[0]
		if len(terms) > 1 {
			pattern = awslogs.FilterPattern_Any(terms...)
		}
		if got, want := jsonlog.MessageFilter(msgs...), *pattern.LogPatternString(); got != want {
			t.Errorf("MessageFilter(%q) = %s, the CDK's %s", msgs, got, want)
		}
	}
}
