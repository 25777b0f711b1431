package stack

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
)

// functionAccess is access.Functions: per function, the calls its code
// makes (the declaration lives in infra/access, which the emulated chain's
// grants check reads too).
var functionAccess = access.Functions

// accessTargets are the resources grantAccess scopes statements to.
type accessTargets struct {
	key          awskms.IKey
	bucket       awss3.IBucket
	index, audit awsdynamodb.ITable
	bus          awsevents.IEventBus
}

// grantAccess adds a function's statements, from its grants
// (access.Function.Grants, the walk the emulated chain's grants check
// allows calls by): exactly the DynamoDB actions on exactly the tables and
// indexes its code uses, exactly the S3 actions on its prefixes, and the
// key only through the services that use it on the function's behalf
// (kms:ViaService), each with the actions it needs.
func grantAccess(fn awslambda.Function, t accessTargets, a access.Function) {
	type statement struct {
		sid       string
		actions   []string          // each once, in the grants' order
		resources []access.Resource // each once, in the grants' order
	}
	var statements []*statement
	// via: each service that uses the key for this function, with the
	// actions it asks for (Lambda's, for the environment, is newLambda's).
	via := map[string][]string{}
	for _, g := range a.Grants() {
		place := grantStatement(g)
		i := slices.IndexFunc(statements, func(st *statement) bool { return st.sid == place.sid })
		if i < 0 {
			statements = append(statements, &statement{sid: place.sid})
			i = len(statements) - 1
		}
		st := statements[i]
		st.actions = appendOnce(st.actions, g.Action)
		st.resources = appendOnce(st.resources, g.Resource)
		for _, k := range place.keyActions {
			via[place.keyService] = appendOnce(via[place.keyService], k)
		}
	}
	// A statement allows each of its actions on each of its resources:
	// grantStatement groups one action on several resources, or several
	// on one, never more than the grants (TestFunctionRolesAreTheirGrants).
	for _, st := range statements {
		var arns []*string
		for _, r := range st.resources {
			arns = append(arns, t.arn(r))
		}
		fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Sid: jsii.String(st.sid), Actions: jsii.Strings(st.actions...), Resources: &arns,
		}))
	}
	for _, svc := range slices.Sorted(maps.Keys(via)) {
		grantKeyVia(fn, t.key, svc, via[svc]...)
	}
}

