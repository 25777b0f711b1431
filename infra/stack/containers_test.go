package stack

import (
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

// TestContainersHardened: each container of the task runs with no Linux
// capability and logs through awslogs to the stack's log group (under the
// key); scp-task as its non-root user on a read-only root file system, the
// agent sidecar as root on a writable one, which its image needs (see
// NewIngest), and never essential.
func TestContainersHardened(t *testing.T) {
	cases := []struct {
		container string
		user      any // nil: the image's own (the agent's: root)
		readOnly  bool
		essential bool
	}{
		{container: "scp", user: "65532:65532", readOnly: true, essential: true},
		{container: "metrics-agent", user: nil, readOnly: false, essential: false},
	}
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		for _, tc := range cases {
			t.Run(tc.container, func(t *testing.T) {
				logs := s.stack.logicalID(s.stack.Ingest.LogGroup)
				s.check(t, func(tpl assertions.Template) {
					tpl.HasResourceProperties(jsii.String("AWS::ECS::TaskDefinition"), map[string]any{
						"ContainerDefinitions": assertions.Match_ArrayWith(&[]any{assertions.Match_ObjectLike(&map[string]any{
							"Name":                   tc.container,
							"User":                   orAbsent(tc.user),
							"ReadonlyRootFilesystem": tc.readOnly,
							"Essential":              tc.essential,
							"Privileged":             assertions.Match_Absent(),
							"LinuxParameters":        map[string]any{"Capabilities": map[string]any{"Drop": []any{"ALL"}}},
							"LogConfiguration": assertions.Match_ObjectLike(&map[string]any{
								"LogDriver": "awslogs",
								"Options":   assertions.Match_ObjectLike(&map[string]any{"awslogs-group": map[string]any{"Ref": logs}}),
							}),
						})}),
					})
				})
				if got := s.res[logs]["DeletionPolicy"]; got != "Retain" {
					t.Errorf("log group %s: DeletionPolicy %v, want Retain", logs, got)
				}
				if kms := props(s.res[logs])["KmsKeyId"]; refID(kms) != s.stack.logicalID(s.stack.Storage.Key) {
					t.Errorf("log group %s under %s, want the stack's key", logs, js(kms))
				}
			})
		}
	})
}

// orAbsent matches v, or the property's absence for nil.
func orAbsent(v any) any {
	if v == nil {
		return assertions.Match_Absent()
	}
	return v
}
