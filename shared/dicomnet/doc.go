// Package dicomnet is a DICOM network library (PS3.7, PS3.8): a C-STORE/C-ECHO and Storage Commitment server
// (SCP) in the style of net/http and the matching client (SCU) used to report commitment results, by tests and by
// load generators.
//
// # Server
//
// Server negotiates Verification and every storage SOP class (dicomuid.IsStorageSOPClass) with every storable
// transfer syntax, compressed and deflated included (see Negotiate for the preference order), answers C-ECHO itself and streams each C-STORE data set to a Handler
// as an io.Reader while the PDUs arrive. The reader pulls PDVs straight from the connection's 64 KiB read
// buffer: memory per association does not depend on the object size or on MaxPDULength, and while the handler
// does not read, neither does the server, so a slow store slows the sender down through TCP flow control.
//
// Each association follows the PS3.8 state machine (fsm.go: Sta1…Sta13, Evt1…Evt19, AE-1…AA-8; the acceptor's
// side is split by concern, see association.go), with
//   - ARTIM (ARTIMTimeout, default 30s) while waiting for the A-ASSOCIATE-RQ and, after a release, reject or
//     abort, for the peer to close;
//   - an idle timeout between and within PDUs once associated (IdleTimeout, default 5m), which aborts;
//   - progress deadlines while a message is being received (at least MinProgressBytes of its fragments, PDU and
//     PDV headers not counted, in every ProgressWindow of waiting for the peer, default 1 KiB per 60 s; at most
//     MaxMessageTime of waiting, default 2h), which abort with ErrProgressDeadline: a peer trickling bytes, or
//     sending empty fragments, cannot hold its slot; bytes waiting in the socket when a window's end is noticed
//     (late, if the process stalled across it) still count toward that window;
//   - a deadline on every write (WriteTimeout, default 30s);
//   - global and per-calling-AE association limits (rejected 02 03 02);
//   - bounds on the connections that hold no association, per source address and in total
//     (MaxUnassociatedPerAddr refuses, MaxUnassociated sheds the oldest waiting one; see unassociated.go);
//   - our maximum PDU length enforced on receipt (MaxPDULength, default 256 KiB, A-ABORT 2/6 when exceeded) and
//     the peer's honoured when sending, with at most DefaultMaxSendPDULength (256 KiB) in one PDU (maxSendPDU).
//
// Protocol errors abort with the reasons of PS3.8 §9.3.8: an unrecognized PDU type 2/1, an unexpected PDU 2/2,
// malformed contents (lying lengths, a data set PDV without a command or on another context, a command on a
// context that was not accepted, an undecodable command set) 2/6. In Sta2 an unexpected or invalid PDU is AA-1
// (0/0); an A-ASSOCIATE-RQ whose presentation context ids are not odd and unique is such an invalid PDU.
// A-ABORT, a closed connection or a protocol error in the middle of an object make the handler's reader
// return an error wrapping ErrIncomplete; nothing is answered and the slot is freed.
//
// C-STORE statuses: the handler's result (see Handler); 0122 when the command's SOP class differs from the
// presentation context's, or that context is not a storage SOP class's (Verification, Storage Commitment); C000 when the Affected SOP Instance UID is missing or not a valid UID (so no handler
// ever sees an unusable one); 0110 for a handler error, panic, or nil returned before reading the whole data set.
//
// With ProxyProtocol, the PROXY protocol v2 header (AWS NLB) is read before the first PDU and its source becomes
// AssociationInfo.RemoteAddr; a LOCAL header (health check) keeps the socket's address.
//
// ServeTLS serves DICOM over TLS (PS3.15 Annex B) beside Serve on the same Server: the PROXY header, when
// expected, is read in the clear, then the TLS handshake runs within ARTIM, then the association; a failed
// handshake is an EventHandshakeFailed. AssociationInfo.TLS carries the connection state, the peer's verified
// certificate with it, to Accept, which may record the identity it admitted the peer under in PeerIdentity.
//
// DIMSE requests are dispatched through a table of services keyed by command field (dispatch.go), each served
// only from the role the requestor holds on its presentation context (SCU unless role selection agreed
// otherwise); a request the table lacks is answered 0211 (unrecognized operation), a response to no request of
// ours is ignored.
//
// # Storage Commitment
//
// With a CommitmentHandler the server is the Storage Commitment Push Model SCP (PS3.4 J.3): it negotiates the
// class in Explicit or Implicit VR Little Endian with the requestor as SCU, checks each N-ACTION-RQ's command
// (the class, its well-known instance, Action Type ID 1, a data set), streams the Action Information to the
// handler (package commitment reads it) and answers with the handler's verdict at once. The result goes back
// later as an N-EVENT-REPORT-RQ: SendEventReport sends it on the requestor's association while that is open and
// we hold the SCP role there (report.go: the association's goroutine sends it between messages and matches the
// response), and a ClientAssociation sends it on an association of the application's own, proposing the class
// with role selection SCU 0, SCP 1.
//
// # Client
//
// Dial associates (proposing SCP/SCU role selection for contexts that ask for it); Echo, Store (streams an
// io.Reader in PDUs within the peer's maximum, reading one fragment ahead to mark the last), StoreFile (a Part 10
// file's data set, unchanged), Action (N-ACTION) and SendEventReport (N-EVENT-REPORT) run DIMSE operations one at
// a time;
// Release and Abort end the association. The client runs on the same state table as the server, from the
// requestor's side (see ClientAssociation).
//
// Sub-packages: pdu (PDU and item codec), dimse (command sets and statuses), commitment (Storage Commitment data
// sets), proxyproto (PROXY v2 parser), dicomnettest (a server on 127.0.0.1:0 and the Parrot scripted peer for
// tests).
package dicomnet