// appendOnce appends v to s unless s holds it already.
func appendOnce[T comparable](s []T, v T) []T {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// grantStatementOf is where a grant goes: its statement's Sid, and the
// key actions the service that serves it (keyService) asks for on the
// function's behalf.
type grantStatementOf struct {
	sid        string
	keyService string
	keyActions []string
}

// grantStatement places a grant: a table's actions in one statement per
// table, its indexes' Query in another; each object action in one
// statement over its prefixes; listing and events in theirs.
func grantStatement(g access.Grant) grantStatementOf {
	// DynamoDB decrypts the table key for each caller, and checks the
	// key, on the caller's behalf.
	dynamoKey := []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*"}
	switch g.Resource.Kind {
	case access.KindTable:
		return grantStatementOf{sid: tableSid(g.Resource.Table), keyService: "dynamodb", keyActions: dynamoKey}
	case access.KindTableIndex:
		return grantStatementOf{sid: "Query" + tableSid(g.Resource.Table) + "Indexes", keyService: "dynamodb", keyActions: dynamoKey}
	}
	switch g.Action {
	// Reads decrypt through S3; writes have S3 generate a data key. A
	// copy's tags, read from its source and set on the copy, are on
	// those prefixes alone, and need no key.
	case "s3:GetObject":
		return grantStatementOf{sid: "ReadObjects", keyService: "s3", keyActions: []string{"kms:Decrypt"}}
	case "s3:PutObject":
		return grantStatementOf{sid: "WriteObjects", keyService: "s3", keyActions: []string{"kms:GenerateDataKey"}}
	case "s3:GetObjectTagging":
		return grantStatementOf{sid: "ReadCopiedTags"}
	case "s3:PutObjectTagging":
		return grantStatementOf{sid: "WriteCopiedTags"}
	case "s3:ListBucket":
		// No s3:prefix condition: a HEAD carries no prefix, so a condition
		// on it would never match and S3 would answer 403 again.
		return grantStatementOf{sid: "MissingObjectsAre404"}
	case "events:PutEvents":
		// No key statement: the bus encrypts events with the key as
		// events.amazonaws.com, which the key policy lets in (CDK's
		// statement for the bus's KmsKey), never with the caller's
		// credentials ("Authorizing EventBridge to use a customer managed
		// key", EventBridge User Guide); CDK's own grantPutEventsTo grants
		// events:PutEvents alone too.
		return grantStatementOf{sid: "PutEvents"}
	}
	panic(fmt.Sprintf("grantAccess: no statement for %s", g))
}

// tableSid is a table's statement Sid: IndexTable, AuditTable.
func tableSid(table string) string {
	return strings.ToUpper(table[:1]) + table[1:] + "Table"
}

// arn is a grant's resource in the stack: the table's, its index's, the
// objects' under the prefix (IAM's "prefix*"), the bucket's or the bus's.
func (t accessTargets) arn(r access.Resource) *string {
	table := func() awsdynamodb.ITable {
		switch r.Table {
		case access.IndexTable:
			return t.index
		case access.AuditTable:
			return t.audit
		}
		panic(fmt.Sprintf("grantAccess: no table %q", r.Table))
	}
	switch r.Kind {
	case access.KindTable:
		return table().TableArn()
	case access.KindTableIndex:
		return jsii.String(*table().TableArn() + "/index/" + r.Index)
	case access.KindObjects:
		return t.bucket.ArnForObjects(jsii.String(r.Prefix + "*"))
	case access.KindBucket:
		return t.bucket.BucketArn()
	case access.KindBus:
		return t.bus.EventBusArn()
	}
	panic(fmt.Sprintf("grantAccess: no ARN for %s", r))
}

// grantSecretValue lets grantee read the values of the secrets by their
// complete ARNs: secretsmanager:GetSecretValue, all that the code (the
// log-name key, lambdaio; the collector's certificates, auditfeed) and ECS
// (a task's secrets: "Required IAM permissions for Amazon ECS secrets",
// Amazon ECS Developer Guide) call. Not CDK's GrantRead, which adds
// secretsmanager:DescribeSecret (nothing calls it) and grants a secret's
// key in the key policy without naming the service. A secret under the
// stack's key needs keyVia through Secrets Manager beside it.
func grantSecretValue(grantee awsiam.IGrantable, arns ...*string) awsiam.Grant {
	return awsiam.Grant_AddToPrincipal(&awsiam.GrantOnPrincipalOptions{
		Grantee:      grantee,
		Actions:      jsii.Strings("secretsmanager:GetSecretValue"),
		ResourceArns: &arns,
	})
}

// roleHolder is a function whose role statements can be added to.
type roleHolder interface {
	AddToRolePolicy(statement awsiam.PolicyStatement)
}

// viaService is the kms:ViaService value of an AWS service in the stack's
// Region: the service's regional endpoint, which calls KMS on a
// principal's behalf.
func viaService(service string) string {
	return service + "." + *awscdk.Aws_REGION() + ".amazonaws.com"
}

// grantKeyVia lets fn use the key only through service, which uses it on
// the function's behalf.
func grantKeyVia(fn roleHolder, key awskms.IKey, service string, actions ...string) {
	fn.AddToRolePolicy(keyVia("KeyVia"+service, key, service, actions...))
}

// keyVia is grantKeyVia's statement, under sid.
func keyVia(sid string, key awskms.IKey, service string, actions ...string) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String(sid),
		Actions:    jsii.Strings(actions...),
		Resources:  &[]*string{key.KeyArn()},
		Conditions: &map[string]any{"StringEquals": map[string]any{"kms:ViaService": viaService(service)}},
	})
}

