// Package awsemu runs the serverless half of dicom-ingest on one machine,
// for the pipeline's tests (test/pipeline) and the chain bench
// (test/bench/chain): a function binary under the AWS Lambda runtime
// interface emulator, dynalite for DynamoDB with the tables as the CDK
// stack defines them, an EventBridge endpoint capturing PutEvents, and the
// S3 notification and SQS event documents AWS delivers to the functions.
// Errors are returned, never fatal, so a command can use it as well as a
// test; finding and building the tools is the caller's (testenv in tests,
// the bench's script otherwise).
package awsemu

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"time"
)

// WaitTCP returns once addr accepts connections, or an error after within.
func WaitTCP(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("awsemu: %s did not start listening within %v", addr, within)
}

// Process is a child process started by this package.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has ended and been waited for
}

// startProcess starts cmd and returns it as a Process, waited for as it ends.
func startProcess(cmd *exec.Cmd) (*Process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait() // the error is the kill's, or the exit's that waitListening reports
		close(p.exited)
	}()
	return p, nil
}

// errExited is waitListening's error when the process ended before it
// listened: a port another process bound between the pick and its own bind
// (testenv.PickFreeAddr), which its caller may try again on another port.
var errExited = errors.New("ended before it listened")

// waitListening returns once addr accepts connections, errExited (with how
// it ended) if p ends first, or an error after within.
func (p *Process) waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("awsemu: %s %w (%v)", p.cmd.Path, errExited, p.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("awsemu: %s did not start listening within %v", addr, within)
}

// Stop kills the process and waits for it.
func (p *Process) Stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.exited
}
