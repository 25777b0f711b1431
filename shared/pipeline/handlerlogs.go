package pipeline

// MessagePanicLog is the log message of an SQS message whose handling
// panicked in a Lambda function's handler (functions/internal/lambdaio's
// PanicLog): a bug; the message fails alone. ScheduledPanicLog is that of
// a scheduled run that panicked (notify's announce, commitment's moving
// transactions on): the run fails. Both are here, beside the pipeline's
// other lines the stack counts, so that infra/stack's metric filter
// matches the very constants the handlers log (lambdaio is internal to
// functions/).
const (
	MessagePanicLog   = "message handling panicked: a bug; the message fails alone"
	ScheduledPanicLog = "scheduled run panicked: a bug; the run fails"
)