// keyPolicyVia is grantKeyVia's counterpart in a key policy: it lets the
// principals of account use the key, with the actions given, only through
// service in the stack's Region (and, with more, under further
// conditions, by operator). Their IAM policies must allow it too.
func keyPolicyVia(sid, account, service string, actions []string, more map[string]map[string]any) awsiam.PolicyStatement {
	conditions := map[string]any{"StringEquals": map[string]any{"kms:CallerAccount": account, "kms:ViaService": viaService(service)}}
	for op, c := range more {
		conditions[op] = c
	}
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String(sid),
		Principals: &[]awsiam.IPrincipal{awsiam.NewAccountRootPrincipal()},
		Actions:    jsii.Strings(actions...),
		Resources:  jsii.Strings("*"),
		Conditions: &conditions,
	})
}

// grantConsume lets the function's event source mapping (which polls with
// the function's role) receive and delete the queue's messages, and SQS
// decrypt them with the key. The actions are those the Lambda Developer
// Guide lists for an SQS event source ("Execution role permissions",
// Using Lambda with Amazon SQS): not CDK's grantConsumeMessages, which adds
// ChangeMessageVisibility and GetQueueUrl, which neither the mapping nor
// the functions' code (no SQS client at all) calls.
func grantConsume(fn awslambda.Function, key awskms.IKey, q awssqs.IQueue) {
	fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("ConsumeQueue"),
		Actions:   jsii.Strings("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
		Resources: &[]*string{q.QueueArn()},
	}))
	grantKeyVia(fn, key, "sqs", "kms:Decrypt")
}

// queueOnFailure is an event source mapping's on-failure queue, like CDK's
// SqsDlq without its grants: grantSendMessages' GetQueueAttributes and
// GetQueueUrl (Lambda needs sqs:SendMessage alone for an SQS destination
// of a stream's failed batches: "Using AWS Lambda with Amazon DynamoDB",
// Lambda Developer Guide), and the key without kms:ViaService. Lambda sends
// with the function's role, and SQS encrypts with the key on its behalf.
type queueOnFailure struct {
	queue awssqs.IQueue
	key   awskms.IKey
}

func (d *queueOnFailure) Bind(_ awslambda.IEventSourceMapping, fn awslambda.IFunction) *awslambda.DlqDestinationConfig {
	fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("SendOnFailure"),
		Actions:   jsii.Strings("sqs:SendMessage"),
		Resources: &[]*string{d.queue.QueueArn()},
	}))
	grantKeyVia(fn, d.key, "sqs", "kms:GenerateDataKey", "kms:Decrypt")
	return &awslambda.DlqDestinationConfig{Destination: d.queue.QueueArn()}
}

// asyncOnFailure is a function's on-failure destination for its
// asynchronous invocations, like CDK's SqsDestination without its grant on
// the queue's key (which has no kms:ViaService): Lambda sends the failed
// invocation's record with the function's role, and SQS encrypts it with
// the key on its behalf. The key statement has a Sid of its own: a
// function that also consumes a queue has KeyViasqs already.
type asyncOnFailure struct {
	queue awssqs.IQueue
	key   awskms.IKey
}

func (d *asyncOnFailure) Bind(_ constructs.Construct, fn awslambda.IFunction, _ *awslambda.DestinationOptions) *awslambda.DestinationConfig {
	fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("SendFailedInvocations"),
		Actions:   jsii.Strings("sqs:SendMessage"),
		Resources: &[]*string{d.queue.QueueArn()},
	}))
	fn.AddToRolePolicy(keyVia("KeyViasqsToSendFailedInvocations", d.key, "sqs", "kms:GenerateDataKey", "kms:Decrypt"))
	return &awslambda.DestinationConfig{Destination: d.queue.QueueArn()}
}

// tableOperations lists the DynamoDB operations the functions call on one
// table (which picks its access out of a function's), named as CloudWatch's
// Operation dimension names them: DynamoDB publishes ThrottledRequests per
// table and operation, for the operations called on it only.
func tableOperations(which func(access.Function) access.Table) []string {
	set := map[string]bool{}
	for _, a := range functionAccess {
		ta := which(a)
		for _, action := range ta.Actions {
			set[strings.TrimPrefix(action, "dynamodb:")] = true
		}
		if len(ta.Queries) > 0 {
			set["Query"] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
