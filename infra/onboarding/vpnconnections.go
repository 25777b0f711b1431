package onboarding

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
)

// ErrNoVPNConnection is returned when a describe-vpn-connections document
// does not hold the wanted connection or its two tunnel addresses.
var ErrNoVPNConnection = errors.New("VPN connection not found")

// vpnConnection is the part of an EC2 VpnConnection the kit reads. The full
// API answer also holds the tunnels' pre-shared keys (TunnelOptions[].
// PreSharedKey and the CustomerGatewayConfiguration XML): they are never
// decoded here.
type vpnConnection struct {
	VpnConnectionID string `json:"VpnConnectionId"`
	Options         struct {
		TunnelOptions []struct {
			OutsideIPAddress string `json:"OutsideIpAddress"`
		} `json:"TunnelOptions"`
	} `json:"Options"`
	VgwTelemetry []struct {
		OutsideIPAddress string `json:"OutsideIpAddress"`
	} `json:"VgwTelemetry"`
}

// ParseVPNConnections returns the two tunnel outside addresses of the VPN
// connection id from the JSON that
//
//	aws ec2 describe-vpn-connections --output json
//
// prints ({"VpnConnections": [...]}), or from a bare array of connections
// (what a --query 'VpnConnections[]...' projection prints). Addresses come
// from Options.TunnelOptions (tunnel 1 first, as the console numbers them),
// else from VgwTelemetry.
func ParseVPNConnections(r io.Reader, id string) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxOutputsSize+1))
	if err != nil {
		return nil, fmt.Errorf("read vpn connections: %w", err)
	}
	if len(data) > maxOutputsSize {
		return nil, fmt.Errorf("read vpn connections: larger than %d bytes", maxOutputsSize)
	}
	var conns []vpnConnection
	var wrapped struct {
		VpnConnections []vpnConnection `json:"VpnConnections"`
	}
	if err := json.Unmarshal(data, &wrapped); err == nil {
		conns = wrapped.VpnConnections
	} else if err := json.Unmarshal(data, &conns); err != nil {
		return nil, fmt.Errorf("parse vpn connections: want describe-vpn-connections JSON: %w", err)
	}
	for _, c := range conns {
		if c.VpnConnectionID != id {
			continue
		}
		var addrs []string
		for _, t := range c.Options.TunnelOptions {
			addrs = append(addrs, t.OutsideIPAddress)
		}
		if len(addrs) != 2 {
			addrs = addrs[:0]
			for _, t := range c.VgwTelemetry {
				addrs = append(addrs, t.OutsideIPAddress)
			}
		}
		if len(addrs) != 2 {
			return nil, fmt.Errorf("%w: %s has %d tunnel addresses in Options.TunnelOptions and %d in VgwTelemetry, want 2",
				ErrNoVPNConnection, id, len(c.Options.TunnelOptions), len(c.VgwTelemetry))
		}
		for _, a := range addrs {
			if _, err := netip.ParseAddr(a); err != nil {
				return nil, fmt.Errorf("parse vpn connections: %s: tunnel address %q: %w", id, a, err)
			}
		}
		return addrs, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNoVPNConnection, id)
}

// VPNConnectionsQuery is the `aws ec2 describe-vpn-connections --query` that
// keeps only what ParseVPNConnections reads, so the tunnels' pre-shared keys
// (which the full answer carries) never leave the AWS CLI.
const VPNConnectionsQuery = "VpnConnections[].{VpnConnectionId: VpnConnectionId, " +
	"Options: {TunnelOptions: Options.TunnelOptions[].{OutsideIpAddress: OutsideIpAddress}}, " +
	"VgwTelemetry: VgwTelemetry[].{OutsideIpAddress: OutsideIpAddress}}"

// NLBInterfacesQuery is the `aws ec2 describe-network-interfaces --query`
// whose JSON answer ParseNLBAddresses reads.
const NLBInterfacesQuery = "NetworkInterfaces[].PrivateIpAddress"

// NLBInterfaceDescription returns the description AWS gives a network load
// balancer's interfaces ("ELB net/<name>/<id>"), from the NLB's ARN: the
// filter that finds its private IPs.
func NLBInterfaceDescription(arn string) (string, error) {
	const marker = ":loadbalancer/net/"
	i := strings.Index(arn, marker)
	if !strings.HasPrefix(arn, "arn:") || i < 0 {
		return "", fmt.Errorf("%q is not a network load balancer ARN", arn)
	}
	rest := arn[i+len(marker):]
	if strings.Count(rest, "/") != 1 || strings.ContainsAny(rest, " \t\n\"'*") {
		return "", fmt.Errorf("%q is not a network load balancer ARN", arn)
	}
	return "ELB net/" + rest, nil
}

// ParseNLBAddresses reads a JSON array of IPv4 addresses (the answer to
// NLBInterfacesQuery) and returns them sorted, so the kit does not change
// with the API's order.
func ParseNLBAddresses(r io.Reader) ([]string, error) {
	var addrs []string
	if err := json.NewDecoder(io.LimitReader(r, maxOutputsSize)).Decode(&addrs); err != nil {
		return nil, fmt.Errorf("parse nlb addresses: %w", err)
	}
	if len(addrs) == 0 {
		return nil, errors.New("parse nlb addresses: none (is the load balancer deployed?)")
	}
	parsed := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("parse nlb addresses: %q is not an IPv4 address", a)
		}
		parsed = append(parsed, ip)
	}
	sort.Slice(parsed, func(i, j int) bool { return parsed[i].Less(parsed[j]) })
	out := make([]string, len(parsed))
	for i, ip := range parsed {
		out[i] = ip.String()
	}
	return out, nil
}
