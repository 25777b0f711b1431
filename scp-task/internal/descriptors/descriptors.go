// Package descriptors raises the process's file descriptor limit to its hard limit and divides it between the
// associations, the connections that have not associated yet and the HTTP servers, so that idle connections can
// never take the descriptors a site's association needs.
package descriptors

import (
	"fmt"
	"syscall"
)

const (
	// reserved is what the process needs besides DICOM connections: listeners, the health and portal servers'
	// connections (HealthConnections, PortalConnections), logs, the store's and the audit writer's files, AWS SDK
	// connections, SQLite in local mode.
	reserved = 128
	// HealthConnections and PortalConnections bound the connections the health and metrics server and the local
	// portal hold at once: a load balancer's checks and a scraper, an operator's browser tabs. The health server's
	// listener is a netutil.LimitListener (past them Accept waits until one is closed, and new connections wait in
	// the kernel's backlog, which holds no descriptor of ours); the portal's (local.portalServer) holds one more,
	// accepted and waiting for a place, which the oldest connection not serving a request gives up. Together they
	// take less than half of reserved.
	HealthConnections = 8
	PortalConnections = 48
	// perAssociation is what one association may hold at once: its socket, the object's temporary file or the
	// S3 multipart upload's connections, the audit record's file.
	perAssociation = 8
	// unlimitedAssociations is the count assumed when --max-associations is 0 (unlimited).
	unlimitedAssociations = 64
	// minUnassociated keeps a usable bound on a tiny limit.
	minUnassociated = 16
)

// Raise sets the soft RLIMIT_NOFILE to the hard limit and returns the soft limit now in force.
func Raise() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("descriptors: getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("descriptors: raise the soft limit to %d: %w", lim.Max, err)
		}
	}
	return uint64(lim.Cur), nil
}

// Plan divides limit: the associations' share (maxAssociations, 0 meaning unlimited) and a reserve come first;
// three quarters of the rest bound the connections without an association (total), the last quarter is headroom
// for connections being accepted while the oldest waiting one is shed. One source address may hold an eighth of
// the total (perAddr), so at least eight sources fill it before anyone is shed for the total.
func Plan(limit uint64, maxAssociations int) (total, perAddr int) {
	if maxAssociations <= 0 {
		maxAssociations = unlimitedAssociations
	}
	need := uint64(reserved + perAssociation*maxAssociations)
	avail := uint64(0)
	if limit > need {
		avail = limit - need
	}
	total = int(min(avail*3/4, 1<<20))
	total = max(total, minUnassociated)
	perAddr = max(total/8, 2)
	return total, perAddr
}
