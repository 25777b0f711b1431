//go:build linux

package auditfeed

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCP states as TCP_INFO's tcpi_state gives them (include/net/tcp_states.h),
// those a socket can be in once it has sent its FIN.
const tcpClose = 7

var tcpStates = map[uint8]string{4: "FIN_WAIT1", 5: "FIN_WAIT2", 7: "CLOSE", 9: "LAST_ACK", 11: "CLOSING"}

func tcpStateName(s uint8) string {
	if name, ok := tcpStates[s]; ok {
		return name
	}
	return "state " + strconv.Itoa(int(s))
}

// confirmClosed is called once the batch, our close_notify and our FIN are
// sent and the TLS stream has ended cleanly. It waits, until deadline or
// ctx's end, for the kernel to close the connection and tells a clean close
// from a reset.
//
// The clean close ends with the collector's FIN and its acknowledgement of
// our FIN (the socket goes FIN_WAIT1, FIN_WAIT2 or CLOSING, then CLOSE; or
// LAST_ACK, then CLOSE, when the collector's FIN came before we had sent
// ours): our FIN acknowledged means every byte before it was too. The
// socket's own state never shows TIME_WAIT: Linux hands the connection to a
// time-wait socket of its own and the descriptor's socket becomes CLOSE.
//
// Linux resets the connection instead when the collector's application
// closes its socket with our bytes unread, or our bytes come after it
// closed. The reset closes our socket too and leaves its error (ECONNRESET,
// or EPIPE if it came while only the collector had closed) in SO_ERROR. A
// write, or a read before the collector's FIN, returns that error and takes
// it from there, and Send fails on it; but a read once the FIN has come
// returns the end of stream first, and leaves it. That is the case this is
// for: the collector's FIN came before its reset (it closed as our bytes
// arrived, or before), so our last write and our end-of-stream read both
// succeeded.
func confirmClosed(ctx context.Context, tcp *net.TCPConn, deadline time.Time) error {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return err
	}
	wait := 50 * time.Microsecond
	for {
		var state uint8
		var soErr int
		var opErr error
		if err := rc.Control(func(fd uintptr) {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				opErr = fmt.Errorf("TCP_INFO: %w", err)
				return
			}
			state = info.State
			if state == tcpClose {
				if soErr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
					opErr = fmt.Errorf("SO_ERROR: %w", err)
				}
			}
		}); err != nil {
			return err
		}
		if opErr != nil {
			return opErr
		}
		if state == tcpClose {
			if soErr != 0 {
				return fmt.Errorf("it closed the connection before reading the whole batch: %w", syscall.Errno(soErr))
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("its side still open (TCP %s): %w", tcpStateName(state), err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("its side still open (TCP %s) at the deadline", tcpStateName(state))
		}
		time.Sleep(min(wait, time.Until(deadline)))
		wait = min(2*wait, time.Millisecond)
	}
}
