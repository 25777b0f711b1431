// Package vpn holds the end-to-end test of a site's VPN: DCMTK in a "site"
// network namespace reaches the SCP in a "cloud" namespace only through
// strongSwan IKEv2 tunnels configured by the onboarding kit. The test needs
// root, iproute2, strongSwan with kernel-libipsec, DCMTK and tcpdump, and
// skips with a message naming what is missing otherwise.
package vpn
