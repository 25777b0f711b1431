package awsemu

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// StartDynalite runs dynalite (in memory) on a free loopback port and
// returns it with its endpoint URL; its errors go to stderr.
func StartDynalite(node, script string, stderr io.Writer) (*Process, string, error) {
	addr, err := testenv.PickFreeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(node, script, "--port", port, "--host", "127.0.0.1", "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0")
	cmd.Stdout, cmd.Stderr = io.Discard, stderr
	p, err := startProcess(cmd)
	if err != nil {
		return nil, "", fmt.Errorf("awsemu: start dynalite: %w", err)
	}
	if err := p.waitListening(addr, 20*time.Second); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, "http://" + addr, nil
}

// CreateTables creates the audit and index tables with the key schema and
// indexes of infra/stack/pipeline.go.
func CreateTables(ctx context.Context, c *dynamodb.Client, auditTable, indexTable string) error {
	for _, in := range []*dynamodb.CreateTableInput{AuditTableInput(auditTable), IndexTableInput(indexTable)} {
		if err := CreateTable(ctx, c, in); err != nil {
			return err
		}
	}
	return nil
}

func keys(pk, sk string) []ddbtypes.KeySchemaElement {
	return []ddbtypes.KeySchemaElement{{AttributeName: aws.String(pk), KeyType: ddbtypes.KeyTypeHash}, {AttributeName: aws.String(sk), KeyType: ddbtypes.KeyTypeRange}}
}

func stringAttrs(names ...string) []ddbtypes.AttributeDefinition {
	var out []ddbtypes.AttributeDefinition
	for _, n := range names {
		out = append(out, ddbtypes.AttributeDefinition{AttributeName: aws.String(n), AttributeType: ddbtypes.ScalarAttributeTypeS})
	}
	return out
}

func gsi(name, n string, p ddbtypes.Projection) ddbtypes.GlobalSecondaryIndex {
	return ddbtypes.GlobalSecondaryIndex{IndexName: aws.String(name), KeySchema: keys("gsi"+n+"pk", "gsi"+n+"sk"), Projection: &p}
}

// AuditTableInput is the audit table as infra/stack/pipeline.go defines it.
func AuditTableInput(name string) *dynamodb.CreateTableInput {
	nonPHI := []string{"eventId", "eventTime", "outcome", "callingAe", "calledAe", "peer", "associationId", "reason"}
	all := ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll}
	include := ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeInclude, NonKeyAttributes: nonPHI}
	return &dynamodb.CreateTableInput{
		TableName: aws.String(name), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: stringAttrs("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "gsi4pk", "gsi4sk", "gsi5pk", "gsi5sk"),
		KeySchema:            keys("pk", "sk"),
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{
			gsi("byPatient", "1", all), gsi("byStudy", "2", all), gsi("byCallingAe", "3", include), gsi("byDay", "4", include),
			gsi("bySop", "5", all),
		},
	}
}

// IndexTableInput is the index table as infra/stack/pipeline.go defines it.
func IndexTableInput(name string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName: aws.String(name), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: stringAttrs("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"), KeySchema: keys("pk", "sk"),
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{
			gsi("byPending", "1", ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeKeysOnly}),
			gsi("byPatient", "2", ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll}),
		},
	}
}

// CreateTable creates in and waits until it is active.
func CreateTable(ctx context.Context, c *dynamodb.Client, in *dynamodb.CreateTableInput) error {
	if _, err := c.CreateTable(ctx, in); err != nil {
		return fmt.Errorf("awsemu: create table %s: %w", *in.TableName, err)
	}
	w := dynamodb.NewTableExistsWaiter(c, func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 50 * time.Millisecond })
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: in.TableName}, 20*time.Second); err != nil {
		return fmt.Errorf("awsemu: table %s not active: %w", *in.TableName, err)
	}
	return nil
}
