package stack

import (
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

// grantAccess adds a function's statements: exactly the DynamoDB actions
// on exactly the tables and indexes its code uses, exactly the S3 actions
// on its prefixes, and the key only through the services that use it on
// the function's behalf (kms:ViaService), each with the actions it needs.
func grantAccess(fn awslambda.Function, t accessTargets, a access.Function) {
	add := func(sid string, actions []string, resources []*string, conditions map[string]any) {
		ps := &awsiam.PolicyStatementProps{Sid: jsii.String(sid), Actions: jsii.Strings(actions...), Resources: &resources}
		if conditions != nil {
			ps.Conditions = &conditions
		}
		fn.AddToRolePolicy(awsiam.NewPolicyStatement(ps))
	}
	// via: each service that uses the key for this function, with the
	// actions it asks for (Lambda's, for the environment, is newFunction's).
	via := map[string][]string{}
	for _, tb := range []struct {
		sid   string
		table awsdynamodb.ITable
		a     access.Table
	}{{"IndexTable", t.index, a.Index}, {"AuditTable", t.audit, a.Audit}} {
		if len(tb.a.Actions) == 0 && len(tb.a.Queries) == 0 {
			continue
		}
		if len(tb.a.Actions) > 0 {
			add(tb.sid, tb.a.Actions, []*string{tb.table.TableArn()}, nil)
		}
		if len(tb.a.Queries) > 0 {
			var res []*string
			for _, ix := range tb.a.Queries {
				res = append(res, jsii.String(*tb.table.TableArn()+"/index/"+ix))
			}
			add("Query"+tb.sid+"Indexes", []string{"dynamodb:Query"}, res, nil)
		}
		// DynamoDB decrypts the table key for each caller, and checks the
		// key, on the caller's behalf.
		via["dynamodb"] = []string{"kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*"}
	}
	// Reads decrypt through S3; writes have S3 generate a data key. A
	// copy's tags, read from its source and set on the copy, are on
	// those prefixes alone, and need no key.
	objects := func(prefixes []string) []*string {
		var res []*string
		for _, p := range prefixes {
			res = append(res, t.bucket.ArnForObjects(jsii.String(p+"*")))
		}
		return res
	}
	for _, o := range []struct {
		sid, action, keyAction string
		prefixes               []string
	}{
		{"ReadObjects", "s3:GetObject", "kms:Decrypt", a.Read},
		{"WriteObjects", "s3:PutObject", "kms:GenerateDataKey", a.Write},
		{"ReadCopiedTags", "s3:GetObjectTagging", "", a.CopiedFrom()},
		{"WriteCopiedTags", "s3:PutObjectTagging", "", a.CopiedTo()},
	} {
		if len(o.prefixes) == 0 {
			continue
		}
		add(o.sid, []string{o.action}, objects(o.prefixes), nil)
		if o.keyAction != "" {
			via["s3"] = append(via["s3"], o.keyAction)
		}
	}
	if a.ListBucket {
		// No s3:prefix condition: a HEAD carries no prefix, so a condition
		// on it would never match and S3 would answer 403 again.
		add("MissingObjectsAre404", []string{"s3:ListBucket"}, []*string{t.bucket.BucketArn()}, nil)
	}
	if a.PutEvents {
		// No key statement: the bus encrypts events with the key as
		// events.amazonaws.com, which the key policy lets in (CDK's
		// statement for the bus's KmsKey), never with the caller's
		// credentials ("Authorizing EventBridge to use a customer managed
		// key", EventBridge User Guide); CDK's own grantPutEventsTo grants
		// events:PutEvents alone too.
		add("PutEvents", []string{"events:PutEvents"}, []*string{t.bus.EventBusArn()}, nil)
	}
	for _, svc := range slices.Sorted(maps.Keys(via)) {
		grantKeyVia(fn, t.key, svc, via[svc]...)
	}
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
